"""Bias correction: remove the per-channel mean shift that weight quantization adds to
a layer's output, by subtracting it from the layer's bias (Nagel et al., ICCV 2019).

Modes (for Conv1D/2D/3D, DepthwiseConv1D/2D and Dense layers with quantized kernels):

- **empirical**: representative data runs through the float reference and the
  weight-quantized model; `E = mean over batch and spatial axes of (y_q - y_fp)`
  per output channel, on the pre-activation output, and `b <- b - E`. Layers are
  corrected in waves by depth, so each layer is measured with every layer
  before it already corrected (one pass over the data per wave).
- **analytical**: no data. Where the layer's input comes from a layer with a
  folded batch norm (through ReLU, ReLU6 or no activation, padding, identity
  or average pooling), that input is about `N(beta, gamma^2)` per channel put
  through the activation, with beta and gamma rescaled by CLE and shifted by
  high-bias folding, so `E[x]` has a closed form (the rectified / clipped
  Gaussian mean) and `E = sum_spatial(W_q - W)^T E[x]`, each kernel tap
  weighted by the share of output positions where it reads real input (not
  "same" padding). Other layers are left alone (the result says why).
- **hybrid**: analytical where a batch norm precedes, empirical elsewhere.

Example:

```python
model_bc, result = correct_bias(model, x_calibration, QuantizationConfig(weight_bits=4),
                                mode="hybrid")
model_q, info = keras_post_training_quantization(model_bc, x_calibration, config)
```
"""

from __future__ import annotations

import dataclasses
import logging

import keras
import numpy as np
from keras import ops

from mct_logger.data import sources as data_lib
from mct_logger.graph import layer_kinds
from mct_logger.graph.ir import Graph, Node, read_model
from mct_logger.quantization.layers import linear_weights, quantizable_weights
from mct_logger.quantization.plan import NodePlan
from mct_logger.quantization.quantsim import (
    NodeEncodings,
    QuantizerFactory,
    compile_inference,
    run_over_batches,
    quantizers,
)
from mct_logger.techniques.batch_norm_folding import fold_batch_norms, rebuild_layer
from mct_logger.graph.layer_kinds import fused_activation_kind, homogeneous_kind
from mct_logger.techniques.cle_results import output_distribution
from mct_logger.techniques.expected_shift import analytical_shift, expected_activation
from mct_logger.utils.json_safe import json_number, json_numbers

logger = logging.getLogger("mct_logger")

MODES = ("empirical", "analytical", "hybrid")
# Links through which a batch norm's per-channel mean still describes the input.
_MEAN_PRESERVING = ("identity", "pad", "avg_pool", "relu", "relu6")


# ---------------------------------------------------------------- results


@dataclasses.dataclass
class LayerCorrection:
    """The correction of one layer: `correction` (per output channel) was
    subtracted from its bias; it is the estimated mean output shift."""

    node: str
    method: str  # "empirical" | "analytical"
    correction: np.ndarray
    preceding: str | None = None  # analytical: the batch-normed layer used for E[x]
    activation: str | None = None  # analytical: "relu" | "relu6" | "none"

    def as_dict(self) -> dict:
        return {
            "node": self.node,
            "method": self.method,
            "correction": json_numbers(self.correction),
            "mean_abs_correction": json_number(np.mean(np.abs(self.correction)))
            if self.correction.size else 0.0,
            "preceding": self.preceding,
            "activation": self.activation,
        }


@dataclasses.dataclass
class BiasCorrectionResult:
    """The bias-correction stage's result.

    Attributes:
        mode: "empirical", "analytical" or "hybrid".
        corrections: node -> LayerCorrection, in graph order.
        skipped: node -> why a weight layer was not corrected.
        num_samples: representative samples used (0 for analytical).
        passes: forward passes over the data (float reference included).
        plan / encodings: the run's `NodePlan`s and `NodeEncodings` by node name
            (set by the PTQ engine, so a listener needs no earlier result).
    """

    mode: str
    corrections: dict = dataclasses.field(default_factory=dict)
    skipped: dict = dataclasses.field(default_factory=dict)
    num_samples: int = 0
    passes: int = 0
    version: int = 1
    plan: dict | None = None
    encodings: dict | None = None

    def to_tables(self) -> dict:
        """`{"bias_correction": {"mode", "num_samples", "passes", "layers": [...],
        "skipped": {node: reason}}}` (JSON-able)."""
        return {
            "bias_correction": {
                "mode": self.mode,
                "num_samples": self.num_samples,
                "passes": self.passes,
                "layers": [c.as_dict() for c in self.corrections.values()],
                "skipped": dict(self.skipped),
            }
        }


# ---------------------------------------------------------------- graph facts


def _target_reason(graph: Graph, node: Node, plan) -> str | None:
    layer = node.layer
    if not isinstance(layer, layer_kinds.EQUALIZABLE):
        return f"{node.layer_class} is not a Conv, DepthwiseConv or Dense layer"
    if "kernel" not in plan.get(node.name, NodePlan()).weights:
        return "its kernel is not quantized"
    if not node.owns_weights or sum(n.layer is layer for n in graph) != 1:
        return "the layer is shared by several calls (one bias cannot fit them all)"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first data format"
    if getattr(layer, "groups", 1) != 1:
        return "grouped convolution"
    if len(node.inputs) != 1:
        return "the layer has several inputs"
    return None


def _preceding_batch_norm(graph: Graph, node: Node):
    """`(layer with a folded BN, activation)` feeding `node`, or `(None, why)`."""
    kinds = []
    current = graph.nodes[node.inputs[0].node]
    while True:
        if current.is_input:
            return None, "its input is a model input"
        if linear_weights(current.layer):
            distribution = output_distribution(current.info)
            if distribution is None:
                return None, f"its input comes from {current.name!r}, which had no batch norm"
            fused = fused_activation_kind(current.layer)
            if fused not in ("identity", "relu", "relu6"):
                return None, f"{current.name!r} applies an activation with no closed form"
            kinds.append(fused)
            break
        kind = homogeneous_kind(current.layer) if len(current.inputs) == 1 else None
        if kind not in _MEAN_PRESERVING:
            return None, (f"{current.name!r} ({current.layer_class}) between it and a "
                          "batch-normed layer has no closed-form mean")
        kinds.append(kind)
        current = graph.nodes[current.inputs[0].node]
    activation = "relu6" if "relu6" in kinds else "relu" if "relu" in kinds else "none"
    return current, activation


def _channel_axes(node: Node) -> tuple:
    rank = len(node.output_shapes[0])
    return tuple(range(rank - 1))


def _with_biases(graph: Graph, names) -> Graph:
    """A copy whose `names` layers all have a bias variable (zeros where they had none)."""
    graph = graph.copy()
    for name in names:
        node = graph.nodes[name]
        if getattr(node.layer, "bias", None) is not None:
            continue
        config = {**node.layer.get_config(), "use_bias": True}
        values = node.weights()
        channels = node.output_shapes[0][-1]
        values["bias"] = np.zeros(channels, dtype=values["kernel"].dtype)
        ref = node.inputs[0]
        layer = rebuild_layer(node.layer, config,
                              graph.nodes[ref.node].output_shapes[ref.index], values)
        graph.nodes[name] = dataclasses.replace(node, layer=layer)
    return graph


def _levels(graph: Graph, targets) -> dict[str, int]:
    """Depth of each target counted in targets only (1 = no target upstream)."""
    carried: dict[str, int] = {}
    levels = {}
    for node in graph:
        upstream = max((carried.get(r.node, 0) for r in node.inputs), default=0)
        if node.name in targets:
            levels[node.name] = upstream + 1
            carried[node.name] = upstream + 1
        else:
            carried[node.name] = upstream
    return levels


class _MeanModel:
    """Per-channel means of the targets' pre-activation outputs, float or weight-quantized."""

    def __init__(self, graph: Graph, targets, plan=None, encodings=None):
        captured = {}
        factory = QuantizerFactory(graph, plan, encodings) if plan is not None else None

        def make_layer(node, clone):
            inner = clone
            if node.name in targets:
                activation = clone.activation
                clone.activation = keras.activations.linear
                layer = factory.weights(node, clone) if factory else clone

                def call(*args, **kwargs):
                    pre = layer(*args, **kwargs)
                    captured[node.name] = pre
                    return pre if _is_linear(activation) else activation(pre)

                return call
            return factory.weights(node, inner) if factory else inner

        model = graph.to_keras(name=f"{graph.name}_bias_probe", make_layer=make_layer)
        self.targets = list(targets)
        outputs = [ops.mean(captured[n], axis=_channel_axes(graph.nodes[n])) for n in self.targets]
        self.model = keras.Model(model.inputs, outputs, name=f"{graph.name}_channel_means")
        self._run = compile_inference(self.model)
        self._layers = {n: q["weights"].layer for n, q in quantizers(self.model).items()
                        if "weights" in q}

    def means(self, batches) -> dict[str, np.ndarray]:
        totals = {n: 0.0 for n in self.targets}
        count = 0
        for batch, values in run_over_batches(self._run, batches):
            size = len(batch[0])
            for n, v in zip(self.targets, values):
                totals[n] = totals[n] + v * size
            count += size
        return {n: t / count for n, t in totals.items()}

    def set_bias(self, name: str, bias: np.ndarray) -> None:
        layer = self._layers[name]
        layer.bias.assign(bias.astype(keras.ops.convert_to_numpy(layer.bias).dtype))


def _is_linear(fn) -> bool:
    return getattr(fn, "__name__", "") == "linear"


def _weight_encodings(encodings, name):
    enc = encodings.get(name)
    if enc is None:
        return {}
    return enc.weights if isinstance(enc, NodeEncodings) else dict(enc)


# ---------------------------------------------------------------- public API


def correct_bias_graph(
    graph: Graph, plan: dict, encodings: dict, batches=None, mode: str = "empirical",
    float_graph: Graph | None = None,
) -> tuple[Graph, BiasCorrectionResult]:
    """Bias-corrects `graph` for the weight grids in `encodings`; returns a new graph.

    Args:
        graph: the graph to be quantized (batch norms folded, CLE applied).
        float_graph: the float reference the corrected means match (default
            `graph`): the graph before AdaRound set its kernels on the grids.
        plan: node -> NodePlan (`plan_quantization`).
        encodings: node -> NodeEncodings, or node -> {kernel name: Encoding}.
        batches: representative data as a list of batches (lists of arrays);
            needed by "empirical" and "hybrid".
        mode: "empirical", "analytical" or "hybrid".
    """
    if mode not in MODES:
        raise ValueError(f"bias correction mode {mode!r} is not one of {MODES} (or None).")
    result = BiasCorrectionResult(mode=mode)
    targets = []
    for node in graph:
        if not quantizable_weights(node.layer) or not node.owns_weights:
            continue
        reason = _target_reason(graph, node, plan)
        if reason is None and "kernel" not in _weight_encodings(encodings, node.name):
            reason = "no encoding for its kernel"
        if reason:
            result.skipped[node.name] = reason
        else:
            targets.append(node.name)
    graph = _with_biases(graph, targets)

    analytical: dict[str, tuple] = {}
    if mode in ("analytical", "hybrid"):
        for name in targets:
            source, why = _preceding_batch_norm(graph, graph.nodes[name])
            if source is None:
                if mode == "analytical":
                    result.skipped[name] = f"no analytical estimate: {why}"
            else:
                analytical[name] = (source, why)
    empirical = [n for n in targets if n not in analytical] if mode != "analytical" else []
    if empirical and not batches:
        raise ValueError(
            f"bias_correction={mode!r} needs representative data for layers "
            f"{empirical[:5]}; pass representative_data (or use 'analytical')."
        )

    biases = {n: np.asarray(keras.ops.convert_to_numpy(graph.nodes[n].layer.bias), np.float64)
              for n in targets}
    corrections: dict[str, LayerCorrection] = {}
    for name, (source, activation) in analytical.items():
        node = graph.nodes[name]
        beta, gamma = output_distribution(source.info)
        expected = expected_activation(beta, gamma, activation)
        ref = node.inputs[0]
        shift = analytical_shift(node, plan[name].weights["kernel"],
                                 _weight_encodings(encodings, name)["kernel"], expected,
                                 graph.nodes[ref.node].output_shapes[ref.index],
                                 float_graph.nodes[name] if float_graph is not None else None)
        corrections[name] = LayerCorrection(name, "analytical", shift, source.name, activation)

    if empirical:
        weight_plan = {n: NodePlan(weights=dict(plan[n].weights) if n in plan else {})
                       for n in graph.nodes}
        weight_encodings = {n: NodeEncodings(weights=_weight_encodings(encodings, n))
                            for n in graph.nodes if weight_plan[n].weights}
        reference = _MeanModel(float_graph or graph, empirical).means(batches)
        probe = _MeanModel(graph, empirical, weight_plan, weight_encodings)
        result.passes = 1
        for name, c in corrections.items():
            if name in probe._layers:
                probe.set_bias(name, biases[name] - c.correction)
        levels = _levels(graph, set(empirical))
        for level in sorted(set(levels.values())):
            measured = probe.means(batches)
            result.passes += 1
            for name in [n for n in empirical if levels[n] == level]:
                shift = measured[name] - reference[name]
                corrections[name] = LayerCorrection(name, "empirical", shift)
                probe.set_bias(name, biases[name] - shift)
        result.num_samples = data_lib.num_samples(batches)

    graph = graph.copy()
    for name in targets:
        if name not in corrections:
            continue
        node = graph.nodes[name]
        values = node.weights()
        values["bias"] = (biases[name] - corrections[name].correction).astype(values["bias"].dtype)
        ref = node.inputs[0]
        layer = rebuild_layer(node.layer, node.layer.get_config(),
                              graph.nodes[ref.node].output_shapes[ref.index], values)
        graph.nodes[name] = dataclasses.replace(node, layer=layer)
    result.corrections = {n: corrections[n] for n in targets if n in corrections}
    logger.info("Bias correction (%s): %d layers corrected, %d skipped",
                mode, len(result.corrections), len(result.skipped))
    return graph, result


def correct_bias(
    model: keras.Model,
    representative_data=None,
    config=None,
    mode: str = "empirical",
    *,
    equalization=None,
):
    """Standalone bias correction; returns a new float model with corrected biases and the result.

    The corrected model has its batch norms folded (quantization acts on folded
    kernels); quantize it with the same `config` and `bias_correction=None`.
    For a model from `equalize_model`, pass its result as `equalization`: the
    batch-norm statistics analytical correction needs are the ones it recorded.

    Args:
        model: a Functional or Sequential Keras model; not modified.
        representative_data: as for `keras_post_training_quantization`; needed
            by "empirical" and "hybrid".
        config: the `QuantizationConfig` whose weight grids to correct for
            (default W8 per-channel).
        mode: "empirical", "analytical" or "hybrid".
        equalization: the `CrossLayerEqualizationResult` of `equalize_model`
            when `model` is its equalized model, else None.

    Returns:
        `(corrected_model, BiasCorrectionResult)`.

    Raises:
        ValueError: an unknown `mode`, or "empirical"/"hybrid" without
            `representative_data`.
    """
    from mct_logger.quantization.config import QuantizationConfig
    from mct_logger.quantization.plan import plan_quantization
    from mct_logger.quantization.quantsim import weight_encodings

    from mct_logger.techniques.cle_results import CrossLayerEqualizationResult
    from mct_logger.utils.arguments import check_model

    check_model(model)
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}.")
    config = QuantizationConfig() if config is None else config
    if not isinstance(config, QuantizationConfig):
        raise TypeError(f"config must be a QuantizationConfig, got {type(config).__name__}.")
    if equalization is not None and not isinstance(equalization, CrossLayerEqualizationResult):
        raise TypeError("equalization must be the CrossLayerEqualizationResult of "
                        f"equalize_model, got {type(equalization).__name__}.")
    graph = read_model(model)
    recorded = equalization.node_info if equalization is not None else {}
    for node in graph:
        if node.layer.name in recorded:
            node.info.update(recorded[node.layer.name])
    graph, _ = fold_batch_norms(graph)
    batches = None
    if representative_data is not None:
        batches = data_lib.load_batches(
            representative_data, data_lib.input_specs(graph), config.batch_size,
            max_samples=config.num_calibration_samples)
    elif mode != "analytical":
        raise ValueError(
            f"mode={mode!r} needs representative_data; pass typical inputs or use "
            "mode='analytical'."
        )
    plan = plan_quantization(graph, config)
    encodings = weight_encodings(graph, plan)
    corrected, result = correct_bias_graph(graph, plan, encodings, batches, mode)
    new_model = corrected.to_keras(name=f"{model.name}_bias_corrected")
    return new_model, result
