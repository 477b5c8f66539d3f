"""The "Compression" tab: a greedy compression sweep, live.

It shows every "compression" payload a `compress_model` run writes with a log
folder set: the layers x candidate-ratios table of evaluation scores, filling
in while the sweep runs (with "N of M evaluations, about T left"), then the
chosen per-layer ratios and the model's cost and score before and after.
Routes: see `tb_plugin.dashboard`; the JSON of each kind: `metadata.SHAPES`.

Entry point (setup.py): `compression = mct_logger.tb_plugin.compression_plugin:CompressionPlugin`.
Imports nothing heavy.
"""

from __future__ import annotations

from . import metadata
from .dashboard import PayloadDashboard


class CompressionPlugin(PayloadDashboard):
    """TensorBoard plugin serving the Compression tab."""

    plugin_name = metadata.COMPRESSION
    tab_name = "Compression"
    entry_module = "compression/compression_tab.js"
