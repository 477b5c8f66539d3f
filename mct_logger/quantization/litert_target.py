"""`QuantizationConfig(target="litert")`: the simulation follows LiteRT's int8 rules,
so that what is diagnosed is what the LiteRT interpreter runs.

The rules (the "LiteRT 8-bit quantization specification", and what the TF 2.21
converter does with FakeQuant ops; see shared/reference/litert.md):

- weights: int8 symmetric, zero point 0, per output channel for Conv and
  Depthwise, one grid per tensor for Dense (FULLY_CONNECTED; a per-channel
  Dense kernel does not convert);
- activations: int8 asymmetric, one grid per tensor; `real = (q - zp) * scale`;
- fixed output grids: softmax and logistic (sigmoid) `scale 1/256, zp -128`
  (our `offset 0`), tanh `scale 1/128, zp 0` (our `offset -128`);
- shared grids: a concatenation's inputs and output hold one grid (the
  converter gives the producers the concatenation's); average pooling keeps
  its input's grid;
- fused activations: only ReLU and ReLU6 are fused into the producing op (a
  LeakyReLU or PReLU is an op of its own, so its producer gets a grid);
- layers LiteRT cannot run in int8 from our export (Separable, Transpose and
  3-D convolutions, EinsumDense, Embedding, attention, recurrent layers) stay
  float with `PlanReason.TARGET_UNSUPPORTED`.

- biases: int32 at `s_in * s_w[c]`; the PTQ pipeline rounds them so
  (`techniques.int32_bias.round_biases`) before building the quantized model.

Example:

```python
config = QuantizationConfig(target="litert")
model_q, info = keras_post_training_quantization(model, data, config)
info.export_litert("model.tflite").parity.flagged     # usually []
```
"""

from __future__ import annotations

import keras
import numpy as np

from mct_logger.graph import layer_kinds
from mct_logger.quantization.encodings import Encoding

TARGETS = (None, "litert")
L = keras.layers

# LiteRT int8 weight layers our export carries.
INT8_WEIGHT_LAYERS = (L.Conv1D, L.Conv2D, L.DepthwiseConv1D, L.DepthwiseConv2D, L.Dense)
# Activations the converter fuses into the producing op.
FUSED_ACTIVATIONS = frozenset({"linear", "relu", "relu6"})
SOFTMAX_GRID = Encoding(scale=np.float64(1 / 256), offset=np.float64(0.0), bitwidth=8,
                        is_symmetric=False)
TANH_GRID = Encoding(scale=np.float64(1 / 128), offset=np.float64(-128.0), bitwidth=8,
                     is_symmetric=True)
FIXED_GRIDS = {"softmax": SOFTMAX_GRID, "sigmoid": SOFTMAX_GRID, "tanh": TANH_GRID}


def check_config(owner: str, values: dict, target: str | None) -> None:
    """Refuses settings that contradict `target`, naming the setting and the fix.

    `values`: a config's or override's fields (None = not set).
    """
    if target is None:
        return
    fix = "or use target=None"
    rules = [
        ("weight_bits", lambda v: v is None or v <= 8,
         "LiteRT int8 weights hold at most 8 bits; use weight_bits=8 (or fewer, stored as int8)"),
        ("activation_bits", lambda v: v is None or v == 8,
         "LiteRT int8 activations are 8-bit (its 16x8 mode is not exported here); use "
         "activation_bits=8"),
        ("weight_symmetric", lambda v: v is None or v is True,
         "LiteRT weights are symmetric (zero point 0); use weight_symmetric=True"),
        ("activation_per_channel", lambda v: v is None or v is False,
         "LiteRT activations have one grid per tensor; use activation_per_channel=False"),
        ("activation_symmetric", lambda v: v is None or v is False,
         "LiteRT activations are asymmetric int8; use activation_symmetric=False"),
        ("quantize_inputs", lambda v: v is None or v is True,
         "LiteRT's first int8 op needs an int8 input grid; use quantize_inputs=True"),
    ]
    for field, ok, why in rules:
        if field in values and not ok(values[field]):
            raise ValueError(f"{owner}.{field}={values[field]!r} contradicts target={target!r}: "
                             f"{why}, {fix}.")


def fuses(layer) -> bool:
    """Whether the converter fuses this activation layer into its producer."""
    if isinstance(layer, L.ReLU):
        slope = float(getattr(layer, "negative_slope", 0.0) or 0.0)
        threshold = float(getattr(layer, "threshold", 0.0) or 0.0)
        top = layer.max_value
        return slope == 0.0 and threshold == 0.0 and (top is None or float(top) == 6.0)
    if isinstance(layer, L.Activation):
        return layer_kinds.activation_name(layer.activation) in FUSED_ACTIVATIONS
    return False


def runs_int8(layer) -> bool:
    """Whether LiteRT runs this weight layer in int8 from our export."""
    return isinstance(layer, INT8_WEIGHT_LAYERS) and not isinstance(
        layer, layer_kinds.SEPARABLE + layer_kinds.TRANSPOSE)


def fixed_grid(layer) -> Encoding | None:
    """The output grid LiteRT fixes for this layer (softmax, sigmoid, tanh), or None."""
    if isinstance(layer, L.Softmax):
        return SOFTMAX_GRID
    name = layer_kinds.activation_name(getattr(layer, "activation", None))
    if isinstance(layer, L.Activation) or isinstance(layer, INT8_WEIGHT_LAYERS):
        return FIXED_GRIDS.get(name)
    return None


def target_grids(graph, plan: dict, encodings: dict, target: str | None) -> dict:
    """`encodings` under `target`'s grid rules (the same dict when target is None)."""
    return apply_grid_rules(graph, plan, encodings) if target == "litert" else encodings


def apply_grid_rules(graph, plan: dict, encodings: dict) -> dict:
    """`encodings` with LiteRT's fixed and shared grids (a new dict; NodeEncodings
    are replaced, never changed in place)."""
    import dataclasses

    result = dict(encodings)

    def set_grid(name, encoding):
        if name in result and plan[name].activation is not None:
            result[name] = dataclasses.replace(result[name], activation=encoding)

    for node in graph:
        grid = fixed_grid(node.layer)
        if grid is not None:
            set_grid(node.name, grid)
    for node in graph:
        if isinstance(node.layer, L.Concatenate) and result.get(node.name) is not None \
                and result[node.name].activation is not None:
            for ref in node.inputs:
                holder = _grid_holder(graph, plan, ref.node)
                if holder is not None and fixed_grid(graph.nodes[holder].layer) is None:
                    set_grid(holder, result[node.name].activation)
    for node in graph:
        if isinstance(node.layer, (L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D)):
            holder = _grid_holder(graph, plan, node.inputs[0].node) if node.inputs else None
            if holder is not None and result.get(holder) and result[holder].activation:
                set_grid(node.name, result[holder].activation)
    return result


def input_grid(graph, plan, encodings: dict, name: str):
    """The activation grid `name`'s output carries (through pass-through nodes), or None."""
    holder = _grid_holder(graph, plan, name)
    found = encodings.get(holder) if holder is not None else None
    return found.activation if found is not None else None


def _grid_holder(graph, plan, name: str) -> str | None:
    """The node whose activation grid `name`'s output carries: `name` itself, or
    the first node up a chain of pass-through nodes (max pooling, reshape...)."""
    seen = set()
    while name not in seen:
        seen.add(name)
        if plan[name].activation is not None:
            return name
        node = graph.nodes[name]
        if plan[name].reason is None or plan[name].reason.value != "passthrough" or not node.inputs:
            return None
        name = node.inputs[0].node
    return None
