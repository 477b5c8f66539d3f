"""Paired float and quantized activations at every node, in one pass per batch.

One Keras model holds three paths over the same layers: the float reference
(the transformed float graph with every quantizer off), the accumulated path
(the whole model quantized) and, for each quantized node, its isolated output
(only that node quantized, fed the float path's input). A batch through that
model gives all three at every node, with no sub-model per node. The per-layer
errors are reduced inside the model (sums per sample), so only a few numbers
per node and sample come back unless full tensors are asked for.

Example:

```python
paired = PairedActivations(info.float_graph, info.plan, info.encodings)
errors = paired.errors(batches)            # node -> NodeError
errors["conv1"].sqnr_isolated_db
pairs = paired.run(batches[0])             # node -> Pair of full tensors
```
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops

from mct_logger.diagnostics import metrics
from mct_logger.quantization.memory import elements_per_sample  # noqa: F401  (re-exported)
from mct_logger.graph.ir import Graph, TensorRef
from mct_logger.graph.clone import LayerCloner, clone_layer, copy_layer_state
from mct_logger.quantization.reduction import sample_stride
from mct_logger.quantization.quantsim import (
    NodeEncodings,
    QuantizerFactory,
    compile_inference,
    run_over_batches,
)

# Per-sample sums the model computes for each node, in this order.
SUMS = ("ff", "dd_acc", "dd_iso", "fq_acc", "qq_acc", "fq_iso", "qq_iso")


@dataclasses.dataclass
class Pair:
    float: np.ndarray
    accumulated: np.ndarray
    isolated: np.ndarray


@dataclasses.dataclass
class NodeError:
    """Float-vs-quantized error of one node's output over all batches seen.

    Per-sample arrays hold one value per sample, in data order.
    """

    elements_per_sample: int
    sums: dict  # name in SUMS -> per-sample float64 array
    histogram: np.ndarray | None = None  # counts of the accumulated output, if asked for

    @property
    def samples(self) -> int:
        return len(self.sums["ff"])

    def _total(self, key):
        return float(np.sum(self.sums[key]))

    @property
    def sqnr_accumulated_db(self) -> float:
        return float(metrics.sqnr_from_powers(self._total("ff"), self._total("dd_acc")))

    @property
    def sqnr_isolated_db(self) -> float:
        return float(metrics.sqnr_from_powers(self._total("ff"), self._total("dd_iso")))

    @property
    def mse_accumulated(self) -> float:
        """Mean squared error per element (not per batch, unlike AIMET's)."""
        return self._total("dd_acc") / (self.samples * self.elements_per_sample)

    @property
    def mse_isolated(self) -> float:
        return self._total("dd_iso") / (self.samples * self.elements_per_sample)

    def cosine_per_sample(self, path: str = "accumulated") -> np.ndarray:
        key = "acc" if path == "accumulated" else "iso"
        return metrics.cosine_from_products(
            self.sums[f"fq_{key}"], self.sums["ff"], self.sums[f"qq_{key}"])

    def mean_cosine(self, path: str = "accumulated") -> float:
        """`cosine_per_sample` averaged over the samples (NaN without samples)."""
        cosine = self.cosine_per_sample(path)
        return float(np.mean(cosine)) if cosine.size else float("nan")

    def sqnr_per_sample_db(self, path: str = "accumulated") -> np.ndarray:
        key = "dd_acc" if path == "accumulated" else "dd_iso"
        return metrics.sqnr_from_powers(self.sums["ff"], self.sums[key])


class PairedActivations:
    """Float, accumulated and isolated outputs of the chosen nodes.

    Args:
        graph: the transformed float graph (the reference).
        plan: node -> NodePlan, as PTQ decided.
        encodings: node -> NodeEncodings for the quantizers.
        nodes: the nodes to report; default every node with a quantizer.
        quantized_graph: the graph the quantized paths run, when it differs from
            the reference in weights only (e.g. bias-corrected); default `graph`.
        histogram_edges: node -> bin edges (evenly spaced); `errors` then also
            counts the accumulated (quantized) output into those bins, in-graph.

    `model` is the Keras model with all three paths; `set_quantizers_enabled`
    works on it (the accumulated and isolated paths share each node's quantizers).
    """

    def __init__(self, graph: Graph, plan: dict, encodings: dict[str, NodeEncodings], nodes=None,
                 quantized_graph: Graph | None = None, histogram_edges: dict | None = None):
        self.graph = graph
        self.quantized_graph = quantized_graph or graph
        if list(self.quantized_graph.nodes) != list(graph.nodes):
            raise ValueError(
                "quantized_graph must have the same nodes as graph (it may differ in weights only)."
            )
        self.nodes = list(nodes) if nodes is not None else [
            n for n, p in plan.items() if p.quantized and graph.nodes[n].has_single_float_output
        ]
        unknown = [n for n in self.nodes if n not in graph.nodes]
        if unknown:
            raise KeyError(f"Nodes {unknown} are not in graph {graph.name!r}.")
        self._outputs, inputs = self._build(graph, plan, encodings)
        flat = [self._outputs[n][k] for n in self.nodes for k in range(3)]
        self.model = keras.Model(inputs, flat, name=f"{graph.name}_paired")
        self._histogram_nodes = [n for n in self.nodes if n in (histogram_edges or {})]
        counters = {n: HistogramCounts(histogram_edges[n]) for n in self._histogram_nodes}
        self.stats_model = keras.Model(
            inputs,
            [pair_sums(*self._outputs[n]) for n in self.nodes]
            + [counters[n](self._outputs[n][1]) for n in self._histogram_nodes],
            name=f"{graph.name}_pair_sums",
        )
        self._run_full = compile_inference(self.model)
        self._run_sums = compile_inference(self.stats_model)
        self._elements = {n: elements_per_sample(graph.nodes[n]) for n in self.nodes}

    def _build(self, graph: Graph, plan: dict, encodings: dict):
        factory = QuantizerFactory(graph, plan, encodings)
        quantized_clones: dict[int, object] = {}
        cloner = LayerCloner()
        used = cloner.used_names
        f, q, iso = {}, {}, {}
        model_inputs = {}
        for node in graph:
            if node.is_input:
                x = cloner.model_input(node)
                model_inputs[node.name] = x
                quantizer = factory.activation(node)
                xq = quantizer(x) if quantizer is not None else x
                f[TensorRef(node.name, 0)], q[TensorRef(node.name, 0)] = x, xq
                iso[node.name] = xq
                continue
            float_outs, layer = cloner.call(node, f)
            quantized_layer = factory.weights(node, self._quantized_clone(node, layer, quantized_clones, used))
            quantizer = factory.activation(node)
            q_outs = node.call(quantized_layer, q)
            if quantizer is not None:
                q_outs = [quantizer(q_outs[0])] + q_outs[1:]
            for i, (a, b) in enumerate(zip(float_outs, q_outs)):
                f[TensorRef(node.name, i)], q[TensorRef(node.name, i)] = a, b
            if node.name in self.nodes:
                isolated = node.call(quantized_layer, f)[0]
                iso[node.name] = quantizer(isolated) if quantizer is not None else isolated
        inputs = [model_inputs[n] for n in graph.input_names]
        outputs = {n: (f[TensorRef(n, 0)], q[TensorRef(n, 0)], iso[n]) for n in self.nodes}
        return outputs, inputs

    def _quantized_clone(self, node, float_layer, clones, used):
        """The layer the quantized paths call: the float one, unless its weights differ."""
        source = self.quantized_graph.nodes[node.name]
        if source.layer is node.layer:
            return float_layer
        if id(source.layer) not in clones:
            clone = clone_layer(source, used)
            ref = node.inputs[0]
            clone.build(self.graph.nodes[ref.node].output_shapes[ref.index])
            copy_layer_state(source.layer, clone)
            clones[id(source.layer)] = clone
        return clones[id(source.layer)]

    def _feed(self, batch):
        return list(batch)  # the paired models take their inputs as a list

    def run(self, batch: list[np.ndarray]) -> dict[str, Pair]:
        """Full float, accumulated and isolated tensors of every reported node."""
        values = [keras.ops.convert_to_numpy(v) for v in self._run_full(self._feed(batch))]
        return {
            n: Pair(*values[3 * i: 3 * i + 3]) for i, n in enumerate(self.nodes)
        }

    def errors(self, batches) -> dict[str, NodeError]:
        """Per-node errors over `batches`, one forward pass per batch."""
        collected: dict[str, list] = {n: [] for n in self.nodes}
        counts = {n: 0.0 for n in self._histogram_nodes}
        for _, values in run_over_batches(self._run_sums, batches, self._feed):
            for n, v in zip(self.nodes, values):
                collected[n].append(v)
            for n, v in zip(self._histogram_nodes, values[len(self.nodes):]):
                counts[n] = counts[n] + v[0]
        result = {}
        for n, parts in collected.items():
            stacked = np.concatenate(parts, axis=0) if parts else np.zeros((0, len(SUMS)))
            result[n] = NodeError(
                elements_per_sample=self._elements[n],
                sums={k: stacked[:, i] for i, k in enumerate(SUMS)},
                histogram=counts.get(n),
            )
        return result


def pair_sums(f, q, i):
    """Per-sample sums of products of the float, accumulated and isolated outputs:
    (samples, 7) float64 in `SUMS` order.

    Each sample is first divided by the largest magnitude s of its float output
    and the products summed in float32, then scaled back by s^2 in float64:
    squares of float32 values above ~1e19 would overflow float32 (and the SQNR,
    MSE and cosine derived from the sums turn Inf or NaN), while float64
    arithmetic over whole tensors costs several times more.

    Concrete (eager) tensors take a NumPy path with the same arithmetic: one
    BLAS dot product per sum and sample, which reads each value without
    writing a product tensor (several times faster than the tensor ops), and
    no division unless a sample's unscaled sums overflow.
    """
    if not any(isinstance(t, keras.KerasTensor) or _symbolic(t) for t in (f, q, i)):
        return _pair_sums_numpy(*(np.asarray(t) for t in (f, q, i)))  # no copy
    f, q, i = (ops.cast(t, "float32") for t in (f, q, i))
    axes = tuple(range(1, len(f.shape)))

    def total(x):
        return ops.sum(x, axis=axes) if axes else x

    scale = ops.max(ops.abs(f), axis=axes, keepdims=True) if axes else ops.abs(f)
    scale = ops.where(ops.isfinite(scale) & (scale > 0), scale, ops.ones_like(scale))
    f, q, i = f / scale, q / scale, i / scale
    d_acc, d_iso = f - q, f - i
    sums = ops.stack(
        [total(f * f), total(d_acc * d_acc), total(d_iso * d_iso),
         total(f * q), total(q * q), total(f * i), total(i * i)],
        axis=1,
    )
    square = ops.cast(ops.reshape(scale, (-1, 1)), "float64") ** 2
    return ops.cast(sums, "float64") * square


def _symbolic(t) -> bool:
    """Whether `t` is a tensor inside a traced function (no concrete value)."""
    if keras.config.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(t, tf.Tensor) and not tf.executing_eagerly()


def _pair_sums_numpy(f, q, i) -> np.ndarray:
    """`pair_sums` of concrete arrays (see there), row by row with BLAS dots.

    A row is summed unscaled first and scaled only if a sum overflowed: the
    largest |f| costs two more passes over the row, needed only for values
    whose squares pass float32's range (above ~1e19).
    """
    samples = f.shape[0] if f.ndim else 1
    f, q, i = (np.asarray(t, np.float32).reshape(samples, -1) for t in (f, q, i))
    sums = np.zeros((samples, len(SUMS)), np.float64)
    buffer = np.empty(f.shape[1], np.float32)
    for k in range(samples):
        a, b, c = f[k], q[k], i[k]
        sums[k] = _row_sums(a, b, c, buffer)
        if np.all(np.isfinite(sums[k])):
            continue
        scale = max(float(a.max()), -float(a.min())) if a.size else 0.0  # no |a| copy
        if np.isfinite(scale) and scale > 0:
            sums[k] = _row_sums(*(x / np.float32(scale) for x in (a, b, c)), buffer)
            sums[k] *= scale * scale
    return sums


def _row_sums(a, b, c, buffer) -> list:
    """The `SUMS` of one sample's float32 rows (`buffer`: scratch of their size)."""
    np.subtract(a, b, out=buffer)
    d_acc = float(np.dot(buffer, buffer))
    np.subtract(a, c, out=buffer)
    d_iso = float(np.dot(buffer, buffer))
    return [np.dot(a, a), d_acc, d_iso, np.dot(a, b), np.dot(b, b), np.dot(a, c), np.dot(c, c)]


class HistogramCounts(keras.layers.Layer):
    """`histogram_counts` of a tensor on fixed edges, as a layer of a Keras model."""

    def __init__(self, edges, **kwargs):
        super().__init__(**kwargs)
        self.edges = edges

    def call(self, x):
        return histogram_counts(x, self.edges)

    def compute_output_shape(self, input_shape):
        return (1, len(self.edges) - 1)


def histogram_counts(x, edges):
    """Counts of `x`'s values in fixed, evenly spaced bins (outside values go to
    the edge bins), over the whole batch: shape (1, bins) float32.

    A tensor larger than `reduction.SAMPLE_ELEMENTS` per batch is counted on
    every s-th row of its channels (`reduction.sample_stride`), each count
    standing for s values.
    """
    lo, bins = float(edges[0]), len(edges) - 1
    scale = bins / (float(edges[-1] - edges[0]) or 1.0)
    stride = sample_stride(tuple(x.shape))
    if stride > 1:
        x = ops.reshape(x, (-1, x.shape[-1]))[::stride]
    if keras.config.backend() == "tensorflow":  # one fused kernel, much faster than bincount
        import tensorflow as tf

        counts = tf.histogram_fixed_width(tf.cast(x, "float32"), [lo, lo + bins / scale],
                                          nbins=bins)
        return tf.reshape(tf.cast(counts, "float32") * stride, (1, bins))
    index = ops.floor((ops.cast(x, "float32") - lo) * scale)
    index = ops.cast(ops.clip(index, 0, bins - 1), "int32")
    counts = ops.bincount(ops.reshape(index, (-1,)), minlength=bins)
    return ops.reshape(ops.cast(counts[:bins], "float32") * stride, (1, bins))
