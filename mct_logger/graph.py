"""The model IR: a Keras Functional or Sequential model as named nodes and edges.

Every PTQ stage reads and returns a `Graph`; `Graph.to_keras()` builds a fresh
Keras model back. Nested models are flattened (`outer/inner` node names, which
TensorBoard groups), the k-th call of a shared layer is the node `name/call_k`, and
nothing here ever mutates the model it was read from.

Each rebuilt layer is cloned from `get_config()` and given the original's whole
state through Keras' own save/load path (`copy_layer_state`: variables, derived
state such as an adapted `Normalization`'s mean and variance, vocabularies).
`check_rebuilt_graph` proves it on data: with y the model's outputs and y' the
rebuilt graph's on the same batch, `||y' - y|| / ||y|| <= 1e-5` per output, or
an error naming the first node whose rebuilt output differs.

Example:

```python
graph = read_model(model)
rebuilt = graph.to_keras()          # same outputs, independent weights
check_rebuilt_graph(model, graph, [x_batch])   # raises RebuildMismatchError if not
graph.nodes["conv1"].output_shapes  # [(None, 8, 8, 16)]
```
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
from typing import Any, Callable

import keras
import numpy as np
from keras import tree

logger = logging.getLogger("mct_logger")


# The k-th call of a shared layer (or nested model) is the node `name/call_k`:
# one form every view can show, TensorBoard's Graphs tab included (a GraphDef
# name cannot hold ":"), where the calls group under `name`.
CALL_SEPARATOR = "/call_"
_CALL_SUFFIX = re.compile(r"/call_\d+$")


def call_name(base: str, k: int) -> str:
    """The node name of the k-th call (from 0) of the layer or nested model `base`."""
    return f"{base}{CALL_SEPARATOR}{k}"


def layer_name_of(node_name: str) -> str:
    """The Keras layer name of a node: `outer/inner` -> `inner`, `shared/call_1` -> `shared`."""
    return _CALL_SUFFIX.sub("", node_name).split("/")[-1]


@dataclasses.dataclass(frozen=True)
class TensorRef:
    """The `index`-th output of the node called `node`."""

    node: str
    index: int = 0


@dataclasses.dataclass
class Node:
    """One call of one Keras operation.

    `args`/`kwargs` are the call arguments with every tensor replaced by a
    `TensorRef`. `layer` is the prototype the node is built from: it is never
    called into a new model, only cloned, so stages can share it freely.
    `info` carries facts stages leave for later ones (e.g. a folded batch
    norm's gamma and beta).
    """

    name: str
    layer: Any
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    output_shapes: list = dataclasses.field(default_factory=list)
    output_dtypes: list = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)
    owns_weights: bool = True  # False for the second and later calls of a shared layer

    @property
    def is_input(self) -> bool:
        return isinstance(self.layer, keras.layers.InputLayer)

    @property
    def layer_class(self) -> str:
        return type(self.layer).__name__

    @property
    def has_single_float_output(self) -> bool:
        return len(self.output_dtypes) == 1 and "float" in str(self.output_dtypes[0])

    def call(self, layer, values: dict):
        """Calls `layer` with this node's arguments, tensors taken from `values`
        (TensorRef -> tensor); returns its flat outputs."""
        fill = lambda v: values[v] if isinstance(v, TensorRef) else v  # noqa: E731
        return tree.flatten(
            layer(*tree.map_structure(fill, self.args), **tree.map_structure(fill, self.kwargs))
        )

    @property
    def inputs(self) -> list[TensorRef]:
        return [
            x for x in tree.flatten((self.args, self.kwargs)) if isinstance(x, TensorRef)
        ]

    def weights(self) -> dict[str, np.ndarray]:
        """The layer's weights by variable name, as NumPy arrays.

        Composite layers (e.g. MultiHeadAttention) hold several "kernel"s; their
        names keep the sublayer part ("query/kernel") so none is dropped.
        """
        return {
            name: keras.ops.convert_to_numpy(v.value) for name, v in self._named_variables()
        }

    def weight_sizes(self) -> dict[str, int]:
        """Element count of each weight, by the same names as `weights()`, without copying."""
        return {name: int(np.prod(v.shape)) for name, v in self._named_variables()}

    def _named_variables(self) -> list:
        return list(named_variables(self.layer).items())

    def parameter_count(self) -> int:
        if not self.owns_weights or not isinstance(self.layer, keras.layers.Layer):
            return 0
        return int(sum(np.prod(v.shape) for v in self.layer.weights))

    def output_elements(self) -> int:
        """Elements of all outputs at batch size 1."""
        total = 0
        for shape in self.output_shapes:
            dims = [d for d in shape[1:]]
            if any(d is None for d in dims):
                continue  # dynamic spatial size: unknown at batch 1
            total += int(np.prod(dims)) if dims else 1
        return total


def _variable_name(variable) -> str:
    # Keras 3 variable paths look like "conv1/kernel"; the last part is stable.
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
    if not isinstance(layer, keras.layers.Layer):
        return {}
    variables = layer.weights
    names = [_variable_name(v) for v in variables]
    if len(set(names)) != len(names):
        names = [_path_below(v, layer) for v in variables]
    return dict(zip(names, variables))


class Graph:
    """Nodes in topological order, the model's inputs and its outputs."""

    def __init__(self, name, nodes, input_names, outputs, inputs_struct, outputs_struct):
        self.name = name
        self.nodes: dict[str, Node] = {n.name: n for n in nodes}
        self.input_names: list[str] = list(input_names)
        self.outputs: list[TensorRef] = list(outputs)
        self._inputs_struct = inputs_struct
        self._outputs_struct = outputs_struct

    def __repr__(self):
        return f"<Graph {self.name!r}: {len(self.nodes)} nodes>"

    def __iter__(self):
        return iter(self.nodes.values())

    def copy(self) -> "Graph":
        """A new graph whose nodes can be replaced without touching this one."""
        nodes = [dataclasses.replace(n, info=dict(n.info)) for n in self.nodes.values()]
        return Graph(
            self.name, nodes, self.input_names, self.outputs,
            self._inputs_struct, self._outputs_struct,
        )

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes.values() if any(r.node == name for r in n.inputs)]

    def is_model_output(self, name: str) -> bool:
        return any(r.node == name for r in self.outputs)

    def remove_node(self, name: str, replacement: TensorRef) -> None:
        """Drops a single-output node, pointing its consumers at `replacement`."""
        def swap(x):
            if isinstance(x, TensorRef) and x.node == name:
                return replacement
            return x

        del self.nodes[name]
        for node in self.nodes.values():
            node.args = tree.map_structure(swap, node.args)
            node.kwargs = tree.map_structure(swap, node.kwargs)
        self.outputs = [swap(r) for r in self.outputs]

    def parameter_count(self) -> int:
        return sum(n.parameter_count() for n in self.nodes.values())

    def to_keras(
        self,
        name: str | None = None,
        make_layer: Callable[[Node, Any], Any] | None = None,
        wrap_outputs: Callable[[Node, list], list] | None = None,
        extra_outputs: list[TensorRef] | None = None,
    ) -> keras.Model:
        """Builds a new Keras Functional model from the graph.

        Args:
            make_layer: `(node, clone) -> callable` that may wrap the node's
                freshly cloned layer (e.g. in a weight quantizer).
            wrap_outputs: `(node, outputs) -> outputs`, applied to every
                node's flat outputs, inputs included (e.g. activation quantizers).
            extra_outputs: tensors appended, as a flat list, after the model's
                own outputs (e.g. every layer output for calibration).
        """
        clones: dict[int, Any] = {}
        used_names: set[str] = set()
        values: dict[TensorRef, Any] = {}
        model_inputs: dict[str, Any] = {}  # raw keras.Input tensors, before any wrapping
        for node in self.nodes.values():
            if node.is_input:
                shape = node.output_shapes[0]
                x = keras.Input(
                    batch_shape=shape, dtype=node.output_dtypes[0], name=node.layer.name
                )
                used_names.add(node.layer.name)
                model_inputs[node.name] = x
                outs = [x]
            else:
                layer = clones.get(id(node.layer))
                first_call = layer is None
                if first_call:
                    layer = _clone_layer(node, used_names)
                    clones[id(node.layer)] = layer
                call = make_layer(node, layer) if make_layer else layer
                outs = node.call(call, values)
                if first_call and isinstance(layer, keras.layers.Layer) and layer is not node.layer:
                    copy_layer_state(node.layer, layer)
            if wrap_outputs is not None:
                outs = wrap_outputs(node, outs)
            for i, t in enumerate(outs):
                values[TensorRef(node.name, i)] = t
        inputs = [model_inputs[n] for n in self.input_names]
        outputs = [values[r] for r in self.outputs]
        if extra_outputs:
            outputs = outputs + [values[r] for r in extra_outputs]
        else:
            outputs = tree.pack_sequence_as(self._outputs_struct, outputs)
            inputs = tree.pack_sequence_as(self._inputs_struct, inputs)
        return keras.Model(inputs=inputs, outputs=outputs, name=name or self.name)


def _clone_layer(node: Node, used_names: set[str]):
    """A fresh, unbuilt copy of the node's layer with a name unique in the new model."""
    layer = node.layer
    if not isinstance(layer, keras.layers.Layer):
        used_names.add(layer.name)  # reused under its own name: later layers must avoid it
        return layer  # a stateless keras.ops operation: safe to reuse
    if node.info.get(REUSE_LAYER):
        used_names.add(layer.name)  # kept in float by an override: the user's own object
        return layer
    try:
        config = layer.get_config()
        name = config.get("name", layer.name)
        if name in used_names:
            # The node name alone can clash too: an outer "dense" after an inner
            # "block/dense" that kept the plain name.
            base = name = _keras_safe(node.name)
            suffix = 1
            while name in used_names:
                suffix += 1
                name = f"{base}_{suffix}"
            config["name"] = name
        clone = type(layer).from_config(config)
    except Exception as exc:  # custom layers without a working get_config
        logger.warning(
            "Layer %r (%s) cannot be cloned from its config (%s); the new model "
            "shares this layer object with the original.",
            layer.name, type(layer).__name__, exc,
        )
        name = layer.name
        clone = layer
    used_names.add(name)
    return clone


def copy_layer_state(source, clone) -> None:
    """Gives the built `clone` all of `source`'s state, not only its weights.

    `set_weights` misses state that lives outside the weight list or is derived
    from it: an adapted `Normalization` keeps its mean and variance as tensors
    computed by `finalize_state()`, an adapted `IntegerLookup` /
    `StringLookup` / `TextVectorization` keeps its vocabulary in a lookup table.
    Keras' own saving path carries all of it, so this uses that path layer by
    layer (the layer and every sublayer, paired in `_flatten_layers` order):
    `save_own_variables` into a dict and `load_own_variables` from it (which
    calls `finalize_state` where the layer needs it), and `save_assets` /
    `load_assets` through a temporary folder for vocabularies.

    A layer whose saving path fails here (e.g. a custom layer whose clone
    builds other sublayers) gets `set_weights` and a warning; PTQ's
    `check_rebuilt_graph` then tells whether anything was lost.
    """
    try:
        _copy_saved_state(source, clone)
    except Exception as exc:  # noqa: BLE001 - any failure of a layer's own saving code
        logger.warning(
            "Layer %r (%s): its saved state could not be copied to the rebuilt layer "
            "(%s: %s); copying its weights only.",
            source.name, type(source).__name__, type(exc).__name__, exc,
        )
        clone.set_weights(source.get_weights())


def _copy_saved_state(source, clone) -> None:
    sources = list(source._flatten_layers(include_self=True, recursive=True))
    clones = list(clone._flatten_layers(include_self=True, recursive=True))
    if len(sources) != len(clones):
        raise ValueError(
            f"the clone has {len(clones)} sublayer(s) instead of {len(sources)}"
        )
    assets = None
    try:
        for i, (src, dst) in enumerate(zip(sources, clones)):
            store: dict = {}
            src.save_own_variables(store)
            store = {
                k: keras.ops.convert_to_numpy(v) if hasattr(v, "dtype") else v
                for k, v in store.items()
            }
            if store or dst.weights:
                dst.load_own_variables(store)
            if hasattr(src, "save_assets") and hasattr(dst, "load_assets"):
                if assets is None:
                    assets = tempfile.mkdtemp(prefix="mct_logger_assets_")
                folder = os.path.join(assets, str(i))
                os.makedirs(folder)
                src.save_assets(folder)
                dst.load_assets(folder)
    finally:
        if assets is not None:
            shutil.rmtree(assets, ignore_errors=True)


def _keras_safe(name: str) -> str:
    return re.sub(r"[/:]", "_", name)


class GraphError(ValueError):
    """The model cannot be read as a graph."""


# `Node.info` key: build this node from its own layer object, never a clone.
# PTQ sets it on a node an override keeps in float when its clone differs
# from the user's layer, so that layer still computes exactly what it computes
# in the user's model (the rebuilt models then share that one layer object).
REUSE_LAYER = "reuse_layer"

# Largest norm-relative error ||rebuilt - model|| / ||model|| accepted between
# the rebuilt float graph and the user's model (float32 rounding is ~1e-7).
REBUILD_TOLERANCE = 1e-5


class RebuildMismatchError(GraphError):
    """The float graph rebuilt from the model does not compute what the model computes.

    Attributes:
        node: the first node (graph order) whose rebuilt output differs from its
            own layer's output on the same inputs, or None if none does alone.
    """

    def __init__(self, message: str, node: str | None = None):
        super().__init__(message)
        self.node = node


def norm_relative_error(a, b) -> float:
    """`||a - b|| / ||b||` in float64 over all elements (`||a - b||` when b is all
    zeros); inf when the arrays' shapes or NaN/Inf positions differ. Positions
    where both hold the same non-finite value count as equal."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    finite = np.isfinite(b)
    if np.any(np.isfinite(a) != finite):
        return float("inf")
    x, y = a[~finite], b[~finite]
    if not np.all((x == y) | (np.isnan(x) & np.isnan(y))):
        return float("inf")
    a, b = a[finite], b[finite]
    denominator = np.linalg.norm(b)
    numerator = np.linalg.norm(a - b)
    return float(numerator / denominator) if denominator > 0 else float(numerator)


def check_rebuilt_graph(model: keras.Model, graph: Graph, batch: list,
                        tolerance: float = REBUILD_TOLERANCE) -> float:
    """Checks that `graph.to_keras()` computes what `model` computes on `batch`.

    Every stage works on models rebuilt from the graph (each layer cloned from
    `get_config()` and given the original's state), so a layer whose state
    does not survive that (a custom layer with an incomplete `get_config`, a
    preprocessing layer nobody has tried yet) would make every later number
    describe another model. This compares the rebuilt model's outputs with the
    model's on `batch` (one array per model input, in `graph.input_names`
    order), output by output.

    Returns:
        The largest norm-relative error over the model's outputs (<= `tolerance`).

    Raises:
        RebuildMismatchError: an output differs by more than `tolerance`; the
            message names the first node, in graph order, whose rebuilt output
            differs from the model's own layer's output on the same inputs, and
            the fix (keep it in float by an override, which reuses the layer
            object itself, or report the layer).
    """
    inputs = tree.pack_sequence_as(graph._inputs_struct, list(batch))
    expected = [keras.ops.convert_to_numpy(y) for y in tree.flatten(model(inputs, training=False))]
    rebuilt = graph.to_keras(name=f"{graph.name}_rebuild_check")
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


def read_model(model: keras.Model) -> Graph:
    """Reads a Keras Functional or Sequential model into a `Graph`.

    Nested Functional/Sequential models (e.g. a `keras.applications`
    backbone used as a layer) are flattened into their layers.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected a keras.Model, got {type(model).__name__}. Pass the Keras "
            "model you want to quantize."
        )
    functional = _functional_of(model, "model")
    graph_nodes: list[_Pending] = []
    input_refs = []
    for t in functional.inputs:
        op, node_index, _ = t._keras_history
        graph_nodes.append(
            _Pending(key=("", id(op)), layer=op, call_order=node_index, prefix="",
                     args=(), kwargs={}, outputs=[t])
        )
        input_refs.append(len(graph_nodes) - 1)
    tensor_map = {id(t): (i, 0) for t, i in zip(functional.inputs, input_refs)}
    out_refs = _trace(functional, tensor_map, "", graph_nodes)

    names = _assign_names(graph_nodes)
    nodes = []
    for i, p in enumerate(graph_nodes):
        to_ref = lambda x: TensorRef(names[x.index], x.output) if isinstance(x, _Slot) else x  # noqa: E731
        nodes.append(
            Node(
                name=names[i],
                layer=p.layer,
                args=tree.map_structure(to_ref, p.args),
                kwargs=tree.map_structure(to_ref, p.kwargs),
                output_shapes=[tuple(t.shape) for t in p.outputs],
                output_dtypes=[t.dtype for t in p.outputs],
                owns_weights=p.owns_weights,
            )
        )
    outputs = [TensorRef(names[i], k) for i, k in out_refs]
    graph = Graph(
        model.name, nodes, [names[i] for i in input_refs], outputs,
        functional._inputs_struct, functional._outputs_struct,
    )
    return graph


@dataclasses.dataclass(frozen=True)
class _Slot:
    """(pending node index, output index) placeholder used while tracing."""

    index: int
    output: int


@dataclasses.dataclass
class _Pending:
    key: tuple
    layer: Any
    call_order: int
    prefix: str
    args: Any
    kwargs: Any
    outputs: list
    owns_weights: bool = True


def _functional_of(model, where: str):
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise GraphError(
                f"The Sequential model {model.name!r} ({where}) has no input shape "
                "yet. Start it with keras.Input(shape=...) or call "
                "model.build((None, ...)) before quantizing."
            )
        return functional
    if hasattr(model, "_nodes_by_depth") and hasattr(model, "_outputs_struct"):
        return model
    raise GraphError(
        f"The model {model.name!r} ({where}) is a subclassed keras.Model, which "
        "has no graph to read. Rebuild it as a Functional model "
        "(keras.Model(inputs, outputs) from keras.Input) or a Sequential model, "
        "reusing its layers and weights, and quantize that."
    )


def _trace(functional, tensor_map, prefix, pending) -> list[tuple[int, int]]:
    """Appends the functional model's calls to `pending`; returns its output slots."""
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for knode in functional._nodes_by_depth[depth]:
            op = knode.operation
            if knode.is_input:
                continue
            if isinstance(op, keras.Model):
                inner = _functional_of(op, f"nested in {functional.name!r}")
                call_args = tree.flatten((knode.arguments.args, knode.arguments.kwargs))
                outer = [tensor_map[id(t)] for t in call_args if _is_keras_tensor(t)]
                if len(outer) != len(inner.inputs):
                    raise GraphError(
                        f"Nested model {op.name!r} was called with {len(outer)} "
                        f"tensors but has {len(inner.inputs)} inputs."
                    )
                inner_map = {id(t): s for t, s in zip(inner.inputs, outer)}
                calls = _calls_of(op, functional)
                nested_prefix = f"{prefix}{op.name}"
                if len(calls) > 1:
                    nested_prefix = call_name(nested_prefix, calls.index(knode))
                results = _trace(inner, inner_map, nested_prefix + "/", pending)
                for t, slot in zip(knode.outputs, results):
                    tensor_map[id(t)] = slot
                continue
            to_slot = (
                lambda x: _Slot(*tensor_map[id(x)]) if _is_keras_tensor(x) else x  # noqa: E731
            )
            pending.append(
                _Pending(
                    key=(prefix, id(op)),
                    layer=op,
                    call_order=op._inbound_nodes.index(knode),
                    prefix=prefix,
                    args=tree.map_structure(to_slot, knode.arguments.args),
                    kwargs=tree.map_structure(to_slot, knode.arguments.kwargs),
                    outputs=list(knode.outputs),
                )
            )
            for k, t in enumerate(knode.outputs):
                tensor_map[id(t)] = (len(pending) - 1, k)
    return [tensor_map[id(t)] for t in functional.outputs]


def _calls_of(op, functional) -> list:
    """The op's calls in this model, in call order.

    Positions in `op._inbound_nodes` also count calls made while building
    other models, so `k` in `name/call_k` is the rank among this model's calls.
    """
    calls = [
        n for nodes in functional._nodes_by_depth.values() for n in nodes if n.operation is op
    ]
    return sorted(calls, key=op._inbound_nodes.index)


def _is_keras_tensor(x) -> bool:
    return isinstance(x, keras.KerasTensor)


def _assign_names(pending: list[_Pending]) -> list[str]:
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(pending):
        groups.setdefault(p.key, []).append(i)
    names = [""] * len(pending)
    for indices in groups.values():
        first = pending[indices[0]]
        base = first.prefix + first.layer.name
        if len(indices) == 1:
            names[indices[0]] = base
            continue
        ordered = sorted(indices, key=lambda i: pending[i].call_order)
        for k, i in enumerate(ordered):
            names[i] = call_name(base, k)
    # The first call in graph order carries the weights (memory, quantizers). By
    # layer, not by name: a nested model called twice shares its layers too.
    owners: set[int] = set()
    for p in pending:
        p.owns_weights = id(p.layer) not in owners
        owners.add(id(p.layer))
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:  # two distinct ops with one name: keep both, distinguishably
            seen[name] += 1
            names[i] = f"{name}_{seen[name]}"
        else:
            seen[name] = 0
    return names
