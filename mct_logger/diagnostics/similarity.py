"""The similarity stage: float reference vs quantized model along the network.

It runs after the quantized model is built and measures, at every quantized
node: cosine similarity per sample (for the per-sample plots), SQNR in dB
accumulated and isolated, and the histogram of the quantized output on the same
bins as the float one, so the two can sit side by side.

Example:

```python
result = analyze_similarity(info.float_graph, info.plan, info.encodings, batches)
result.cosine[3]           # per-node cosine of sample 3, in network order
result.sqnr_isolated_db    # node -> dB
```
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from mct_logger.diagnostics.activations import (
    SUMS,
    NodeError,
    elements_per_sample,
    histogram_counts,
    pair_sums,
)
from mct_logger.graph.ir import Graph, TensorRef
from mct_logger.quantization.encodings import quantize_dequantize
from mct_logger.quantization.layers import (
    broadcast_shape,
    linear_forward,
    linear_weights,
    named_weights,
)
from mct_logger.diagnostics.weight_error import weight_quantization_rows


@dataclasses.dataclass
class SimilarityResult:
    """Float-vs-quantized comparison of the quantized model.

    Attributes:
        nodes: the compared nodes, in network order.
        cosine: (samples, nodes) cosine similarity per sample, accumulated error,
            for the first `samples` representative samples; (0, 0) without nodes.
        cosine_isolated: the same with only each node quantized.
        sqnr_accumulated_db, sqnr_isolated_db: node -> SQNR over those samples.
        quantized_histograms: node -> (edges, counts) of the quantized output on the
            float histogram's bins, counted over the per-sample comparison's samples
            and scaled to the float histogram's total (over all representative data).
        num_samples: samples in the per-sample comparison.
        weights: one row per quantized kernel, float vs quantized weights
            (`weight_quantization.weight_quantization_rows`).
        plan / encodings: the compared model's `NodePlan`s and `NodeEncodings` by
            node name (set by the PTQ engine, so a listener needs no earlier result).
        config: the run's QuantizationConfig fields (`config_to_dict(...)["config"]`),
            set by the PTQ engine for the logs' run labels; None when not given.
        adaround: node -> the AdaRound columns of the layer table
            (`AdaRoundResult.columns`) when the run learned its rounding, else None.
    """

    nodes: list
    cosine: np.ndarray
    cosine_isolated: np.ndarray
    sqnr_accumulated_db: dict
    sqnr_isolated_db: dict
    quantized_histograms: dict
    num_samples: int
    weights: list = dataclasses.field(default_factory=list)
    version: int = 1
    plan: dict | None = None
    encodings: dict | None = None
    config: dict | None = None
    adaround: dict | None = None


def working_set_bytes(graph: Graph, samples: int = 20) -> int:
    """About the bytes `analyze_similarity` holds at once: every node's float and
    quantized output and their float64 difference for `samples` samples, plus
    32 MiB of eager kernels (an upper estimate, for `utils.address_space`)."""
    elements = sum(int(np.prod([d or 1 for d in shape[1:]]))
                   for node in graph for shape in node.output_shapes)
    return elements * samples * (4 + 4 + 8) + (32 << 20)


def analyze_similarity(
    graph: Graph,
    plan: dict,
    encodings: dict,
    batches: list,
    samples: int = 20,
    float_histograms: dict | None = None,
    quantized_graph: Graph | None = None,
) -> SimilarityResult:
    """Compares float and quantized outputs of every quantized node.

    Args:
        graph: the float reference graph; `quantized_graph` the one the quantized
            model runs, if its weights differ (bias correction).
        batches: representative batches; the first `samples` samples give the
            per-sample comparison, the SQNR and the quantized histograms.
        float_histograms: node -> (edges, counts) of the float outputs (over all
            representative data); the quantized outputs of the same pass are
            counted on the same edges and scaled to the same total.
    """
    quantized_graph = quantized_graph or graph
    nodes = [n for n, p in plan.items()
             if p.quantized and graph.nodes[n].has_single_float_output]
    # No quantized node (e.g. every layer kept in float): an empty comparison.
    float_histograms = {n: h for n, h in (float_histograms or {}).items()
                        if n in nodes and encodings[n].activation is not None}
    counted: dict = {}
    errors = _compare_eagerly(graph, quantized_graph, plan, encodings,
                              first_samples(batches, samples), nodes,
                              {n: h[0] for n, h in float_histograms.items()}, counted
                              ) if nodes else {}

    def per_sample(path):
        columns = [errors[n].cosine_per_sample(path) for n in nodes]
        return np.stack(columns, axis=1) if columns else np.zeros((0, 0))

    return SimilarityResult(
        nodes=nodes,
        cosine=per_sample("accumulated"),
        cosine_isolated=per_sample("isolated"),
        sqnr_accumulated_db={n: errors[n].sqnr_accumulated_db for n in nodes},
        sqnr_isolated_db={n: errors[n].sqnr_isolated_db for n in nodes},
        quantized_histograms={
            n: (edges, _scaled(counted[n], float(np.sum(counts))))
            for n, (edges, counts) in float_histograms.items() if n in counted
        },
        num_samples=errors[nodes[0]].samples if nodes else 0,
        weights=weight_quantization_rows(quantized_graph, plan, encodings),
    )


def _compare_eagerly(graph, quantized_graph, plan, encodings, batches, nodes,
                     histogram_edges=None, counted=None) -> dict:
    """Float, accumulated and isolated outputs of `nodes`, reduced to per-sample sums.

    The same comparison as `PairedActivations`, run eagerly on a few samples
    with the grids as constants and the kernels fake-quantized once: building
    and tracing a three-path Keras model would cost more than running this.
    The accumulated (quantized) output of each node in `histogram_edges` is
    also counted on those edges, into `counted` (node -> counts).
    """
    histogram_edges = histogram_edges or {}
    kernels = _quantized_kernels(quantized_graph, plan, encodings)
    convs = {id(n.layer): _EagerConv.of(n.layer)
             for g in (graph, quantized_graph) for n in g if not n.is_input}
    float_kernels = {id(n.layer): convs[id(n.layer)].cast(n.layer.kernel)
                     for n in graph if not n.is_input and convs[id(n.layer)] is not None}
    report = set(nodes)
    collected = {n: [] for n in nodes}
    # each value is dropped after its last consumer: peak memory is the widest
    # cut through the network, not every activation of every path
    last_use = {}
    for position, node in enumerate(graph):
        for ref in node.inputs:
            last_use[ref.node] = position
    for batch in batches:
        f, q = {}, {}
        for position, node in enumerate(graph):
            name = node.name
            grid = encodings[name].activation if name in encodings else None
            if node.is_input:
                x = keras.ops.convert_to_tensor(batch[graph.input_names.index(name)])
                f[TensorRef(name, 0)] = x
                q[TensorRef(name, 0)] = isolated = _fixed_fake_quantize(x, grid)
            else:
                quantized_node = quantized_graph.nodes[name]
                conv = convs[id(node.layer)]
                float_outs = (node.call(node.layer, f) if conv is None else
                              [conv(f[node.inputs[0]], float_kernels[id(node.layer)])])
                q_outs = call_quantized(quantized_node, kernels, q, convs)
                q_outs[0] = _fixed_fake_quantize(q_outs[0], grid)
                for i, (a, b) in enumerate(zip(float_outs, q_outs)):
                    f[TensorRef(name, i)], q[TensorRef(name, i)] = a, b
                if name in report:
                    if id(quantized_node.layer) in kernels or quantized_node.layer is not node.layer:
                        isolated = call_quantized(quantized_node, kernels, f, convs)[0]
                    else:  # the same layer on the same (float) inputs: its float output
                        isolated = float_outs[0]
                    isolated = _fixed_fake_quantize(isolated, grid)
            if name in histogram_edges:
                counts = np.asarray(histogram_counts(q[TensorRef(name, 0)], histogram_edges[name]),
                                    np.float64)[0]
                counted[name] = counted.get(name, 0.0) + counts
            if name in report:
                sums = pair_sums(f[TensorRef(name, 0)], q[TensorRef(name, 0)], isolated)
                collected[name].append(np.asarray(keras.ops.convert_to_numpy(sums), np.float64))
            for ref in {r.node for r in node.inputs} | {name}:
                if last_use.get(ref, -1) <= position:
                    for values in (f, q):
                        for key in [k for k in values if k.node == ref]:
                            del values[key]
    errors = {}
    for name, parts in collected.items():
        stacked = np.concatenate(parts, axis=0)
        errors[name] = NodeError(
            elements_per_sample=elements_per_sample(graph.nodes[name]),
            sums={k: stacked[:, i] for i, k in enumerate(SUMS)},
        )
    return errors


def _quantized_kernels(graph, plan, encodings) -> dict:
    """id(layer) -> {kernel name: fake-quantized kernel}, for every quantized kernel."""
    result = {}
    for node in graph:
        encoding = encodings.get(node.name)
        if encoding is None or not encoding.weights:
            continue
        values = node.weights()
        result[id(node.layer)] = {
            kernel: keras.ops.convert_to_tensor(fake_quantized_kernel(
                values[kernel], grid, plan[node.name].weights[kernel].channel_axes))
            for kernel, grid in encoding.weights.items()
        }
    return result


def fake_quantized_kernel(value, grid, channel_axes):
    # float32 grid: the same arithmetic as the fake-quant layers, bit for bit
    grid32 = dataclasses.replace(grid, scale=np.float32(grid.scale), offset=np.float32(grid.offset))
    return quantize_dequantize(value, grid32, broadcast_shape(value.shape, channel_axes))


def call_quantized(node, kernels, values, convs=None):
    """The node's outputs with its fake-quantized kernels (a linear layer runs its own
    computation on them, through `convs[id(layer)]` when there is an `_EagerConv`;
    any other weight layer reads them through a StatelessScope)."""
    quantized = kernels.get(id(node.layer))
    if quantized is None:
        return node.call(node.layer, values)
    conv = (convs or {}).get(id(node.layer))
    if conv is not None:
        return [conv(values[node.inputs[0]], quantized["kernel"])]
    if linear_weights(node.layer):
        return [linear_forward(node.layer, values[node.inputs[0]], quantized)]
    variables = named_weights(node.layer)
    with keras.StatelessScope(state_mapping=[(variables[k], v) for k, v in quantized.items()]):
        return node.call(node.layer, values)


class _EagerConv:
    """`linear_forward` of a plain Conv2D or DepthwiseConv2D as one TensorFlow kernel
    call plus the bias, with the layer's attributes and bias prepared once: Keras'
    per-call conversions cost 0.27 ms a call against 0.11 ms for the kernels
    themselves at 48x48x16, and a small network's comparison is mostly such calls.
    The same kernels as Keras' (TensorFlow backend) run, so outputs are bit for bit
    the layer's. `of` gives None for anything else (other backends, subclasses,
    dilation, groups, channels-first, Keras-quantized or LoRA layers)."""

    @classmethod
    def of(cls, layer):
        plain = type(layer) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
        if (not plain or keras.config.backend() != "tensorflow" or not linear_weights(layer)
                or layer.data_format != "channels_last" or tuple(layer.dilation_rate) != (1, 1)
                or getattr(layer, "groups", 1) != 1 or layer.padding not in ("same", "valid")
                or getattr(layer, "lora_enabled", False)):
            return None
        return cls(layer)

    def __init__(self, layer):
        import tensorflow as tf

        self.dtype = layer.compute_dtype
        self.op = (tf.raw_ops.DepthwiseConv2dNative
                   if isinstance(layer, keras.layers.DepthwiseConv2D) else tf.raw_ops.Conv2D)
        self.strides = [1, *layer.strides, 1]
        self.padding = layer.padding.upper()
        self.bias = None if layer.bias is None else self.cast(layer.bias)
        linear = layer.activation in (None, keras.activations.linear)
        self.activation = None if linear else layer.activation

    def cast(self, value):
        return keras.ops.cast(keras.ops.convert_to_tensor(value), self.dtype)

    def __call__(self, x, kernel):
        import tensorflow as tf

        x = x if x.dtype == self.dtype else tf.cast(x, self.dtype)
        kernel = kernel if kernel.dtype == self.dtype else tf.cast(kernel, self.dtype)
        out = self.op(input=x, filter=kernel, strides=self.strides, padding=self.padding)
        out = out if self.bias is None else tf.nn.bias_add(out, self.bias)
        return out if self.activation is None else self.activation(out)


def first_samples(batches, samples: int) -> list:
    """The first `samples` samples of `batches`, as batches, read no further than
    needed: from the first batch a `CalibrationBatches` keeps when it holds
    enough, else from a new pass stopped at the last batch needed (a data
    pipeline may decode each batch it yields)."""
    if samples <= 0:
        return []
    first = getattr(batches, "first", None)
    if first is not None and len(first[0]) >= samples:
        return [[x[:samples] for x in first]]
    chosen, left = [], samples
    for batch in batches:
        chosen.append([x[:left] for x in batch])
        left -= len(batch[0])
        if left <= 0:
            break
    return chosen


def _scaled(counts, total: float):
    """`counts` scaled to sum to `total` (the float histogram's, over all data)."""
    present = float(np.sum(counts))
    return counts * (total / present) if present > 0 else counts


def _fixed_fake_quantize(x, grid):
    """Fake quantization on a fixed grid, with the grid as constants (None: as is).

    Keras' fused `fake_quant_with_min_max_vars` (one kernel under TensorFlow,
    2.3x faster than `fake_quantize`'s four passes over a 20x112x112x96
    output); a per-tensor grid under TensorFlow goes straight to the same
    kernel with the range as attributes (`fake_quant_with_min_max_args`),
    without Keras' conversions and reshapes of the range (0.6 ms a call at
    96x96, as much as the kernel). Every grid holds zero on an integer step, so the kernel's nudged
    range is the grid itself; it rounds ties up (`floor(v + 0.5)`) where the
    quantizer layers round them to even, so about 5 values in a million land
    one step apart, far below what cosine or SQNR resolve. Computed in
    float32 like `ActivationQuantizer` (at 16 bits x / scale overflows
    float16); the result keeps x's dtype.
    """
    if grid is None:
        return x
    ops = keras.ops
    dtype = keras.backend.standardize_dtype(x.dtype)
    x32 = x if dtype == "float32" else ops.cast(x, "float32")
    if keras.config.backend() == "tensorflow" and not grid.per_channel:
        import tensorflow as tf  # the range as attributes: one op, no range tensors

        y = tf.quantization.fake_quant_with_min_max_args(
            x32, min=float(np.float32(grid.min)), max=float(np.float32(grid.max)),
            num_bits=grid.bitwidth)
    else:
        y = keras.quantizers.fake_quant_with_min_max_vars(
            x32, np.float32(grid.min), np.float32(grid.max),
            num_bits=grid.bitwidth, axis=-1 if grid.per_channel else None)
    return y if dtype == "float32" else ops.cast(y, dtype)
