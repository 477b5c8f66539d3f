"""The Keras model the TFLite converter turns into an int8 `.tflite`: the
quantized graph with TensorFlow's FakeQuant ops at our grids.

The converter's quantization-aware path reads `FakeQuantWithMinMaxVars` /
`...PerChannel` ops and gives each tensor exactly that grid: a kernel under a
FakeQuant becomes an int8 weight, an op output followed by one an int8 tensor.
An op whose output has no FakeQuant stays in float (the converter wraps it in
DEQUANTIZE/QUANTIZE). So every tensor LiteRT must hold in int8 gets one:

- each quantized kernel (`grids.weight_grid`), inside `LiteRTLinear`;
- each planned node output (`grids.activation_grid`);
- tensors the plan leaves without a grid but LiteRT needs one for, calibrated
  by the export on the data (`export_grids`): an unquantized model input, the
  output of a layer our plan fuses into a following activation LiteRT does
  not fuse (LeakyReLU, PReLU), and the pre-activation of a weight layer whose
  own activation LiteRT runs as a separate op (softmax, sigmoid, tanh...).

ReLU and ReLU6 are fused by the converter into the producing op, as the plan
fuses them; same-scale ops (max pooling, reshape, padding) need none.

Example:

```python
builder = ExportModelBuilder(graph, plan, encodings)
probe = builder.build(probe=True)      # outputs: tensors needing an export grid
builder.export_grids = calibrate(probe, data)
model = builder.build()                 # ready for model.export(...)
```
"""

from __future__ import annotations

import keras
import numpy as np

from mct_logger.graph import layer_kinds
from mct_logger.export.grids import ActivationGrid, activation_grid, weight_grid
from mct_logger.graph.ir import Graph, layer_name_of
from mct_logger.quantization import litert_target
from mct_logger.quantization.layers import linear_forward, weight_variable
from mct_logger.quantization.plan import PlanReason
from mct_logger.quantization.quantsim import unique_name

# Activations the converter fuses into CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / ADD.
LITERT_FUSED = litert_target.FUSED_ACTIVATIONS
litert_fusable = litert_target.fuses  # whether it fuses an activation layer into its producer


class FakeQuant(keras.layers.Layer):
    """`tf.quantization.fake_quant_with_min_max_args` at one int8 activation grid."""

    def __init__(self, minimum: float, maximum: float, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.minimum, self.maximum = float(minimum), float(maximum)

    def call(self, x):
        import tensorflow as tf

        x = keras.ops.cast(x, "float32")
        return tf.quantization.fake_quant_with_min_max_args(
            x, min=self.minimum, max=self.maximum, num_bits=8, narrow_range=False)

    def compute_output_shape(self, input_shape):
        return input_shape


class LiteRTLinear(keras.layers.Wrapper):
    """A Conv/Depthwise/Dense layer whose kernels are constants under int8
    FakeQuant ops (narrow range, per channel where LiteRT allows it), and whose
    activation, when LiteRT does not fuse it, follows a FakeQuant of its own."""

    def __init__(self, layer, kernels: dict, pre_activation: ActivationGrid | None = None,
                 activation=None, **kwargs):
        super().__init__(layer, **kwargs)
        self.kernels = kernels  # name -> WeightGrid
        self.pre_activation = pre_activation
        self.activation_fn = activation

    def build(self, input_shape=None):
        super().build(input_shape)
        self.built = True

    def call(self, x):
        import tensorflow as tf

        kernels = {}
        for name, grid in self.kernels.items():
            value = tf.constant(grid.values)
            if grid.flat_shape is not None:
                top = (grid.scale * 127.0).astype(np.float32)
                reshaped = tuple(grid.flat_shape) != tuple(grid.values.shape)
                flat = tf.reshape(value, grid.flat_shape) if reshaped else value
                flat = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                    flat, -top, top, num_bits=8, narrow_range=True)
                value = tf.reshape(flat, grid.values.shape) if reshaped else flat
            else:
                top = float(grid.scale) * 127.0
                value = tf.quantization.fake_quant_with_min_max_vars(
                    value, -top, top, num_bits=8, narrow_range=True)
            kernels[name] = value
        out = linear_forward(self.layer, x, kernels)
        if self.activation_fn is not None:
            if self.pre_activation is not None:
                out = tf.quantization.fake_quant_with_min_max_args(
                    out, min=self.pre_activation.minimum, max=self.pre_activation.maximum,
                    num_bits=8, narrow_range=False)
            out = self.activation_fn(out)
        return out

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


class ExportModelBuilder:
    """Builds the FakeQuant model of a quantized graph (see the module docstring).

    Attributes:
        export_grids: key -> ActivationGrid of the tensors the export calibrates
            (`"<node>:output"`, `"<node>:pre_activation"`); fill it from the probe
            model's outputs before `build()`.
        adaptations: node name -> notes on grids adapted to LiteRT's (filled by `build`).
        float_weights: node name -> why its quantized weights are not carried.
    """

    def __init__(self, graph: Graph, plan: dict, encodings: dict):
        self.graph, self.plan, self.encodings = graph, plan, encodings
        self.export_grids: dict[str, ActivationGrid] = {}
        self.adaptations: dict[str, list] = {}
        self.float_weights: dict[str, str] = {}
        self.layer_names: dict[str, set] = {}  # node -> Keras layer names it became
        self._probes: dict = {}
        self._split: dict = {}

    def build(self, probe: bool = False) -> keras.Model:
        """The export model; with `probe=True`, a model whose outputs are the
        tensors still needing an export grid (in `probe_keys()` order)."""
        self.adaptations, self.float_weights, self._probes, self._split = {}, {}, {}, {}
        self._used = None
        self.layer_names = {}
        model = self.graph.to_keras(name=f"{self.graph.name}_litert",
                                    make_layer=self._make_layer, wrap_outputs=self._wrap)
        if probe:
            if not self._probes:
                return None
            return keras.Model(model.inputs, list(self._probes.values()),
                               name=f"{self.graph.name}_litert_probe")
        return model

    def needs_probe(self) -> bool:
        """Whether some tensor needs an export grid (else the probe model is not built)."""
        for node in self.graph:
            plan = self.plan[node.name]
            activation = getattr(node.layer, "activation", None)
            if (plan.weights and layer_kinds.linear_weight_axes(node.layer)
                    and activation is not None
                    and layer_kinds.activation_name(activation) not in LITERT_FUSED):
                return True
            if self._needs_grid(node, plan):
                return True
        return False

    def _needs_grid(self, node, plan) -> bool:
        """An output LiteRT needs a grid for that the plan leaves without one."""
        return (node.is_input and plan.reason is PlanReason.INPUT_NOT_QUANTIZED) or (
            plan.reason is PlanReason.FUSED and not all(
                litert_fusable(c.layer) for c in self.graph.consumers(node.name)))

    def probe_keys(self) -> list[str]:
        return list(self._probes)

    def _note(self, node: str, note: str | None) -> None:
        if note:
            self.adaptations.setdefault(node, []).append(note)

    def _grid(self, key: str, tensor):
        """The FakeQuant'ed tensor at export grid `key`, or the tensor itself while probing."""
        grid = self.export_grids.get(key)
        if grid is None:
            self._probes[key] = tensor
            return tensor
        name = key.replace(":", "__").replace("/", "_") + "_fq"
        return FakeQuant(grid.minimum, grid.maximum, name=self._unique(name))(tensor)

    def _unique(self, name: str) -> str:
        used = getattr(self, "_used", None)
        if used is None:
            used = self._used = {layer_name_of(n) for n in self.graph.nodes}
        return unique_name(name, used)

    def _make_layer(self, node, clone):
        self.layer_names.setdefault(node.name, set()).add(clone.name)
        specs = self.plan[node.name].weights
        if not specs:
            return clone
        if not layer_kinds.linear_weight_axes(node.layer) or clone is node.layer:
            self.float_weights[node.name] = (
                f"{node.layer_class} runs with float weights in the export (only Conv, "
                "Depthwise and Dense kernels are carried as int8)")
            return clone
        grids = self.encodings[node.name].weights
        kernels = {}
        dense = isinstance(node.layer, keras.layers.Dense)
        for name, spec in specs.items():
            kernel = keras.ops.convert_to_numpy(weight_variable(node.layer, name))
            kernels[name], note = weight_grid(kernel, grids[name], spec.channel_axes,
                                              per_channel_allowed=not dense)
            self._note(node.name, note)
        activation = getattr(clone, "activation", None)
        split, pre = None, None
        if activation is not None and layer_kinds.activation_name(activation) not in LITERT_FUSED:
            split = activation
            clone.activation = keras.activations.linear
            pre = self.export_grids.get(f"{node.name}:pre_activation")
            if pre is None:  # probing: the wrapper returns the pre-activation
                self._split[node.name] = split
                split = None
        wrapper = LiteRTLinear(clone, kernels, pre_activation=pre, activation=split,
                               name=self._unique(f"{clone.name}_litert"))
        self.layer_names[node.name].add(wrapper.name)
        return wrapper

    def _wrap(self, node, outputs):
        plan = self.plan[node.name]
        if node.name in self._split:
            activation = self._split.pop(node.name)
            self._probes[f"{node.name}:pre_activation"] = outputs[0]
            outputs = [keras.layers.Activation(activation)(outputs[0])] + outputs[1:]
        if not outputs or not node.has_single_float_output:
            return outputs
        encoding = self.encodings.get(node.name)
        if plan.activation is not None and encoding is not None and encoding.activation:
            grid, note = activation_grid(encoding.activation)
            self._note(node.name, note)
            name = self._unique(node.name.replace("/", "_").replace(":", "_") + "_fq")
            self.layer_names.setdefault(node.name, set()).add(name)
            return [FakeQuant(grid.minimum, grid.maximum, name=name)(outputs[0])] + outputs[1:]
        if self._needs_grid(node, plan):
            return [self._grid(f"{node.name}:output", outputs[0])] + outputs[1:]
        return outputs
