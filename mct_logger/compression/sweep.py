"""How `compress_model` builds and evaluates candidates, cheaply.

- SVD (`sweep_svd`): per layer, one model holds the pair at full rank R; the
  rank-r candidate is the factors truncated at r with zeros beyond (exactly
  the rank-r pair's function), assigned to the same variables, so a compiled
  predict function is traced once per layer, not once per candidate.
- Channel pruning (`sweep_pruning`): one working copy of the model serves
  every candidate; the layer's kernel is set to the reconstructed kept
  channels with the pruned ones zero (exactly the pruned model's function),
  then restored.
- `prune` builds the final pruned graph, reconstructing layers one after
  another from the inputs of the model pruned so far (AIMET's order).

Example:

```python
batches = sample_pruning_data(graph, layers, forward)   # patches for every layer
sweep_pruning(graph, layers, settings, missing, evaluate, store, run, plan)
```
"""

from __future__ import annotations

import time
import zlib

import keras
import numpy as np
from keras import tree

from mct_logger.compression import channel_pruning
from mct_logger.compression.eval_scores import ratio_key
from mct_logger.compression.results import ScoreUpdate
from mct_logger.quantization.quantsim import compile_inference, run_over_batches

# Images whose activations channel pruning samples for its reconstruction.
RECONSTRUCTION_IMAGES = 128


def emit_score(run, plan, store, name, ratio, score, started) -> None:
    store.put(name, ratio, score)
    plan.scores.setdefault(name, {})[ratio_key(ratio)] = score
    run.emit("score", ScoreUpdate(layer=name, ratio=ratio, score=score, done=run.done + 1,
                                  total=plan.evaluations_total - plan.evaluations_reused,
                                  seconds=time.time() - started))


def sweep_svd(graph, layers, params, missing, evaluate, store, run, plan) -> None:
    started = time.time()
    for name in dict.fromkeys(n for n, _ in missing):
        layer = layers[name]
        model = layer.apply(graph, layer.max_rank, capacity=layer.max_rank).to_keras()
        first, second = model.get_layer(f"{layer.node.layer.name}_a"), \
            model.get_layer(f"{layer.node.layer.name}_b")
        for _, ratio in [(n, r) for n, r in missing if n == name]:
            a, b = layer.kernels(params[name][ratio], capacity=layer.max_rank)
            first.kernel.assign(a)
            second.kernel.assign(b)
            score = evaluate(model, f"layer {name!r} at ratio {ratio}")
            emit_score(run, plan, store, name, ratio, score, started)


def _working_model(graph, names):
    """The model with every prunable layer's input as an extra output, its layers
    by node name, and the model alone (sharing those layers)."""
    clones = {}

    def keep(node, clone):
        clones[node.name] = clone
        return clone

    probe = graph.to_keras(make_layer=keep, extra_outputs=[graph.nodes[n].inputs[0] for n in names])
    outputs = probe.outputs[:len(graph.outputs)]
    # the user's input structure (a single tensor stays one): the callbacks call it
    model = keras.Model(tree.pack_sequence_as(graph.inputs_struct, probe.inputs),
                        tree.pack_sequence_as(graph.outputs_struct, outputs), name=graph.name)
    return probe, model, clones


def sample_pruning_data(graph, layers: dict, forward) -> list:
    """Records input batches through `forward`, and gives every pruning layer its
    sampled input patches; returns the batches."""
    names = list(layers)
    probe, model, _ = _working_model(graph, names)
    recorder = _InputRecorder(model, RECONSTRUCTION_IMAGES)
    try:
        forward(recorder)
    except Exception as exc:
        raise RuntimeError(f"forward_pass_callback failed ({type(exc).__name__}: {exc}); it must "
                           "take a Keras model and run data through it.") from exc
    if not recorder.batches:
        raise RuntimeError("forward_pass_callback did not run the model it was given: call it "
                           "(or its predict) on representative data.")
    patches = _sample_patches(graph, names, probe, names, recorder.batches)
    for name, layer in layers.items():
        layer.set_patches(patches[name])
    return recorder.batches


def _sample_patches(graph, names, probe, wanted, batches) -> dict:
    """Input patches of the layers `wanted` (among the probe's `names`), at random
    output positions drawn the same way on every call (seeded per layer)."""
    extra = len(probe.outputs) - len(names)
    rngs = {n: np.random.default_rng(zlib.crc32(n.encode())) for n in wanted}
    found = {n: [] for n in wanted}
    for _, values in run_over_batches(compile_inference(probe), batches):
        for name, x in zip(names, values[extra:]):
            if name not in found:
                continue
            node = graph.nodes[name]
            where = channel_pruning.sample_positions(node.output_shapes[0], len(x), rngs[name])
            found[name].append(channel_pruning.patches(node.layer, x, where))
    return {n: np.concatenate(rows) for n, rows in found.items()}


def sweep_pruning(graph, layers, params, missing, evaluate, store, run, plan) -> None:
    started = time.time()
    names = [n for n in graph.nodes if n in layers]
    _, model, clones = _working_model(graph, names)
    for name in dict.fromkeys(n for n, _ in missing):
        layer, clone = layers[name], clones[name]
        original = keras.ops.convert_to_numpy(clone.kernel)
        try:
            for _, ratio in [(n, r) for n, r in missing if n == name]:
                kept, kernel = layer.reconstruct(params[name][ratio])
                clone.kernel.assign(layer.masked_kernel(kept, kernel))
                score = evaluate(model, f"layer {name!r} at ratio {ratio}")
                emit_score(run, plan, store, name, ratio, score, started)
        finally:
            clone.kernel.assign(original)


def prune(graph, layers: dict, keeps: dict, batches):
    """The pruned graph: layers reconstructed one after another in graph order,
    each from the input patches of the model pruned so far (masked in a working
    copy) and the original outputs at the same positions."""
    order = [n for n in graph.nodes if n in keeps]
    if not order:
        return graph
    probe, _, clones = _working_model(graph, order)
    pruned = graph
    for index, name in enumerate(order):
        layer = layers[name]
        x = None if index == 0 else _sample_patches(graph, order, probe, [name], batches)[name]
        kept, kernel = layer.reconstruct(keeps[name], x)
        clones[name].kernel.assign(layer.masked_kernel(kept, kernel))
        pruned = layer.apply(pruned, kept, kernel)
    return pruned


class _InputRecorder(keras.Model):
    """Runs `model` and keeps the first `max_samples` input samples it sees.
    Always eager: the inputs must be concrete to be kept."""

    def __init__(self, model, max_samples: int):
        super().__init__(name=model.name)
        self.inner = model
        self.max_samples = max_samples
        self.samples = 0
        self.batches: list = []

    @property
    def run_eagerly(self):
        return True

    @run_eagerly.setter
    def run_eagerly(self, value):
        pass

    def call(self, inputs, training=False):
        flat = tree.flatten(inputs)
        if not any(isinstance(x, keras.KerasTensor) for x in flat) and \
                self.samples < self.max_samples and flat and np.ndim(flat[0]):
            keep = min(len(flat[0]), self.max_samples - self.samples)
            self.batches.append([np.asarray(keras.ops.convert_to_numpy(x))[:keep] for x in flat])
            self.samples += keep
        return self.inner(inputs, training=False)

