"""How many samples the activation ranges were calibrated from, and the warning when
that is too few.

An activation grid is set from the values its observer saw: min/max takes the
extremes, MSE and tf_enhanced search a histogram. With a handful of samples
these are the extremes of those samples only, and typical inputs beyond them
are clipped (a dense net calibrated on 1 sample keeps an output cosine of 0.97
where 256 samples give 0.9999). AIMET's and MCT's guides recommend 500-1000
representative samples; below `MIN_CALIBRATION_SAMPLES` every calibration
(PTQ, QuantAnalyzer's forward_pass_callback, the trial configurations of
search_mixed_precision and recommend) logs one warning naming the count, the
recommended range and what was calibrated.

    samples = sum over calibration batches of the batch's leading dimension

Example:

```python
warn_if_few_samples(calibration.samples_seen, "the activation ranges of model 'm'",
                    "pass 500-1000 samples as representative_data")
```
"""

from __future__ import annotations

import logging

import numpy as np
from keras import tree

logger = logging.getLogger("mct_logger")

# Fewer calibration samples than this give a warning (the recommended size is 500-1000).
MIN_CALIBRATION_SAMPLES = 100
RECOMMENDED_SAMPLES = "500-1000"


def batch_samples(inputs) -> int:
    """Samples in one batch: the leading dimension of its first input (0 if it has none)."""
    leaves = tree.flatten(inputs)
    if not leaves:
        return 0
    shape = getattr(leaves[0], "shape", None)
    if shape is None:
        shape = np.shape(leaves[0])
    return int(shape[0]) if len(shape) and shape[0] is not None else 1


def warn_if_few_samples(samples: int, what: str, fix: str) -> bool:
    """Logs one warning when `samples` < MIN_CALIBRATION_SAMPLES; returns whether it did.

    Args:
        samples: how many samples the observers saw.
        what: what was calibrated, e.g. "the activation ranges of model 'm' (PTQ)".
        fix: how to give more, e.g. "pass more representative_data".
    """
    if samples >= MIN_CALIBRATION_SAMPLES:
        return False
    logger.warning(
        "%s were calibrated from only %d sample%s, fewer than the minimum of %d (%s samples "
        "are recommended): ranges from so few samples clip the values typical inputs reach "
        "and the quantized model loses accuracy. To fix: %s.",
        what[:1].upper() + what[1:], samples, "" if samples == 1 else "s",
        MIN_CALIBRATION_SAMPLES, RECOMMENDED_SAMPLES, fix)
    return True
