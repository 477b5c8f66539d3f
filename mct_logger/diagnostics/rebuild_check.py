"""The rebuild check: does the float graph rebuilt from a model compute what the model computes?

Every stage works on models rebuilt from the graph (each layer cloned from
`get_config()` and given the original's state, `mct_logger.graph.clone`), so a
layer whose state does not survive that would make every later number describe
another model. `check_rebuilt_graph` compares outputs by the norm-relative
error `||rebuilt - model|| / ||model||` (`metrics.norm_relative_error`) and,
above `REBUILD_TOLERANCE`, names the first diverging node.

A graph made only of Keras' own layers whose whole state is their variables
and config (`EXACT_LAYERS`), read from plain Functional and Sequential models,
is rebuilt exactly by construction (`rebuilt_exactly`): the check needs no
data then, and costs nothing (two eager passes and a model build otherwise,
about a third of PTQ's time on MobileNetV2).

Example:

```python
check_rebuilt_graph(model, read_model(model), [x_batch])   # <= 1e-5, or raises
```
"""

from __future__ import annotations

import keras
import numpy as np
from keras import tree

from mct_logger.graph.ir import Graph, GraphError, TensorRef
from mct_logger.diagnostics.metrics import norm_relative_error

__all__ = ["EXACT_LAYERS", "REBUILD_TOLERANCE", "RebuildMismatchError", "check_rebuilt_graph",
           "rebuilt_exactly"]

# Largest norm-relative error ||rebuilt - model|| / ||model|| accepted between
# the rebuilt float graph and the user's model (float32 rounding is ~1e-7).
REBUILD_TOLERANCE = 1e-5


def _exact_layers() -> frozenset:
    names = (
        # weights and config are the whole state
        "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
        "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
        "SeparableConv2D", "Dense", "EinsumDense", "Embedding", "BatchNormalization",
        "LayerNormalization", "MultiHeadAttention", "PReLU",
        # no state at all
        "InputLayer", "ReLU", "LeakyReLU", "ELU", "Softmax", "Activation", "Add",
        "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot",
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
        "Cropping3D", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
        "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
        "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
        "GlobalMaxPooling2D", "GlobalMaxPooling3D", "Flatten", "Reshape", "Permute",
        "RepeatVector", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
        "SpatialDropout3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Identity",
        "Rescaling",
    )
    return frozenset(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n))


# Layer classes (exact types, not subclasses) a clone reproduces by construction.
EXACT_LAYERS = _exact_layers()


def rebuilt_exactly(model: keras.Model, graph: Graph) -> bool:
    """Whether `graph.to_keras()` computes what `model` computes by construction:
    every model in it (nested ones included) is a plain Functional or Sequential
    model, so its graph is what its `call` runs, and every node is a
    `keras.ops` operation or a layer of exactly an `EXACT_LAYERS` class, whose
    clone (config plus variables, `graph.clone`) is the same function."""
    for m in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(m, keras.Model) and not (
                type(m).__name__ in ("Functional", "Sequential")
                and type(m).__module__.startswith("keras.")):
            return False
    return all(type(node.layer) in EXACT_LAYERS or not isinstance(node.layer, keras.layers.Layer)
               for node in graph)


class RebuildMismatchError(GraphError):
    """The float graph rebuilt from the model does not compute what the model computes.

    Attributes:
        node: the first node (graph order) whose rebuilt output differs from its
            own layer's output on the same inputs, or None if none does alone.
    """

    def __init__(self, message: str, node: str | None = None):
        super().__init__(message)
        self.node = node


def check_rebuilt_graph(model: keras.Model, graph: Graph, batch: list,
                        tolerance: float = REBUILD_TOLERANCE, clones=None) -> float:
    """Checks that `graph.to_keras()` computes what `model` computes on `batch`.

    Every stage works on models rebuilt from the graph (each layer cloned from
    `get_config()` and given the original's state), so a layer whose state
    does not survive that (a custom layer with an incomplete `get_config`, a
    preprocessing layer nobody has tried yet) would make every later number
    describe another model. This compares the rebuilt model's outputs with the
    model's on `batch` (one array per model input, in `graph.input_names`
    order), output by output. A graph `rebuilt_exactly` is not run: 0.0.
    `clones`: a `CloneCache` the rebuilt layers go into, for the later models
    of the same run.

    Returns:
        The largest norm-relative error over the model's outputs (<= `tolerance`).

    Raises:
        RebuildMismatchError: an output differs by more than `tolerance`; the
            message names the first node, in graph order, whose rebuilt output
            differs from the model's own layer's output on the same inputs, and
            the fix (keep it in float by an override, which reuses the layer
            object itself, or report the layer).
    """
    if rebuilt_exactly(model, graph):
        return 0.0
    inputs = tree.pack_sequence_as(graph.inputs_struct, list(batch))
    expected = [keras.ops.convert_to_numpy(y) for y in tree.flatten(model(inputs, training=False))]
    rebuilt = graph.to_keras(name=f"{graph.name}_rebuild_check", clones=clones)
    got = [keras.ops.convert_to_numpy(y) for y in tree.flatten(rebuilt(inputs, training=False))]
    errors = [norm_relative_error(g, e) for g, e in zip(got, expected)]
    worst = max(errors, default=0.0)
    if worst <= tolerance:
        return worst
    node, error = _first_diverging_node(graph, batch, tolerance)
    if node is None:
        output = graph.outputs[int(np.argmax(errors))].node
        where = (f"No single node differs on its own; the differences add up to "
                 f"{worst:.3g} at the output {output!r}")
        culprit = output
    else:
        where = (f"The first node that differs is {node.name!r} ({node.layer_class}): "
                 f"norm-relative error {error:.3g} on the same inputs")
        culprit = node.name
    raise RebuildMismatchError(
        f"The float graph rebuilt from model {graph.name!r} does not compute what the "
        f"model computes: norm-relative output error {worst:.3g} on the first "
        f"calibration batch (tolerance {tolerance:g}). {where}; its layer keeps state "
        "that get_config() and its saved variables do not carry. Keep it in float "
        f"with QuantizationConfig(overrides={{{culprit!r}: LayerOverride(keep_float=True)}}), "
        "which uses your layer object itself, or report the layer class to mct-logger.",
        node=None if node is None else node.name,
    )


def _first_diverging_node(graph: Graph, batch: list, tolerance: float):
    """`(node, error)` of the first node whose rebuilt output differs from its own
    layer's output on the model's values, or `(None, 0.0)`."""
    refs = [TensorRef(n.name, i) for n in graph if not n.is_input
            for i in range(len(n.output_shapes))]
    probe = graph.to_keras(name=f"{graph.name}_rebuild_probe", extra_outputs=refs)
    flat = probe(list(batch), training=False)
    rebuilt = dict(zip(refs, tree.flatten(flat)[len(graph.outputs):]))
    values = {TensorRef(name, 0): keras.ops.convert_to_tensor(x)
              for name, x in zip(graph.input_names, batch)}
    for node in graph:
        if node.is_input:
            continue
        outs = node.call(node.layer, values)
        for i, y in enumerate(outs):
            values[TensorRef(node.name, i)] = y
            error = norm_relative_error(
                keras.ops.convert_to_numpy(rebuilt[TensorRef(node.name, i)]),
                keras.ops.convert_to_numpy(y),
            )
            if error > tolerance:
                return node, error
    return None, 0.0
