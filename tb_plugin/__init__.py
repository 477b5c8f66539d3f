"""TensorBoard plugins of mct-logger: the QuantAnalyzer and CLE dashboards.

Installed as `mct_logger.tb_plugin` (the repository keeps it at the top level,
beside `frontend/`, whose browser code ships as its package data). Entry-point
modules here import nothing heavy: an import error in one would stop
TensorBoard from starting.
"""
