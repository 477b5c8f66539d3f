"""Mixed-precision search: per-layer weight bit widths under a memory budget or an
accuracy-drop target (MCT's mixed-precision search, AIMET's AMP).

Sensitivity, in one pass per batch. For every searched layer l and candidate
width b, the layer's kernel is fake-quantized at b bits (the config's weight
observer and grid) and the layer is run on its *float* input, beside the float
layer, so each (l, b) costs one extra layer call, never a model. Every weight
layer PTQ quantizes is searched, as the similarity stage computes it
(`similarity.call_quantized`): a Conv or Dense layer runs its own computation
on the quantized kernels, any other (Embedding, EinsumDense, MultiHeadAttention,
RNNs, TimeDistributed, Bidirectional) reads them through a `StatelessScope`.
A composite layer (a KerasHub transformer block) is searched per sublayer
group, `node/point`: only that group's kernels quantized, the block's output
compared (`search_units`):

    SQNR(l, b) = 10 log10( sum y_l^2 / sum (y_l - y_l,b)^2 )        (dB, isolated)

The model's output noise is modelled as the sum of the layers' relative noise
powers (the additive model of Lin, Talathi & Annapureddy, "Fixed point
quantization of deep convolutional networks", ICML 2016):

    1 / SQNR_out  ~=  sum_l 10^(-SQNR(l, b_l) / 10)

Choice, exactly: minimise that sum subject to

    fixed + sum_l memory(l, b_l) <= weights_memory

a multiple-choice knapsack, solved by dynamic programming over memory in
bytes (`quantization.bit_allocation`). MCT states the same problem as an
integer linear program over its sensitivity metric and solves it with PuLP;
the DP gives the optimum of this objective without a solver, and the whole
Pareto frontier at once. Memory of
a layer: its kernels at b bits plus its other weights (biases) at 32 bits.

With `max_accuracy_drop`, the frontier (least predicted noise for each memory)
is walked by bisection with `eval_callback`: the smallest memory whose model
scores within the drop of the float model. A mixed choice within a budget
must predict at least `MIN_GAIN_DB` (1 dB) more output SQNR than the widest
uniform width that fits, else that uniform width is returned. With
`eval_callback`, the choice is checked against the uniform widths, and a
uniform width that does as well (within budget, or meeting the target with
less memory) is returned instead.

Activation bit widths are not searched: they follow `config` (and its
overrides), as does everything else about the grids. A layer whose override
sets `weight_bits` is pinned: it is not searched, keeps that width (its memory
counts as fixed), and every override of `config` comes back unchanged; a
searched layer's own override gets only its `weight_bits` set.

Example:

```python
config, result = search_mixed_precision(
    model, x_train[:512], eval_callback=lambda m: accuracy(m, x_val, y_val),
    weights_memory=0.75 * all_8bit_bytes, bit_candidates=(4, 8, 16))
model_q, info = keras_post_training_quantization(model, x_train[:512], config)
result.layers[0]     # {"layer", "bits", "sqnr_db": [per candidate], "memory": [...]}
```
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import time

import keras
import numpy as np
from keras import ops

from mct_logger.data import sources as data_lib
from mct_logger import listeners
from mct_logger.diagnostics import metrics
from mct_logger.graph.ir import TensorRef, read_model
from mct_logger.mixed_precision.bit_allocation import Frontier
from mct_logger.mixed_precision.search_steps import SearchSteps
from mct_logger.mixed_precision.search_units import search_units, unit_memory, unit_settings
from mct_logger.utils.arguments import check_path
from mct_logger.utils.callbacks import as_callback
from mct_logger.quantization.config import QuantizationConfig, config_to_dict
from mct_logger.quantization.encodings import check_bitwidth
from mct_logger.quantization.plan import check_overrides, plan_quantization
from mct_logger.quantization.quantsim import weight_encodings
from mct_logger.mixed_precision.trials import (
    QuantizationTrials,
    TrialWorkspace,
    rebuild_trial_workspace,
    trial_shipment,
)
from mct_logger.ptq.paired_runs import quantize_baseline_and_recommended
from mct_logger.diagnostics.rebuild_check import check_rebuilt_graph
from mct_logger.diagnostics.similarity import call_quantized, fake_quantized_kernel, first_samples
from mct_logger.evaluators import (ScoreRecords, Sweep, check_evaluator, fingerprint,
                                   model_fingerprint)
from mct_logger.utils import output_paths

logger = logging.getLogger("mct_logger")

# Representative samples the sensitivity pass reads (the rest only calibrates).
SENSITIVITY_SAMPLES = 256


@dataclasses.dataclass
class MixedPrecisionResult:
    """What the search measured and chose.

    Attributes:
        bit_candidates: the widths tried, ascending.
        layers: one row per searched layer, in graph order: `layer`, `class`,
            `parameters` (kernel elements), `bits` (chosen), `sqnr_db` (isolated
            SQNR per candidate, dB), `memory` (bytes per candidate).
        steps: every configuration considered, in order: `step`, `label`,
            `weights_memory` (bytes), `predicted_sqnr_db` (additive model),
            `score` (eval score or None), `fits_budget`, `meets_target`,
            `chosen`, `bits` ({layer: bits}).
        weights_memory: bytes of the chosen configuration's weights.
        budget: the `weights_memory` asked for (bytes) or None.
        max_accuracy_drop, float_score, target_score: the accuracy target, if any.
        score: the chosen configuration's eval score (None without eval_callback).
        seconds: {"sensitivity", "solve", "evaluation", "total"} wall seconds.
    """

    model: str
    bit_candidates: list
    layers: list
    steps: list
    weights_memory: int
    budget: int | None
    max_accuracy_drop: float | None
    float_score: float | None
    target_score: float | None
    score: float | None
    evaluations: int
    seconds: dict
    config: QuantizationConfig | None = None

    def table(self) -> dict:
        """The "mixed_precision_search" payload (tb_plugin.metadata.SHAPES)."""
        fields = dataclasses.asdict(self)
        fields.pop("config")
        return fields


def plan_weights_memory(graph, plan: dict) -> int:
    """Bytes of every node's weights under `plan` (kernels at their bits, the rest float32)."""
    from mct_logger.quantization.memory import graph_memory

    return int(sum(m["weights"] for m in graph_memory(graph, plan).values()))


def search_mixed_precision(model: keras.Model, representative_data,
                           config: QuantizationConfig | None = None, *, eval_callback=None,
                           weights_memory=None, max_accuracy_drop=None,
                           bit_candidates=(4, 8, 16), evaluator=None, scores_file=None):
    """Chooses per-layer weight bit widths under a weights-memory budget or an accuracy target.

    Args:
        model: a Functional or Sequential Keras model (never modified).
        representative_data: as for `keras_post_training_quantization`; the
            first 256 samples measure the sensitivities, all of them calibrate.
        eval_callback: `(model) -> float`, higher is better; checks the choice.
            Required with `max_accuracy_drop`.
        weights_memory: budget in bytes for the weights of the whole model
            (searched kernels at their bits, biases and unsearched weights at
            float32 or their configured bits).
        max_accuracy_drop: the largest drop of the eval score from the float
            model's (in the score's units) the choice may have; the search then
            returns the smallest memory meeting it (within `weights_memory`
            when both are given).
        bit_candidates: the widths each layer's kernels may get (2 to 16).
        config: the rest of the quantization (activations, observers, grids,
            layers kept in float); default `QuantizationConfig()`.
        evaluator: where the verifying evaluations run: `evaluators.Local()`
            (default) or `evaluators.Ray(...)`; independent steps (the uniform
            widths) run at once, the bisection one step after another.
        scores_file: JSON record of every evaluation as it finishes
            (`evaluators.records`), reused on the next call with the same model,
            data, config and candidates (only missing ones are evaluated); one
            of another model or config is refused.

    Returns:
        `(config, result)`: a `QuantizationConfig` with per-layer
        `LayerOverride(weight_bits=...)` (the most common width as its global
        `weight_bits`; `config`'s overrides kept, those setting `weight_bits`
        unsearched), and a `MixedPrecisionResult`. When per-run listeners
        listen (a log folder is set), PTQ runs of the given config and of the
        chosen one are made as `<model>_baseline` and `<model>_recommended`,
        the search's tables with the latter (`ptq.paired_runs`), for the
        QuantAnalyzer tab's comparison.

    Raises (before any model runs):
        ValueError: neither `weights_memory` nor `max_accuracy_drop`; a bad
            candidate width; a budget below the smallest memory the candidates
            reach (the message gives it); `max_accuracy_drop` without
            `eval_callback`. RepresentativeDataError: unusable data.
    """
    started = time.perf_counter()
    config = config or QuantizationConfig()
    if not isinstance(config, QuantizationConfig):
        raise TypeError(f"config must be a QuantizationConfig, got {type(config).__name__}.")
    if config.encodings_file:
        raise ValueError("search_mixed_precision calibrates grids for every width it tries; "
                         "pass a config without encodings_file.")
    candidates = _check_candidates(bit_candidates)
    if weights_memory is None and max_accuracy_drop is None:
        raise ValueError("Give weights_memory (a budget in bytes) or max_accuracy_drop (with "
                         "eval_callback), or both.")
    budget = _check_positive("weights_memory", weights_memory)
    drop = _check_positive("max_accuracy_drop", max_accuracy_drop, allow_zero=True)
    evaluate = None
    evaluator = check_evaluator(evaluator)
    if eval_callback is not None:
        evaluate = as_callback(eval_callback, "eval_callback")
    if scores_file is not None:  # writable, so no score is computed in vain
        scores_file = check_path("scores_file", scores_file)
        output_paths.check_file(scores_file, "scores_file")
    if drop is not None and evaluate is None:
        raise ValueError("max_accuracy_drop needs eval_callback to measure the score.")

    graph = read_model(model)
    check_overrides(graph, config)
    batches = data_lib.load_batches(representative_data, data_lib.input_specs(graph),
                                    config.batch_size, max_samples=config.num_calibration_samples)
    check_rebuilt_graph(model, graph, batches[0])
    graph = prepared_graph(graph, config)
    plan = plan_quantization(graph, config)
    units = search_units(graph, plan)  # layers, and each sublayer group of a composite
    pinned_units = [u for u in units if _pinned_weight_bits(config, u)]
    pinned = [u.name for u in pinned_units]
    units = [u for u in units if u.name not in pinned]
    if pinned:
        logger.info("Mixed-precision search: %d layer(s) keep the weight_bits of their "
                    "LayerOverride and are not searched: %s", len(pinned), pinned[:5])
    if not units:
        raise ValueError(
            f"Model {graph.name!r} has no weight layer to search under this config"
            + (f" (every weight layer's weight_bits is fixed by an override: {pinned[:5]}); "
               "remove weight_bits from the overrides of the layers to search." if pinned
               else "."))
    memory = {u.name: [unit_memory(graph, plan, u, b) for b in candidates] for u in units}
    fixed = plan_weights_memory(graph, plan) - sum(unit_memory(graph, plan, u, None)
                                                   for u in units)
    smallest = fixed + sum(m[0] for m in memory.values())
    pinned_savings = sum(unit_memory(graph, plan, u, None)
                         - unit_memory(graph, plan, u, candidates[0]) for u in pinned_units)
    if budget is not None and budget < smallest and budget >= smallest - pinned_savings:
        logger.warning(
            "Mixed-precision search: weights_memory=%.0f bytes cannot be met while the layers "
            "pinned by a LayerOverride(weight_bits=...) keep their widths (%s); the smallest "
            "reachable, %d bytes (every searched layer at %d bits), is returned. Raise the "
            "budget or remove weight_bits from those overrides.",
            budget, pinned[:5], smallest, candidates[0])
    elif budget is not None and budget < smallest:
        raise ValueError(
            f"weights_memory={budget:.0f} bytes is below the smallest memory the candidates "
            f"reach ({smallest} bytes: every searched layer at {candidates[0]} bits); raise "
            "the budget or add a lower bit width.")

    # with an accuracy target, the evaluator's workers start while the sensitivity is measured
    with evaluator.workers() if evaluate is not None else contextlib.nullcontext():
        t0 = time.perf_counter()
        sqnr = measure_sensitivity(graph, plan, units, batches, candidates)
        t1 = time.perf_counter()
        names = [u.name for u in units]
        costs = np.array([[10.0 ** (-s / 10.0) for s in sqnr[n]] for n in names])
        mems = np.array([memory[n] for n in names], dtype=np.int64)
        frontier = Frontier(costs, mems, None if budget is None else max(budget, smallest) - fixed)
        t2 = time.perf_counter()

        records = ScoreRecords.open(scores_file, {
            "model": graph.name, "fingerprint": model_fingerprint(model),
            "data": fingerprint(*[np.asarray(x) for b in batches for x in b]),
            "config": config_to_dict(config)["config"], "bit_candidates": list(candidates),
            "layers": names}, what="scores_file") if evaluate is not None else None
        trials = QuantizationTrials(graph, lambda m: m.collect_all(batches), None, batches)
        sweep = Sweep("search_mixed_precision",
                      lambda: TrialWorkspace(model, trials, evaluate), rebuild_trial_workspace,
                      lambda: trial_shipment(model, graph, batches), eval_callback)
        with evaluator.open(sweep, jobs_hint=len(candidates) + 1) as session:
            search = SearchSteps(graph, config, session, records, evaluate, units, candidates,
                                 costs, mems, fixed, budget)
            if drop is not None:
                choice = search.by_target(frontier, drop)
            else:
                choice = search.by_budget(frontier)
    chosen_config = search.config_of(choice)
    rows = [{"layer": u.name, "class": u.layer_class,
             "parameters": int(sum(graph.nodes[u.node].weight_sizes()[k] for k in u.kernels)),
             "bits": candidates[k], "sqnr_db": [round(float(s), 3) for s in sqnr[u.name]],
             "memory": [int(m) for m in memory[u.name]]}
            for u, k in zip(units, choice)]
    end = time.perf_counter()
    result = MixedPrecisionResult(
        model=graph.name, bit_candidates=list(candidates), layers=rows, steps=search.steps,
        weights_memory=search.memory_of(choice), budget=None if budget is None else int(budget),
        max_accuracy_drop=drop, float_score=search.float_score, target_score=search.target,
        score=search.score_of(choice), evaluations=search.evaluations,
        seconds={"sensitivity": round(t1 - t0, 3), "solve": round(t2 - t1, 3),
                 "evaluation": round(end - t2, 3), "total": round(end - started, 3)},
        config=chosen_config,
    )
    logger.info("Mixed-precision search: %d layers, weights %d bytes, %s", len(names),
                result.weights_memory, dict(collections.Counter(r["bits"] for r in rows)))
    if listeners.has_run_listeners(listeners.PTQ):  # e.g. a log folder is set
        quantize_baseline_and_recommended(model, batches, config, chosen_config,
                                          {"mixed_precision_search": result.table()})
    return chosen_config, result


def measure_sensitivity(graph, plan: dict, units: list, batches, bit_candidates) -> dict:
    """`{unit name: [isolated SQNR (dB) at each candidate width]}` of each
    `SearchUnit` (a layer's output with only the unit's kernels quantized), one
    eager pass per batch over the first `SENSITIVITY_SAMPLES` samples (see the
    module docstring). A unit may be given by its name."""
    known = {u.name: u for u in search_units(graph, plan)}
    units = [known[u] if isinstance(u, str) else u for u in units]
    nodes = {u.node for u in units}
    weights = {n: graph.nodes[n].weights() for n in nodes}  # read once, not per width
    kernels = {}
    for b in bit_candidates:
        plan_b = {n: dataclasses.replace(p, weights={
            k: dataclasses.replace(spec, bitwidth=b) for k, spec in p.weights.items()}
            if n in nodes else {}) for n, p in plan.items()}
        grids = weight_encodings(graph, plan_b)
        for u in units:
            kernels.setdefault(u.name, []).append({
                k: ops.convert_to_tensor(fake_quantized_kernel(
                    weights[u.node][k], grids[u.node][k], plan[u.node].weights[k].channel_axes))
                for k in u.kernels})
    report = {}
    for u in units:
        report.setdefault(u.node, []).append(u.name)
    signal = {u.name: 0.0 for u in units}
    noise = {u.name: np.zeros(len(bit_candidates)) for u in units}
    for batch in first_samples(batches, SENSITIVITY_SAMPLES):
        values = {}
        for node in graph:
            if node.is_input:
                values[TensorRef(node.name, 0)] = ops.convert_to_tensor(
                    batch[graph.input_names.index(node.name)])
                continue
            outputs = node.call(node.layer, values)
            for i, out in enumerate(outputs):
                values[TensorRef(node.name, i)] = out
            if node.name in report:
                reference = ops.cast(outputs[0], "float64")
                power = float(ops.sum(reference * reference))
                for name in report[node.name]:
                    signal[name] += power
                    for k, quantized in enumerate(kernels[name]):
                        output = call_quantized(node, {id(node.layer): quantized}, values)[0]
                        error = reference - ops.cast(output, "float64")
                        noise[name][k] += float(ops.sum(error * error))
    return {u.name: [float(metrics.sqnr_from_powers(signal[u.name], v)) for v in noise[u.name]]
            for u in units}


def _pinned_weight_bits(config: QuantizationConfig, unit) -> bool:
    """Whether an override of `config` that matches the unit sets its weight_bits (the
    user pinned the width: the search leaves the unit as configured)."""
    _, matched = unit_settings(config, unit)
    return any(config.overrides[p].weight_bits is not None for p in matched)


def prepared_graph(graph, config: QuantizationConfig):
    """The graph PTQ quantizes under `config`: batch norms folded, CLE if asked."""
    from mct_logger.techniques.batch_norm_folding import fold_batch_norms

    graph, _ = fold_batch_norms(graph)
    if config.cross_layer_equalization:
        from mct_logger.techniques.cross_layer_equalization import equalize_graph

        graph, _ = equalize_graph(graph)
    return graph


def _check_candidates(bit_candidates) -> list:
    try:
        values = list(bit_candidates)
    except TypeError:
        raise TypeError(
            f"bit_candidates must be a sequence of widths, got {bit_candidates!r}.") from None
    if not values:
        raise ValueError("bit_candidates is empty; give widths such as (4, 8, 16).")
    for b in values:
        try:
            check_bitwidth(b)
        except ValueError as exc:
            raise ValueError(f"bit_candidates: {exc}") from None
    if len(set(values)) != len(values):
        raise ValueError(f"bit_candidates {values} repeats a width.")
    return sorted(int(b) for b in values)


def _check_positive(name: str, value, allow_zero: bool = False):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    return float(value)
