"""The one layer taxonomy: what each Keras layer (or bare `keras.ops` operation)
is to the quantization engine and to the techniques.

Every question the engine asks about a layer's class is answered here:

- `weight_axes(layer)`: which kernels a layer has that can be quantized, and for
  each the axes that index its output channels (`{}` for anything else):
  Conv/Depthwise/Separable/Transpose/Dense (`linear_weight_axes`, the layers
  the techniques transform), EinsumDense, Embedding, and the kernels inside
  MultiHeadAttention, GroupQueryAttention, TimeDistributed, Bidirectional, RNN
  and ConvLSTM layers, and any other layer whose tracked sublayers hold such
  kernels (KerasHub's transformer blocks: `composite_weight_axes`);
- `kind(layer)`: `"weights"`, `"passthrough"` (the output holds only values of
  the input: no new grid), `"arithmetic"` (new values, weight-free) or `"unknown"`;
- `is_relu_family(layer)`: an activation a target fuses into the preceding layer;
- `homogeneous_kind(layer)` / `fused_activation_kind(layer)`: whether a layer is
  positively homogeneous per channel, f(s*x) = s*f(x) for s > 0 (what cross-layer
  equalization may rescale through, Nagel et al. 2019, "Data-Free Quantization
  Through Weight Equalization and Bias Correction"), and as what kind of link.

To teach the engine a new layer, add it to the tuples below (and, for a weight
layer, to `weight_axes`); plan, quantization layers, CLE and bias correction
all read these answers.

Example:

```python
weight_axes(keras.layers.DepthwiseConv2D(3))  # {"kernel": (-2, -1)}
weight_axes(attention)     # {"query/kernel": (-2, -1), ..., "attention_output/kernel": (-1,)}
kind(keras.layers.Flatten())                  # "passthrough"
homogeneous_kind(keras.layers.ReLU(max_value=6.0))  # "relu6"
```
"""

from __future__ import annotations

import keras

__all__ = [
    "ARITHMETIC", "AVERAGE_POOLING", "COMPOSITE", "CONV", "DEPTHWISE", "EQUALIZABLE",
    "IDENTITY", "LINEAR", "MAX_POOLING", "PADDING", "PASSTHROUGH", "RNN_CELLS", "SEPARABLE",
    "TRANSPOSE", "activation_name", "composite_weight_axes", "einsum_channel_axes", "sublayer_groups", "sublayer_outputs",
    "fused_activation_kind",
    "homogeneous_kind", "initializer_attributes", "is_channelwise", "is_relu_family", "kind",
    "linear_weight_axes", "weight_axes",
]

L = keras.layers

# ---------------------------------------------------------------- weight layers

SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
TRANSPOSE = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
# Layers with one kernel whose per-channel scale CLE and bias correction can change.
EQUALIZABLE = (*CONV, *DEPTHWISE, L.Dense)


LINEAR = (*SEPARABLE, *DEPTHWISE, *TRANSPOSE, *CONV, L.Dense)
try:  # ConvLSTM1D/2D/3D's cell (not exported by keras.layers)
    from keras.src.layers.rnn.conv_lstm import ConvLSTMCell as _ConvLSTMCell
    CONV_RNN_CELLS = (_ConvLSTMCell,)
except ImportError:  # pragma: no cover - another Keras layout
    CONV_RNN_CELLS = ()
RNN_CELLS = (L.LSTMCell, L.GRUCell, L.SimpleRNNCell, *CONV_RNN_CELLS)
GROUPED_ATTENTION = tuple(getattr(L, n) for n in ("GroupQueryAttention",) if hasattr(L, n))
# Keras layers whose weights live in sublayers; each sublayer's kernels are
# quantized. Any other layer whose tracked sublayers hold kernels the engine
# knows (KerasHub's TransformerEncoder/Decoder, decoder blocks, a user's own
# block) is a composite too (`composite_weight_axes`).
COMPOSITE = (L.MultiHeadAttention, *GROUPED_ATTENTION, L.TimeDistributed, L.Bidirectional,
             L.RNN)
# Layers (by class name: KerasHub is optional) holding one table made directly
# with add_weight, quantized like an Embedding (one grid per row): attribute -> name.
TABLE_LAYERS = {"PositionEmbedding": ("position_embeddings", "embeddings")}


def linear_weight_axes(layer) -> dict[str, tuple[int, ...]]:
    """`{kernel attribute: per-channel axes}` of a Conv, Depthwise, Separable,
    Transpose or Dense layer (the layers batch-norm folding, CLE and bias
    correction transform, and `linear_forward` computes), else {}.

    The axes together index the layer's output channels (a depthwise kernel
    `(kh, kw, in, multiplier)` has `(-2, -1)`). A layer Keras itself already
    quantized (`quantization_mode` set) has none.
    """
    if getattr(layer, "quantization_mode", None):
        return {}
    if isinstance(layer, SEPARABLE):
        return {"depthwise_kernel": (-2, -1), "pointwise_kernel": (-1,)}
    if isinstance(layer, DEPTHWISE):
        return {"kernel": (-2, -1)}
    if isinstance(layer, TRANSPOSE):
        return {"kernel": (-2,)}
    if isinstance(layer, CONV) or isinstance(layer, L.Dense):
        return {"kernel": (-1,)}
    return {}


def initializer_attributes(layer) -> dict[str, str]:
    """`{weight name: the attribute holding its initializer}` of the layers
    `linear_weight_axes` knows, else {}: "kernel" -> "kernel_initializer",
    "depthwise_kernel" -> "depthwise_initializer", and a Depthwise layer's
    "kernel" -> "depthwise_initializer" (Keras' names)."""
    kernels = linear_weight_axes(layer)
    if not kernels:
        return {}
    if isinstance(layer, DEPTHWISE):
        return {"kernel": "depthwise_initializer", "bias": "bias_initializer"}
    return {**{k: k.removesuffix("_kernel") + "_initializer" for k in kernels},
            "bias": "bias_initializer"}


def einsum_channel_axes(equation: str) -> tuple[int, ...]:
    """Kernel axes of an EinsumDense equation that reach the output (its channels):
    "abc,cd->abd" -> (-1,); MultiHeadAttention's query "abc,cde->abde" -> (-2, -1)."""
    inputs, output = equation.split("->")
    kernel = inputs.split(",")[1]
    return tuple(i - len(kernel) for i, c in enumerate(kernel) if c in output)


def _own_weight_axes(layer) -> dict[str, tuple[int, ...]]:
    """Per-channel axes of the kernels a layer holds itself, by attribute."""
    linear = linear_weight_axes(layer)
    if linear or getattr(layer, "quantization_mode", None):
        return linear
    if isinstance(layer, L.EinsumDense):
        return {"kernel": einsum_channel_axes(layer.equation)}
    if isinstance(layer, L.Embedding):
        # one grid per table row (per token), as Keras' own int8 Embedding;
        # KerasHub's ReversibleEmbedding may hold an untied reverse projection
        # (hidden, vocabulary): one grid per vocabulary column
        axes = {"embeddings": (0,)}
        if getattr(layer, "reverse_embeddings", None) is not None:
            axes["reverse_embeddings"] = (-1,)
        return axes
    table = TABLE_LAYERS.get(type(layer).__name__)
    if table and getattr(layer, table[0], None) is not None:
        return {table[1]: (0,)}
    if isinstance(layer, RNN_CELLS):
        return {"kernel": (-1,), "recurrent_kernel": (-1,)}
    return {}


def weight_axes(layer) -> dict[str, tuple[int, ...]]:
    """`{weight name: per-channel axes}` of every kernel the engine quantizes in
    `layer`, else {}.

    Conv, Depthwise, Separable, Transpose, Dense (`linear_weight_axes`),
    EinsumDense and Embedding layers (one grid per table row) name their
    kernels by attribute ("kernel", "embeddings"). Composite layers
    (MultiHeadAttention, TimeDistributed, Bidirectional, LSTM/GRU/SimpleRNN)
    contribute their sublayers' kernels, named as `graph.named_variables`
    names them ("query/kernel", "forward_lstm/lstm_cell/recurrent_kernel"); an
    unbuilt composite layer has none yet. A layer Keras itself already
    quantized (`quantization_mode` set) has none.
    """
    own = _own_weight_axes(layer)
    if (own or getattr(layer, "quantization_mode", None) or isinstance(layer, keras.Model)
            or not isinstance(layer, L.Layer)):
        return own
    return composite_weight_axes(layer)


def composite_weight_axes(layer) -> dict[str, tuple[int, ...]]:
    """`{weight name: per-channel axes}` of the kernels held by `layer`'s tracked
    sublayers (at any depth) that the engine knows, named by their path below
    `layer` ("self_attention_layer/query/kernel"); {} for a layer without such
    sublayers (no sublayers, or weights it created itself)."""
    return {name: axes for name, (axes, _) in _composite_kernels(layer).items()}


def _composite_kernels(layer) -> dict[str, tuple]:
    """`{weight name: (axes, sublayer holding it)}` of `composite_weight_axes`."""
    sublayers = list(layer._flatten_layers(include_self=False, recursive=True))
    if not sublayers:
        return {}
    names = {id(v): name for name, v in named_variables(layer).items()}
    found = {}
    for sublayer in sublayers:
        for attribute, axes in _own_weight_axes(sublayer).items():
            variable = getattr(sublayer, attribute, None)
            if not hasattr(variable, "path"):
                variable = named_variables(sublayer).get(attribute)
            if id(variable) in names:
                found[names[id(variable)]] = (axes, sublayer)
    return found


def sublayer_outputs(layer) -> dict:
    """`{point: sublayer}`: the kernel-holding sublayers of a composite layer that
    is not one of Keras' own (`COMPOSITE`), whose outputs get activation
    quantizers, named by their path below `layer` ("self_attention_layer/query").
    {} for any other layer (Keras' composites keep their output quantizer only:
    an RNN cell runs inside the time loop)."""
    if (isinstance(layer, (COMPOSITE, keras.Model)) or not isinstance(layer, L.Layer)
            or _own_weight_axes(layer) or getattr(layer, "quantization_mode", None)):
        return {}
    points = {}
    for name, (_, sublayer) in _composite_kernels(layer).items():
        points.setdefault(name.rpartition("/")[0], sublayer)
    return {p: s for p, s in points.items() if p}


def sublayer_groups(output_points, kernel_names) -> list[str]:
    """A composite layer's sublayer groups, in order: the points with an output
    quantizer, then those with only kernels below them ("attention/query" for
    "attention/query/kernel"); [] when no point has an output quantizer (not a
    composite: MultiHeadAttention's "query/kernel" is no group)."""
    if not output_points:
        return []
    points = dict.fromkeys(output_points)
    for name in kernel_names:
        points.setdefault(name.rpartition("/")[0])
    return [p for p in points if p]


def variable_name(variable) -> str:
    """A variable's own name: the last part of its Keras 3 path ("conv1/kernel")."""
    return variable.path.split("/")[-1] if getattr(variable, "path", None) else variable.name


def _path_below(variable, layer) -> str:
    """The variable's path below `layer`: "query/kernel" for "mha/query/kernel", also
    when the layer was built inside a wrapper ("mha_wq/mha/query/kernel")."""
    path = getattr(variable, "path", None) or variable.name
    marker = layer.name + "/"
    if path.startswith(marker):
        return path[len(marker):]
    cut = path.rfind("/" + marker)
    return path[cut + len(marker) + 1:] if cut >= 0 else path


def named_variables(layer) -> dict:
    """`{name: variable}` of a layer's weights: the variable's own name ("kernel"),
    or, when two share one (composite layers such as MultiHeadAttention or
    Bidirectional), its path below the layer ("query/kernel")."""
    if not isinstance(layer, L.Layer):
        return {}
    variables = layer.weights
    names = [variable_name(v) for v in variables]
    if len(set(names)) != len(names):
        names = [_path_below(v, layer) for v in variables]
    return dict(zip(names, variables))


# ---------------------------------------------------------------- weight-free layers

IDENTITY = (
    L.Identity, L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
    L.GaussianNoise, L.GaussianDropout, L.AlphaDropout,
)
PADDING = (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D)
AVERAGE_POOLING = (
    L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
)
MAX_POOLING = (
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
)

# Layers whose output holds only values of their input: no new grid needed.
PASSTHROUGH = (
    L.Reshape, L.Flatten, *IDENTITY[1:], L.ActivityRegularization, *MAX_POOLING,
    *PADDING, L.Cropping1D, L.Cropping2D, L.Cropping3D, L.Permute, L.RepeatVector,
    L.Identity,
)

# Weight-free layers whose output is new values: quantized.
ARITHMETIC = (
    L.Activation, L.ReLU, L.LeakyReLU, L.PReLU, L.ELU, L.Softmax, L.Add, L.Subtract,
    L.Multiply, L.Average, L.Maximum, L.Minimum, L.Concatenate, L.Dot,
    *AVERAGE_POOLING, L.BatchNormalization, L.LayerNormalization, L.GroupNormalization,
    L.UnitNormalization, L.Rescaling, L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
    L.Resizing,
)

# keras.ops functions used in a Functional model appear as bare operations.
OPS_PASSTHROUGH = frozenset({
    "Reshape", "Transpose", "Squeeze", "ExpandDims", "Flatten", "Max", "Min",
    # indexing and slicing (`x[:, 0]` is GetItem), and other value-moving operations
    "GetItem", "Slice", "Take", "TakeAlongAxis", "Tile", "Repeat", "BroadcastTo", "Roll",
    "Flip", "Swapaxes", "Moveaxis", "Pad", "Amax", "Amin",
})
OPS_ARITHMETIC = frozenset({
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Concatenate", "Mean", "Sum",
    "Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSwish", "Silu", "Gelu", "Tanh",
    "Softmax", "Maximum", "Minimum", "Negative", "Abs", "Square", "Sqrt", "Exp",
    "LeakyRelu", "Elu", "Matmul", "Average", "Clip",
})

# Activations a target fuses into the layer before (Activation layers by name,
# bare operations by class name).
FUSABLE_ACTIVATIONS = frozenset({"relu", "relu6", "leaky_relu"})
_OPS_RELU_FAMILY = {"Relu": "relu", "Relu6": "relu6", "LeakyRelu": "leaky_relu"}


def activation_name(fn) -> str:
    """The name of an activation function (`keras.activations.relu` -> "relu")."""
    return getattr(fn, "__name__", type(fn).__name__)


def _layer_activation_name(layer) -> str:
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", str(fn))


def kind(layer, is_input: bool = False) -> str:
    """`"input"`, `"weights"`, `"passthrough"`, `"arithmetic"` or `"unknown"`."""
    if is_input:
        return "input"
    if weight_axes(layer):
        return "weights"
    if isinstance(layer, L.Activation) and _layer_activation_name(layer) == "linear":
        return "passthrough"
    if isinstance(layer, PASSTHROUGH):
        return "passthrough"
    if isinstance(layer, ARITHMETIC):
        return "arithmetic"
    if isinstance(layer, L.Layer):
        return "unknown"
    name = type(layer).__name__
    if name in OPS_PASSTHROUGH:
        return "passthrough"
    if name in OPS_ARITHMETIC:
        return "arithmetic"
    return "unknown"


def is_channelwise(layer) -> bool:
    """True for a one-input, channels-last layer whose output channel c depends on
    input channel c alone (what channel pruning removes channels through): an
    elementwise activation (not softmax, not PReLU's shared weights), batch norm
    over the last axis, identity or dropout, zero padding, and a depthwise
    convolution with depth multiplier 1."""
    if isinstance(layer, (*IDENTITY, *PADDING, L.ReLU, L.LeakyReLU, L.ELU)):
        return getattr(layer, "data_format", "channels_last") == "channels_last"
    if isinstance(layer, L.Activation):
        return _layer_activation_name(layer) not in ("softmax", "log_softmax")
    if isinstance(layer, L.BatchNormalization):
        ndim = getattr(getattr(layer, "input_spec", None), "ndim", None)
        return layer.axis in (-1, [-1]) or (ndim is not None and layer.axis in (ndim - 1, [ndim - 1]))
    if type(layer) in DEPTHWISE:
        return layer.depth_multiplier == 1 and layer.data_format == "channels_last"
    return False


def is_relu_family(layer) -> bool:
    """True for a ReLU-family activation a target fuses into the preceding layer
    (any `ReLU`, `LeakyReLU`, `PReLU`, an `Activation` of relu/relu6/leaky_relu,
    or the bare operations)."""
    if isinstance(layer, (L.ReLU, L.LeakyReLU, L.PReLU)):
        return True
    if isinstance(layer, L.Activation):
        return _layer_activation_name(layer) in FUSABLE_ACTIVATIONS
    return type(layer).__name__ in _OPS_RELU_FAMILY


def fused_activation_kind(layer) -> str | None:
    """The link kind of a weight layer's fused activation; None if not homogeneous."""
    name = activation_name(getattr(layer, "activation", None))
    return {"linear": "identity", "relu": "relu", "relu6": "relu6",
            "leaky_relu": "leaky_relu"}.get(name)


def homogeneous_kind(layer) -> str | None:
    """What a one-input layer does to per-channel scales passing through it.

    "relu", "relu6", "leaky_relu", "prelu", "identity", "pad", "avg_pool",
    "max_pool"; None when it is not positively homogeneous per channel
    (a thresholded or clipped ReLU other than ReLU6, channels_first layers,
    anything else).
    """
    if isinstance(layer, L.ReLU):
        if float(layer.threshold) != 0.0:
            return None
        if layer.max_value is None:
            return "relu" if float(layer.negative_slope) == 0.0 else "leaky_relu"
        if float(layer.max_value) == 6.0 and float(layer.negative_slope) == 0.0:
            return "relu6"
        return None
    if isinstance(layer, L.LeakyReLU):
        return "leaky_relu"
    if isinstance(layer, L.PReLU):
        return "prelu"
    if isinstance(layer, L.Activation):
        return fused_activation_kind(layer)
    if isinstance(layer, IDENTITY):
        return "identity"
    if isinstance(layer, (*PADDING, *AVERAGE_POOLING, *MAX_POOLING)):
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return None
        if isinstance(layer, PADDING):
            return "pad"
        return "avg_pool" if isinstance(layer, AVERAGE_POOLING) else "max_pool"
    if not isinstance(layer, L.Layer):
        return _OPS_RELU_FAMILY.get(type(layer).__name__)
    return None
