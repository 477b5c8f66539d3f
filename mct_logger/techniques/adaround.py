"""AdaRound: learned up-or-down rounding of each quantized kernel (Nagel et al., "Up or
Down? Adaptive Rounding for Post-Training Quantization", ICML 2020).

Nearest rounding minimises each weight's own error; what matters is the layer's
output. For a kernel W on its grid (scale s, offset o, levels N, all the observer's,
per channel or per tensor), AdaRound learns one variable V per weight:

    W~ = s * clip(floor(W / s) + h(V), o, o + N)
    h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1),   zeta = 1.1, gamma = -0.1

and minimises, layer by layer in graph order,

    || f(W~ x_q) - f(W x) ||^2  +  lambda * sum(1 - |2 h(V) - 1| ** beta)

where x_q is the layer's input from the already-quantized (and already-AdaRounded)
preceding layers, activation quantizers on (the paper's asymmetric
reconstruction), f(W x) the float model's output of the layer, and f the layer's
activation: its own, or the ReLU-family layer its output is fused into. The
squared error is summed over output channels and averaged over samples and
positions (as AIMET does). The regulariser is off for the first `warm_start`
share of the iterations, then beta is annealed from `beta_range[0]` to
`beta_range[1]` along a cosine (AIMET's schedule); it pushes h(V) to 0 or 1.
V starts where h(V) equals the fractional part of W / s, so the soft kernel
starts at W itself. Adam (Keras' optimizer) takes the steps; every tensor is a
`keras.ops` tensor of the backend, so the steps run on the GPU where TensorFlow
has one. At the end the rounding is made hard (up where h(V) >= 0.5, i.e. V >= 0).

Each layer learns from a cache of (quantized input, float output) pairs filled
by streaming the representative data through the models, capped at
`AdaRoundConfig.cache_mib`: peak memory does not grow with the data. The learned
kernel replaces the float one only where its reconstruction loss over the cache
is not above nearest rounding's; the kernels are then exactly on the
observers' grids, so fake-quantizing them again (the quantized model's weight
quantizers, an encodings file, per-channel grids, mixed precision) keeps them.

Conv1D/2D/3D, DepthwiseConv1D/2D, Dense and EinsumDense kernels are learned;
other quantized kernels (separable, transposed, composite layers, shared layers)
keep nearest rounding, with the reason in `AdaRoundResult.skipped`.

Example:

```python
config = QuantizationConfig(weight_bits=4, adaround=AdaRoundConfig(iterations=2000))
model_q, info = keras_post_training_quantization(model, x_calibration, config)
info.stage_results["adaround"].layers["conv1"].flipped_fraction
```
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import keras
import numpy as np
from keras import ops

from mct_logger.graph import layer_kinds
from mct_logger.graph.ir import Graph, TensorRef
from mct_logger.quantization.config import AdaRoundConfig
from mct_logger.quantization.layers import broadcast_shape, linear_forward
from mct_logger.quantization.plan import PlanReason
from mct_logger.quantization.quantsim import QuantizerFactory, compile_inference, quantizers
from mct_logger.techniques.adaround_results import AdaRoundLayer, AdaRoundResult
from mct_logger.techniques.batch_norm_folding import rebuild_layer

logger = logging.getLogger("mct_logger")

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (paper, section 4)
SUPPORTED = (*layer_kinds.CONV, *layer_kinds.DEPTHWISE, keras.layers.Dense,
             keras.layers.EinsumDense)
_EVAL_CHUNK = 256  # samples per pass when measuring the losses


def rectified_sigmoid(v, backend=ops):
    """h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)."""
    return backend.clip(backend.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def initial_v(rest: np.ndarray) -> np.ndarray:
    """V with h(V) = `rest` (the fractional part of W / s, in [0, 1))."""
    p = (np.asarray(rest, np.float64) - GAMMA) / (ZETA - GAMMA)
    return np.log(p / (1.0 - p)).astype(np.float32)


def beta_at(step: int, config: AdaRoundConfig) -> float:
    """Beta at `step` (0-based): cosine from beta_range[0] to [1] after the warm start."""
    start, end = config.beta_range
    warm = config.warm_start * config.iterations
    if step < warm:
        return start
    progress = (step - warm) / max(config.iterations - warm, 1)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


@dataclasses.dataclass
class _Target:
    node: str
    input_ref: TensorRef
    output_ref: TensorRef  # the float output the loss reconstructs (after f)
    follow: object  # the fused-into activation layer, or None
    activation: str


def _skip_reason(graph: Graph, node, plan) -> str | None:
    layer = node.layer
    if not isinstance(layer, SUPPORTED):
        return f"{node.layer_class} is not Conv, DepthwiseConv, Dense or EinsumDense"
    if set(plan[node.name].weights) != {"kernel"}:
        return "it has other quantized weights than one kernel"
    if not node.owns_weights or sum(n.layer is layer for n in graph) != 1:
        return "the layer is shared by several calls (one rounding cannot fit them all)"
    if len(node.inputs) != 1:
        return "the layer has several inputs"
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return "the layer uses LoRA or Keras' own quantization"
    return None


def _targets(graph: Graph, plan: dict, encodings: dict, skipped: dict) -> list[_Target]:
    targets = []
    for node in graph:
        if node.is_input or not plan.get(node.name) or not plan[node.name].weights:
            continue
        reason = _skip_reason(graph, node, plan)
        enc = encodings.get(node.name)
        if reason is None and (enc is None or "kernel" not in enc.weights):
            reason = "no encoding for its kernel"
        if reason:
            skipped[node.name] = reason
            continue
        follow, output = None, TensorRef(node.name, 0)
        activation = layer_kinds.activation_name(getattr(node.layer, "activation", None))
        if plan[node.name].reason is PlanReason.FUSED and activation == "linear":
            consumer = graph.consumers(node.name)[0]
            if not consumer.layer.weights:  # ReLU, Activation: cloned without state
                follow = type(consumer.layer).from_config(consumer.layer.get_config())
                output = TensorRef(consumer.name, 0)
                activation = f"{consumer.layer_class} ({consumer.name})"
        targets.append(_Target(node.name, node.inputs[0], output, follow, activation))
    return targets


def _forward(layer, x, kernel, follow):
    """The layer's output (after its activation, and `follow`) with `kernel`."""
    if isinstance(layer, keras.layers.EinsumDense):
        out = ops.einsum(layer.equation, ops.cast(x, "float32"), kernel)
        if layer.bias is not None:
            out = out + ops.convert_to_tensor(layer.bias)
        if layer.activation is not None:
            out = layer.activation(out)
    else:
        out = linear_forward(layer, x, {"kernel": kernel})
    return follow(out) if follow is not None else out


def _submodel(model, k: int):
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return compile_inference(keras.Model(inputs, model.outputs[k]))


def _feed(batch):
    return batch[0] if len(batch) == 1 else batch


def _fill_cache(batches, quantized_in, float_out, config: AdaRoundConfig):
    """Streams batches until the cache holds what the config allows; returns
    `(x_q, y)` float32 arrays (samples first)."""
    xs, ys, count, cap = [], [], 0, config.num_samples
    for batch in batches:
        x = np.asarray(keras.ops.convert_to_numpy(quantized_in(_feed(batch))), np.float32)
        y = np.asarray(keras.ops.convert_to_numpy(float_out(_feed(batch))), np.float32)
        if not xs:
            per_sample = (x[0].nbytes + y[0].nbytes) or 1
            by_memory = max(int(config.cache_mib * 2**20 // per_sample), 1)
            cap = by_memory if cap is None else min(cap, by_memory)
        take = min(len(x), cap - count)
        xs.append(x[:take])
        ys.append(y[:take])
        count += take
        if count >= cap:
            break
    return np.concatenate(xs), np.concatenate(ys)


class _Kernel:
    """One kernel on its grid: floor(W / s), the clip bounds, the scale (float32, as
    the weight quantizer holds them)."""

    def __init__(self, kernel: np.ndarray, encoding, channel_axes):
        shape = broadcast_shape(kernel.shape, channel_axes) if encoding.per_channel else ()
        self.scale = np.reshape(np.asarray(encoding.scale, np.float32), shape)
        self.low = np.reshape(np.asarray(encoding.offset, np.float32), shape)
        self.high = self.low + np.float32(encoding.levels)
        self.float = kernel.astype(np.float32)
        ratio = self.float / self.scale
        self.floor = np.floor(ratio)
        self.rest = ratio - self.floor
        self.nearest_q = np.clip(np.round(ratio), self.low, self.high)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (q.astype(np.float32) * self.scale).astype(np.float32)

    def hard_q(self, v: np.ndarray) -> np.ndarray:
        return np.clip(self.floor + (v >= 0), self.low, self.high)


def _optimise(layer, grid: _Kernel, x_pool, y_pool, follow, config: AdaRoundConfig,
              on_step=None, timing=None) -> np.ndarray:
    """Learns V for one kernel; returns it (NumPy). `timing` (a dict) gets "steps" and
    "seconds": the steps after the first (traced) one and their wall time."""
    timing = {} if timing is None else timing
    if keras.config.backend() != "tensorflow":
        raise NotImplementedError(
            f"AdaRound takes its gradients with TensorFlow; the Keras backend is "
            f"{keras.config.backend()!r}. Set KERAS_BACKEND=tensorflow or use "
            "QuantizationConfig(adaround=None).")
    import tensorflow as tf

    v = keras.Variable(initial_v(grid.rest), name="adaround_v", dtype="float32")
    floor, low = ops.convert_to_tensor(grid.floor), ops.convert_to_tensor(grid.low)
    high, scale = ops.convert_to_tensor(grid.high), ops.convert_to_tensor(grid.scale)
    x_pool, y_pool = ops.convert_to_tensor(x_pool), ops.convert_to_tensor(y_pool)
    optimizer = keras.optimizers.Adam(config.learning_rate)
    optimizer.build([v])
    reg_weight = float(config.reg_weight)

    def step(index, beta, regularise):
        x, y = ops.take(x_pool, index, axis=0), ops.take(y_pool, index, axis=0)
        with tf.GradientTape() as tape:
            h = rectified_sigmoid(v)
            out = _forward(layer, x, ops.clip(floor + h, low, high) * scale, follow)
            reconstruction = ops.mean(ops.sum(ops.square(ops.cast(out, "float32") - y), axis=-1))
            rounding = reg_weight * ops.sum(1.0 - ops.power(ops.abs(2.0 * h - 1.0), beta))
            loss = reconstruction + regularise * rounding
        optimizer.apply_gradients(zip(tape.gradient(loss, [v]), [v]))
        return reconstruction

    step = _compiled(_Step(step))
    rng = np.random.default_rng(config.seed)
    size = min(config.batch_size, len(y_pool))
    warm = config.warm_start * config.iterations
    timing["steps"], timing["start"] = max(config.iterations - 1, 0), None
    for i in range(config.iterations):
        if i == 1:  # the first step traces; the steady time runs from the second
            timing["start"] = time.perf_counter()
        index = ops.convert_to_tensor(rng.integers(0, int(y_pool.shape[0]), size), "int32")
        step(index, ops.convert_to_tensor(beta_at(i, config), "float32"),
             ops.convert_to_tensor(0.0 if i < warm else 1.0, "float32"))
        if on_step is not None:
            on_step(i + 1)
    v = np.asarray(keras.ops.convert_to_numpy(v))
    if timing["start"] is not None:
        timing["seconds"] = time.perf_counter() - timing["start"]
    return v


def _loss(layer, kernels: list, x_pool, y_pool, follow) -> list[float]:
    """The mean squared error of the layer's output for each of `kernels`."""
    fn = _compiled_loss(layer, follow)
    totals = [0.0] * len(kernels)
    for start in range(0, len(y_pool), _EVAL_CHUNK):
        x = ops.convert_to_tensor(x_pool[start:start + _EVAL_CHUNK])
        y = ops.convert_to_tensor(y_pool[start:start + _EVAL_CHUNK])
        for k, kernel in enumerate(kernels):
            totals[k] += float(keras.ops.convert_to_numpy(fn(x, y, kernel)))
    return [t / max(y_pool.size, 1) for t in totals]


class _SquaredError:
    """Summed squared error of one layer's output for a kernel; one object per layer
    (TensorFlow counts traces per function object, so a shared closure would warn
    that every new layer's first trace is a retrace)."""

    def __init__(self, layer, follow):
        self.layer, self.follow = layer, follow

    def __call__(self, x, y, kernel):
        out = _forward(self.layer, x, ops.convert_to_tensor(kernel), self.follow)
        return ops.sum(ops.square(ops.cast(out, "float32") - y))


class _Step:
    """One Adam step on V (`_optimise`); one object per layer, as `_SquaredError`."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


def _compiled(fn):
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, autograph=False, reduce_retracing=True)
    return fn


def _compiled_loss(layer, follow):
    return _compiled(_SquaredError(layer, follow))


def adaround_graph(graph: Graph, plan: dict, encodings: dict, batches,
                   config: AdaRoundConfig, progress_bar=None) -> tuple[Graph, AdaRoundResult]:
    """Learns the rounding of every supported quantized kernel; returns a new graph.

    Args:
        graph: the float graph being quantized (batch norms folded, CLE applied).
        plan: node -> `NodePlan`.
        encodings: node -> `NodeEncodings` (the observers' grids; unchanged).
        batches: representative data, an iterable of batches (lists of arrays),
            one pass per `iter` (a `CalibrationBatches` or a list).
        config: an `AdaRoundConfig`.
        progress_bar: `progress_bar(total, unit_name, stateful_metrics)` makes a
            `keras.utils.Progbar`-like bar (`listeners.progress_bar`), updated with
            the iterations done and the layer being learned; None: no bar.

    Returns:
        `(graph, result)`: the graph whose learned kernels hold the dequantized
        learned values (exactly on their grids), and an `AdaRoundResult`.

    Raises:
        ValueError: `batches` is empty or None (AdaRound learns from data).
        NotImplementedError: a Keras backend other than TensorFlow.
    """
    if not batches:
        raise ValueError("AdaRound learns from data: pass representative_data (or use "
                         "QuantizationConfig(adaround=None)).")
    start = time.perf_counter()
    result = AdaRoundResult(config=config)
    targets = _targets(graph, plan, encodings, result.skipped)
    for name, why in result.skipped.items():
        logger.info("AdaRound: %r keeps nearest rounding: %s", name, why)
    if not targets:
        return graph, result
    factory = QuantizerFactory(graph, plan, encodings)

    def wrap_outputs(node, outputs):
        quantizer = factory.activation(node)
        return outputs if quantizer is None else [quantizer(outputs[0])] + list(outputs[1:])

    quantized = graph.to_keras(name=f"{graph.name}_adaround_inputs", make_layer=factory.weights,
                               wrap_outputs=wrap_outputs,
                               extra_outputs=[t.input_ref for t in targets])
    floats = graph.to_keras(name=f"{graph.name}_adaround_targets",
                            extra_outputs=[t.output_ref for t in targets])
    offset = len(graph.outputs)
    wrappers = {n: q["weights"] for n, q in quantizers(quantized).items() if "weights" in q}
    on_progress = _progress(progress_bar, len(targets), config.iterations)
    learned = {}
    for index, target in enumerate(targets):
        node = graph.nodes[target.node]
        spec = plan[target.node].weights["kernel"]
        grid = _Kernel(np.asarray(keras.ops.convert_to_numpy(node.layer.kernel)),
                       encodings[target.node].weights["kernel"], spec.channel_axes)
        x_pool, y_pool = _fill_cache(batches, _submodel(quantized, offset + index),
                                     _submodel(floats, offset + index), config)
        nearest = grid.dequantize(grid.nearest_q)
        flipped, kept, loss_ada, timing = 0.0, False, None, {}
        layer_start = time.perf_counter()
        if config.iterations:
            progress = (None if on_progress is None else
                        lambda i, k=index: on_progress(k, len(targets), i))
            v = _optimise(node.layer, grid, x_pool, y_pool, target.follow, config, progress,
                          timing)
            hard_q = grid.hard_q(v)
            candidate = grid.dequantize(hard_q)
            loss_near, loss_ada = _loss(node.layer, [nearest, candidate], x_pool, y_pool,
                                        target.follow)
            if loss_ada <= loss_near:
                learned[target.node] = candidate
                flipped = float(np.mean(hard_q != grid.nearest_q))
                wrappers[target.node].layer.kernel.assign(candidate)
            else:
                kept, loss_ada = True, loss_near
        else:
            (loss_near,) = _loss(node.layer, [nearest], x_pool, y_pool, target.follow)
            loss_ada = loss_near
        if on_progress is not None and not config.iterations:
            on_progress(index, len(targets), 0)
        result.layers[target.node] = AdaRoundLayer(
            node=target.node, kernel="kernel", num_weights=int(grid.float.size),
            iterations=config.iterations, loss_nearest=loss_near, loss_adaround=loss_ada,
            flipped_fraction=flipped, kept_nearest=kept, activation=target.activation,
            num_samples=int(len(y_pool)), seconds=time.perf_counter() - layer_start,
            step_seconds=(timing["seconds"] / timing["steps"]) if timing.get("steps")
            and "seconds" in timing else None)
        logger.info("AdaRound %s: loss %.4g -> %.4g, %.1f%% of the weights rounded away "
                    "from nearest%s", target.node, loss_near, loss_ada, 100 * flipped,
                    " (kept nearest: no lower loss)" if kept else "")
    result.seconds = time.perf_counter() - start
    return _with_kernels(graph, learned), result


def _progress(progress_bar, layers: int, iterations: int):
    """`on_progress(layer, layers, iteration)` driving one bar of layers x iterations."""
    if progress_bar is None:
        return None
    bar = progress_bar(layers * max(iterations, 1), "AdaRound iteration", ["layer"])

    def on_progress(layer, _, iteration):
        if not iterations:  # one step per layer
            bar.update(layer + 1, values=[("layer", layer + 1)])
        elif iteration % 50 == 0 or iteration == iterations:
            bar.update(layer * iterations + iteration, values=[("layer", layer + 1)])

    return on_progress


def _with_kernels(graph: Graph, kernels: dict) -> Graph:
    """A copy of `graph` whose `kernels` (node -> array) replace the layers' kernels."""
    graph = graph.copy()
    for name, kernel in kernels.items():
        node = graph.nodes[name]
        values = node.weights()
        values["kernel"] = kernel.astype(values["kernel"].dtype)
        ref = node.inputs[0]
        layer = rebuild_layer(node.layer, node.layer.get_config(),
                              graph.nodes[ref.node].output_shapes[ref.index], values)
        graph.nodes[name] = dataclasses.replace(node, layer=layer)
    return graph
