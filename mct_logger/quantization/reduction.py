"""In-graph statistics of one calibration batch, so only small arrays leave the graph.

For a layer output x of shape (B, ..., C), seen as N = B * ... rows of C
channels, the compiled calibration pass returns, instead of x itself:

    min_c = min_n x[n, c],   max_c = max_n x[n, c],   sum_c = sum_n x[n, c],
    finite = all(isfinite(x)),   rows = N,

and, for each histogram on a per-channel uniform grid (lower edge lo_c,
inverse bin width inv_c, `bins` bins), the counts of

    slot(x[n, c]) = clip(floor((x[n, c] - lo_c) * inv_c), -1, bins) + 1

(slot 0 below the grid, slot bins + 1 above it), as one bincount over
`c * (bins + 2) + slot`: what `HistogramCollector` bins in NumPy, up to float32
rounding at bin edges. Outputs larger than `SAMPLE_ELEMENTS` (1M) values per batch
(early layers of 224x224 networks hold 38M at batch 32) are binned on every
s-th row only, s the smallest stride bringing a batch of `NOMINAL_BATCH` under
that size and sharing no factor with the width (so no column is favoured);
each sampled count stands for s values. Min, max and sums always cover every
value. A (1, 112, 112, 96) float32 output is 4.8 MB; its
statistics at 512 bins are 0.2 MB, whatever the batch size.

Example:

```python
stats = batch_statistics(x, [_grid_of(collector)], bins=512)
minimum, maximum, sums, finite, rows, counts = stats
```
"""

from __future__ import annotations

import numpy as np
from keras import ops

STATISTICS = ("min", "max", "sum", "finite", "rows")
SAMPLE_ELEMENTS = 1 << 20  # values of one output binned per batch, at most (about)
NOMINAL_BATCH = 32


def sample_stride(shape) -> int:
    """Row stride of the histogram sample of an output of this shape (1: every row)."""
    import math

    per_sample = math.prod(d or 1 for d in shape[1:])
    stride = max(1, -(-per_sample * NOMINAL_BATCH // SAMPLE_ELEMENTS))
    width = shape[-2] if len(shape) >= 3 and shape[-2] else 1
    while stride > 1 and math.gcd(stride, width) != 1:
        stride += 1
    return stride


def reducible(shape) -> bool:
    """Whether an output of this shape (batch first) reduces per channel in-graph:
    at least one axis besides the batch, and a known channel count."""
    return len(shape) >= 2 and shape[-1] is not None


def batch_statistics(x, grids, bins: int) -> list:
    """`[min, max, sum, finite, rows] + [counts per grid]` of `x` over all but its last axis.

    Args:
        x: a (B, ..., C) tensor (any float dtype; reduced in float32).
        grids: `(lo, inverse width)` pairs of (C,) float32 arrays, one per
            histogram; a channel with inverse 0 (no grid yet) is binned on
            its own batch range, [min, max] in `bins` bins.
        bins: bins per channel of every grid.

    Returns:
        min, max, sum: (C,) float32; finite: scalar bool; rows: scalar int32;
        one (C, bins + 2) int32 array of slot counts per grid (sampled rows
        counted `sample_stride` times each).
    """
    import keras

    if keras.config.backend() == "tensorflow":
        return _batch_statistics_tf(x, grids, bins)
    x = ops.cast(x, "float32")
    channels = x.shape[-1]
    flat = ops.reshape(x, (-1, channels))
    result = [ops.min(flat, axis=0), ops.max(flat, axis=0), ops.sum(flat, axis=0),
              ops.all(ops.isfinite(flat)), ops.shape(flat)[0]]
    if not grids:
        return result
    offsets = ops.arange(channels, dtype="int32") * (bins + 2)
    stride = sample_stride(tuple(x.shape))
    sample = flat[::stride] if stride > 1 else flat
    own_inverse = bins / ops.maximum(result[1] - result[0], 1e-30)
    for lo, inverse in grids:
        lo = ops.where(inverse > 0, lo, result[0])
        inverse = ops.where(inverse > 0, inverse, own_inverse)
        position = ops.floor((sample - lo) * inverse)
        position = ops.where(ops.isnan(position), 0.0, position)  # NaN: the batch is discarded
        slot = ops.cast(ops.clip(position, -1.0, float(bins)), "int32") + 1 + offsets
        counts = ops.bincount(ops.reshape(slot, (-1,)), minlength=channels * (bins + 2))
        counts = ops.reshape(counts, (channels, bins + 2))
        result.append(counts * stride if stride > 1 else counts)
    return result


def _batch_statistics_tf(x, grids, bins: int) -> list:
    """`batch_statistics` in TensorFlow ops: the same numbers with a fifth of the
    graph nodes, which is what tracing a large model's calibration pass costs."""
    import tensorflow as tf

    channels = x.shape[-1]
    flat = tf.reshape(tf.cast(x, tf.float32), (-1, channels))
    low, high = tf.reduce_min(flat, 0), tf.reduce_max(flat, 0)
    result = [low, high, tf.reduce_sum(flat, 0), tf.reduce_all(tf.math.is_finite(flat)),
              tf.shape(flat)[0]]
    if not grids:
        return result
    stride = sample_stride(tuple(x.shape))
    sample = flat[::stride] if stride > 1 else flat
    offsets = tf.range(channels, dtype=tf.int32) * (bins + 2) + 1
    own_inverse = bins / tf.maximum(high - low, 1e-30)
    size = channels * (bins + 2)
    for lo, inverse in grids:
        has_grid = inverse > 0
        lo, inverse = tf.where(has_grid, lo, low), tf.where(has_grid, inverse, own_inverse)
        # NaN positions land in slot 0 (clip keeps NaN; the cast makes it 0 - 1 + 1);
        # a batch holding NaN is discarded anyway
        position = tf.clip_by_value(tf.floor((sample - lo) * inverse), -1.0, float(bins))
        slot = tf.reshape(tf.cast(position, tf.int32) + offsets, [-1])
        slot = tf.clip_by_value(slot, 0, size - 1)
        counts = tf.reshape(tf.math.bincount(slot, minlength=size, maxlength=size), (channels, -1))
        result.append(counts * stride if stride > 1 else counts)
    return result


class ReducedCollection:
    """Feeds observers from a collector model's outputs reduced in-graph.

    Args:
        collector: a Keras model whose outputs are `num_outputs` model outputs,
            then one output per observed node, in `observed` order.
        observed: node names; `shapes` their output shapes.
        observers: node -> observer (`HistogramCollector` subclasses get counts,
            others min and max); `statistics`: node -> `ChannelStatistics` or None.

    A node whose output does not reduce per channel (`reducible`) comes back whole
    and goes through the observers' NumPy `update`. A batch that starts or widens
    a channel's grid has that channel's counts re-binned onto the new grid
    (`_on_grid`), so every batch costs one pass.
    """

    def __init__(self, collector, num_outputs: int, observed, shapes, observers,
                 statistics=None, bins: int = 512):
        from mct_logger.quantization.observers import HistogramCollector

        self.num_outputs = num_outputs
        self.observed = list(observed)
        self.observers = observers
        self.statistics = statistics
        self.bins = bins
        self.reduced = {n: reducible(s) for n, s in zip(self.observed, shapes)}
        self._channels = {n: s[-1] for n, s in zip(self.observed, shapes) if reducible(s)}
        self.owners = {}  # node -> the histograms that need counts
        for n in self.observed:
            owners = [observers[n]] if isinstance(observers[n], HistogramCollector) else []
            stats = statistics[n] if statistics is not None else None
            if stats is not None and not stats._shared:
                owners.append(stats.histograms)
            self.owners[n] = owners
        self.passes = 0  # forward passes run (batches plus re-binning passes)

        self._run = _compile(_Reduce(collector, num_outputs, self.observed, self.reduced, bins))

    def _grids(self) -> dict:
        return {n: [_grid_of(owner) if owner.min is not None else self._empty_grid(n)
                    for owner in self.owners[n]] if self.reduced[n] else []
                for n in self.observed}

    def _empty_grid(self, name):
        channels = self._channels[name]
        return np.zeros(channels, np.float32), np.zeros(channels, np.float32)

    def update(self, inputs) -> None:
        """Runs one batch and feeds every observer (and statistics) from it."""
        outputs = self._forward(inputs, self._grids())
        for name, out in zip(self.observed, outputs):
            if not self.reduced[name]:
                value = np.asarray(out)
                if value.dtype.kind == "V" or (value.dtype.kind == "f" and value.dtype.itemsize < 4):
                    value = value.astype(np.float32)
                self.observers[name].update(value)
                if self.statistics is not None:
                    self.statistics[name].update(value)
                continue
            minimum, maximum, sums, finite, rows = (np.asarray(v) for v in out[:5])
            if not bool(finite):  # as NumPy's min/max would say: NaN somewhere
                minimum = np.where(np.isfinite(minimum), np.nan, minimum)
                maximum = np.where(np.isfinite(maximum), np.nan, maximum)
            observer = self.observers[name]
            owners = self.owners[name]
            if observer not in owners:
                observer.observe_range(minimum, maximum)
            for k, owner in enumerate(owners):
                before = _grid_copy(owner)
                if owner.observe_range(minimum, maximum):
                    _add_slots(owner, _on_grid(owner, before, np.asarray(out[5 + k]), minimum,
                                              maximum), int(rows))
            if self.statistics is not None:
                self.statistics[name].add_sums(sums, int(rows))

    def _forward(self, inputs, grids) -> list:
        import keras

        self.passes += 1
        values = self._run(inputs, grids)
        return [keras.ops.convert_to_numpy(v) if not isinstance(v, (list, tuple))
                else [keras.ops.convert_to_numpy(t) for t in v] for v in values]


class _Reduce:
    """The collector's observed outputs reduced by `batch_statistics`, one object per
    collector: TensorFlow counts traces per function object, and closures of one
    function would all count as retraces of it (and warn)."""

    def __init__(self, collector, num_outputs, observed, reduced, bins):
        self.collector, self.num_outputs = collector, num_outputs
        self.observed, self.reduced, self.bins = observed, reduced, bins

    def __call__(self, inputs, grids):
        values = self.collector(inputs, training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        return [batch_statistics(value, grids[name], self.bins) if self.reduced[name] else value
                for name, value in zip(self.observed, values[self.num_outputs:])]


def _grid_of(collector) -> tuple[np.ndarray, np.ndarray]:
    """`(lower edge, 1 / bin width)` per channel of a `HistogramCollector`, float32,
    for `batch_statistics`; 0 and 0 for a channel without a grid."""
    grid = collector._has_grid
    lo = np.where(grid, collector._lo, 0.0).astype(np.float32)
    inverse = np.where(grid, 1.0 / np.where(grid, collector._width, 1.0), 0.0)
    return lo, inverse.astype(np.float32)


def _add_slots(collector, slots: np.ndarray, rows: int) -> None:
    """Adds one batch binned on the collector's grid after `observe_range` of that
    batch: `slots` (C, bins + 2) with an underflow and an overflow slot per
    channel, folded into the edge bins; `rows` values per channel."""
    counts = np.asarray(slots, dtype=np.float64)[:, 1:-1].copy()
    counts[:, 0] += slots[:, 0]
    counts[:, -1] += slots[:, -1]
    grid = collector._has_grid
    collector._counts[grid] += counts[grid]
    collector.count += int(rows)


def _grid_copy(collector):
    """`(lo, width, has_grid)` of a histogram before a batch (None before the first)."""
    if collector._has_grid is None:
        return None
    return collector._lo.copy(), collector._width.copy(), collector._has_grid.copy()


def _on_grid(collector, before, slots, minimum, maximum):
    """A batch's slot counts (binned on the grid `before` it, or on its own range for
    a channel without a grid) moved onto the collector's grid after the batch.

    Channels whose grid the batch left alone keep their counts as they are. For
    the others the counts are re-binned the way `HistogramCollector` re-bins
    its own counts when a grid widens: each bin's mass spread uniformly over
    its part of the batch's [min, max] (below-grid and above-grid slots over
    [min, old lower edge] and [old upper edge, max]), cumulated, and read at
    the new edges.
    """
    bins = collector.bins
    slots = np.asarray(slots, dtype=np.float64)
    if before is None:
        old_lo = np.zeros_like(collector._lo)
        old_width = np.zeros_like(collector._width)
        old_grid = np.zeros_like(collector._has_grid)
    else:
        old_lo, old_width, old_grid = before
    moved = collector._has_grid & ~(old_grid & (old_lo == collector._lo)
                                    & (old_width == collector._width))
    if not moved.any():
        return slots
    result = slots.copy()
    steps = np.arange(bins + 1)
    target = collector._lo[:, None] + collector._width[:, None] * steps
    fresh = moved & ~old_grid  # binned on their own batch range: one uniform grid each
    if fresh.any():
        from mct_logger.quantization.grid_search import cdf

        low, high = minimum[fresh].astype(np.float64), maximum[fresh].astype(np.float64)
        width = np.maximum(high - low, 1e-30) / bins
        counts = slots[fresh, 1:-1].copy()
        counts[:, 0] += slots[fresh, 0]
        counts[:, -1] += slots[fresh, -1]
        curve = cdf(low, width, counts, low, high, target[fresh])
        _store(result, fresh, curve, counts.sum(axis=1))
    for c in np.flatnonzero(moved & old_grid):  # widened: few channels, rarely
        low, high = float(minimum[c]), float(maximum[c])
        grid = old_lo[c] + old_width[c] * steps
        edges = np.clip(np.concatenate([[low], grid, [high]]), low, high)
        cumulative = np.concatenate([[0.0], np.cumsum(slots[c])])
        # np.interp needs increasing points: where clipped edges repeat, the
        # cumulative count is the last one there
        points = np.unique(edges)
        curve = np.interp(target[c], points, _last_at(cumulative, edges, points))
        _store(result, np.array([c]), curve[None], cumulative[-1:])
    return result


def _store(result, channels, curve, totals):
    """Counts from cumulative `curve` (k, bins + 1) into slot rows, the mass below
    the first or beyond the last edge (rounding) folded into the edge bins."""
    counts = np.diff(curve, axis=1)
    counts[:, 0] += curve[:, 0]
    counts[:, -1] += totals - curve[:, -1]
    rows = np.zeros((len(curve), counts.shape[1] + 2))
    rows[:, 1:-1] = np.maximum(counts, 0.0)
    result[channels] = rows


def _last_at(cumulative, edges, points):
    """The cumulative count at each distinct edge (the last one where edges repeat)."""
    index = np.searchsorted(edges, points, side="right") - 1
    return cumulative[index]


def _compile(fn):
    import keras

    if keras.config.backend() != "tensorflow":
        return fn
    import tensorflow as tf

    return tf.function(fn, reduce_retracing=True, autograph=False)
