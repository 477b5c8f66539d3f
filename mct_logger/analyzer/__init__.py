"""QuantAnalyzer: the driver, one analyze call (analysis_run), its analyses (each a table),
AIMET's file layout, the worst-layers ranking, the results folder, the offline report and the
recommendation of fixes."""
