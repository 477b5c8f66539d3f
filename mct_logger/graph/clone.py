"""Rebuilding a graph's layers for a new Keras model: each layer object cloned once.

`clone_layer` makes a fresh, unbuilt copy of a node's layer from its
`get_config()` under a name unique in the new model; `copy_layer_state` gives
the built clone all of the original's state (variables, derived tensors,
vocabularies) through Keras' own saving path; `LayerCloner` does both for one
new model, so a layer shared by several calls stays one shared clone. A node
marked `REUSE_LAYER` is built from the user's own layer object. A `CloneCache`
lets the models of one run that never change a clone's state (PTQ's rebuild
check, calibration model and quantized model) share the clone of every
prototype they have in common, as Keras shares a layer between models.

Example:

```python
cloner = LayerCloner()
x = cloner.model_input(input_node)
outs, clone = cloner.call(node, values)   # clone built by this call, state copied
```
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from typing import Any, Callable

import keras

from mct_logger.graph import layer_kinds

__all__ = ["REUSE_LAYER", "CloneCache", "LayerCloner", "clone_layer", "copy_layer_state",
           "keras_safe_name", "preset_initializers"]

logger = logging.getLogger("mct_logger")

# `Node.info` key: build this node from its own layer object, never a clone.
# PTQ sets it on a node an override keeps in float when its clone differs
# from the user's layer, so that layer still computes exactly what it computes
# in the user's model (the rebuilt models then share that one layer object).
REUSE_LAYER = "reuse_layer"


class CloneCache:
    """The built clone of each prototype layer, shared by several new models.

    Prototypes (`Node.layer`) are never changed once a stage made them, so a
    clone stays a faithful copy of its prototype as long as no model using it
    changes its state: give a cache only to models that never assign a
    clone's variables or attributes, and keep it for one run (the quantized
    model returned to the user may own clones it holds).

    Example:

    ```python
    clones = CloneCache()
    check = graph.to_keras(clones=clones)
    calibration = folded.to_keras(clones=clones)   # unfolded layers are check's clones
    ```
    """

    def __init__(self):
        self._clones: dict[int, tuple[Any, Any]] = {}  # id(prototype) -> (prototype, clone)

    def get(self, prototype):
        entry = self._clones.get(id(prototype))
        return entry[1] if entry is not None and entry[0] is prototype else None

    def put(self, prototype, clone) -> None:
        self._clones[id(prototype)] = (prototype, clone)  # holds the prototype: ids stay unique


class LayerCloner:
    """Fresh copies of a graph's layers for one new Keras model.

    Each layer object is cloned once (a layer called several times stays one
    shared clone), names are unique in the new model, and a clone gets its
    original's state right after its first call has built it. With a
    `CloneCache`, a prototype cloned for an earlier model reuses that clone
    (unless its name is already taken in this model).
    """

    def __init__(self, cache: CloneCache | None = None):
        self.used_names: set[str] = set()
        self._clones: dict[int, Any] = {}
        self._cache = cache

    def model_input(self, node):
        """A `keras.Input` for an input node, under the node's layer name."""
        x = keras.Input(batch_shape=node.output_shapes[0], dtype=node.output_dtypes[0],
                        name=node.layer.name)
        self.used_names.add(node.layer.name)
        return x

    def call(self, node, values: dict, make_layer: Callable | None = None):
        """Calls the node's clone (or `make_layer(node, clone)`) on `values`;
        returns `(flat outputs, clone)`."""
        layer = self._clones.get(id(node.layer))
        fresh = False
        if layer is None:
            cached = self._cache is not None and not node.info.get(REUSE_LAYER)
            layer = self._cache.get(node.layer) if cached else None
            if layer is not None and layer.name not in self.used_names:
                self.used_names.add(layer.name)
            else:
                layer, fresh = clone_layer(node, self.used_names), True
            self._clones[id(node.layer)] = layer
        fresh_clone = fresh and isinstance(layer, keras.layers.Layer) and layer is not node.layer
        # A linear layer's clone starts at its kernel and bias: nothing left to copy.
        start = _linear_state(node.layer) if fresh_clone else None
        with preset_initializers(layer, start) if fresh_clone else contextlib.nullcontext() as started:
            outs = node.call(make_layer(node, layer) if make_layer else layer, values)
        if fresh_clone:
            if not start or started != {layer_kinds.variable_name(v) for v in layer.variables}:
                copy_layer_state(node.layer, layer)
            if self._cache is not None:
                self._cache.put(node.layer, layer)
        return outs, layer


def clone_layer(node, used_names: set[str]):
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
            base = name = keras_safe_name(node.name)
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


@contextlib.contextmanager
def preset_initializers(layer, values: dict | None = None):
    """Builds `layer`'s own variables inside the block without random values: for
    a layer whose variables all get their real values right after it is built
    (a clone, a folded or rebuilt layer).

    Each `*_initializer` attribute (Keras' naming: `kernel_initializer`,
    `depthwise_initializer`, ...) is Zeros in the block and restored after it,
    so the layer's config still names its own initializers. Zeros cost one
    cheap kernel where a random initializer costs several (a 1x1 Conv2D builds
    in 1.05 instead of 1.3 ms). With `values` (weight name -> array), a linear
    layer's kernel and bias start at their value instead (0.8 ms, and no assign
    after): the block yields the set of weight names that did, to be skipped.
    """
    saved = {name: value for name, value in vars(layer).items()
             if name.endswith("_initializer") and callable(value)}
    started: set = set()
    for name in saved:
        object.__setattr__(layer, name, keras.initializers.Zeros())
    for weight, attribute in layer_kinds.initializer_attributes(layer).items():
        if attribute in saved and values is not None and weight in values:
            object.__setattr__(layer, attribute, _StartAt(weight, values[weight], started))
    try:
        yield started
    finally:
        for name, value in saved.items():
            object.__setattr__(layer, name, value)


def _linear_state(layer) -> dict | None:
    """Weight name -> value of every variable of a built Conv, Depthwise,
    Separable, Transpose or Dense layer (their whole state), else None."""
    if not layer_kinds.initializer_attributes(layer) or not layer.built:
        return None
    return {layer_kinds.variable_name(v): keras.ops.convert_to_numpy(v) for v in layer.variables}


class _StartAt:
    """An initializer returning one given value; records that it ran."""

    def __init__(self, name: str, value, started: set):
        self.name, self.value, self.started = name, value, started

    def __call__(self, shape, dtype=None):
        if tuple(shape) != tuple(self.value.shape):
            raise ValueError(f"Weight {self.name!r} has shape {tuple(shape)}, but its given "
                             f"value has shape {tuple(self.value.shape)}.")
        self.started.add(self.name)
        return keras.ops.convert_to_tensor(self.value, dtype)


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


def keras_safe_name(name: str) -> str:
    """A node name as a Keras layer name (no "/" or ":")."""
    return re.sub(r"[/:]", "_", name)
