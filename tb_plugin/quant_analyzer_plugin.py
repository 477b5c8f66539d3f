"""The "QuantAnalyzer" tab: per-layer diagnosis of quantized models.

It shows every "quant_analyzer" payload: the tables a `QuantAnalyzer` run
writes (sensitivity, per-layer enable/disable scores, SQNR, MSE, encoding
ranges, histograms, weight SQNR), filling in live while the analysis runs, and
the per-layer table that every logged PTQ run writes (`layer_table`), so two
PTQ runs compare without running the analyzer. Routes: see
`tb_plugin.dashboard`; the JSON of each kind: `metadata.SHAPES`.

Entry point (setup.py): `quant_analyzer = mct_logger.tb_plugin.quant_analyzer_plugin:QuantAnalyzerPlugin`.
Imports nothing heavy.
"""

from __future__ import annotations

from . import metadata
from .dashboard import PayloadDashboard


class QuantAnalyzerPlugin(PayloadDashboard):
    """TensorBoard plugin serving the QuantAnalyzer tab."""

    plugin_name = metadata.QUANT_ANALYZER
    tab_name = "QuantAnalyzer"
    entry_module = "quant_analyzer/qa_tab.js"
