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

The two histogram observers also expose `histogram(per_channel)` for plots.

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
    cdf,
    cheapest,
    compact,
    grids_from_ranges,
)


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


# ---------------------------------------------------------------------------
# Histogram collection
# ---------------------------------------------------------------------------

HISTOGRAM_BINS = 512
# The grid spans this many times the first observed range, around its centre.
_ENLARGE = 3.0


class HistogramCollector:
    """Running per-channel min/max and a fixed-grid histogram of every channel.

    Each channel gets a uniform grid of `bins` bins, fixed on the first batch in
    which that channel has a non-zero range as `[c - 3(c - min), c + 3(max - c)]`
    (c = the centre of the range seen so far). Later batches are binned onto the
    same grid and their counts added. A batch outside the grid widens it to the
    union of the old grid and the 3x-enlarged running range; the old counts are
    re-binned by interpolating their cumulative counts (mass spread uniformly
    within each old bin, restricted to the range seen so far), so nothing is
    clipped. Counts are float64 because re-binning makes them fractional.

    A channel that has only ever held one value (e.g. a dead, all-zero channel)
    has no grid yet: its samples are kept as a point mass at that value and
    placed on the grid once the channel varies.

    A per-tensor observer is one channel (`channel_axes=()`). When an observer
    built per-channel is asked for a per-tensor result, the channel histograms
    are summed onto one common grid spanning [global min, global max] (see
    `histogram(per_channel=False)`); no separate per-tensor histogram is kept,
    so the update stays one pass.
    """

    def __init__(self, channel_axes=(-1,), bins: int = HISTOGRAM_BINS):
        self.channel_axes = tuple(channel_axes)
        self.bins = int(bins)
        self.min: np.ndarray | None = None  # (C,) running min, float64
        self.max: np.ndarray | None = None  # (C,) running max, float64
        self.count = 0  # samples seen per channel
        self._lo: np.ndarray | None = None  # (C,) lower grid edge
        self._width: np.ndarray | None = None  # (C,) bin width
        self._counts: np.ndarray | None = None  # (C, bins) float64
        self._has_grid: np.ndarray | None = None  # (C,) bool

    @property
    def is_empty(self) -> bool:
        return self.min is None

    @property
    def num_channels(self) -> int | None:
        return None if self.min is None else int(self.min.size)

    @property
    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.min)) and np.all(np.isfinite(self.max)))

    def update(self, x: np.ndarray) -> None:
        flat = channels_last_2d(x, self.channel_axes)
        if flat.size == 0:
            return
        if not np.issubdtype(flat.dtype, np.floating):
            flat = flat.astype(np.float64)
        if not self.observe_range(flat.min(axis=0), flat.max(axis=0)):
            return
        if self._has_grid.any():
            self._add(flat)
        self.count += flat.shape[0]

    def observe_range(self, batch_min: np.ndarray, batch_max: np.ndarray) -> bool:
        """Takes one batch's per-channel min and max: the running range, and each
        grid started or widened as that range needs. Returns False if the range
        is not finite (the batch is then not binned)."""
        batch_min = np.asarray(batch_min, dtype=np.float64).reshape(-1)
        batch_max = np.asarray(batch_max, dtype=np.float64).reshape(-1)
        channels = batch_min.size
        if self.min is None:
            self.min, self.max = batch_min.copy(), batch_max.copy()
            self._lo = np.zeros(channels)
            self._width = np.zeros(channels)
            self._counts = np.zeros((channels, self.bins))
            self._has_grid = np.zeros(channels, dtype=bool)
            previous_min = previous_max = self.min.copy()
        else:
            if channels != self.min.size:
                raise ValueError(
                    f"The observer was built for {self.min.size} channels but got a tensor "
                    f"with {channels} along axes {self.channel_axes}."
                )
            previous_min, previous_max = self.min.copy(), self.max.copy()
            np.minimum(self.min, batch_min, out=self.min)
            np.maximum(self.max, batch_max, out=self.max)
        if not self.finite:
            # NaN or Inf: the min/max keep it, so `encoding` raises Encoding's error.
            return False

        grid_hi = self._lo + self.bins * self._width
        widen = self._has_grid & ((batch_min < self._lo) | (batch_max > grid_hi))
        if widen.any():
            self._widen(widen, previous_min, previous_max)
        start = ~self._has_grid & (self.max > self.min)
        if start.any():
            self._start(start, previous_min)
        return True

    def _target_grid(self, mask):
        """(lo, hi) of the 3x-enlarged running range of the `mask` channels."""
        lo, hi = self.min[mask], self.max[mask]
        centre = 0.5 * (lo + hi)
        # Keep the grid resolvable relative to the values' magnitude.
        span = np.maximum(np.maximum(hi - lo, 1e-6 * np.abs(centre)), 1e-30)
        half = 0.5 * _ENLARGE * span
        return centre - half, centre + half

    def _start(self, mask, previous_min):
        lo, hi = self._target_grid(mask)
        self._lo[mask] = lo
        self._width[mask] = (hi - lo) / self.bins
        self._counts[mask] = 0.0
        if self.count:  # the samples seen so far all held one value
            index = ((previous_min[mask] - lo) / self._width[mask]).astype(np.intp)
            index = np.clip(index, 0, self.bins - 1)
            self._counts[np.flatnonzero(mask), index] = self.count
        self._has_grid[mask] = True

    def _widen(self, mask, previous_min, previous_max):
        target_lo, target_hi = self._target_grid(mask)
        old_lo, old_width = self._lo[mask], self._width[mask]
        lo = np.minimum(old_lo, target_lo)
        hi = np.maximum(old_lo + self.bins * old_width, target_hi)
        width = (hi - lo) / self.bins
        edges = lo[:, None] + width[:, None] * np.arange(self.bins + 1)
        cumulative = cdf(
            old_lo, old_width, self._counts[mask], previous_min[mask], previous_max[mask], edges
        )
        self._counts[mask] = np.maximum(np.diff(cumulative, axis=1), 0.0)
        self._lo[mask], self._width[mask] = lo, width

    def _add(self, flat):
        """Bins one batch: one bincount over channel-offset bin indices."""
        channels = flat.shape[1]
        bins = self.bins
        grid = self._has_grid
        lo = np.where(grid, self._lo, 0.0)
        width = np.where(grid, self._width, 1.0)
        inverse = np.where(grid, 1.0 / width, 0.0)
        # Each channel owns bins + 2 slots: an underflow slot, its bins, an
        # overflow slot (both folded back), so rounding never leaks into a
        # neighbour. float32 is exact enough unless the grid is tiny relative
        # to the values' magnitude or the slot numbers exceed 2**24.
        reach = np.max(np.maximum(np.abs(lo), np.abs(lo + bins * width)) / width)
        exact32 = flat.dtype.itemsize <= 4 and reach < 1e4 and channels * (bins + 2) < 2**24
        dtype = np.float32 if exact32 else np.float64
        slots = np.arange(channels, dtype=np.float64) * (bins + 2) + 1.0
        t = np.subtract(flat, lo.astype(dtype), dtype=dtype)
        t *= inverse.astype(dtype)
        t += slots.astype(dtype)
        index = t.astype(np.intp)
        del t
        hist = np.bincount(index.ravel(), minlength=channels * (bins + 2))
        hist = hist.reshape(channels, bins + 2)
        counts = hist[:, 1:-1].astype(np.float64)
        counts[:, 0] += hist[:, 0]
        counts[:, -1] += hist[:, -1]
        self._counts[grid] += counts[grid]

    def histogram(self, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(bin_edges (C, bins+1), counts (C, bins)); C = 1 when not `per_channel`.

        A channel without a grid (it only ever held one value v) is shown on
        [v - |v|, v + |v|] ([-1, 1] for v = 0) with all its samples in the bin
        holding v. Per-tensor (`per_channel=False`) sums the channels onto one
        grid spanning [global min, global max].
        """
        if self.is_empty:
            raise ValueError(
                "The observer saw no data; run calibration before reading its histogram."
            )
        if not self.finite:
            raise ValueError("The observed tensor holds NaN or Inf; it has no histogram.")
        if not per_channel and self.min.size > 1:
            edges, counts = self._merged()
            return edges[None], counts[None]
        steps = np.arange(self.bins + 1)
        edges = self._lo[:, None] + self._width[:, None] * steps
        counts = self._counts.copy()
        flat = ~self._has_grid
        if flat.any():
            value = self.min[flat]
            half = np.where(value == 0, 1.0, np.abs(value))
            edges[flat] = (value - half)[:, None] + (2 * half / self.bins)[:, None] * steps
            counts[flat] = 0.0
            counts[flat, self.bins // 2] = self.count
        return edges, counts

    def _merged(self) -> tuple[np.ndarray, np.ndarray]:
        """All channels summed onto `bins` bins over [global min, global max]."""
        low, high = float(self.min.min()), float(self.max.max())
        if high <= low:
            half = 1.0 if low == 0 else abs(low)
            edges = np.linspace(low - half, low + half, self.bins + 1)
            counts = np.zeros(self.bins)
            counts[self.bins // 2] = self.count * self.min.size
            return edges, counts
        edges = np.linspace(low, high, self.bins + 1)
        counts = np.zeros(self.bins)
        grid = self._has_grid
        if grid.any():
            cumulative = cdf(
                self._lo[grid],
                self._width[grid],
                self._counts[grid],
                self.min[grid],
                self.max[grid],
                np.broadcast_to(edges, (int(grid.sum()), edges.size)),
            )
            counts += np.maximum(np.diff(cumulative.sum(axis=0)), 0.0)
        if (~grid).any():
            index = ((self.min[~grid] - low) / (edges[1] - edges[0])).astype(np.intp)
            index = np.clip(index, 0, self.bins - 1)
            np.add.at(counts, index, float(self.count))
        return edges, counts

    def _search_inputs(self, per_channel: bool):
        """Bins for the search: (lower ends, upper ends, probabilities, min, max) of
        channels with a grid, each bin clipped to the channel's observed range,
        and the mask of those channels (None when merged per-tensor)."""
        if not per_channel and self.min.size > 1:
            edges, counts = self._merged()
            low, high = np.array([self.min.min()]), np.array([self.max.max()])
            if high[0] <= low[0]:
                return None
            return edges[None, :-1], edges[None, 1:], counts[None], low, high, None
        grid = self._has_grid
        lo, width = self._lo[grid, None], self._width[grid, None]
        low, high = self.min[grid], self.max[grid]
        steps = np.arange(self.bins)
        a = np.clip(lo + width * steps, low[:, None], high[:, None])
        b = np.clip(lo + width * (steps + 1), low[:, None], high[:, None])
        return a, b, self._counts[grid], low, high, grid


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
