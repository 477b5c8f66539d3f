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
import re
from typing import Any, Callable

import keras
import numpy as np
from keras import tree

from mct_logger.graph.clone import REUSE_LAYER, CloneCache, LayerCloner  # noqa: F401  (REUSE_LAYER re-exported)
from mct_logger.graph.layer_kinds import named_variables, variable_name  # noqa: F401  (re-exported)

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
        return list(self._input_refs()[0])

    def reads(self, name: str) -> bool:
        """Whether an output of node `name` is an input of this node."""
        return name in self._input_refs()[1]

    def _input_refs(self) -> tuple:
        # Kept until `args` or `kwargs` is replaced (stages replace them, never
        # edit them in place): graph walks ask every node for its inputs often.
        cached = self.__dict__.get("_inputs")
        if cached is None or cached[0] is not self.args or cached[1] is not self.kwargs:
            refs = [x for x in tree.flatten((self.args, self.kwargs)) if isinstance(x, TensorRef)]
            cached = self.__dict__["_inputs"] = (self.args, self.kwargs, refs,
                                                 frozenset(r.node for r in refs))
        return cached[2], cached[3]

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


class Graph:
    """Nodes in topological order, the model's inputs and its outputs."""

    def __init__(self, name, nodes, input_names, outputs, inputs_struct, outputs_struct):
        self.name = name
        self.nodes: dict[str, Node] = {n.name: n for n in nodes}
        self.input_names: list[str] = list(input_names)
        self.outputs: list[TensorRef] = list(outputs)
        self._inputs_struct = inputs_struct
        self._outputs_struct = outputs_struct

    @property
    def inputs_struct(self):
        """The nesting of the model's inputs (a list, dict... of input names' tensors)."""
        return self._inputs_struct

    @property
    def outputs_struct(self):
        """The nesting of the model's outputs."""
        return self._outputs_struct

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
        return [n for n in self.nodes.values() if n.reads(name)]

    def is_model_output(self, name: str) -> bool:
        return any(r.node == name for r in self.outputs)

    def remove_node(self, name: str, replacement: TensorRef) -> None:
        """Drops a single-output node, pointing its consumers at `replacement`."""
        def swap(x):
            if isinstance(x, TensorRef) and x.node == name:
                return replacement
            return x

        del self.nodes[name]
        for node in self.consumers(name):
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
        clones: CloneCache | None = None,
    ) -> keras.Model:
        """Builds a new Keras Functional model from the graph.

        Args:
            make_layer: `(node, clone) -> callable` that may wrap the node's
                freshly cloned layer (e.g. in a weight quantizer).
            wrap_outputs: `(node, outputs) -> outputs`, applied to every
                node's flat outputs, inputs included (e.g. activation quantizers).
            extra_outputs: tensors appended, as a flat list, after the model's
                own outputs (e.g. every layer output for calibration).
            clones: a `CloneCache` shared with other models of the same run, which
                then share the clones of the prototypes they have in common (only
                for models that never change a clone's state).
        """
        cloner = LayerCloner(clones)
        values: dict[TensorRef, Any] = {}
        model_inputs: dict[str, Any] = {}  # raw keras.Input tensors, before any wrapping
        for node in self.nodes.values():
            if node.is_input:
                x = cloner.model_input(node)
                model_inputs[node.name] = x
                outs = [x]
            else:
                outs, _ = cloner.call(node, values, make_layer)
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


class GraphError(ValueError):
    """The model cannot be read as a graph."""


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
