"""`HistogramCollector`: running per-channel min, max and fixed-grid histograms of a tensor.

The histogram observers (`observers`) search their grids on it; the logs draw
it. Each channel's grid of `bins` bins is fixed on its first non-constant batch
to 3x the range seen so far around its centre, and widened (old counts
re-binned through their cumulative counts) when a later batch leaves it.

Example:

```python
h = HistogramCollector(channel_axes=())       # one histogram for the whole tensor
for batch in outputs:
    h.update(batch)
edges, counts = h.histogram(per_channel=False)  # (1, 513), (1, 512)
```
"""

from __future__ import annotations

import numpy as np

from mct_logger.quantization.grid_search import cdf


def channels_last_2d(x: np.ndarray, channel_axes=(-1,)) -> np.ndarray:
    """Reshapes `x` to (elements, channels), channels in kernel order."""
    x = np.asarray(x)
    axes = sorted(a % x.ndim for a in channel_axes)
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, rest + axes)
    channels = int(np.prod([x.shape[a] for a in axes]))
    return moved.reshape(-1, channels)


HISTOGRAM_BINS = 512
# The grid spans this many times the first observed range, around its centre.
_ENLARGE = 3.0
# Grids reaching beyond this are binned in float64: in float32, value - lower edge
# (up to twice the grid's reach) would overflow.
_FLOAT32_SAFE = 1e37


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
        self._take(flat)  # NumPy's min and max propagate NaN: flat is finite

    def add_sample(self, rows: np.ndarray, weight: int = 1, values: int | None = None) -> None:
        """Bins (n, C) `rows` of a batch whose range `observe_range` has taken.

        Args:
            rows: the batch's values, or a sample of its rows, one column per channel.
            weight: how many of the batch's rows each sampled row stands for.
            values: values per channel in the whole batch (default n * weight).

        A sample holding NaN or Inf that the range missed (a reduction that
        skips NaN) is not binned: its channels' range becomes NaN, so the
        range check before any encoding names the node.
        """
        finite = np.isfinite(rows).all(axis=0)
        if not finite.all():
            self.min[~finite] = self.max[~finite] = np.nan
            return
        self._take(rows, weight, values)

    def _take(self, rows: np.ndarray, weight: int = 1, values: int | None = None) -> None:
        if self._has_grid.any():
            self._add(rows, weight)
        self.count += int(values) if values is not None else rows.shape[0] * weight

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

    def _add(self, flat, weight: int = 1):
        """Bins one batch: one bincount over channel-offset bin indices, each
        value counted `weight` times."""
        channels = flat.shape[1]
        bins = self.bins
        grid = self._has_grid
        lo = np.where(grid, self._lo, 0.0)
        width = np.where(grid, self._width, 1.0)
        inverse = np.where(grid, 1.0 / width, 0.0)
        # Each channel owns bins + 2 slots: an underflow slot, its bins, an
        # overflow slot (both folded back), so rounding never leaks into a
        # neighbour. float32 is exact enough unless the grid is tiny relative
        # to the values' magnitude, the slot numbers exceed 2**24 or the grid
        # reaches near float32's largest value (value - lo would overflow to Inf).
        edge = np.maximum(np.abs(lo), np.abs(lo + bins * width))
        exact32 = (flat.dtype.itemsize <= 4 and np.max(edge / width) < 1e4
                   and np.max(edge) < _FLOAT32_SAFE
                   and channels * (bins + 2) < 2**24)
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
        if weight != 1:
            counts *= weight
        if grid.all():
            self._counts += counts
        else:
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
