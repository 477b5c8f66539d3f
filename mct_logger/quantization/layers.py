"""Fake-quantization Keras layers: weight quantizers wrapped around linear layers
and activation quantizers placed after layer outputs and model inputs.

Each quantizer's on/off switch and grid live in one non-trainable variable, so
a compiled `predict`/`evaluate` function sees a flip made after it was traced,
and a quantized model saved to `.keras` loads back with the same grids.

Example:

```python
quantizer = ActivationQuantizer(node_name="conv1")
y = quantizer(x)
quantizer.set_encoding(Encoding.from_range(0.0, 6.0, 8, symmetric=False))
quantizer.enabled = False  # y is float again, without rebuilding anything
```
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from mct_logger.graph import layer_kinds
from mct_logger.quantization.encodings import Encoding, check_bitwidth, fake_quantize
from mct_logger.quantization.sublayers import build_keeping_masks, dense_specs, intercepted

PACKAGE = "mct_logger"

# Which kernels of which layers are quantized, and their per-channel axes: the
# layer taxonomy's answer (`mct_logger.graph.layer_kinds`).
quantizable_weights = layer_kinds.weight_axes
linear_weights = layer_kinds.linear_weight_axes


named_weights = layer_kinds.named_variables  # {name: variable}, names as in weight_axes


def weight_variable(layer, name: str):
    """The weight `name` of `quantizable_weights(layer)` (e.g. "kernel", "query/kernel")."""
    variables = named_weights(layer)
    if name in variables:
        return variables[name]
    value = getattr(layer, name, None)
    if value is not None:
        return value
    raise KeyError(f"Layer {layer.name!r} ({type(layer).__name__}) has no weight {name!r}; "
                   f"its weights are {sorted(variables)}.")


def output_channel_axes(layer) -> tuple[int, ...]:
    """Axes of the main kernel that index output channels (for BN folding etc.)."""
    axes = linear_weights(layer)
    if not axes:
        raise ValueError(f"{type(layer).__name__} is not a supported weight layer.")
    return list(axes.values())[-1]


def broadcast_shape(kernel_shape, channel_axes) -> tuple[int, ...]:
    """Kernel shape with every non-channel axis set to 1."""
    ndim = len(kernel_shape)
    keep = {a % ndim for a in channel_axes}
    return tuple(d if i in keep else 1 for i, d in enumerate(kernel_shape))


class _Grid:
    """The state of one quantizer in one non-trainable variable (one variable to
    create and save instead of four): `[enabled, levels, scale (C), offset (C)]`,
    C = 1 for a per-tensor grid."""

    def __init__(self, layer: keras.layers.Layer, prefix: str, num_channels, bitwidth, symmetric,
                 encoding: Encoding | None = None):
        self.shape = () if num_channels is None else (num_channels,)
        self.channels = 1 if num_channels is None else int(num_channels)
        half = 2 ** (bitwidth - 1)
        initial = np.concatenate([
            [1.0, 2.0**bitwidth - 1], np.ones(self.channels),
            np.full(self.channels, -half if symmetric else 0.0)]).astype("float32")
        if encoding is not None:  # created holding its grid: no assign after
            self._fill(initial, encoding)
        self.vector = layer.add_weight(
            name=f"{prefix}grid", shape=initial.shape, trainable=False,
            initializer=lambda shape, dtype=None: keras.ops.convert_to_tensor(initial, dtype),
        )

    def parts(self, values=None, reshape=ops.reshape):
        """`(enabled, levels, scale, offset)` of the grid vector (the variable, or
        `values` read from it), scale and offset of `self.shape`."""
        v, c = (self.vector if values is None else values), self.channels
        scale, offset = v[2:2 + c], v[2 + c:]
        if not self.shape:
            scale, offset = reshape(scale, ()), reshape(offset, ())
        return v[0], v[1], scale, offset

    def apply(self, x, channel_shape=None):
        enabled, levels, scale, offset = self.parts()
        if channel_shape is not None and self.shape:
            scale = ops.reshape(scale, channel_shape)
            offset = ops.reshape(offset, channel_shape)
        xq = fake_quantize(x, ops.cast(scale, x.dtype), ops.cast(offset, x.dtype),
                           ops.cast(levels, x.dtype), ops=ops)
        return ops.where(enabled > 0.5, xq, x)

    def _values(self) -> np.ndarray:
        return np.array(keras.ops.convert_to_numpy(self.vector), dtype=np.float32)

    @property
    def enabled(self) -> bool:
        return bool(self._values()[0] > 0.5)

    @enabled.setter
    def enabled(self, value: bool) -> None:
        values = self._values()
        values[0] = 1.0 if value else 0.0
        self.vector.assign(values)

    def assign(self, encoding: Encoding):
        values = self._values()
        self._fill(values, encoding)
        self.vector.assign(values)

    def _fill(self, values: np.ndarray, encoding: Encoding) -> None:
        """Writes `encoding`'s levels, scale and offset into `values` (the grid vector)."""
        if tuple(self.shape) != tuple(np.shape(encoding.scale)):
            raise ValueError(
                f"Encoding with scale shape {np.shape(encoding.scale)} does not fit a "
                f"quantizer built for shape {tuple(self.shape)} (per-channel "
                "vs per-tensor, or a different channel count)."
            )
        values[1] = float(encoding.levels)
        values[2:2 + self.channels] = np.reshape(encoding.scale, -1)
        values[2 + self.channels:] = np.reshape(encoding.offset, -1)

    def encoding(self, bitwidth: int, symmetric: bool) -> Encoding:
        _, _, scale, offset = self.parts(self._values().astype(np.float64), np.reshape)
        return Encoding(scale=scale, offset=offset, bitwidth=bitwidth, is_symmetric=symmetric)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ActivationQuantizer(keras.layers.Layer):
    """Fake-quantizes a node's output (or a model input) on a fixed grid.

    Args:
        node_name: the graph node whose output this quantizes.
        num_channels: None for one grid per tensor, else one per channel (last axis).
        bitwidth: 2 to 16.
        is_symmetric: whether the grid is symmetric around zero.
        encoding: the grid to start from (its bitwidth and symmetry win over
            the arguments'); default: scale 1, offset at the bottom of the range.
    """

    def __init__(self, node_name, num_channels=None, bitwidth=8, is_symmetric=False,
                 encoding: Encoding | None = None, **kwargs):
        # The grid arithmetic runs in float32 whatever the model's policy: at 16
        # bits, x / scale reaches 65535, beyond float16's largest value.
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        check_bitwidth(bitwidth)
        self.node_name = node_name
        self.num_channels = num_channels
        self.bitwidth = int(bitwidth)
        self.is_symmetric = bool(is_symmetric)
        self._grid = None
        self._initial_encoding = encoding
        if encoding is not None:
            self._check(encoding)
        # A Keras mask on the input (Embedding(mask_zero=True), Masking) passes
        # through unchanged: fake quantization keeps every time step.
        self.supports_masking = True

    def build(self, input_shape):
        self._grid = _Grid(self, "", self.num_channels, self.bitwidth, self.is_symmetric,
                           self._initial_encoding)
        self._initial_encoding = None

    def call(self, inputs):
        """Fake-quantizes in float32; the output keeps the input's dtype (a
        float16 output of a mixed-precision layer stays float16)."""
        if inputs.dtype == "float32":
            return self._grid.apply(inputs)
        return ops.cast(self._grid.apply(ops.cast(inputs, "float32")), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    @property
    def enabled(self) -> bool:
        return self._grid.enabled

    @enabled.setter
    def enabled(self, value: bool):
        self._grid.enabled = value

    def set_encoding(self, encoding: Encoding) -> None:
        self._check(encoding)
        self._grid.assign(encoding)

    def get_encoding(self) -> Encoding:
        return self._grid.encoding(self.bitwidth, self.is_symmetric)

    def _check(self, encoding):
        if encoding.bitwidth != self.bitwidth or encoding.is_symmetric != self.is_symmetric:
            self.bitwidth, self.is_symmetric = encoding.bitwidth, encoding.is_symmetric

    def get_config(self):
        return {
            **super().get_config(),
            "node_name": self.node_name,
            "num_channels": self.num_channels,
            "bitwidth": self.bitwidth,
            "is_symmetric": self.is_symmetric,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantizedWeightsLayer(keras.layers.Wrapper):
    """Runs a weight layer with fake-quantized kernels.

    Conv, Depthwise, Separable, Transpose and Dense layers run their own
    computation on the fake-quantized kernels (`linear_forward`). Any other
    layer `quantizable_weights` knows (EinsumDense, Embedding,
    MultiHeadAttention, TimeDistributed, Bidirectional, LSTM/GRU/SimpleRNN) is
    called itself inside a `keras.StatelessScope` that maps each quantized
    variable to its fake-quantized value, so its own code (attention, the
    recurrence, the time loop) runs unchanged. Biases stay in float (32-bit),
    as on the usual INT8 targets. So is a composite layer (a KerasHub
    transformer block): its sublayers' kernels are mapped the same way, and
    the outputs of the sublayers in `activation_specs` are fake-quantized where
    those sublayers return (`sublayers.intercepted`). Keras masks pass through:
    the wrapped layer sees its inputs' masks and its output keeps the mask the
    wrapped layer gives it.

    Args:
        layer: the wrapped layer.
        node_name: the graph node this layer computes.
        weight_specs: `{weight name: {"num_channels": int | None,
            "bitwidth": int, "is_symmetric": bool}}`, names as in
            `quantizable_weights` ("kernel", "query/kernel", ...).
        encodings: `{weight name: Encoding}` to start from (their bitwidth and
            symmetry win over the specs'); a weight without one starts at scale 1.
        activation_specs: `{sublayer point: {"bitwidth": int, "is_symmetric":
            bool}}` of a composite layer, points as `layer_kinds.sublayer_outputs`
            names them ("self_attention_layer/query"); per-tensor grids.
        activation_encodings: `{point: Encoding}` to start from.

    Raises:
        ValueError: a weight name the layer does not have.
    """

    def __init__(self, layer, node_name, weight_specs, encodings: dict | None = None,
                 activation_specs: dict | None = None, activation_encodings: dict | None = None,
                 **kwargs):
        # Compute like the wrapped layer (a float32 layer in a mixed_float16
        # model stays float32); no autocast scope, so the kernels are read and
        # fake-quantized in float32 and only then cast (see `linear_forward`).
        kwargs.setdefault("dtype", layer.dtype_policy)
        kwargs.setdefault("autocast", False)
        super().__init__(layer, **kwargs)
        supported = quantizable_weights(layer)
        unknown = set(weight_specs) - set(supported)
        if unknown and (supported or layer.built):  # an unbuilt composite has no names yet
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) has no quantizable "
                f"weight(s) {sorted(unknown)}; it supports {sorted(supported)}."
            )
        for spec in weight_specs.values():
            check_bitwidth(spec["bitwidth"])
        self.node_name = node_name
        self.weight_specs = {k: dict(v) for k, v in weight_specs.items()}
        self._initial_encodings = {k: e for k, e in (encodings or {}).items()
                                   if k in self.weight_specs}
        for name, encoding in self._initial_encodings.items():
            self._adopt(name, encoding)
        self._channel_axes = supported
        self._linear = bool(linear_weights(layer))
        self._grids: dict[str, _Grid] = {}
        # A composite layer's sublayer outputs (point -> spec): fake-quantized
        # where the sublayer returns, the composite's own call unchanged.
        self.activation_specs = {k: dict(v) for k, v in (activation_specs or {}).items()}
        for spec in self.activation_specs.values():
            check_bitwidth(spec["bitwidth"])
        self._initial_activations = dict(activation_encodings or {})
        for point, encoding in self._initial_activations.items():
            self._adopt_activation(point, encoding)
        self._inner: dict[str, _Grid] = {}
        # The wrapped layer sees the Keras masks of its inputs (they ride on the
        # tensors, which reach it unchanged) and its output carries the mask the
        # wrapped layer gives it: masking works as in the float model.
        self.supports_masking = bool(getattr(layer, "supports_masking", False))

    def build(self, input_shape=None):
        if self._linear:
            super().build(input_shape)
        # Other layers (MultiHeadAttention takes several inputs) build on their
        # first call, in `call`.
        for name, spec in self.weight_specs.items():
            self._grids[name] = _Grid(
                self, name.replace("/", "__") + "_", spec.get("num_channels"),
                spec["bitwidth"], spec["is_symmetric"], self._initial_encodings.get(name),
            )
        for point, spec in self.activation_specs.items():
            self._inner[point] = _Grid(
                self, "output__" + point.replace("/", "__") + "_", None, spec["bitwidth"],
                spec["is_symmetric"], self._initial_activations.get(point))
        self._initial_encodings = {}
        self._initial_activations = {}
        self.built = True

    def call(self, inputs, *args, **kwargs):
        """The layer's computation with its kernels fake-quantized in float32
        (the variables' dtype), then cast to the layer's compute dtype."""
        if not self._linear:
            return self._call_mapped(inputs, *args, **kwargs)
        kernels = {}
        for name, grid in self._grids.items():
            kernel = getattr(self.layer, name)
            shape = broadcast_shape(tuple(kernel.shape), self._channel_axes[name])
            kernel = ops.cast(ops.convert_to_tensor(kernel), "float32")
            kernels[name] = grid.apply(kernel, shape)
        return linear_forward(self.layer, inputs, kernels)

    def _call_mapped(self, inputs, *args, **kwargs):
        if not self.layer.built:
            build_keeping_masks(self.layer, inputs, *args, **kwargs)
        if not self._channel_axes:
            self._channel_axes = quantizable_weights(self.layer)
        variables = named_weights(self.layer)
        mapping = []
        for name, grid in self._grids.items():
            variable = variables[name]
            kernel = ops.cast(ops.convert_to_tensor(variable), "float32")
            shape = broadcast_shape(tuple(kernel.shape), self._channel_axes[name])
            mapping.append((variable, ops.cast(grid.apply(kernel, shape), variable.dtype)))
        sublayers = layer_kinds.sublayer_outputs(self.layer) if self._inner else {}
        quantize = {sublayers[p]: _output_quantizer(grid) for p, grid in self._inner.items()}
        with keras.StatelessScope(state_mapping=mapping), intercepted(quantize):
            return self.layer(inputs, *args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        if self._linear:
            return super().compute_output_spec(*args, **kwargs)
        args, kwargs = dense_specs(args, kwargs)
        return keras.Operation.compute_output_spec(self, *args, **kwargs)  # traces `call`

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_mask(self, inputs, previous_mask=None):
        """The wrapped layer's output mask (for the linear layers, computed here
        without calling it; others set it on their output in `call`)."""
        return self.layer.compute_mask(inputs, previous_mask)

    def weight_enabled(self, name: str) -> bool:
        return self._grids[name].enabled

    def set_weights_enabled(self, value: bool) -> None:
        for grid in self._grids.values():
            grid.enabled = value

    @property
    def enabled(self) -> bool:
        return any(self.weight_enabled(n) for n in self._grids)

    @enabled.setter
    def enabled(self, value: bool):
        self.set_weights_enabled(value)

    def set_encoding(self, name: str, encoding: Encoding) -> None:
        self._adopt(name, encoding)
        self._grids[name].assign(encoding)

    def set_activations_enabled(self, value: bool) -> None:
        """Switches the sublayer-output quantizers of a composite layer."""
        for grid in self._inner.values():
            grid.enabled = value

    def groups(self) -> list[str]:
        """A composite layer's sublayer groups (points with an output quantizer
        or a kernel below them, "self_attention_layer/query"); [] otherwise."""
        return layer_kinds.sublayer_groups(self.activation_specs, self.weight_specs)

    def set_group_enabled(self, point: str, weights: bool | None = None,
                          activations: bool | None = None) -> None:
        """Switches one sublayer group's kernel quantizers (`weights`) and its
        output quantizer (`activations`); None leaves that kind as it is.

        Raises:
            KeyError: `point` is not one of `groups()`.
        """
        if point not in self.groups():
            raise KeyError(f"{self.node_name!r} has no sublayer group {point!r}; its groups: "
                           f"{self.groups()}")
        if weights is not None:
            for name, grid in self._grids.items():
                if name.rpartition("/")[0] == point:
                    grid.enabled = weights
        if activations is not None and point in self._inner:
            self._inner[point].enabled = activations

    def activation_enabled(self, point: str) -> bool:
        return self._inner[point].enabled

    def set_activation_encoding(self, point: str, encoding: Encoding) -> None:
        self._adopt_activation(point, encoding)
        self._inner[point].assign(encoding)

    def get_activation_encoding(self, point: str) -> Encoding:
        spec = self.activation_specs[point]
        return self._inner[point].encoding(spec["bitwidth"], spec["is_symmetric"])

    def _adopt_activation(self, point: str, encoding: Encoding) -> None:
        spec = self.activation_specs[point]
        spec["bitwidth"], spec["is_symmetric"] = encoding.bitwidth, encoding.is_symmetric

    def _adopt(self, name: str, encoding: Encoding) -> None:
        """The weight's spec takes `encoding`'s bitwidth and symmetry."""
        spec = self.weight_specs[name]
        spec["bitwidth"], spec["is_symmetric"] = encoding.bitwidth, encoding.is_symmetric

    def get_encoding(self, name: str) -> Encoding:
        spec = self.weight_specs[name]
        return self._grids[name].encoding(spec["bitwidth"], spec["is_symmetric"])

    def get_config(self):
        return {
            **super().get_config(),
            "node_name": self.node_name,
            "weight_specs": self.weight_specs,
            "activation_specs": self.activation_specs,
        }


def _output_quantizer(grid: _Grid):
    """`fn(y)`: `y` fake-quantized on `grid` in float32, back in its own dtype
    (a non-float output passes unchanged)."""
    def quantize(y):
        if not hasattr(y, "dtype") or "float" not in str(y.dtype):
            return y
        if str(y.dtype) == "float32":
            return grid.apply(y)
        return ops.cast(grid.apply(ops.cast(y, "float32")), y.dtype)
    return quantize


def linear_forward(layer, x, kernels: dict):
    """The layer's own computation with `kernels` in place of its kernel variables,
    in the layer's compute dtype (float16 under a mixed_float16 policy)."""
    dtype = layer.compute_dtype
    x = ops.cast(x, dtype)
    kernels = {k: ops.cast(v, dtype) for k, v in kernels.items()}
    if isinstance(layer, layer_kinds.SEPARABLE):
        out = ops.separable_conv(
            x, kernels["depthwise_kernel"], kernels["pointwise_kernel"],
            strides=layer.strides, padding=layer.padding,
            dilation_rate=layer.dilation_rate, data_format=layer.data_format,
        )
    elif isinstance(layer, layer_kinds.DEPTHWISE):
        out = ops.depthwise_conv(
            x, kernels["kernel"], strides=layer.strides, padding=layer.padding,
            dilation_rate=layer.dilation_rate, data_format=layer.data_format,
        )
    elif isinstance(layer, layer_kinds.TRANSPOSE):
        out = ops.conv_transpose(
            x, kernels["kernel"], strides=list(layer.strides), padding=layer.padding,
            output_padding=layer.output_padding, dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    elif isinstance(layer, layer_kinds.CONV):
        padding = layer.padding
        if padding == "causal":
            x = ops.pad(x, layer._compute_causal_padding())
            padding = "valid"
        out = ops.conv(
            x, kernels["kernel"], strides=list(layer.strides), padding=padding,
            dilation_rate=layer.dilation_rate, data_format=layer.data_format,
        )
    elif isinstance(layer, keras.layers.Dense):
        out = ops.matmul(x, kernels["kernel"])
    else:
        raise TypeError(f"{type(layer).__name__} is not a Conv, Depthwise, Separable, "
                        "Transpose or Dense layer.")
    bias = getattr(layer, "bias", None)
    if bias is not None:
        bias = ops.cast(ops.convert_to_tensor(bias), dtype)
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            bias = ops.reshape(bias, (1, -1) + (1,) * (len(out.shape) - 2))
        out = ops.add(out, bias)
    if layer.activation is not None:
        out = layer.activation(out)
    return out
