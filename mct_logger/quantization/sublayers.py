"""Reaching inside a composite layer: a sublayer's output, intercepted at its call.

Keras has no forward hooks. A composite layer (a KerasHub `TransformerEncoder`,
a user's block) calls its sublayers from its own Python `call`; for the length
of one call of the composite, `intercepted` gives each chosen sublayer an
instance-level `call` that runs the sublayer's own `call` and passes its
output through a function (a fake quantizer, or a recorder). The composite's
code runs unchanged, and nothing outlives the call: the layer object and its
saved form are those of the user's layer. Under `tf.function` the
interception happens while tracing, so the compiled graph holds it.

`SublayerTap` is the calibration side: it returns the composite's outputs
followed by the first output of each chosen sublayer, so the calibration
model's observers see them as extra model outputs.

Example:

```python
points = layer_kinds.sublayer_outputs(encoder)      # {"self_attention_layer/query": EinsumDense}
with intercepted({points["feedforward_output_dense"]: quantize}):
    y = encoder(x, padding_mask=mask)
```
"""

from __future__ import annotations

import contextlib

import keras
from keras import tree
from keras.src import backend

from mct_logger.graph import layer_kinds

__all__ = ["SublayerTap", "build_keeping_masks", "dense_specs", "intercepted"]


@contextlib.contextmanager
def intercepted(functions: dict):
    """Within the block, each sublayer in `functions` (sublayer -> fn(output) ->
    output) returns `fn` of its own output; every call of it counts."""
    patched = []
    try:
        for sublayer, fn in functions.items():
            original = sublayer.call  # the bound method of its class

            def call(*args, __original=original, __fn=fn, **kwargs):
                return __fn(__original(*args, **kwargs))

            object.__setattr__(sublayer, "call", call)  # untracked, instance-level
            patched.append(sublayer)
        yield
    finally:
        for sublayer in patched:
            sublayer.__dict__.pop("call", None)


def build_keeping_masks(layer, *args, **kwargs) -> None:
    """Builds `layer` by a first (symbolic) call on the arguments, restoring the
    Keras masks of the argument tensors afterwards (MultiHeadAttention clears
    its inputs' masks in place, which a second, real call would then miss)."""
    tensors = [t for t in tree.flatten((args, kwargs)) if hasattr(t, "shape")]
    masks = [backend.get_keras_mask(t) for t in tensors]
    layer(*args, **kwargs)
    for t, m in zip(tensors, masks):
        if m is not None:
            backend.set_keras_mask(t, m)


def dense_specs(args, kwargs) -> tuple:
    """`(args, kwargs)` with every sparse `KerasTensor` replaced by a dense one of
    its shape and dtype, for tracing a wrapper's `call` symbolically. Keras marks
    some dense tensors sparse (a `keras.ops` product of a tensor and a Python
    number, as in Gemma's embedding scaling), and tracing a layer on a sparse
    placeholder fails where its real input is dense."""
    def dense(t):
        if isinstance(t, keras.KerasTensor) and getattr(t, "sparse", False):
            return keras.KerasTensor(t.shape, dtype=t.dtype)
        return t
    return tree.map_structure(dense, (args, kwargs))


class SublayerTap(keras.layers.Layer):
    """Calls a composite layer and returns `[*its flat outputs, *sublayer outputs]`:
    the first output of the sublayer at each of `points` (paths below the layer,
    as `layer_kinds.sublayer_outputs` names them), in that order. A point not
    called gives a zero scalar. For calibration models only (never saved)."""

    def __init__(self, layer, points, **kwargs):
        super().__init__(name=f"{layer.name}_tap", dtype=layer.dtype_policy, autocast=False,
                         **kwargs)
        self.layer = layer
        self.points = list(points)
        self.supports_masking = bool(getattr(layer, "supports_masking", False))

    def build(self, *args, **kwargs):
        self.built = True  # the composite builds on its first call, in `call`

    def compute_output_spec(self, *args, **kwargs):
        args, kwargs = dense_specs(args, kwargs)
        return super().compute_output_spec(*args, **kwargs)  # traces `call`

    def call(self, *args, **kwargs):
        if not self.layer.built:
            build_keeping_masks(self.layer, *args, **kwargs)
        sublayers = layer_kinds.sublayer_outputs(self.layer)
        seen: dict = {}

        def recorder(point):
            def record(y):
                seen.setdefault(point, y)
                return y
            return record

        with intercepted({sublayers[p]: recorder(p) for p in self.points}):
            outputs = self.layer(*args, **kwargs)
        inner = [seen[p] if p in seen else keras.ops.zeros(()) for p in self.points]
        return [*tree.flatten(outputs), *inner]
