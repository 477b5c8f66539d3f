"""Which quantizers each graph node gets, and why a node gets none.

Weight quantizers (per-channel by default) go on the kernels of Conv,
Depthwise, Separable, Transpose, Dense, EinsumDense and Embedding layers, and
of the layers inside MultiHeadAttention (query/key/value/output projections),
TimeDistributed, Bidirectional and LSTM/GRU/SimpleRNN (`quantizable_weights`).
Activation quantizers go on model inputs and on node outputs, except where a
hardware target would not requantize: an output consumed only by a following
ReLU-family activation (fused, as on INT8 targets), and layers that only move
values (reshape, pooling by max, padding, dropout...). Layers the engine does
not know stay in float and are reported once, by name.

Example:

```python
plan = plan_quantization(graph, QuantizationConfig())
plan["conv1"].weights["kernel"].bitwidth  # 8
plan["flatten"].note                      # "passes values through"
plan["attention"].weights                 # {"query/kernel": ..., "key/kernel": ..., ...}
```
"""

from __future__ import annotations

import dataclasses
import enum
import logging

import keras

from mct_logger.graph import layer_kinds
from mct_logger.graph.ir import Graph, Node
from mct_logger.quantization import litert_target
from mct_logger.quantization.config import QuantizationConfig
from mct_logger.quantization.layers import quantizable_weights, weight_variable

logger = logging.getLogger("mct_logger")

@dataclasses.dataclass(frozen=True)
class WeightSpec:
    channel_axes: tuple
    num_channels: int | None  # None: one grid for the whole kernel
    bitwidth: int
    is_symmetric: bool
    observer: str = "min_max"


@dataclasses.dataclass(frozen=True)
class ActivationSpec:
    bitwidth: int
    is_symmetric: bool
    per_channel: bool
    observer: str = "mse"


class PlanReason(enum.Enum):
    """Why a node's output has no activation quantizer (`NodePlan.reason`).

    Code branches on the reason; `NodePlan.note` is its human-readable detail.
    """

    KEPT_FLOAT = "kept_float"  # an override keeps the node in float
    UNSUPPORTED = "unsupported"  # the engine cannot quantize this layer: stays in float
    PASSTHROUGH = "passthrough"  # the output holds only values of the input
    NOT_FLOAT_TENSOR = "not_float_tensor"  # output is not one floating-point tensor
    INPUT_NOT_QUANTIZED = "input_not_quantized"  # quantize_inputs=False
    FUSED = "fused"  # fused into the following ReLU-family activation
    TARGET_UNSUPPORTED = "target_unsupported"  # the target cannot run it quantized: float


@dataclasses.dataclass
class NodePlan:
    """One node's quantizers.

    Attributes:
        weights: kernel attribute -> WeightSpec of each quantized kernel.
        activation: the output's ActivationSpec, or None.
        inner_activations: for a composite layer (a KerasHub transformer
            block), each kernel-holding sublayer's output (its path below the
            layer, "self_attention_layer/query") -> ActivationSpec, per tensor;
            the quantizer's full name is `node/point` (`inner_name`).
        reason: why the output has no quantizer (a PlanReason), None if it has one.
        note: the human-readable detail of `reason` ("" when there is none).
    """

    weights: dict = dataclasses.field(default_factory=dict)  # kernel name -> WeightSpec
    activation: ActivationSpec | None = None
    # A composite layer's sublayer outputs ("self_attention_layer/query") ->
    # their ActivationSpec (per tensor), quantized where the sublayer returns.
    inner_activations: dict = dataclasses.field(default_factory=dict)
    note: str = ""  # why the output has no quantizer, if it has none
    reason: PlanReason | None = None

    @property
    def quantized(self) -> bool:
        return bool(self.weights) or self.activation is not None or bool(self.inner_activations)


def inner_name(node: str, point: str) -> str:
    """The full name of a composite's sublayer-output quantizer:
    `transformer_layer_0/self_attention_layer/query`."""
    return f"{node}/{point}"


def sublayer_groups(p: NodePlan) -> list[str]:
    """A composite layer's quantized sublayer groups, in the layer's order: each
    point with its output quantizer or kernels ("self_attention_layer/query");
    [] for any other node. The QuantAnalyzer switches each group on its own
    (`inner_name(node, point)`), and an override can name one."""
    return layer_kinds.sublayer_groups(p.inner_activations, p.weights)


def plan_quantization(graph: Graph, config: QuantizationConfig,
                      report: bool = True) -> dict[str, NodePlan]:
    """Decides every node's weight and activation quantizers under `config`.

    `report=False` skips the warning that lists the layers staying in float
    (for a trial plan whose real counterpart reports them).
    """
    plan: dict[str, NodePlan] = {}
    unknown: list[str] = []
    used_patterns: set[str] = set()
    for node in graph:
        settings, matched = config.for_node(node.name)
        used_patterns.update(matched)
        p = NodePlan()
        kind = _kind(node)
        if settings["keep_float"]:
            p.reason, p.note = PlanReason.KEPT_FLOAT, f"kept in float by override {matched[-1]}"
            plan[node.name] = p
            continue
        if (config.target == "litert" and kind == "weights"
                and not litert_target.runs_int8(node.layer)):
            p.reason = PlanReason.TARGET_UNSUPPORTED
            p.note = (f"stays in float: LiteRT int8 (target='litert') does not run "
                      f"{node.layer_class} from this export")
            plan[node.name] = p
            continue
        if kind == "weights" and node.owns_weights:
            # a composite's sublayer groups ("self_attention/query": its kernels
            # and its output) take the overrides that name them (`for_inner`)
            groups = {}
            for point in layer_kinds.sublayer_outputs(node.layer):
                groups[point], inner_matched = config.for_inner(node.name, point)
                used_patterns.update(inner_matched)
            for name, axes in quantizable_weights(node.layer).items():
                own = groups.get(name.rpartition("/")[0], settings)
                if own["keep_float"]:
                    continue
                kernel = weight_variable(node.layer, name)
                channels = 1
                for a in axes:
                    channels *= int(kernel.shape[a])
                per_channel = own["weight_per_channel"] and not (
                    config.target == "litert" and isinstance(node.layer, keras.layers.Dense))
                p.weights[name] = WeightSpec(
                    channel_axes=tuple(axes),
                    num_channels=channels if per_channel else None,
                    bitwidth=own["weight_bits"],
                    is_symmetric=own["weight_symmetric"],
                    observer=own["weight_observer"],
                )
            for point, own in groups.items():
                if not own["keep_float"]:
                    p.inner_activations[point] = ActivationSpec(
                        bitwidth=own["activation_bits"],
                        is_symmetric=own["activation_symmetric"],
                        per_channel=False,
                        observer=own["activation_observer"],
                    )
        if kind == "unknown" and not node.has_single_float_output:
            p.reason = PlanReason.NOT_FLOAT_TENSOR
            p.note = "output is not a single floating-point tensor"
        elif kind == "unknown":
            unknown.append(f"{node.name} ({node.layer_class})")
            p.reason = PlanReason.UNSUPPORTED
            p.note = f"stays in float: the engine cannot quantize {node.layer_class}"
            if getattr(node.layer, "weights", None):
                p.note += (" (its weights are neither its own kernels of a known kind nor "
                           "held by sublayers the engine knows: Dense, EinsumDense, "
                           "Embedding, attention, convolutions)")
        elif kind == "passthrough":
            p.reason, p.note = PlanReason.PASSTHROUGH, "passes values through (no new grid)"
        elif not node.has_single_float_output:
            p.reason = PlanReason.NOT_FLOAT_TENSOR
            p.note = "output is not a single floating-point tensor"
        elif node.is_input and not config.quantize_inputs:
            p.reason = PlanReason.INPUT_NOT_QUANTIZED
            p.note = "model inputs are not quantized (quantize_inputs=False)"
        else:
            fused = _fused_activation(graph, node, config.target)
            if fused is not None:
                p.reason = PlanReason.FUSED
                p.note = f"fused with the following activation {fused}"
            else:
                p.activation = ActivationSpec(
                    bitwidth=settings["activation_bits"],
                    is_symmetric=settings["activation_symmetric"],
                    per_channel=settings["activation_per_channel"],
                    observer=settings["activation_observer"],
                )
        plan[node.name] = p
    _refuse_unused(graph, config, used_patterns)
    if unknown and report:
        logger.warning(
            "%d layer(s) stay in float because the engine cannot quantize them: %s",
            len(unknown), ", ".join(unknown),
        )
    return plan


def check_overrides(graph: Graph, config: QuantizationConfig) -> None:
    """Raises ValueError if an override pattern matches no node of `graph`
    (PTQ calls it right after reading the model, before any stage)."""
    used: set[str] = set()
    for node in graph:
        used.update(config.for_node(node.name)[1])
        for point in layer_kinds.sublayer_outputs(node.layer):
            used.update(config.for_inner(node.name, point)[1])
    _refuse_unused(graph, config, used)


def _refuse_unused(graph: Graph, config: QuantizationConfig, used: set) -> None:
    unused = [p for p in config.overrides if p not in used]
    if unused:
        raise ValueError(
            f"QuantizationConfig.overrides pattern(s) {unused} match no node of model "
            f"{graph.name!r}. Node names look like: {', '.join(list(graph.nodes)[:8])}..."
        )


def _kind(node: Node) -> str:
    return layer_kinds.kind(node.layer, node.is_input)


def is_relu_family(node: Node) -> bool:
    return layer_kinds.is_relu_family(node.layer)


def _fused_activation(graph: Graph, node: Node, target: str | None = None) -> str | None:
    """The ReLU-family node that alone consumes `node`'s output, if any (for
    target "litert", only a ReLU or ReLU6, which the converter fuses)."""
    if node.is_input or graph.is_model_output(node.name):
        return None
    consumers = graph.consumers(node.name)
    if len(consumers) == 1 and is_relu_family(consumers[0]):
        if target == "litert" and not litert_target.fuses(consumers[0].layer):
            return None
        return consumers[0].name
    return None
