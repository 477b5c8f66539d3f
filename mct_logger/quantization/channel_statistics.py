"""Per-channel statistics of one layer output, for the logs: running min, max and
mean per channel, and histograms of the whole tensor and of each channel.

For x of shape (..., C) seen over batches, channel c's mean is
`sum(x[..., c]) / rows` with rows the count of values per channel so far.

Example:

```python
stats = ChannelStatistics(observer)
stats.update(np.random.rand(8, 4, 4, 16))
stats.min.shape, stats.mean.shape          # (16,), (16,)
```
"""

from __future__ import annotations

import numpy as np

from mct_logger.quantization.histogram import HistogramCollector, channels_last_2d

__all__ = ["ChannelStatistics"]


class ChannelStatistics:
    """Per-channel min, max and mean and the histograms of one layer output, for logs.

    The whole-tensor histogram is the observer's when the observer keeps one
    for the whole tensor (no second pass over the data); the per-channel
    histograms are coarse (`CHANNEL_BINS`), as the logs draw them in 16 bins.
    """

    CHANNEL_BINS = 64

    def __init__(self, observer=None):
        shared = isinstance(observer, HistogramCollector) and not tuple(observer.channel_axes)
        self._shared = shared
        self.tensor_histogram = observer if shared else HistogramCollector(channel_axes=())
        self.channel_histograms = HistogramCollector(bins=self.CHANNEL_BINS)
        self.min: np.ndarray | None = None  # (C,) running per-channel min, float64
        self.max: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._count = 0

    def collectors(self) -> list:
        """The histograms this statistics object keeps (the shared one included)."""
        return [self.tensor_histogram, self.channel_histograms]

    def update(self, x: np.ndarray) -> None:
        """Takes a whole output; call after the observer has seen it (a shared
        histogram is already updated)."""
        flat = channels_last_2d(x)
        if flat.size == 0:
            return
        # float32 accumulation: fast, ample for a mean
        self.add_batch(flat.min(axis=0), flat.max(axis=0), flat.sum(axis=0), flat.shape[0])
        for histogram in self.collectors()[1 if self._shared else 0:]:
            histogram.update(x)

    def add_batch(self, minimum, maximum, sums, rows: int) -> None:
        """Takes one batch's per-channel min, max and sums over `rows` values each
        (reduced in-graph, `reduction`); the histograms are updated by their owner."""
        minimum = np.asarray(minimum, dtype=np.float64).reshape(-1)
        maximum = np.asarray(maximum, dtype=np.float64).reshape(-1)
        sums = np.asarray(sums, dtype=np.float64).reshape(-1)
        if self.min is None:
            self.min, self.max, self._sum = minimum.copy(), maximum.copy(), sums.copy()
        else:
            np.minimum(self.min, minimum, out=self.min)
            np.maximum(self.max, maximum, out=self.max)
            self._sum += sums
        self._count += int(rows)

    @property
    def mean(self) -> np.ndarray:
        return self._sum / max(self._count, 1)

    @property
    def elements(self) -> int:
        """Values seen in the whole tensor (all channels)."""
        return int(self._count * (len(self._sum) if self._sum is not None else 0))

    def histogram(self, per_channel: bool = False):
        histograms = self.channel_histograms if per_channel else self.tensor_histogram
        return histograms.histogram(per_channel=per_channel)
