"""The masked rebuild check: with every quantizer off, the quantized model computes
what the float model computes, also where Keras masks decide the result.

A Keras mask rides on a tensor (`Embedding(mask_zero=True)`, `Masking`, a
layer's `compute_mask`) or enters as an explicit padding-mask input (KerasHub's
`padding_mask`). A quantizer layer that drops it makes attention read the
padding: no error, only a drift the similarity stage would count as
quantization error. Calibration data often holds no padding at all, so this
check builds its own: `padded_batch` copies a few samples and pads the tail of
each row (`pad_length(i)` positions of row i, at least one position left) with
the value that masks it, on every model input that feeds a masking layer.
`check_quantizers_off` then compares, on that batch, the model's outputs with
those of a quantized model of the same graph whose quantizers are all off:

    err = ||y_off - y|| / ||y||  <= REBUILD_TOLERANCE (1e-5)

and raises `RebuildMismatchError` naming the first node (graph order) whose
output differs, when it does not hold.

Example:

```python
batch = padded_batch(graph, [tokens[:4]])      # None: no input feeds a mask
if batch is not None:
    check_quantizers_off(model, graph, plan, batch)
```
"""

from __future__ import annotations

import keras
import numpy as np
from keras import tree

from mct_logger.graph.ir import Graph, TensorRef
from mct_logger.diagnostics.metrics import norm_relative_error
from mct_logger.quantization.quantsim import build_quantized_model, set_quantizers_enabled
from mct_logger.diagnostics.rebuild_check import REBUILD_TOLERANCE, RebuildMismatchError

__all__ = ["check_quantizers_off", "mask_pad_values", "padded_batch"]


def _masking_pad_value(layer):
    """The input value a layer masks (None: the layer masks nothing)."""
    if isinstance(layer, keras.layers.Masking):
        return float(layer.mask_value)
    if getattr(layer, "mask_zero", False):  # Embedding, KerasHub's token embeddings
        return 0
    return None


def mask_pad_values(graph: Graph) -> dict[str, float]:
    """`{input name: pad value}` of every model input that feeds a masking layer
    (directly, or through weight-free value-moving operations such as a cast),
    and of integer or boolean inputs named like a padding mask (`padding_mask`,
    pad value 0: the position is padding)."""
    found = {}
    for name in graph.input_names:
        node = graph.nodes[name]
        dtype = str(node.output_dtypes[0])
        if name.endswith("mask") and ("int" in dtype or "bool" in dtype):
            found[name] = 0
            continue
        frontier, seen = [name], set()
        while frontier:
            current = frontier.pop()
            for consumer in graph.consumers(current):
                if consumer.name in seen:
                    continue
                seen.add(consumer.name)
                value = _masking_pad_value(consumer.layer)
                if value is not None:
                    found[name] = value
                    frontier = []
                    break
                if not isinstance(consumer.layer, keras.layers.Layer):
                    frontier.append(consumer.name)  # a keras.ops call on the input
    return found


def pad_length(row: int, length: int) -> int:
    """How many trailing positions of row `row` (of `length`) are padded: 1 to
    half of them, varying by row, so the batch holds several padding lengths."""
    return 1 + row % max(1, length // 2)


def padded_batch(graph: Graph, batch: list) -> list | None:
    """A copy of `batch` (one array per model input) whose rows end in padding on
    every input `mask_pad_values` names; None when no input feeds a mask or the
    masked inputs have no sequence axis."""
    pads = mask_pad_values(graph)
    if not pads:
        return None
    result, padded = [], False
    for name, x in zip(graph.input_names, batch):
        x = np.array(x, copy=True)
        if name in pads and x.ndim >= 2 and x.shape[1] > 1:
            for row in range(x.shape[0]):
                x[row, x.shape[1] - pad_length(row, x.shape[1]):] = pads[name]
            padded = True
        result.append(x)
    return result if padded else None


def check_quantizers_off(model: keras.Model, graph: Graph, plan: dict, batch: list,
                         tolerance: float = REBUILD_TOLERANCE, clones=None) -> float:
    """Checks that `graph`'s quantized model with every quantizer off computes what
    `model` computes on `batch` (one array per model input, `graph.input_names`
    order; `padded_batch` gives one that exercises masks).

    `graph` must be the graph read from `model`, before any stage changed a
    weight (folding, CLE and bias correction change the float function).

    Returns:
        The largest norm-relative error over the outputs (<= `tolerance`).

    Raises:
        RebuildMismatchError: an output differs by more than `tolerance`; it
            names the first node, in graph order, whose output differs (the
            layer that lost a mask, or the first one reading a lost mask).
    """
    inputs = tree.pack_sequence_as(graph.inputs_struct, [np.asarray(x) for x in batch])
    expected = [keras.ops.convert_to_numpy(y) for y in tree.flatten(model(inputs, training=False))]
    quantized = build_quantized_model(graph, plan, {}, name=f"{graph.name}_quantizers_off",
                                      clones=clones)
    set_quantizers_enabled(quantized, weights=False, activations=False)
    got = [keras.ops.convert_to_numpy(y) for y in tree.flatten(quantized(inputs, training=False))]
    errors = [norm_relative_error(g, e) for g, e in zip(got, expected)]
    worst = max(errors, default=0.0)
    if worst <= tolerance:
        return worst
    node, error = _first_differing_node(graph, plan, batch, tolerance)
    where = (f"the first node whose output differs is {node!r} (norm-relative error "
             f"{error:.3g})" if node else "no single node output differs alone")
    raise RebuildMismatchError(
        f"With every quantizer off, the quantized model of {graph.name!r} does not compute "
        f"what the model computes on padded inputs (norm-relative output error {worst:.3g}, "
        f"tolerance {tolerance:g}): {where}. A Keras mask (Embedding(mask_zero=True), "
        "Masking, a padding-mask input) is lost on the way to it. Keep that node in float "
        "with QuantizationConfig(overrides={name: LayerOverride(keep_float=True)}) and "
        "report the layer class to mct-logger.",
        node=node,
    )


def _first_differing_node(graph: Graph, plan: dict, batch: list, tolerance: float):
    """`(node name, error)` of the first node (graph order) whose output in the
    quantizers-off model differs from the float rebuilt model's, or `(None, 0.0)`."""
    refs = [TensorRef(n.name, i) for n in graph if not n.is_input
            for i in range(len(n.output_shapes))]
    inputs = [np.asarray(x) for x in batch]
    float_probe = graph.to_keras(name=f"{graph.name}_float_probe", extra_outputs=refs)
    off_probe = build_quantized_model(graph, plan, {}, name=f"{graph.name}_off_probe",
                                      extra_outputs=refs)
    set_quantizers_enabled(off_probe, weights=False, activations=False)
    skip = len(graph.outputs)
    want = tree.flatten(float_probe(inputs, training=False))[skip:]
    got = tree.flatten(off_probe(inputs, training=False))[skip:]
    for ref, w, g in zip(refs, want, got):
        error = norm_relative_error(keras.ops.convert_to_numpy(g), keras.ops.convert_to_numpy(w))
        if error > tolerance:
            return ref.node, error
    return None, 0.0
