"""`compress_model`: spatial SVD, weight SVD or channel pruning at per-layer
ratios chosen greedily (AIMET's `ModelCompressor.compress_model` with
`GreedySelectionParameters`), on a Keras 3 model.

The sweep evaluates every eligible layer compressed alone at every candidate
ratio (see `greedy`), each candidate built cheaply:

- SVD: the layer's decomposition is computed once; per layer, one model holds
  the pair at full rank, and a rank r is set by assigning the truncated
  factors with zeros beyond r (the same function as the rank-r pair), so the
  eval callback's compiled predict function is traced once per layer;
- channel pruning: the input patches of every prunable layer are sampled in
  one pass over the `forward_pass_callback` data; one working copy of the
  model serves every candidate, the layer's kernel set to the reconstructed
  kept channels with the pruned ones zero (the pruned model's function).

Scores go to `eval_scores_file` as they come (`eval_scores`), and listeners
(the console progress bar; with `set_log_folder`, the TensorBoard logger)
hear `mct_logger.listeners.Event`s named "start" (`SweepPlan`), "score"
(`ScoreUpdate`) and "done" (`CompressionStats`), and `close(error)` at the end.

Example:

```python
compressed, stats = compress_model(model, evaluate, target_comp_ratio=0.5,
                                   scheme="weight_svd", eval_scores_file="scores.json")
stats.cost_ratio, stats.score_before, stats.score_after
```
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import time

from mct_logger import listeners as listeners_lib
from mct_logger.utils import liveness
from mct_logger.utils.progress import progress_bar
from mct_logger.utils import output_paths
from mct_logger.utils.callbacks import as_callback
from mct_logger.compression import channel_pruning, svd
from mct_logger.compression.cost import COST_METRICS, LayerCost, layer_costs, model_cost
from mct_logger.compression.eval_scores import EvalScores, ratio_key
from mct_logger.compression.greedy import candidate_ratios, select_ratios
from mct_logger.compression.results import CompressionStats, SweepPlan, layer_rows
from mct_logger.compression import sweep as sweep_lib
from mct_logger.compression.sweep import evaluate_model as _evaluate
from mct_logger.compression.sweep import prune, sample_pruning_data
from mct_logger.evaluators import Sweep, check_evaluator, model_fingerprint, run_jobs
from mct_logger.utils.frozen_heap import frozen_heap
from mct_logger.graph.ir import read_model
from mct_logger.utils.arguments import (check_callables, check_choice, check_model, check_names,
                                        check_path)

logger = logging.getLogger("mct_logger")

SCHEMES = ("spatial_svd", "weight_svd", "channel_pruning")


def _check_arguments(model, target_comp_ratio, scheme, cost_metric, num_comp_ratio_candidates,
                     forward_pass_callback, eval_scores_file) -> None:
    check_model(model)
    check_choice("scheme", scheme, SCHEMES)
    if not isinstance(cost_metric, str) or cost_metric not in COST_METRICS:
        raise ValueError(f"cost_metric={cost_metric!r} is not supported; use one of "
                         f"{COST_METRICS} (MACs or parameters).")
    if isinstance(target_comp_ratio, bool) or not isinstance(target_comp_ratio, numbers.Real) \
            or not 0 < target_comp_ratio <= 1:
        raise ValueError(f"target_comp_ratio={target_comp_ratio!r} must be a number in (0, 1]: "
                         "the fraction of the model's cost to keep (0.5 halves it).")
    if isinstance(num_comp_ratio_candidates, bool) or \
            not isinstance(num_comp_ratio_candidates, int) or num_comp_ratio_candidates < 2:
        raise ValueError(f"num_comp_ratio_candidates={num_comp_ratio_candidates!r} must be an "
                         "integer >= 2 (the ratios tried are k/N for k = 1..N-1).")
    if scheme == "channel_pruning" and forward_pass_callback is None:
        raise ValueError("scheme='channel_pruning' reconstructs weights from activations: pass "
                         "forward_pass_callback, a function (model) -> None that runs the model "
                         "on representative data (e.g. model.predict(x[:256])).")
    if forward_pass_callback is not None:
        as_callback(forward_pass_callback, "forward_pass_callback")
    if eval_scores_file is not None:  # writable, so no score is computed in vain
        output_paths.check_file(check_path("eval_scores_file", eval_scores_file),
                                "eval_scores_file")


@frozen_heap()
def compress_model(model, eval_callback, target_comp_ratio: float, scheme: str = "spatial_svd",
                   cost_metric: str = "mac", num_comp_ratio_candidates: int = 10,
                   layers_to_ignore=None, eval_scores_file=None, forward_pass_callback=None,
                   listeners=None, evaluator=None):
    """Compresses `model` to `target_comp_ratio` of its cost, greedily per layer.

    Args:
        model: a Keras 3 Functional or Sequential model (never modified).
        eval_callback: `(model) -> float`, higher is better (accuracy, cosine...);
            also a `(func, args)` pair called as `func(model, args)`.
        target_comp_ratio: the fraction of the cost to keep, in (0, 1]; the
            least compressed greedy selection meeting it is returned (1.0, met
            by the model itself, compresses nothing; the sweep still runs).
        scheme: "spatial_svd" (k x k Conv2D -> k x 1, 1 x k), "weight_svd" (Dense
            or 1x1 Conv2D -> two of rank r) or "channel_pruning" (Conv2D input
            channels, with least-squares reconstruction).
        cost_metric: "mac" (multiply-accumulates) or "memory" (parameters).
        num_comp_ratio_candidates: N; the candidate ratios are k/N, k = 1..N-1.
        layers_to_ignore: layer names (or layers) never compressed.
        eval_scores_file: JSON file of the sweep's scores, written as they come
            and reused on the next call (only missing scores are evaluated). If
            it cannot be written mid-sweep (disk full...), one warning names it
            and the sweep goes on.
        forward_pass_callback: `(model) -> None` running representative data
            through the model; required by channel pruning.
        listeners: extra listeners of this run: callables taking a
            `mct_logger.listeners.Event` (see the module docs), optionally with
            `close(error)`.
        evaluator: where the candidates are evaluated: `evaluators.Local()`
            (default) or `evaluators.Ray(...)` (workers rebuilding the model
            once; scores are the same, listeners hear them as they finish).

    Returns:
        `(compressed_model, CompressionStats)`; the model saves to `.keras`.

    Raises:
        TypeError, ValueError: a bad argument (checked before any evaluation),
            e.g. an `eval_scores_file` of another sweep or not a score file.
        IsADirectoryError, NotADirectoryError: `eval_scores_file` cannot be
            written (a folder, or a file stands where its folder goes); checked
            before any evaluation.
        GraphError: a model the IR cannot read (subclassed, dynamic).
        RuntimeError: a callback failed; the message names it.
    """
    started = time.time()
    _check_arguments(model, target_comp_ratio, scheme, cost_metric, num_comp_ratio_candidates,
                     forward_pass_callback, eval_scores_file)
    target_comp_ratio = float(target_comp_ratio)  # a NumPy scalar too (logged as JSON)
    evaluate = as_callback(eval_callback, "eval_callback")
    layers_to_ignore = check_names("layers_to_ignore", layers_to_ignore, layers=True)
    listeners = check_callables("listeners", listeners)
    if eval_scores_file is not None:
        eval_scores_file = check_path("eval_scores_file", eval_scores_file)
    evaluator = check_evaluator(evaluator)
    graph = read_model(model)
    ignored = _ignored(graph, layers_to_ignore)
    costs = layer_costs(graph)
    eligible, reasons = [], {}
    for node in graph:
        if node.name not in costs or not costs[node.name].macs:
            continue
        if node.name in ignored:
            reasons[node.name] = "in layers_to_ignore"
            continue
        why = (channel_pruning.trace_chain(graph, node) if scheme == "channel_pruning"
               else svd.why_not(graph, node, scheme))
        if isinstance(why, str):
            reasons[node.name] = why
        else:
            eligible.append(node.name)
    if not eligible:
        raise ValueError(f"Model {model.name!r} has no layer that {scheme} can compress "
                         f"({_some(reasons, 5)}).")
    before = model_cost(costs)
    candidates = candidate_ratios(num_comp_ratio_candidates)

    if scheme == "channel_pruning":
        layers = {n: channel_pruning.PruningLayer(
            graph.nodes[n], channel_pruning.trace_chain(graph, graph.nodes[n])) for n in eligible}
    else:
        layers = {name: svd.SvdLayer.of(graph, graph.nodes[name], scheme) for name in eligible}
    # ratio -> rank (SVD) or kept channels (pruning); None where nothing is saved
    params = {name: {r: (layer.rank_for_ratio(r, cost_metric) if scheme != "channel_pruning"
                         else layer.keep_for_ratio(r)) for r in candidates}
              for name, layer in layers.items()}

    def cost_after(ratios: dict) -> LayerCost:
        scaled = {n: [c.macs, c.params] for n, c in costs.items()}
        for name, ratio in ratios.items():
            value = None if ratio is None else params[name][ratio]
            if value is None:
                continue
            layer = layers[name]
            if scheme == "channel_pruning":
                for node, (fin, fout) in layer.effects(value).items():
                    if node not in scaled:
                        continue  # no weights: no cost
                    scaled[node] = [scaled[node][0] * fin * fout, scaled[node][1] * fin * fout]
            else:
                at = layer.cost_at(value)
                scaled[name] = [at.macs, at.params]
        return LayerCost(int(round(sum(v[0] for v in scaled.values()))),
                         int(round(sum(v[1] for v in scaled.values()))))

    def cost_ratio(ratios: dict) -> float:
        return cost_after(ratios).of(cost_metric) / max(before.of(cost_metric), 1)

    lowest = cost_ratio({n: min((r for r in candidates if params[n][r] is not None),
                                default=None) for n in eligible})
    if lowest > target_comp_ratio + 1e-3:
        raise ValueError(
            f"target_comp_ratio={target_comp_ratio} is below what {scheme} can reach on "
            f"{model.name!r}: every eligible layer at its smallest ratio still leaves "
            f"{lowest:.3f} of the {cost_metric} cost ({len(eligible)} eligible layers; "
            f"{len(reasons)} others cannot be compressed, e.g. {_some(reasons)}). Raise the "
            "target, take layers out of layers_to_ignore, or try another scheme."
        )
    # the file first: one of another sweep is refused before any evaluation
    store = EvalScores.open(eval_scores_file, {
        "model": model.name, "fingerprint": model_fingerprint(model), "scheme": scheme, "cost_metric": cost_metric,
        "candidates": candidates})
    planned = [(n, r) for n in eligible for r in candidates if params[n][r] is not None]
    missing = [(n, r) for n, r in planned if not store.has(n, r)]
    with contextlib.ExitStack() as workers:
        if missing:  # the evaluator's workers start while this process scores and samples
            workers.enter_context(evaluator.workers())
        score_before = _evaluate(evaluate, model, "the uncompressed model")
        store.meta["score_before"] = score_before
        batches = None
        if scheme == "channel_pruning":
            forward = as_callback(forward_pass_callback, "forward_pass_callback")
            batches = sample_pruning_data(graph, layers, forward)
        plan = SweepPlan(
            model=model.name, scheme=scheme, cost_metric=cost_metric,
            target_comp_ratio=float(target_comp_ratio), candidates=candidates,
            layers=[{"layer": n, "class": graph.nodes[n].layer_class, "macs": costs[n].macs,
                     "params": costs[n].params,
                     "settings": [params[n][r] for r in candidates]} for n in eligible],
            ineligible=reasons, score_before=score_before, cost_before=before,
            scores={n: {ratio_key(r): store.get(n, r) for r in candidates if store.has(n, r)}
                    for n in eligible},
            evaluations_total=len(planned), evaluations_reused=len(planned) - len(missing))
        run = _Listeners(listeners, model.name, len(missing))
        error = None
        # SIGTERM and SIGINT end the sweep as "interrupted" (listeners told) before exiting
        signals = liveness.interrupt_on_signals()
        signals.__enter__()
        try:
            run.emit("start", plan)
            _sweep(model, graph, scheme, layers, params, missing, evaluate, eval_callback,
                   evaluator, lambda name, ratio, score: sweep_lib.emit_score(
                       run, plan, store, name, ratio, score, started))
            scores = {n: {r: store.get(n, r) for r in candidates} for n in eligible}
            selection = select_ratios(scores, cost_ratio, target_comp_ratio)
            chosen = {n: r for n, r in selection.ratios.items() if r is not None}
            _log_selection(selection, target_comp_ratio, cost_metric, num_comp_ratio_candidates)
            if scheme == "channel_pruning":
                compressed_graph = prune(
                    graph, layers, {n: params[n][r] for n, r in chosen.items()}, batches)
            else:
                compressed_graph = graph
                for name in [n for n in graph.nodes if n in chosen]:
                    compressed_graph = layers[name].apply(compressed_graph,
                                                          params[name][chosen[name]])
            compressed = compressed_graph.to_keras(name=f"{model.name}_compressed")
            score_after = _evaluate(evaluate, compressed, "the compressed model")
            after_costs = layer_costs(compressed_graph)
            stats = CompressionStats(
                model=model.name, scheme=scheme, cost_metric=cost_metric,
                target_comp_ratio=float(target_comp_ratio), candidates=candidates,
                layers=layer_rows(graph, eligible, costs, after_costs, chosen, params,
                                  compressed_graph),
                eval_scores={n: {ratio_key(r): s for r, s in scores[n].items() if s is not None}
                             for n in eligible},
                threshold=selection.threshold, cost_before=before,
                cost_after=model_cost(after_costs),
                score_before=score_before, score_after=score_after,
                evaluations=run.done, evaluations_reused=plan.evaluations_reused,
                seconds=time.time() - started, ineligible=reasons,
                next_cost_ratio=selection.next_cost_ratio)
            run.emit("done", stats)
            return compressed, stats
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                run.close(error)
            finally:
                signals.__exit__(None, None, None)


def _sweep(model, graph, scheme, layers, params, missing, evaluate, eval_callback, evaluator,
           emit) -> None:
    """Every missing candidate's score, on `evaluator`, emitted as each finishes."""
    def masked(name, ratio, keep):
        return layers[name].masked_kernel(*layers[name].reconstruct(keep))

    sweep = Sweep(
        f"compress_model ({scheme})",
        lambda: sweep_lib.CandidateWorkspace(graph, scheme, layers, evaluate, masked),
        sweep_lib.rebuild_workspace,
        lambda: sweep_lib.shipment(model, scheme, layers, missing, params), eval_callback)
    jobs = sweep_lib.candidate_jobs(missing, params)
    with evaluator.open(sweep, jobs_hint=len(jobs)) as session:
        run_jobs(session, jobs, None, lambda job, score, _: emit(job.spec[0], job.spec[1], score))


def _log_selection(selection, target, cost_metric: str, candidates: int) -> None:
    """Says why the selection keeps less than the target asks, or compresses nothing."""
    if selection.next_cost_ratio is None:
        logger.info("compress_model: the uncompressed model already meets target_comp_ratio="
                    "%s; no layer is compressed.", target)
    elif target - selection.cost_ratio > 0.01:
        logger.info(
            "compress_model: the least compressed greedy selection meeting target_comp_ratio=%s "
            "keeps %.3f of the %s cost; the next less compressed one keeps %.3f, above the "
            "target. The steps come from the candidate ratios (k/%d) and the layers' scores; a "
            "larger num_comp_ratio_candidates gives finer ones.",
            target, selection.cost_ratio, cost_metric, selection.next_cost_ratio, candidates)


def _ignored(graph, layers_to_ignore) -> set:
    names = set(layers_to_ignore or ())  # names: checked by check_names
    known = {n for n in graph.nodes} | {graph.nodes[n].layer.name for n in graph.nodes
                                        if hasattr(graph.nodes[n].layer, "name")}
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(f"layers_to_ignore names {unknown}, which are not layers of the "
                         f"model; known layers include {sorted(known)[:10]}.")
    return {n for n in graph.nodes
            if n in names or getattr(graph.nodes[n].layer, "name", None) in names}


class _Listeners:
    """The console progress bar and the run's `ListenerSet`: the caller's listeners
    (one that raises stops the compression) and those registered for compression
    runs (with a log folder set, the TensorBoard logger: it reports its own
    failures as one warning and never raises)."""

    def __init__(self, extra, model_name: str, evaluations: int):
        self.done = 0
        self.listeners = listeners_lib.ListenerSet(
            listeners_lib.RunInfo(listeners_lib.COMPRESSION, model_name), extra=extra or ())
        self.progress = progress_bar(max(evaluations, 1), "compression evaluation")

    def emit(self, event: str, data) -> None:
        if event == "score":
            self.done += 1
            self.progress.update(self.done)
        self.listeners.emit(event, data)

    def close(self, error) -> None:
        self.listeners.close(error)


def _some(reasons: dict, count: int = 2) -> str:
    return "; ".join(f"{k}: {v}" for k, v in list(reasons.items())[:count]) or "none"
