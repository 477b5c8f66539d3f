"""QuantAnalyzer: the driver, its analyses (each a table), AIMET's file layout, the worst-layers
ranking, the results folder, the offline report and the recommendation of fixes."""
