"""Observers: running statistics of a tensor that turn into an encoding.

Activations are observed over the representative data, one batch at a time;
weights are observed once. The channel is the last axis for activations and
`channel_axes` of the kernel for weights (see `quantization.layers`);
`channel_axes=()` observes the whole tensor as one channel.

Three observers, by registry name (`OBSERVERS`, `make_observer`):

- "min_max" (`MinMaxObserver`): the grid covering the running min and max.
- "tf_enhanced" (`SqnrObserver`): AIMET's TF-enhanced search on a 512-bin
  histogram, minimising rounding error plus 3x the saturation error.
- "mse" (`MseObserver`): a denser clipping search minimising the expected
  squared error on the same histogram.

The two histogram observers are `histogram.HistogramCollector`s and also expose
`histogram(per_channel)` for plots.

Example:

```python
obs = make_observer("tf_enhanced")
for batch in outputs:
    obs.update(batch)
enc = obs.encoding(bitwidth=8, symmetric=False)
edges, counts = obs.histogram(per_channel=False)   # (1, 513), (1, 512)
```
"""

from __future__ import annotations

import abc

import numpy as np

from mct_logger.quantization.encodings import MIN_RANGE, Encoding, check_bitwidth
from mct_logger.quantization.grid_search import (
    cheapest,
    compact,
    grids_from_ranges,
)
from mct_logger.quantization.histogram import HistogramCollector, channels_last_2d


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
        self.observe_range(flat.min(axis=0), flat.max(axis=0))

    def observe_range(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        """Takes one batch's per-channel min and max (reduced elsewhere)."""
        lo, hi = np.asarray(lo).reshape(-1), np.asarray(hi).reshape(-1)
        if self.min is None:
            self.min, self.max = lo.astype(np.float64), hi.astype(np.float64)
        else:
            np.minimum(self.min, lo, out=self.min)
            np.maximum(self.max, hi, out=self.max)
        return True

    @property
    def is_empty(self) -> bool:
        return self.min is None

    def encoding(self, bitwidth: int, symmetric: bool, per_channel: bool = False) -> Encoding:
        if self.is_empty:
            raise ValueError("The observer saw no data; run calibration before computing encodings.")
        if per_channel:
            return Encoding.from_range(self.min, self.max, bitwidth, symmetric)
        return Encoding.from_range(self.min.min(), self.max.max(), bitwidth, symmetric)


class _HistogramObserver(HistogramCollector, abc.ABC):
    """Observer whose encoding minimises an expected error on the histogram."""

    name = ""
    gamma = 1.0
    # "uniform": mass spread over each bin (default); "midpoint": AIMET's model.
    bin_model = "uniform"

    def encoding(self, bitwidth: int, symmetric: bool, per_channel: bool = False) -> Encoding:
        if self.is_empty:
            raise ValueError(
                "The observer saw no data; run calibration before computing encodings."
            )
        check_bitwidth(bitwidth)
        if not self.finite:
            return Encoding.from_range(self.min, self.max, bitwidth, symmetric)  # raises
        # Channels without a grid only ever held one value: min/max is exact for them.
        fallback = Encoding.from_range(self.min, self.max, bitwidth, symmetric)
        if not per_channel and self.min.size > 1:
            fallback = Encoding.from_range(self.min.min(), self.max.max(), bitwidth, symmetric)
        inputs = self._search_inputs(per_channel)
        if inputs is None or (inputs[-1] is not None and not inputs[-1].any()):
            return _squeeze(fallback) if not per_channel else fallback
        a, b, p, low, high, mask = inputs
        a, b, p = compact(a, b, p, low, high)
        lo, hi = np.minimum(low, 0.0), np.maximum(high, 0.0)
        scale, offset = self._search(a, b, p, lo, hi, bitwidth, symmetric)
        if mask is not None:
            all_scale = np.array(fallback.scale, dtype=np.float64).reshape(-1)
            all_offset = np.array(fallback.offset, dtype=np.float64).reshape(-1)
            all_scale[mask], all_offset[mask] = scale, offset
            scale, offset = all_scale, all_offset
        result = Encoding(scale, offset, bitwidth, symmetric)
        return result if per_channel else _squeeze(result)

    def _cost_best(self, a, b, p, scale, offset, levels):
        index = cheapest(a, b, p, scale, offset, levels, self.gamma, self.bin_model == "midpoint")
        rows = np.arange(scale.shape[0])
        return scale[rows, index], offset[rows, index]

    @abc.abstractmethod
    def _search(self, a, b, p, lo, hi, bitwidth, symmetric):
        """The best (scale, offset) per channel among this observer's candidates."""


def _squeeze(encoding: Encoding) -> Encoding:
    """A one-channel (or scalar) encoding as a per-tensor one (0-d arrays)."""
    return Encoding(
        np.asarray(np.reshape(encoding.scale, -1)[0], dtype=np.float64),
        np.asarray(np.reshape(encoding.offset, -1)[0], dtype=np.float64),
        encoding.bitwidth,
        encoding.is_symmetric,
    )


def _symmetric_candidates(lo, hi, bitwidth, fractions):
    magnitude = np.maximum(np.maximum(-lo, hi), MIN_RANGE)
    top = 2 ** (bitwidth - 1) - 1
    scale = (magnitude / top)[:, None] * fractions[None, :]
    return scale, np.full_like(scale, -(2 ** (bitwidth - 1)))


class SqnrObserver(_HistogramObserver):
    """AIMET's TF-enhanced search: the grid minimising rounding error plus 3x the
    saturation error on the histogram.

    Candidates (N = 2**bitwidth - 1, observed range [min(0, min), max(0, max)]):

    - asymmetric: steps f·Δ_obs, f = 1/16 … 17/16, times offsets -N + N·i/20,
      i = 0..20; each grid is clipped to the observed range and its step and
      (integer, zero-exact) offset recomputed; plus the min/max grid itself.
    - symmetric: steps f·M/(2**(b-1) - 1), f = 0.01 … 1.01 (101 values), offset -2**(b-1).

    Unlike AIMET, the cost spreads each bin's mass over the bin instead of
    putting it on the midpoint (`bin_model = "midpoint"` restores that), and the
    bins are clipped to the exact running min/max.
    """

    name = "tf_enhanced"
    gamma = 3.0

    def _search(self, a, b, p, lo, hi, bitwidth, symmetric):
        levels = 2**bitwidth - 1
        if symmetric:
            scale, offset = _symmetric_candidates(lo, hi, bitwidth, np.linspace(0.01, 1.01, 101))
            return self._cost_best(a, b, p, scale, offset, levels)
        observed_scale, observed_offset = grids_from_ranges(lo, hi, levels)
        factors = np.arange(1, 18) / 16.0
        offsets = -levels + levels * np.arange(21) / 20.0
        step = observed_scale[:, None, None] * factors[None, :, None]
        low = np.maximum(step * offsets[None, None, :], lo[:, None, None])
        high = np.minimum(step * (offsets[None, None, :] + levels), hi[:, None, None])
        channels = lo.size
        low, high = low.reshape(channels, -1), high.reshape(channels, -1)
        scale, offset = grids_from_ranges(low, high, levels)
        degenerate = high - low <= 0
        scale = np.where(degenerate, observed_scale[:, None], scale)
        offset = np.where(degenerate, observed_offset[:, None], offset)
        scale = np.concatenate([observed_scale[:, None], scale], axis=1)
        offset = np.concatenate([observed_offset[:, None], offset], axis=1)
        return self._cost_best(a, b, p, scale, offset, levels)


class MseObserver(_HistogramObserver):
    """The grid minimising the expected squared error on the histogram (gamma = 1).

    Candidates (observed range [lo, hi] = [min(0, min), max(0, max)]):

    - asymmetric: ranges [lo·f_a, hi·f_b] for f_a, f_b on 24 geometric steps
      from 0.03 to 1 (576 pairs; only one side varies when the other is 0),
      then a refinement: 9 x 9 steps of 1/4 of the coarse ratio around the
      best pair (capped at 1). Offsets are integers, so zero stays exact.
    - symmetric: magnitudes M·f for 100 geometric f from 0.01 to 1, offset -2**(b-1).
    """

    name = "mse"
    gamma = 1.0
    _coarse = np.geomspace(0.03, 1.0, 24)
    _symmetric = np.geomspace(0.01, 1.0, 100)

    def _search(self, a, b, p, lo, hi, bitwidth, symmetric):
        levels = 2**bitwidth - 1
        if symmetric:
            scale, offset = _symmetric_candidates(lo, hi, bitwidth, self._symmetric)
            return self._cost_best(a, b, p, scale, offset, levels)
        channels = lo.size
        ones = np.ones(1)
        f_lo = ones if np.all(lo == 0) else self._coarse
        f_hi = ones if np.all(hi == 0) else self._coarse
        pairs = np.stack(np.meshgrid(f_lo, f_hi, indexing="ij"), axis=-1).reshape(-1, 2)
        pairs = np.broadcast_to(pairs, (channels,) + pairs.shape)
        best = self._best_pair(a, b, p, lo, hi, pairs, levels)
        ratio = self._coarse[1] / self._coarse[0]
        fine = ratio ** (np.arange(-4, 5) / 4.0)
        f_lo = np.minimum(best[:, 0:1] * fine, 1.0) if f_lo.size > 1 else np.ones((channels, 1))
        f_hi = np.minimum(best[:, 1:2] * fine, 1.0) if f_hi.size > 1 else np.ones((channels, 1))
        pairs = np.stack(
            [np.repeat(f_lo, f_hi.shape[1], axis=1), np.tile(f_hi, (1, f_lo.shape[1]))], axis=-1
        )
        best = self._best_pair(a, b, p, lo, hi, pairs, levels)
        return grids_from_ranges(lo * best[:, 0], hi * best[:, 1], levels)

    def _best_pair(self, a, b, p, lo, hi, pairs, levels):
        low, high = lo[:, None] * pairs[..., 0], hi[:, None] * pairs[..., 1]
        scale, offset = grids_from_ranges(low, high, levels)
        index = cheapest(a, b, p, scale, offset, levels, self.gamma, self.bin_model == "midpoint")
        return pairs[np.arange(lo.size), index]


OBSERVERS = {"min_max": MinMaxObserver, "tf_enhanced": SqnrObserver, "mse": MseObserver}


def make_observer(name: str, channel_axes=(-1,)):
    """A new observer by registry name (see `OBSERVERS`)."""
    try:
        cls = OBSERVERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown observer {name!r}; valid observers are: {', '.join(sorted(OBSERVERS))}."
        ) from None
    return cls(channel_axes)
