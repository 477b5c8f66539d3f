"""Graph transformations that make a model quantization-friendly: batch-norm folding,
cross-layer equalization (with high-bias folding), bias correction, and the
per-channel weight-range tables of the CLE dashboard.

JSON tables (`CrossLayerEqualizationResult.to_tables()`), one per CLE payload kind:

- "weight_ranges": `{"cle_applied", "reason", "layers": [{"node", "kernel",
  "layer_class", "channels", "before": stats, "after": stats | None}]}` where
  stats is `{"min", "max", "mean", "range", "relative_range"` (per-channel
  lists; None for dead channels), `"dead_channels", "outlier_channels"`
  (indices), `"tukey_fence", "spread_score"}`.
- "scale_factors": `{"cle_applied", "sets": [{"members", "kind", "links",
  "activations", "scale_factors": [per-channel list per consecutive pair]}],
  "iterations", "converged", "not_equalized": {node: reason},
  "relu6_replaced": [{"node", "form"}], "float_score_before",
  "float_score_after"}`.
- "high_bias_fold": `{"cle_applied", "folds": [{"source", "target",
  "activation", "amount", "total", "channels_folded"}], "skipped": [{"pair",
  "reason"}]}`.
"""

from mct_logger.techniques.batch_norm_folding import fold_batch_norms
from mct_logger.techniques.bias_correction import (
    BiasCorrectionResult,
    LayerCorrection,
    correct_bias,
    correct_bias_graph,
)
from mct_logger.techniques.cross_layer_equalization import (
    CrossLayerEqualizationResult,
    EqualizationSet,
    HighBiasFold,
    equalize_graph,
    equalize_model,
)
from mct_logger.techniques.weight_ranges import rank_by_spread, weight_range_tables
