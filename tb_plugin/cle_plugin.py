"""The "CLE" tab: per-channel weight ranges before and after cross-layer
equalization, and weights before vs after quantization.

It shows every "cle" payload a logged PTQ run writes: weight ranges (recorded
with CLE off too), scale factors per equalized set, high-bias folds, ReLU6
replacements and, per quantized kernel, weight SQNR and float vs quantized
histograms. Routes: see `tb_plugin.dashboard`; the JSON of each kind:
`metadata.SHAPES`.

Entry point (setup.py): `cle = mct_logger.tb_plugin.cle_plugin:CLEPlugin`.
Imports nothing heavy.
"""

from __future__ import annotations

from . import metadata
from .dashboard import PayloadDashboard


class CLEPlugin(PayloadDashboard):
    """TensorBoard plugin serving the CLE tab."""

    plugin_name = metadata.CLE
    tab_name = "CLE"
    entry_module = "cle/cle_tab.js"
