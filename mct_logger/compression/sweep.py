"""How `compress_model` builds and evaluates candidates, cheaply.

- SVD (`CandidateWorkspace`): per layer, one model holds the pair at full rank R; the
  rank-r candidate is the factors truncated at r with zeros beyond (exactly
  the rank-r pair's function), assigned to the same variables, so a compiled
  predict function is traced once per layer, not once per candidate.
- Channel pruning (`CandidateWorkspace`): one working copy of the model serves
  every candidate; the layer's kernel is set to the reconstructed kept
  channels with the pruned ones zero (exactly the pruned model's function),
  then restored.
- `prune` builds the final pruned graph, reconstructing layers one after
  another from the inputs of the model pruned so far (AIMET's order).

Example:

```python
batches = sample_pruning_data(graph, layers, forward)   # patches for every layer
workspace = CandidateWorkspace(graph, "channel_pruning", layers, evaluate, masked)
workspace.evaluate(("conv2", 0.5, 16))                  # the score of conv2 keeping 16
```

On a Ray worker the workspace is rebuilt from `shipment` (the model as
`.keras` bytes, the SVD factors or the masked kernels computed here):

```python
workspace = rebuild_workspace(shipment(model, scheme, layers, missing, params), evaluate)
```
"""

from __future__ import annotations

import dataclasses
import time
import zlib

import keras
import numpy as np
from keras import tree

from mct_logger.utils.callbacks import ScoreCheck, as_callback
from mct_logger.compression import channel_pruning
from mct_logger.compression.eval_scores import ratio_key
from mct_logger.compression.results import ScoreUpdate
from mct_logger.evaluators.jobs import Job
from mct_logger.evaluators.shipment import model_from_bytes, model_to_bytes
from mct_logger.graph.ir import read_model
from mct_logger.quantization.quantsim import compile_inference, run_over_batches

# Images whose activations channel pruning samples for its reconstruction.
RECONSTRUCTION_IMAGES = 128


def evaluate_model(evaluate, model, what: str) -> float:
    """`evaluate(model)` as a finite score; a callback error is a RuntimeError naming `what`.

    Raises:
        RuntimeError: the callback raised.
        TypeError: it returned other than one number.
        ValueError: the score is NaN or infinite (`ScoreCheck`'s strict rule: every
            score picks a ratio, so none may be missing).
    """
    try:
        value = evaluate(model)
    except Exception as exc:
        raise RuntimeError(f"eval_callback failed on {what} ({type(exc).__name__}: {exc}); "
                           "it must take a Keras model and return a number.") from exc
    return ScoreCheck("eval_callback", strict=True)(value, what,
                                                    reference=what == "the uncompressed model")


def emit_score(run, plan, store, name, ratio, score, started) -> None:
    store.put(name, ratio, score)
    plan.scores.setdefault(name, {})[ratio_key(ratio)] = score
    run.emit("score", ScoreUpdate(layer=name, ratio=ratio, score=score, done=run.done + 1,
                                  total=plan.evaluations_total - plan.evaluations_reused,
                                  seconds=time.time() - started))


def candidate_jobs(missing, params) -> list:
    """One job per (layer, ratio): key (layer, ratio text), spec (layer, ratio, rank or keep)."""
    return [Job((n, ratio_key(r)), (n, r, params[n][r]), f"layer {n!r} at ratio {r}")
            for n, r in missing]


class CandidateWorkspace:
    """Evaluates compressed candidates of one graph, each a weight assignment away:

    - SVD: per layer, one model holds the pair at full rank R (built on the
      layer's first candidate, kept for the next ones); rank r assigns the
      factors truncated at r, zeros beyond;
    - channel pruning: one working copy of the model; a candidate sets the
      layer's kernel to its masked reconstruction (`masked(name, ratio, keep)`),
      then restores it.
    """

    def __init__(self, graph, scheme: str, layers: dict, evaluate, masked=None):
        self.graph, self.scheme, self.layers, self.callback = graph, scheme, layers, evaluate
        self.masked = masked
        self.pair = None  # (name, model, first, second) of the SVD layer last built
        self.working = None  # (model, clones) for pruning

    def evaluate(self, spec) -> float:
        name, ratio, value = spec
        what = f"layer {name!r} at ratio {ratio}"
        if self.scheme == "channel_pruning":
            if self.working is None:
                names = [n for n in self.graph.nodes if n in self.layers]
                _, model, clones = _working_model(self.graph, names)
                self.working = (model, clones)
            model, clones = self.working
            clone = clones[name]
            original = keras.ops.convert_to_numpy(clone.kernel)
            clone.kernel.assign(self.masked(name, ratio, value))
            try:
                return evaluate_model(self.callback, model, what)
            finally:
                clone.kernel.assign(original)
        layer = self.layers[name]
        if self.pair is None or self.pair[0] != name:
            model = layer.apply(self.graph, layer.max_rank, capacity=layer.max_rank).to_keras()
            self.pair = (name, model, model.get_layer(f"{layer.node.layer.name}_a"),
                         model.get_layer(f"{layer.node.layer.name}_b"))
        _, model, first, second = self.pair
        a, b = layer.kernels(value, capacity=layer.max_rank)
        first.kernel.assign(a)
        second.kernel.assign(b)
        return evaluate_model(self.callback, model, what)


def shipment(model, scheme: str, layers: dict, missing, params) -> dict:
    """What a worker needs: the model's `.keras` bytes, the node names, and for
    SVD every layer's factors (the decomposition done once, here), for pruning
    every missing candidate's masked kernel (the least squares done here), so
    every worker evaluates bit for bit the candidates a local run would."""
    graph_nodes = list(read_model(model).nodes)
    content = {"model": model_to_bytes(model), "nodes": graph_nodes, "scheme": scheme}
    if scheme == "channel_pruning":
        content["masked"] = {(n, ratio_key(r)): layers[n].masked_kernel(
            *layers[n].reconstruct(params[n][r])) for n, r in missing}
    else:
        content["layers"] = {n: dataclasses.replace(layer, node=None)
                             for n, layer in layers.items()}
    return content


def rebuild_workspace(content: dict, eval_callback) -> CandidateWorkspace:
    """On a worker: the workspace from `shipment`'s content."""
    graph = read_model(model_from_bytes(content["model"]))
    if list(graph.nodes) != content["nodes"]:
        raise RuntimeError("The model read on the Ray worker has other nodes than on the "
                           f"driver ({list(graph.nodes)[:5]}... vs {content['nodes'][:5]}...); "
                           "register its custom layers with keras.saving.register_keras_"
                           "serializable so that it round-trips through .keras.")
    evaluate = as_callback(eval_callback, "eval_callback")
    if content["scheme"] == "channel_pruning":
        masked = content["masked"]
        names = {n for n, _ in masked}
        return CandidateWorkspace(graph, "channel_pruning", dict.fromkeys(names), evaluate,
                                  lambda name, ratio, keep: masked[(name, ratio_key(ratio))])
    layers = {n: dataclasses.replace(layer, node=graph.nodes[n])
              for n, layer in content["layers"].items()}
    return CandidateWorkspace(graph, content["scheme"], layers, evaluate)


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

