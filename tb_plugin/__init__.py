"""TensorBoard plugins of mct-logger: the QuantAnalyzer and CLE dashboards.

Entry-point modules here import nothing heavy: an import error in one would
stop TensorBoard from starting. The browser code ships as `tb_plugin.frontend`,
mapped onto the repository's top-level `frontend/` folder.
"""
