"""In-graph statistics of one calibration batch, so only small arrays leave the graph.

For a layer output x of shape (B, ..., C), seen as N = B * ... rows of C
channels, the compiled calibration pass returns, instead of x itself:

    min, max        over the whole tensor, or per channel (min_c = min_n x[n, c])
                    where a per-channel grid or the logs need them,
    sum_c = sum_n x[n, c]   only when per-channel means are kept (logs),
    size = N * C,
    x[::s]          a sample of the rows, s = `sample_stride` (1: every row).

TensorFlow's reductions propagate NaN, so a NaN anywhere makes the min and max
NaN, as NumPy's do. The host then gives each histogram the batch's exact range
first (`observe_range`, which starts or widens its grid) and bins the sample
on the grid that results, each sampled value standing for s values
(`HistogramCollector.add_sample`): no batch is ever binned twice or re-binned.
The stride brings an output of a batch of `NOMINAL_BATCH` under
`SAMPLE_ELEMENTS` values and shares no factor with the width (so no column is
favoured). Min, max and sums always cover every value. A (32, 112, 112, 96)
float32 output is 154 MB; what leaves the graph is 0.1 MB.

About five graph ops per output: tracing and the first run's graph
optimisation of a large network's calibration pass cost per op, so the
binning stays on the host.

Example:

```python
minimum, maximum, size, sample = batch_statistics(x, per_channel=False)
```
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

SAMPLE_ELEMENTS = 1 << 15  # values of one output binned per batch, at most (about)
NOMINAL_BATCH = 32


def sample_stride(shape) -> int:
    """Row stride of the histogram sample of an output of this shape (1: every row)."""
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


def batch_statistics(x, sums: bool = False, per_channel: bool = True) -> list:
    """`[min, max, size] (+ [sum]) + [sample]` of `x` over all but its last axis.

    Args:
        x: a (B, ..., C) tensor (any float dtype; reduced in float32).
        sums: whether to return the per-channel sums too.
        per_channel: False for the min and max of the whole tensor (one pass
            each over the data, faster than per channel).

    Returns:
        min, max: (C,) float32, or (1, 1) when not `per_channel`; size: scalar
        int32 (values in `x`); sum: (C,) float32; sample: (rows, C) float32,
        every `sample_stride(x.shape)`-th row of `x` seen as (N, C).
    """
    stride = sample_stride(tuple(x.shape))
    x = ops.cast(x, "float32")
    flat = ops.reshape(x, (-1, x.shape[-1]))
    if not per_channel:
        result = [ops.min(flat, keepdims=True), ops.max(flat, keepdims=True)]
    else:
        result = [_per_channel(ops.min, x, flat), _per_channel(ops.max, x, flat)]
    result.append(ops.size(flat))
    if sums:
        result.append(_per_channel(ops.sum, x, flat))
    result.append(flat[::stride] if stride > 1 else flat)
    return result


# Values per batch of `NOMINAL_BATCH` from which per-channel statistics reduce
# the inner axes first: below it one reduction is as fast and costs fewer ops.
INNER_FIRST = 1 << 22


def _per_channel(reduce, x, flat):
    """`reduce` over every axis but the last (`flat`: x seen as (N, C)). A large output reduces its inner
    axes first, then the batch: two to three times faster than over the rows
    of x seen as (N, C) (TensorFlow on CPU, e.g. 12 vs 26 ms for min, max and
    sum of 32x56x56x256)."""
    inner = tuple(range(1, len(x.shape) - 1))
    if not inner or math.prod(d or 1 for d in x.shape[1:]) * NOMINAL_BATCH < INNER_FIRST:
        return reduce(flat, axis=0)
    return reduce(reduce(x, axis=inner), axis=0)


def as_float32(value: np.ndarray) -> np.ndarray:
    """float16/bfloat16 outputs of mixed-precision layers as float32, so observers
    and statistics never overflow (float32 and float64 pass unchanged)."""
    if value.dtype.kind == "V" or (value.dtype.kind == "f" and value.dtype.itemsize < 4):
        return value.astype(np.float32)
    return value


class ReducedCollection:
    """Feeds observers from a collector model's outputs reduced in-graph.

    Args:
        collector: a Keras model whose outputs are `num_outputs` model outputs,
            then one output per observed node, in `observed` order.
        observed: node names; `shapes` their output shapes.
        observers: node -> observer (`HistogramCollector` subclasses get the
            sample binned, others min and max); `statistics`: node ->
            `ChannelStatistics` or None.

    A node whose output does not reduce per channel (`reducible`) comes back whole
    and goes through the observers' NumPy `update`.
    """

    def __init__(self, collector, num_outputs: int, observed, shapes, observers,
                 statistics=None):
        from mct_logger.quantization.histogram import HistogramCollector

        self.num_outputs = num_outputs
        self.observed = list(observed)
        self.observers = observers
        self.statistics = statistics
        self.reduced = {n: reducible(s) for n, s in zip(self.observed, shapes)}
        self._strides = {n: sample_stride(tuple(s)) for n, s in zip(self.observed, shapes)}
        self.owners = {}  # node -> the histograms that bin the sample
        for n in self.observed:
            owners = [observers[n]] if isinstance(observers[n], HistogramCollector) else []
            if statistics is not None:
                owners += [h for h in statistics[n].collectors() if h is not observers[n]]
            self.owners[n] = owners
        # Per-channel min and max only where a per-channel grid or the logs need them.
        self.per_channel = {
            n: statistics is not None or bool(tuple(getattr(observers[n], "channel_axes", (-1,))))
            for n in self.observed
        }
        self.passes = 0  # forward passes run
        self._run = _compile(_Reduce(collector, num_outputs, self.observed, self.reduced,
                                     statistics is not None, self.per_channel))

    def update(self, inputs) -> None:
        """Runs one batch and feeds every observer (and statistics) from it."""
        outputs = self._forward(inputs)
        for name, out in zip(self.observed, outputs):
            observer = self.observers[name]
            stats = self.statistics[name] if self.statistics is not None else None
            if not self.reduced[name]:
                value = as_float32(np.asarray(out))
                observer.update(value)
                if stats is not None:
                    stats.update(value)
                continue
            minimum = np.asarray(out[0]).reshape(-1)
            maximum, size, sample = np.asarray(out[1]).reshape(-1), int(out[2]), out[-1]
            rows = size // max(sample.shape[-1], 1)
            if observer not in self.owners[name]:
                observer.observe_range(*_cell_range(observer, minimum, maximum))
            for owner in self.owners[name]:
                per_channel = bool(tuple(owner.channel_axes))
                if owner.observe_range(*_cell_range(owner, minimum, maximum)):
                    owner.add_sample(sample if per_channel else sample.reshape(-1, 1),
                                     self._strides[name], rows if per_channel else size)
            if stats is not None:
                stats.add_batch(minimum, maximum, np.asarray(out[3]), rows)

    def _forward(self, inputs) -> list:
        import keras

        self.passes += 1
        values = self._run(inputs)
        return [keras.ops.convert_to_numpy(v) if not isinstance(v, (list, tuple))
                else [keras.ops.convert_to_numpy(t) for t in v] for v in values]


class _Reduce:
    """The collector's observed outputs reduced by `batch_statistics`, one object per
    collector: TensorFlow counts traces per function object, and closures of one
    function would all count as retraces of it (and warn)."""

    def __init__(self, collector, num_outputs, observed, reduced, sums, per_channel):
        self.collector, self.num_outputs = collector, num_outputs
        self.observed, self.reduced, self.sums = observed, reduced, sums
        self.per_channel = per_channel

    def __call__(self, inputs):
        values = self.collector(inputs, training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        return [batch_statistics(value, self.sums, self.per_channel[name])
                if self.reduced[name] else value
                for name, value in zip(self.observed, values[self.num_outputs:])]


def _cell_range(collector, minimum, maximum):
    """A batch's min and max as the collector's cells see them: per channel for
    a per-channel collector, one cell for a whole-tensor one (NaN propagates)."""
    if tuple(collector.channel_axes):
        return minimum, maximum
    return np.min(minimum, keepdims=True).reshape(1), np.max(maximum, keepdims=True).reshape(1)


def _compile(fn):
    import keras

    if keras.config.backend() != "tensorflow":
        return fn
    import tensorflow as tf

    return tf.function(fn, reduce_retracing=True, autograph=False)
