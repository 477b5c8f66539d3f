"""Graph transformations that make a model quantization-friendly."""

from mct_logger.techniques.batch_norm_folding import fold_batch_norms
