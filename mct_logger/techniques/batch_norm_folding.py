"""Batch-norm folding: a BatchNormalization right after a linear layer becomes
part of that layer's kernel and bias.

With `s = gamma / sqrt(var + eps)`: `W' = W * s` per output channel and
`b' = beta + (b - mean) * s`. The folded BN's parameters stay recorded on the
layer's node (`node.info["folded_batch_norm"]`): high-bias folding and
analytical bias correction need its beta and gamma later. A BN that cannot be
folded (after a nonlinearity, a branch, a shared layer...) stays in place as a
float affine layer, and the result says why.

Example:

```python
folded, result = fold_batch_norms(read_model(model))
result.folded      # {"bn1": "conv1"}
result.not_folded  # {"bn3": "its input comes from Add 'add', not a Conv or Dense layer"}
```
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from mct_logger.graph.ir import Graph, Node, TensorRef, variable_name
from mct_logger.graph.clone import preset_initializers
from mct_logger.quantization.layers import broadcast_shape, linear_weights


@dataclasses.dataclass
class BatchNormFoldingResult:
    folded: dict = dataclasses.field(default_factory=dict)  # BN node -> layer node
    not_folded: dict = dataclasses.field(default_factory=dict)  # BN node -> reason
    version: int = 1


def fold_batch_norms(graph: Graph) -> tuple[Graph, BatchNormFoldingResult]:
    """Returns a new graph with every foldable batch norm folded; `graph` is unchanged."""
    graph = graph.copy()
    result = BatchNormFoldingResult()
    for bn in [n for n in graph if isinstance(n.layer, keras.layers.BatchNormalization)]:
        reason = _why_not_foldable(graph, bn)
        if reason:
            result.not_folded[bn.name] = reason
            continue
        producer = graph.nodes[bn.inputs[0].node]
        graph.nodes[producer.name] = _fold(graph, producer, bn)
        graph.remove_node(bn.name, TensorRef(producer.name, 0))
        result.folded[bn.name] = producer.name
    return graph, result


def batch_norm_parameters(layer: keras.layers.BatchNormalization) -> dict:
    """gamma, beta, moving mean and variance (float64) and epsilon of a BN layer."""
    def value(v):
        return np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64)

    channels = int(layer.moving_mean.shape[0])
    return {
        "gamma": value(layer.gamma) if layer.scale else np.ones(channels),
        "beta": value(layer.beta) if layer.center else np.zeros(channels),
        "mean": value(layer.moving_mean),
        "variance": value(layer.moving_variance),
        "epsilon": float(layer.epsilon),
    }


def _why_not_foldable(graph: Graph, bn: Node) -> str | None:
    if len(bn.inputs) != 1 or bn.inputs[0].index != 0:
        return "its input is not the single output of one layer"
    producer = graph.nodes[bn.inputs[0].node]
    layer = producer.layer
    if not linear_weights(layer):
        return (f"its input comes from {producer.layer_class} {producer.name!r}, "
                "not a Conv, Depthwise, Separable, Transpose or Dense layer")
    if getattr(layer, "lora_enabled", False):
        # Only `kernel` is scaled: the LoRA update added to it would stay unscaled.
        return f"{producer.name!r} has LoRA enabled; its LoRA weights cannot be folded"
    # An activation without `__name__` (a layer instance such as ReLU()) is no
    # more linear than a named one.
    activation = getattr(layer.activation, "__name__", type(layer.activation).__name__)
    if activation != "linear":
        return f"{producer.name!r} applies {activation!r} before the batch norm"
    if graph.is_model_output(producer.name) or len(graph.consumers(producer.name)) != 1:
        return f"the output of {producer.name!r} also feeds other layers"
    if sum(n.layer is layer for n in graph) != 1 or sum(n.layer is bn.layer for n in graph) != 1:
        return "the layer or the batch norm is shared by several calls"
    data_format = getattr(layer, "data_format", "channels_last")
    rank = len(producer.output_shapes[0])
    channel_axis = 1 if data_format == "channels_first" else rank - 1
    axes = bn.layer.axis if isinstance(bn.layer.axis, (list, tuple)) else [bn.layer.axis]
    if [a % rank for a in axes] != [channel_axis]:
        return f"it normalizes axis {bn.layer.axis}, not the channel axis {channel_axis}"
    return None


def _fold(graph: Graph, producer: Node, bn: Node) -> Node:
    params = batch_norm_parameters(bn.layer)
    scale = params["gamma"] / np.sqrt(params["variance"] + params["epsilon"])
    weights = producer.weights()
    kernel_name, channel_axes = list(linear_weights(producer.layer).items())[-1]
    kernel = weights[kernel_name]
    weights[kernel_name] = (
        kernel * scale.reshape(broadcast_shape(kernel.shape, channel_axes))
    ).astype(kernel.dtype)
    bias = weights.get("bias", np.zeros(scale.shape, dtype=kernel.dtype))
    weights["bias"] = (params["beta"] + (bias - params["mean"]) * scale).astype(kernel.dtype)

    config = producer.layer.get_config()
    config["use_bias"] = True
    input_ref = producer.inputs[0]
    input_shape = graph.nodes[input_ref.node].output_shapes[input_ref.index]
    layer = rebuild_layer(producer.layer, config, input_shape, weights)
    info = dict(producer.info)
    info["folded_batch_norm"] = {"name": bn.name, **params}
    return dataclasses.replace(producer, layer=layer, info=info)


def rebuild_layer(layer, config: dict, input_shape, weights: dict):
    """A new built layer of `layer`'s class from `config`, holding `weights` by name."""
    new = type(layer).from_config(config)
    with preset_initializers(new, weights) as started:  # the rest is assigned below
        new.build(input_shape)
    for variable in new.weights:
        name = variable_name(variable)
        if name not in weights:
            raise ValueError(f"No value for weight {name!r} of rebuilt layer {new.name!r}.")
        if name not in started:
            variable.assign(weights[name])
    return new
