"""Observers: running statistics of a tensor that turn into an encoding.

Activations are observed over the representative data, one batch at a time;
weights are observed once. The channel is the last axis for activations and
`channel_axes` of the kernel for weights (see `quantization.layers`).

Example:

```python
obs = MinMaxObserver()
for batch in outputs:
    obs.update(batch)
enc = obs.encoding(bitwidth=8, symmetric=False)
```
"""

from __future__ import annotations

import numpy as np

from mct_logger.quantization.encodings import Encoding


def channels_last_2d(x: np.ndarray, channel_axes=(-1,)) -> np.ndarray:
    """Reshapes `x` to (elements, channels), channels in kernel order."""
    x = np.asarray(x)
    axes = sorted(a % x.ndim for a in channel_axes)
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, rest + axes)
    channels = int(np.prod([x.shape[a] for a in axes]))
    return moved.reshape(-1, channels)


class MinMaxObserver:
    """Running per-channel min and max; per-tensor encodings reduce over channels."""

    name = "min_max"

    def __init__(self, channel_axes=(-1,)):
        self.channel_axes = tuple(channel_axes)
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        flat = channels_last_2d(x, self.channel_axes)
        if flat.size == 0:
            return
        lo, hi = flat.min(axis=0), flat.max(axis=0)
        if self.min is None:
            self.min, self.max = lo.astype(np.float64), hi.astype(np.float64)
        else:
            np.minimum(self.min, lo, out=self.min)
            np.maximum(self.max, hi, out=self.max)

    @property
    def is_empty(self) -> bool:
        return self.min is None

    def encoding(self, bitwidth: int, symmetric: bool, per_channel: bool = False) -> Encoding:
        if self.is_empty:
            raise ValueError("The observer saw no data; run calibration before computing encodings.")
        if per_channel:
            return Encoding.from_range(self.min, self.max, bitwidth, symmetric)
        return Encoding.from_range(self.min.min(), self.max.max(), bitwidth, symmetric)
