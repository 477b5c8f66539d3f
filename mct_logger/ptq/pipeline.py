"""`keras_post_training_quantization`: an ordered list of named stages over the graph.

Each stage takes the graph, returns a new one plus a typed, versioned result,
and tells every listener of the run (`mct_logger.listeners.ListenerSet`: the
TensorBoard logger, your `add_stage_listener` callables, tests) an `Event` with
the stage's name, result and graph. No stage knows who listens.
Listeners hear the stages in this order even though one, the similarity
analysis (a diagnosis), runs on a thread alongside the quantized model's build.

The steps QuantAnalyzer shares with PTQ (it calibrates through the user's
forward-pass callback instead of a data set, and does no CLE or bias
correction): `fold` (batch-norm folding), `plan_quantization`, a
`CalibrationModel`'s calibration, `calibrated_encodings` (the grids) and
`build_quantized_model`.

Example:

```python
seen = []
add_stage_listener(lambda stage, graph, result: seen.append(stage))
model_q, info = keras_post_training_quantization(model, x_calibration)
info.memory_after / info.memory_before   # about 0.25 for W8A8
```
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

import keras

from mct_logger.data import sources as data_lib
from mct_logger.quantization import encodings_file as export
from mct_logger.data.batches import CalibrationBatches
from mct_logger.utils import address_space
from mct_logger.utils.frozen_heap import frozen_heap
from mct_logger.graph.ir import Graph, read_model
from mct_logger.graph.clone import CloneCache
from mct_logger.ptq.rebuild import REBUILD_CHECK_SAMPLES, check_masks
from mct_logger import listeners as listeners_lib
from mct_logger.listeners import ListenerSet, RunInfo
from mct_logger.quantization.memory import graph_memory, model_memory
from mct_logger.ptq.calibration import collect
from mct_logger.quantization import litert_target
from mct_logger.quantization.config import QuantizationConfig, config_to_dict
from mct_logger.quantization.plan import (
    check_overrides, inner_name, plan_quantization)
from mct_logger.quantization.quantsim import (
    CalibrationModel,
    NodeEncodings,
    build_quantized_model,
    weight_encodings,
)
from mct_logger.diagnostics.similarity import analyze_similarity, first_samples, working_set_bytes
from mct_logger.techniques.batch_norm_folding import BatchNormFoldingResult, fold_batch_norms
from mct_logger.ptq import technique_stages
from mct_logger.techniques.int32_bias import round_biases
from mct_logger.ptq.results import (
    FLOAT_REASONS, InitialGraphResult, QuantizationInfo, QuantizationParametersResult, QuantizedModelResult, SkippedStageResult)

__all__ = [
    "STAGES", "QuantizationInfo", "calibrated_encodings", "fold",
    "keras_post_training_quantization", "quantize",
]

logger = logging.getLogger("mct_logger")

STAGES = (
    "initial_graph",
    "batch_norm_folding",
    "cross_layer_equalization",
    "statistics_collection",
    "quantization_parameters",
    "adaround",
    "bias_correction",
    "quantized_model",
    "similarity_analysis",  # only when analyzing similarity (e.g. logging)
)


# ---------------------------------------------------------------- the pipeline


class _Run:
    """One PTQ run: times each stage and tells the run's listeners (a `ListenerSet`)."""

    def __init__(self, listeners: ListenerSet):
        self.listeners = listeners
        self.seconds: dict[str, float] = {}
        self.listener_seconds: dict[str, float] = {}
        self.results: dict[str, Any] = {}

    def stage(self, name: str, fn, *args):
        """Runs stage `name` (`fn(*args) -> (graph, result)`) and reports it."""
        start = time.perf_counter()
        try:
            graph, result = fn(*args)
        except Exception as exc:
            exc.add_note(f"(mct_logger PTQ stage {name!r} failed)")
            raise
        return self._report(name, graph, result, time.perf_counter() - start)

    def start(self, name: str, fn, *args, alongside: bool = True) -> "_StageThread":
        """Starts stage `name` on a thread; `finish` reports it, in the order the
        listeners expect, once the stages in between have run. With `alongside`
        False it is not started: `finish` runs it inline (after those stages)."""
        thread = _StageThread(name, fn, args)
        if alongside and not address_space.start_thread(thread):
            thread.run()  # no room for a thread under the address-space limit: inline
        return thread

    def finish(self, thread: "_StageThread"):
        """Waits for a started stage (or runs one not started) and reports it
        (raises what it raised)."""
        if not thread.started:
            thread.run()
        thread.join()
        if thread.error is not None:
            thread.error.add_note(f"(mct_logger PTQ stage {thread.stage!r} failed)")
            raise thread.error
        return self._report(thread.stage, *thread.output, thread.seconds)

    def _report(self, name: str, graph, result, seconds: float):
        self.seconds[name] = seconds
        self.results[name] = result
        logger.info("PTQ stage %s done in %.2f s", name, self.seconds[name])
        start = time.perf_counter()
        self.listeners.emit(name, result, graph)
        self.listener_seconds[name] = time.perf_counter() - start
        return graph, result


class _StageThread(threading.Thread):
    """A stage running alongside the main thread's stages (see `_Run.start`)."""

    def __init__(self, name: str, fn, args):
        super().__init__(name=f"mct_logger-{name}", daemon=True)
        self.stage, self.fn, self.args = name, fn, args
        self.output = self.error = None
        self.seconds = 0.0
        self.ran = False

    @property
    def started(self) -> bool:
        """Whether it ran or runs (on its thread, or inline)."""
        return self.ran or self.is_alive() or self.ident is not None

    def join(self, timeout=None):
        if self.ident is not None:  # started as a thread (inline runs have nothing to join)
            super().join(timeout)

    def run(self):
        self.ran = True
        start = time.perf_counter()
        try:
            self.output = self.fn(*self.args)
        except BaseException as exc:  # handed to the main thread by `_Run.finish`
            self.error = exc
        self.seconds = time.perf_counter() - start


def keras_post_training_quantization(
    model: keras.Model,
    representative_data,
    config: QuantizationConfig | None = None,
) -> tuple[keras.Model, QuantizationInfo]:
    """Quantizes a Keras model after training; returns the fake-quantized model and info.

    Args:
        model: a Functional or Sequential Keras model (nested models are fine).
            It is never modified.
        representative_data: typical inputs for calibration: a zero-argument
            callable returning batches, a generator, a `tf.data.Dataset` or a
            NumPy array (labels in `(x, y)` batches, or in an `(x, y)` tuple of
            whole arrays, are ignored). At most
            `config.num_calibration_samples` samples are read. May be None
            when `config.encodings_file` provides the grids.
        config: a `QuantizationConfig`; default W8A8, weights symmetric
            per-channel, activations asymmetric per-tensor.

    Returns:
        `(quantized_model, info)`: a Keras model whose quantizers can be switched
        (`set_quantizers_enabled`) and saved to `.keras`, and a `QuantizationInfo`.

    Raises (all before any stage runs or logs):
        RepresentativeDataError: the data cannot be used (the message names the
            batch, the input and the fix).
        GraphError: the model has no graph to read (e.g. a subclassed model).
        ValueError: an override pattern matches no node; the encodings file
            cannot be read (e.g. it is a directory), is not UTF-8 JSON, has an
            inconsistent entry, lacks a grid the plan needs, or has per-channel
            counts that do not fit the model (naming the file, the key or node,
            and both counts). FileNotFoundError: no such encodings file.
        RebuildMismatchError: the float graph rebuilt from the model does not
            compute the model's outputs on the first 4 calibration samples
            (norm-relative error above 1e-5); it names the first diverging node.
            Checked on data only when the model holds a layer whose clone is
            not exact by construction (`rebuild_check.rebuilt_exactly`).

    An encodings file whose grids differ from the config's settings (bit-width,
    symmetry, per-channel or per-tensor), or that has entries for nodes the model
    lacks, is used with a warning naming the file and them (the file's grids win).

    Logging (`set_log_folder`) and the similarity analysis never cost the model:
    a log that cannot be written, or a diagnosis that fails, is one warning
    (the path and the cause) and the model is still returned. A listener added
    with `add_stage_listener` that raises stops the run.
    """
    return quantize(model, representative_data, config)


@frozen_heap()
def quantize(model: keras.Model, representative_data, config: QuantizationConfig | None = None,
             *, run_info: RunInfo | None = None,
             tables: dict | None = None) -> tuple[keras.Model, QuantizationInfo]:
    """`keras_post_training_quantization` as the engines that make PTQ runs of their
    own call it: `run_info` names the run for its listeners (e.g. a search's
    "<model>_baseline"), and `tables` (`{payload kind: table}`) go to them as the
    `listeners.TABLES` event after the stages. Same arguments, result and errors.
    """
    config = config or QuantizationConfig()
    if not isinstance(config, QuantizationConfig):
        raise TypeError(f"config must be a QuantizationConfig, got {type(config).__name__}.")
    address_space.bound_per_thread_memory()  # under ulimit -v: no 64 MiB arena per thread
    graph = read_model(model)
    check_overrides(graph, config)
    loaded = None
    if config.encodings_file:
        loaded = export.load_encodings(config.encodings_file, graph)
        export.check_encodings_fit(graph, loaded, config.encodings_file)
        # A trial plan on the folded graph (weights only, no data): a grid the
        # plan needs and the file lacks fails here, before any stage.
        trial = plan_quantization(fold_batch_norms(graph)[0], config, report=False)
        adopted = export.adopt_encodings(trial, loaded, config.encodings_file)
        export.warn_config_conflicts(adopted, config, config.encodings_file, graph)
    # The rebuild check's, the calibration model's and the quantized model's
    # layers: none changes a clone, so a prototype is cloned once per run.
    clones = CloneCache()
    if representative_data is None and config.encodings_file:
        batches = None  # the grids come from the file; nothing to calibrate
    else:
        batches = CalibrationBatches(
            representative_data, data_lib.input_specs(graph), config.batch_size,
            max_samples=config.num_calibration_samples,
        )
        # A few samples prove the rebuilt graph (eager calls cost per sample).
        first = [x[:REBUILD_CHECK_SAMPLES] for x in batches.first]
        check_masks(model, graph, first, config, clones)  # the rebuild check included
    run_info = run_info or RunInfo(listeners_lib.PTQ, model.name)
    if run_info.run_id is None:  # names this run to a later export's listeners
        run_info = dataclasses.replace(run_info, run_id=listeners_lib.new_run_id())
    run = _Run(ListenerSet(run_info))
    try:
        model_q, info = _quantize(run, graph, batches, config, loaded, clones)
        info.run_id = run_info.run_id
        if tables:
            run.listeners.emit(listeners_lib.TABLES, tables)
    except BaseException as exc:
        run.listeners.close(exc)
        raise
    run.listeners.close()
    return model_q, info


def _quantize(run: _Run, graph: Graph, batches, config: QuantizationConfig, loaded=None,
              clones=None):
    graph, _ = run.stage(
        "initial_graph",
        lambda g: (g, InitialGraphResult(len(g.nodes), g.parameter_count())),
        graph,
    )
    graph, _ = run.stage("batch_norm_folding", fold, graph)
    graph, _ = run.stage("cross_layer_equalization", technique_stages.cle_stage, graph, config)
    # The float side of the headline is the batch-norm-folded model: folding is
    # free on every target, so it is not counted as a quantization saving.
    memory_before = graph_memory(graph)
    plan = plan_quantization(graph, config)
    if config.encodings_file:
        loaded = export.adopt_encodings(plan, loaded, config.encodings_file)
        graph, _ = run.stage(
            "statistics_collection",
            lambda g: (g, SkippedStageResult(f"encodings loaded from {config.encodings_file}")),
            graph,
        )
        graph, params = run.stage(
            "quantization_parameters", lambda g: (g, _parameters_result(plan, loaded)), graph
        )
    else:
        calibrations: list = []  # the calibration model `collect` fed
        graph, stats = run.stage("statistics_collection", collect, graph, plan, batches, clones,
                                 run.listeners.needs(listeners_lib.STATISTICS), calibrations.append)
        graph, params = run.stage("quantization_parameters", _parameters, graph, plan,
                                  calibrations[-1], config.target)
    # `graph` stays the float reference (kernels before AdaRound, biases before
    # correction); the quantized model is built from the rounded, corrected copy.
    rounded, _ = run.stage(
        "adaround", technique_stages.adaround_stage, graph, plan, params.encodings, batches, config)
    corrected, _ = run.stage(
        "bias_correction", technique_stages.bias_correction_stage, rounded, plan, params.encodings, batches,
        config, graph)
    if config.target == "litert":  # biases as LiteRT's int32 grid holds them
        corrected = round_biases(corrected, plan, params.encodings)
    analyze = config.analyze_similarity
    if analyze is None:
        analyze = run.listeners.needs(listeners_lib.SIMILARITY)
    if analyze and batches and not any(p.quantized for p in plan.values()):
        logger.info("Similarity analysis skipped: no node of %r is quantized under this "
                    "configuration, so float and quantized outputs are the same.", graph.name)
        analyze = False
    similarity_bytes = working_set_bytes(graph, config.similarity_samples)
    # (its eager TensorFlow kernels crash natively when an allocation fails: its
    # working set must fit in address space not reserved yet, see address_space)
    analyze = analyze and address_space.afford("The similarity analysis", similarity_bytes,
                                               unreserved=True)
    # the first similarity_samples samples: read once, by the similarity stage or, on
    # first use, by export_litert (a PTQ call that needs neither reads no more data)
    parity_samples = SamplesOnce(batches, config.similarity_samples)
    similarity = None
    if analyze and batches:
        # The similarity analysis needs only the graphs and the grids: it runs on a
        # thread while the quantized model is built (its kernels release the GIL
        # the build's Python needs), and is reported after it.
        statistics = getattr(run.results.get("statistics_collection"), "statistics", None) or {}
        histograms = {n: tuple(a[0] for a in s.histogram()) for n, s in statistics.items()}
        rounding = run.results.get("adaround")
        # Under an address-space limit with no fresh room for both, it runs after
        # the build instead, on the memory the build gave back: a lower peak.
        similarity = run.start(
            "similarity_analysis", _similarity_stage, graph, plan, params.encodings,
            parity_samples, config.similarity_samples, histograms, corrected,
            config_to_dict(config)["config"],
            rounding.columns() if hasattr(rounding, "columns") else None,
            alongside=address_space.affordable_alongside(
                similarity_bytes + address_space.THREAD_RESERVE),
        )
    try:
        _, result = run.stage(
            "quantized_model", _build, corrected, plan, params.encodings, memory_before, clones
        )
    finally:
        if similarity is not None:
            similarity.join()  # no analysis outlives a failed run
    if similarity is not None and not similarity.started and not address_space.afford(
            "The similarity analysis", similarity_bytes, unreserved=True):
        similarity = None
    if similarity is not None:
        graph, _ = run.finish(similarity)
    info = QuantizationInfo(
        encodings=params.encodings,
        plan=plan,
        float_graph=graph,
        memory_before=result.memory_before,
        memory_after=result.memory_after,
        node_memory_before=memory_before,
        node_memory_after=graph_memory(corrected, plan),
        stage_seconds=dict(run.seconds),
        stage_results=dict(run.results),
        listener_seconds=dict(run.listener_seconds),
        quantized_graph=corrected,
        parity_source=parity_samples if batches else None,
    )
    return result.model, info


class SamplesOnce:
    """The first `samples` samples of `batches` (`first_samples`), read on the first
    call and kept: the similarity stage and `export_litert`'s parity share one read."""

    def __init__(self, batches, samples: int):
        self.batches, self.samples = batches, samples
        self.lock = threading.Lock()
        self.read: list | None = None

    def __call__(self) -> list:
        with self.lock:
            if self.read is None:
                self.read = first_samples(self.batches, self.samples)
                self.batches = None  # the source is no longer held
            return self.read


def _similarity_stage(graph: Graph, plan, encodings, batches, samples, histograms, corrected,
                      config: dict | None = None, adaround=None):
    """The similarity analysis. A diagnosis only: if it fails, the failure is one
    warning and the stage is skipped; the quantized model is still returned.
    `batches` is the run's `SamplesOnce` (the samples read once, shared with the export)."""
    try:
        result = analyze_similarity(graph, plan, encodings, batches(), samples, histograms,
                                    quantized_graph=corrected)
    except Exception as exc:  # reported here, as the one warning of this stage
        logger.warning("The similarity analysis failed (%s: %s); PTQ goes on and returns the "
                       "quantized model without it.", type(exc).__name__, exc)
        return graph, SkippedStageResult(
            f"the similarity analysis failed: {type(exc).__name__}: {exc}", plan=plan,
            encodings=encodings)
    return graph, dataclasses.replace(result, plan=plan, encodings=encodings, config=config,
                                      adaround=adaround)


def fold(graph: Graph) -> tuple[Graph, BatchNormFoldingResult]:
    """Batch-norm folding (`fold_batch_norms`), each batch norm left unfolded named in
    the log with why; returns the folded graph and the stage's result."""
    graph, result = fold_batch_norms(graph)
    for bn, reason in result.not_folded.items():
        logger.info("Batch norm %r stays a float affine layer: %s", bn, reason)
    return graph, result


def calibrated_encodings(graph: Graph, plan: dict, calibration: CalibrationModel) -> dict:
    """The grids of every quantized node once `calibration` has seen the data.

    Args:
        graph: the graph the plan was made for (its weights give the weight grids).
        plan: node name -> `NodePlan`.
        calibration: a `CalibrationModel` of `graph` and `plan` whose observers were updated.

    Returns:
        node name -> `NodeEncodings` (weights by kernel name, activation or None), for
        the nodes the plan quantizes.
    """
    weights = weight_encodings(graph, plan)
    activations = calibration.activation_encodings(plan)
    return {
        name: NodeEncodings(
            weights=weights.get(name, {}), activation=activations.get(name),
            inner_activations={point: activations[inner_name(name, point)]
                               for point in p.inner_activations})
        for name, p in plan.items()
        if p.quantized
    }


def _parameters(graph, plan, calibration: CalibrationModel, target: str | None = None):
    encodings = calibrated_encodings(graph, plan, calibration)  # + the target's grid rules
    return graph, _parameters_result(
        plan, litert_target.target_grids(graph, plan, encodings, target))


def _parameters_result(plan, encodings) -> QuantizationParametersResult:
    float_nodes = [n for n, p in plan.items() if p.reason in FLOAT_REASONS]
    return QuantizationParametersResult(plan, encodings, float_nodes)


def _build(graph, plan, encodings, memory_before, clones=None):
    model = build_quantized_model(graph, plan, encodings, clones=clones)
    after = graph_memory(graph, plan)
    return graph, QuantizedModelResult(
        model=model,
        memory_before=model_memory(memory_before, plan),
        memory_after=model_memory(after, plan),
        plan=plan,
        encodings=encodings,
    )

