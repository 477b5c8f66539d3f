"""From diagnosis to fix: the QuantAnalyzer's evidence turned into a verified
`QuantizationConfig` (`QuantAnalyzer.recommend`).

Fixes are proposed in the order the evidence supports them, each verified with
the analyzer's `eval_callback` and kept only if it raises the score, until the
score is within `max_accuracy_drop` of the FP32 score:

1. Cross-layer equalization, when weights have one grid per tensor and some
   equalizable layer's channel ranges are spread (largest over smallest live
   range >= 10x, `techniques.weight_ranges`'s spread score >= 1): the grid is
   then sized by the widest channel (Nagel et al., "Data-Free Quantization",
   ICCV 2019; AIMET's CLE).
2. AdaRound (learned weight rounding on the same grids, Nagel et al., ICML 2020)
   when the weights-only score is below the activations-only score and the
   caller passed `adaround` (each later trial learns its rounding anew).
3. A non-clipping activation observer ("min_max") for the outputs whose
   expected clipping error exceeds their rounding error on the calibration
   histogram, largest excess first (the two parts of the squared error the
   observers minimise, `quantization.observers`) and whose isolated SQNR is
   below 30 dB.
4. Higher precision (16-bit weights and output; float if 16 bits do not
   raise the score) for one layer at a time, the layers whose leaving in
   float recovered most first
   (`per_layer_quant_disabled`, AIMET's per-layer analysis), added greedily
   as NNCF's accuracy-aware quantization reverts layers to float.

Free fixes (CLE, AdaRound, observers) come before the ones that cost memory. Each change
is reported with its evidence, and the score and memory (bytes, weights plus
activations at batch 1 as the PTQ headline) before and after it. A NaN or
infinite score is one warning naming `eval_callback` and the configuration; a
change scored so is never kept.

`representative_data` (optional; the data of the logged PTQ runs when a log
folder is set, else the calibration samples the callback ran) is read as PTQ
reads it: up to the analyzed config's `num_calibration_samples` samples (1000
by default), so an endless generator or a `.repeat()`ed dataset ends; with
None there, an infinite dataset is refused.

Example:

```python
analyzer.analyze(results_dir="qa")
config, result = analyzer.recommend(max_accuracy_drop=0.01)
config.to_json("recommended.json")
[c["change"] for c in result.changes if c["accepted"]]
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import numbers
import re

import numpy as np

from mct_logger.utils.callbacks import ScoreCheck, comparable
from mct_logger.quantization.config import LayerOverride, QuantizationConfig
from mct_logger.quantization.plan import PlanReason, sublayer_groups

logger = logging.getLogger("mct_logger")

# Spread score (log10 of the largest over the smallest live channel range) from
# which a per-tensor weight grid is said to waste levels on most channels.
CLE_SPREAD_SCORE = 1.0
# At most this many activation observer changes are tried (largest excess first),
# on outputs whose isolated SQNR is below this (the tab's "suspect" threshold).
MAX_OBSERVER_TRIALS = 5
OBSERVER_SQNR_DB = 30.0
HIGH_PRECISION_BITS = 16
# Samples of the calibration data kept for the logged PTQ runs.
LOGGED_SAMPLES = 1000


@dataclasses.dataclass
class Recommendation:
    """What `QuantAnalyzer.recommend` tried and kept.

    Attributes:
        config: the recommended QuantizationConfig.
        changes: one row per change tried, in order: `step`, `kind` ("cle",
            "adaround", "activation_observer", "precision"), `layer` (None for CLE),
            `change`, `evidence`, `score_before`, `score_after`, `memory_before`,
            `memory_after` (bytes), `accepted`.
        float_score, target_score: the FP32 score and FP32 minus the drop.
        baseline, final: {"score", "memory", "weights_memory"} of the analyzed
            config and of the recommended one.
        meets_target: the final score is at least the target.
    """

    model: str
    max_accuracy_drop: float
    float_score: float
    target_score: float
    baseline: dict
    final: dict
    meets_target: bool
    changes: list
    config: QuantizationConfig | None = None

    def table(self) -> dict:
        """The "recommendation" payload (tb_plugin.metadata.SHAPES)."""
        fields = dataclasses.asdict(self)
        fields.pop("config")
        return fields


def recommend(analyzer, analysis, max_accuracy_drop: float, representative_data=None,
              adaround=None):
    """See `QuantAnalyzer.recommend` and the module docstring.

    Args:
        analyzer: the `QuantAnalyzer` whose model and callbacks are used.
        analysis: the finished `AnalysisResult` (of `analyzer.analyze`) whose
            evidence and config the fixes start from.
        max_accuracy_drop: the largest drop from the FP32 score (score units).
        representative_data: optional data for the logged PTQ runs.
        adaround: the `AdaRoundConfig` proposed when the evidence points at weight
            rounding (True: the paper's defaults; None: not proposed).

    Raises:
        ValueError: `max_accuracy_drop` is not a number >= 0.
        RuntimeError: `analysis` is None or not complete.
        RepresentativeDataError: `representative_data` cannot be used (read
            before any evaluation).
    """
    from mct_logger import listeners
    from mct_logger.analyzer.analyses import RecordingCalibrationModel
    from mct_logger.mixed_precision.trials import QuantizationTrials
    from mct_logger.techniques.batch_norm_folding import fold_batch_norms
    from mct_logger.utils.callbacks import eval_score

    if isinstance(max_accuracy_drop, bool) or not isinstance(max_accuracy_drop, numbers.Real) \
            or not math.isfinite(max_accuracy_drop) or max_accuracy_drop < 0:
        raise ValueError(f"max_accuracy_drop must be a number >= 0 (in eval score units), got "
                         f"{max_accuracy_drop!r}.")
    max_accuracy_drop = float(max_accuracy_drop)  # a NumPy scalar too
    if analysis is None or analysis.status != "complete":
        raise RuntimeError("recommend() works from a finished analysis: run "
                           "QuantAnalyzer.analyze(...) to completion first.")
    analyzed, result, tables = analysis.config, analysis, analysis.tables
    if representative_data is not None:  # checked before any work, read up to PTQ's cap
        from mct_logger.data import sources as data_lib

        representative_data = data_lib.load_batches(
            representative_data, analyzer.input_specs, analyzed.batch_size,
            max_samples=analyzed.num_calibration_samples,
            cap_setting="QuantizationConfig.num_calibration_samples in the config given to "
                        "QuantAnalyzer.analyze")
    config = analyzed
    config = dataclasses.replace(config, cross_layer_equalization=False, bias_correction=None)
    if analyzer.layers_to_ignore:
        overrides = dict(config.overrides)
        for name in analyzer.layers_to_ignore:
            overrides[_pattern(name)] = LayerOverride(keep_float=True)
        config = dataclasses.replace(config, overrides=overrides)
    graph, _ = fold_batch_norms(analyzer.graph)

    def evaluate(model):
        return eval_score(analyzer.eval_callback(model), "eval_callback")

    def recording(g, plan):  # keeps the samples the callback runs, for the logged PTQ runs
        return RecordingCalibrationModel(g, plan, LOGGED_SAMPLES)

    def make_trials(g):
        return QuantizationTrials(g, analyzer.forward_pass_callback, evaluate,
                                  calibration_model=recording)

    fp32 = result.sensitivity["fp32"]
    with contextlib.ExitStack() as sessions:  # the analyzer's evaluator, one session per graph
        sessions.enter_context(analyzer.evaluator.workers())  # started once, for every graph
        state = _State(make_trials(graph), config, fp32 - max_accuracy_drop,
                       _Scorer(analyzer, sessions))
        baseline = state.measure(config, what="the analyzed config")
        state.score, state.memory = baseline["score"], baseline["memory"]
        if not state.met():
            _try_cle(state, graph, result, make_trials)
        if not state.met():
            _try_adaround(state, result, adaround)
        if not state.met():
            _try_observers(state, tables, result)
        if not state.met():
            _try_precision(state, result)
        final = state.measure(state.config, what="the recommended config")
    recommendation = Recommendation(
        model=graph.name, max_accuracy_drop=float(max_accuracy_drop), float_score=fp32,
        target_score=state.target, baseline=baseline, final=final,
        meets_target=comparable(final["score"]) >= state.target, changes=state.changes, config=state.config)
    if not state.changes and recommendation.meets_target:
        logger.info("recommend: the baseline already meets the target (score %.6g, target "
                    "%.6g = FP32 %.6g minus %g): nothing to change.", baseline["score"],
                    state.target, fp32, max_accuracy_drop)
    if not recommendation.meets_target:
        logger.warning("recommend: the fixes reach %.6g, below the target %.6g (FP32 %.6g "
                       "minus %g).", final["score"], state.target, fp32, max_accuracy_drop)
    if listeners.has_run_listeners(listeners.PTQ):  # e.g. a log folder is set
        from mct_logger.data import sources as data_lib
        from mct_logger.ptq.paired_runs import quantize_baseline_and_recommended

        data = representative_data
        if data is None:
            if not state.trials.calibration_models:  # scored on workers: calibrate here
                state.trials.build(state.config)
            recorded = state.trials.calibration_models[0].recorded
            data = data_lib.load_batches(iter(recorded), analyzer.input_specs)
        # nothing changed: the measured baseline is the recommendation, logged once
        quantize_baseline_and_recommended(analyzer.model, data,
                                          analyzed if state.changes else state.config,
                                          state.config, {"recommendation": recommendation.table()})
    return state.config, recommendation


class _State:
    """The configuration so far, its score and memory, and the changes tried."""

    def __init__(self, trials, config: QuantizationConfig, target: float, scorer):
        self.trials, self.config, self.target, self.scorer = trials, config, target, scorer
        self.score = self.memory = None
        self.changes: list[dict] = []
        self.check = ScoreCheck("eval_callback")  # NaN/Inf: one warning; no change is kept on it

    def met(self) -> bool:
        return comparable(self.score) >= self.target

    def measure(self, config: QuantizationConfig, trials=None, what: str = "") -> dict:
        from mct_logger.quantization.memory import graph_memory, model_memory
        from mct_logger.mixed_precision.search import plan_weights_memory

        trials = trials or self.trials
        plan, graph = trials.plan(config), trials.graph
        return {"score": self.check(self.scorer(trials, config, what), what),
                "memory": model_memory(graph_memory(graph, plan), plan),
                "weights_memory": plan_weights_memory(graph, plan)}

    def attempt(self, kind: str, layer, change: str, evidence: str, config, trials=None) -> bool:
        """Scores `config`; keeps it if the score rises. Records the change either way."""
        measured = self.measure(config, trials, what=f"the config with {change}")
        accepted = comparable(measured["score"]) > comparable(self.score)
        self.changes.append({
            "step": len(self.changes) + 1, "kind": kind, "layer": layer, "change": change,
            "evidence": evidence, "score_before": self.score, "score_after": measured["score"],
            "memory_before": self.memory, "memory_after": measured["memory"],
            "accepted": bool(accepted)})
        logger.info("recommend: %s %s (score %.6g -> %.6g)", change,
                    "kept" if accepted else "rejected", self.score, measured["score"])
        if accepted:
            self.config, self.score, self.memory = config, measured["score"], measured["memory"]
            if trials is not None:
                self.trials = trials
        return accepted


class _Scorer:
    """Scores a config of a `QuantizationTrials` on the analyzer's evaluator: in
    process (`Local`), or on a Ray worker that rebuilds those trials once
    (calibrated by the forward_pass_callback) and builds each config's model."""

    def __init__(self, analyzer, sessions: contextlib.ExitStack):
        self.analyzer, self.stack, self.sessions = analyzer, sessions, {}

    def __call__(self, trials, config: QuantizationConfig, what: str) -> float:
        from mct_logger.evaluators import Job, Sweep, run_jobs
        from mct_logger.mixed_precision.trials import (
            TrialWorkspace,
            rebuild_trial_workspace,
            trial_shipment,
        )

        analyzer = self.analyzer
        if id(trials) not in self.sessions:
            sweep = Sweep("recommend", lambda: TrialWorkspace(None, trials, analyzer.eval_callback),
                          rebuild_trial_workspace,
                          lambda: trial_shipment(None, trials.graph, None,
                                                 analyzer.forward_pass_callback,
                                                 trials.calibration_factory),
                          analyzer.raw_eval_callback)
            self.sessions[id(trials)] = (trials, self.stack.enter_context(
                analyzer.evaluator.open(sweep, jobs_hint=1)))
        job = Job(("trial",), ("trial", config), what)
        return run_jobs(self.sessions[id(trials)][1], [job])[job.key]


def _try_cle(state: _State, graph, result, make_trials) -> None:
    from mct_logger.techniques.cross_layer_equalization import (
        equalize_graph,
        find_equalization_sets,
    )
    from mct_logger.techniques.weight_ranges import rank_by_spread, weight_range_tables

    if state.config.weight_per_channel:
        return  # one grid per channel already fits each channel's range
    sets, _ = find_equalization_sets(graph)
    members = {m for s in sets for m in s.members}
    spread = [(n, k, s) for n, k, s in rank_by_spread(weight_range_tables(graph))
              if n in members and s >= CLE_SPREAD_SCORE]
    if not spread:
        return
    node, _, score = spread[0]
    sensitivity = result.sensitivity
    evidence = (f"{len(spread)} equalizable layer(s) with channel ranges spread >= "
                f"{10 ** CLE_SPREAD_SCORE:.0f}x under one weight grid per tensor; widest "
                f"{node} ({10 ** score:.0f}x). Weights-only score "
                f"{sensitivity.get('weights_only'):.6g} vs FP32 {sensitivity.get('fp32'):.6g}.")
    equalized, _ = equalize_graph(graph)
    config = dataclasses.replace(state.config, cross_layer_equalization=True)
    state.attempt("cle", None, "cross-layer equalization", evidence, config,
                  trials=make_trials(equalized))


def _try_adaround(state: _State, result, adaround) -> None:
    """AdaRound, free (no memory), where the weights-only score is below the
    activations-only one: the weights' rounding loses more than the outputs' grids."""
    from mct_logger.quantization.config import AdaRoundConfig

    adaround = AdaRoundConfig() if adaround is True else adaround or None
    sensitivity = result.sensitivity
    weights, activations = sensitivity.get("weights_only"), sensitivity.get("activations_only")
    if adaround is None or state.config.adaround is not None or weights is None \
            or activations is None or not weights < activations:
        return
    evidence = (f"Weights-only score {weights:.6g} below activations-only score "
                f"{activations:.6g}: weight rounding loses more than the activation grids; "
                "AdaRound learns each weight's rounding on the same grids (no memory cost).")
    config = dataclasses.replace(state.config, adaround=adaround)
    state.attempt("adaround", None, f"AdaRound ({adaround.iterations} iterations per layer)",
                  evidence, config)


def _try_observers(state: _State, tables: dict, result) -> None:
    histograms = {r["layer"]: r for r in (tables.get("histograms") or {}).get("activations", [])}
    ranges = {r["layer"]: r for r in (tables.get("min_max_ranges") or {}).get("activations", [])}
    found = []
    for layer, row in histograms.items():
        settings = state.config.for_node(layer)[0]
        isolated = (result.per_layer_sqnr.get(layer) or {}).get("sqnr_isolated_db")
        if layer not in ranges or settings["activation_observer"] == "min_max" \
                or isolated is None or isolated >= OBSERVER_SQNR_DB:
            continue
        clipping, rounding = clipping_and_rounding_error(row, ranges[layer]["bitwidth"])
        if clipping > rounding:
            found.append((clipping / max(rounding, 1e-300), layer, clipping, rounding))
    for ratio, layer, clipping, rounding in sorted(found, reverse=True)[:MAX_OBSERVER_TRIALS]:
        if state.met():
            return
        isolated = result.per_layer_sqnr[layer]["sqnr_isolated_db"]
        evidence = (f"expected clipping error {clipping:.3g} is {ratio:.3g}x the rounding error "
                    f"{rounding:.3g} on the calibration histogram; isolated SQNR "
                    f"{isolated:.1f} dB")
        config = _with_override(state.config, layer, activation_observer="min_max")
        state.attempt("activation_observer", layer, f"{layer}: activation observer min_max "
                      "(no clipping)", evidence, config)


def _try_precision(state: _State, result) -> None:
    disabled = result.per_layer_quant_disabled
    quantized = result.sensitivity.get("fully_quantized")
    plan = state.trials.plan(state.config)
    for layer in result.ranking("per_layer_quant_disabled"):
        if state.met():
            return
        if not _quantized_unit(plan, layer):
            continue
        evidence = (f"score {disabled[layer]:.6g} with this layer left in float vs "
                    f"{quantized:.6g} fully quantized")
        bits = dict(weight_bits=HIGH_PRECISION_BITS, activation_bits=HIGH_PRECISION_BITS)
        config = _with_override(state.config, layer, **bits)
        if layer in plan and plan[layer].reason is PlanReason.FUSED:
            # the output is quantized after the activation it is fused with
            consumer = state.trials.graph.consumers(layer)[0].name
            config = _with_override(config, consumer, activation_bits=HIGH_PRECISION_BITS)
        if not state.attempt("precision", layer, f"{layer}: {HIGH_PRECISION_BITS}-bit weights "
                             "and output", evidence, config):
            # 16 bits did not help: the layer's quantizers, not their width, are the problem
            state.attempt("precision", layer, f"{layer}: kept in float", evidence,
                          _with_override(state.config, layer, keep_float=True))


def _quantized_unit(plan: dict, unit: str) -> bool:
    """Whether `unit` (a node, or a composite's sublayer group `node/point`, which an
    override can name) has quantizers under `plan`."""
    if unit in plan:
        return plan[unit].quantized
    return any(unit.startswith(node + "/") and unit[len(node) + 1:] in sublayer_groups(p)
               for node, p in plan.items() if p.inner_activations)


def clipping_and_rounding_error(histogram_row: dict, bitwidth: int) -> tuple[float, float]:
    """Expected squared clipping and rounding errors of an activation grid on its
    histogram (a "histograms" table row: even bins from `lo`, `width` wide, and
    the grid's `encoding_min`/`encoding_max`), per calibration value."""
    from mct_logger.quantization.grid_search import expected_error

    counts = np.asarray(histogram_row["counts"], dtype=np.float64)
    if counts.sum() <= 0:
        return 0.0, 0.0
    lo, width = float(histogram_row["lo"]), float(histogram_row["width"])
    a = (lo + width * np.arange(len(counts)))[None, :]
    b = a + width
    p = (counts / counts.sum())[None, :]
    levels = 2 ** int(bitwidth) - 1
    low, high = float(histogram_row["encoding_min"]), float(histogram_row["encoding_max"])
    scale = np.array([[max(high - low, 1e-12) / levels]])
    offset = np.round(np.array([[low]]) / scale)
    total = float(expected_error(a, b, p, scale, offset, levels, gamma=1.0)[0, 0])
    rounding = float(expected_error(a, b, p, scale, offset, levels, gamma=0.0)[0, 0])
    return max(total - rounding, 0.0), rounding


def _pattern(name: str) -> str:
    return name if re.escape(name) == name else re.escape(name)


def _with_override(config: QuantizationConfig, layer: str, **fields) -> QuantizationConfig:
    """`config` with `fields` set for `layer` (merged into its own override, if any)."""
    overrides = dict(config.overrides)
    key = _pattern(layer)
    current = dataclasses.asdict(overrides.pop(key, LayerOverride()))
    current.update(fields)
    overrides[key] = LayerOverride(**current)
    return dataclasses.replace(config, overrides=overrides)
