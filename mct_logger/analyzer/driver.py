"""QuantAnalyzer: finds the layers that break the quantized model.

AIMET's analyses, on a Keras 3 model, with AIMET's API and file names:

- sensitivity: the eval score of the FP32 model (batch norms folded), of the
  weights-only (W8A32), the activations-only (W32A8) and the fully quantized
  (W8A8) model: 4 evaluations, then 2 per quantized layer;
- per-layer quantizer enablement: the score with only one layer quantized
  (`per_layer_quant_enabled.json`) and with all but one layer quantized
  (`per_layer_quant_disabled.json`);
- the encoding min/max of every activation and weight quantizer, per channel
  where the grid is per channel (`min_max_ranges/{activations,weights}.json`);
- the statistics histogram of every quantized tensor with its encoding min/max;
- the per-layer MSE between the FP32 and the quantized model's outputs
  (`per_layer_mse_loss.json`), per element (AIMET's divides by the batch size
  twice), when `enable_per_layer_mse_loss` was called.

And beyond AIMET: per-layer SQNR in dB, accumulated (whole model quantized) and
isolated (only that layer quantized, fed the float input), both from one pass
per batch (`mct_logger.diagnostics.activations`); the SQNR of every quantized kernel per
layer and output channel; the sensitivity scores persisted; an offline
`index.html` report; every table given to the analysis listeners
(`mct_logger.listeners`; with a log folder set, `set_log_folder` registers the
one that writes them as "quant_analyzer" payloads for TensorBoard); and
`recommend`: verified fixes.

The eval score is assumed to be higher-is-better (accuracy, or a negated loss).

Example:

```python
def calibrate(model):                        # (model) -> None
    model.predict(x_train[:512], batch_size=64, verbose=0)

def evaluate(model):                         # (model) -> float
    return accuracy(model.predict(x_test, verbose=0), y_test)

analyzer = QuantAnalyzer(model, calibrate, evaluate)
analyzer.enable_per_layer_mse_loss(x_train[:256], num_batches=4)
result = analyzer.analyze({"quant_scheme": "post_training_tf_enhanced",
                           "default_param_bw": 8, "default_output_bw": 8},
                          results_dir="./quant_analyzer_results")
result.ranking("sqnr_isolated")[:3]          # the three worst layers
```
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time

import keras
import numpy as np

from mct_logger.analyzer import analyses

from mct_logger.ptq import pipeline as ptq
from mct_logger.data import sources as data_lib
from mct_logger.utils import liveness
from mct_logger.utils.frozen_heap import frozen_heap
from mct_logger.utils.progress import Throttle, progress_bar
from mct_logger import listeners as listeners_lib
from mct_logger.analyzer import results_dir as results_lib
from mct_logger.analyzer.analyses import AnalysisResult
from mct_logger.analyzer.aimet_layout import DISABLED_FILE, ENABLED_FILE, HISTOGRAMS_FILE, MIN_MAX_FOLDER, MIN_MAX_TABLE_FILE, MSE_FILE, RESULT_FILES, SENSITIVITY_FILE, SQNR_FILE, SUMMARY_FILE, WEIGHT_SQNR_FILE, ignored_layer_names, resolve_config
from mct_logger.utils.arguments import check_model, check_names, check_path
from mct_logger.utils.callbacks import ScoreCheck, as_callback
from mct_logger.graph.ir import read_model
from mct_logger.diagnostics.rebuild_check import check_rebuilt_graph
from mct_logger.quantization.calibration_size import warn_if_few_samples
from mct_logger.quantization.config import LayerOverride, QuantizationConfig
from mct_logger.quantization.plan import plan_quantization
from mct_logger.quantization.quantsim import build_quantized_model, set_quantizers_enabled
from mct_logger.analyzer.recommend import recommend
from mct_logger.analyzer.report import REPORT_FILE, write_report
from mct_logger.analyzer.worst_layers import annotate
from mct_logger.utils.json_safe import json_ready

__all__ = ["QuantAnalyzer"]

logger = logging.getLogger("mct_logger")

# Samples of the calibration data kept for the SQNR analysis when no unlabeled
# data was given with `enable_per_layer_mse_loss`.
CALIBRATION_SAMPLES_FOR_SQNR = 256


# ----------------------------------------------------------------------------- the analyzer


class QuantAnalyzer:
    """Finds the layers whose quantization breaks the model (AIMET's QuantAnalyzer).

    Args:
        model: a Functional or Sequential Keras model (never modified).
        forward_pass_callback: `(model) -> None` that runs representative data
            (500-1000 samples) through the model it is given: the calibration
            model, whose forward pass (`predict`, `__call__`, `evaluate`) feeds
            the observers. A `(func, args)` pair is called as `func(model, args)`.
        eval_callback: `(model) -> float`, the model's score on labelled data,
            higher is better. Called 3 times plus twice per quantized layer: use a
            subset of the evaluation data for speed. A `(func, args)` pair works too.
        dummy_input: optional model input, checked against the model's inputs
            before any work.
        layers_to_ignore: layers (names or layer objects) to leave in float.
    """

    def __init__(self, model: keras.Model, forward_pass_callback, eval_callback,
                 dummy_input=None, layers_to_ignore=None):
        self.model = check_model(model)
        self.graph = read_model(model)
        self.forward_pass_callback = as_callback(forward_pass_callback, "forward_pass_callback")
        self.eval_callback = as_callback(eval_callback, "eval_callback")
        self.input_specs = data_lib.input_specs(self.graph)
        if dummy_input is not None:
            data_lib.load_batches(dummy_input, self.input_specs, name="dummy_input")
        ignored = check_names("layers_to_ignore", layers_to_ignore, layers=True) or []
        self.layers_to_ignore = ignored_layer_names(self.graph, ignored)
        self.mse_batches: list | None = None
        self.last_analysis: AnalysisResult | None = None

    def enable_per_layer_mse_loss(self, unlabeled_data, num_batches: int) -> None:
        """Turns on the per-layer MSE analysis over the first `num_batches` batches.

        `unlabeled_data` is anything PTQ takes as representative data: a
        `tf.data.Dataset`, a generator or iterable of batches, a zero-argument
        callable returning one, or whole arrays, as `model.fit` takes x or (x, y)
        (cut into batches of 32). About 256 samples; they feed per-layer SQNR too.
        """
        if isinstance(num_batches, bool) or not isinstance(num_batches, (int, np.integer)) \
                or num_batches < 1:
            raise ValueError(f"num_batches must be a positive integer, got {num_batches!r}.")
        num_batches = int(num_batches)
        batches = data_lib.first_batches(unlabeled_data, self.input_specs, num_batches,
                                         "unlabeled_data")
        if len(batches) < num_batches:
            logger.warning(
                "enable_per_layer_mse_loss: the data holds %d batch(es), fewer than "
                "num_batches=%d; using all of them.", len(batches), num_batches,
            )
        self.mse_batches = batches[:num_batches]

    @frozen_heap()
    def analyze(self, config=None, results_dir: str = "./quant_analyzer_results",
                **aimet_settings) -> AnalysisResult:
        """Runs every analysis; writes the JSON files and `index.html` into `results_dir`.

        Args:
            config: a QuantizationConfig, or a dict with its fields or AIMET's
                names (`quant_scheme`, `default_param_bw`, `default_output_bw`);
                default `QuantizationConfig()` (W8A8).
            results_dir: where the results go (created if needed). The result
                files of an earlier analysis there are moved into
                `previous_runs/<its start time>/` first.
            **aimet_settings: AIMET's keyword arguments of `analyze`
                (`quant_scheme=...`, `default_param_bw=...`...), merged into `config`.

        `summary.json` is written at start (status "running", the files this run
        owns). An interrupted or failed analysis keeps every table finished so
        far on disk (and in TensorBoard), with `summary.json` saying where it
        stopped. A TensorBoard log that cannot be written is one warning; the
        analysis goes on, as it does past a result file that cannot be written:
        a warning names it, and it is in `files_not_written` (and `summary.json`).

        A NaN or infinite eval score is refused for the FP32 model (the first
        evaluation) and otherwise kept as missing with one warning.

        Raises:
            FileExistsError: `results_dir` holds result files, or a `summary.json`,
                that no QuantAnalyzer `summary.json` claims (another tool's?), or
                a symbolic link where a result goes, or a file where
                `previous_runs` goes; nothing is moved. Pass a new folder.
            NotADirectoryError, IsADirectoryError: `results_dir` or a result
                file's path in it cannot be written (checked before any work).
            RuntimeError: another analysis is still writing to `results_dir`.
            ValueError: `eval_callback` returned NaN or Inf for the FP32 model.
        """
        config = resolve_config(config, **aimet_settings)
        run = _Analysis(self, config, check_path("results_dir", results_dir))
        self.last_analysis = run.result  # recommend's default evidence
        return run.run()

    def recommend(self, max_accuracy_drop: float, representative_data=None,
                  analysis: AnalysisResult | None = None, adaround=None):
        """A verified QuantizationConfig from a finished analysis: `mct_logger.analyzer.recommend`.

        Args:
            max_accuracy_drop: the largest drop from the FP32 score (score units).
            representative_data: read up to the analyzed config's
                `num_calibration_samples` (1000 by default), as PTQ reads it.
            analysis: the `AnalysisResult` of this analyzer's `analyze` to start
                from; default the last one (`last_analysis`).
            adaround: the `AdaRoundConfig` proposed where the weights-only score is
                below the activations-only one (True: the paper's; None: not proposed).

        Returns:
            `(config, Recommendation)`.

        Raises:
            ValueError: a bad `max_accuracy_drop`, or `representative_data`
                that cannot be used (RepresentativeDataError), before any work.
            RuntimeError: no finished analysis to start from.
        """
        return recommend(self, analysis or self.last_analysis, max_accuracy_drop,
                         representative_data, adaround)


# ----------------------------------------------------------------------------- one run


class _Analysis:
    def __init__(self, analyzer: QuantAnalyzer, config: QuantizationConfig, results_dir: str):
        self.analyzer = analyzer
        self.config = config
        self.results_dir = os.path.abspath(results_dir)
        self.files = results_lib.ResultWriter(self.results_dir)  # its warnings name the files
        self.tables: dict[str, dict] = {}
        self.result = AnalysisResult(self.results_dir, files_not_written=self.files.not_written,
                                     config=config, tables=self.tables)
        self.published: set[str] = set()
        self.evaluations_done = 0
        self.evaluations_total = None
        self.summary: dict = {}
        self.live = Throttle()
        self._evaluations_started = time.time()
        self.listeners: listeners_lib.ListenerSet | None = None  # opened once planned
        self.started = time.time()
        self.score = ScoreCheck("eval_callback")  # NaN/Inf: refused for fp32, else one warning
        self._lock = threading.RLock()  # the heartbeat thread publishes the summary too

    # ------------------------------------------------------------- driver

    def run(self) -> AnalysisResult:
        # The manifest first: results_dir then never shows an earlier run's files as ours.
        owned = [f for f in RESULT_FILES if f != MSE_FILE or self.analyzer.mse_batches is not None]
        self.summary = results_lib.claim(self.results_dir, RESULT_FILES, owned, SUMMARY_FILE)
        os.makedirs(os.path.join(self.results_dir, MIN_MAX_FOLDER), exist_ok=True)
        failure: BaseException | None = None
        try:
            # a heartbeat (a killed run reads as interrupted); SIGTERM/SIGINT interrupt
            with liveness.running(self._beat):
                self._run()
            self.result.status = "complete"
        except KeyboardInterrupt as exc:
            self.result.status, failure = "interrupted", exc
            raise
        except BaseException as exc:
            self.result.status, failure = "failed", exc
            raise
        finally:
            try:
                self._finish(failure)
            finally:
                results_lib.release(self.results_dir)
        return self.result

    def _beat(self) -> None:
        """The heartbeat: the summary, stamped now, to summary.json and the listeners."""
        with self._lock:
            if self.summary.get("status") == "running":
                self.files.write_manifest(SUMMARY_FILE, liveness.stamp(self.summary))
                if "summary" in self.published:
                    self._publish("summary", self.summary)

    def _run(self) -> None:
        analyzer, config = self.analyzer, self.config
        graph, folding = ptq.fold(analyzer.graph)
        self.graph = graph
        if analyzer.layers_to_ignore:
            overrides = dict(config.overrides)
            for name in analyzer.layers_to_ignore:
                overrides[name if re.escape(name) == name else re.escape(name)] = \
                    LayerOverride(keep_float=True)
            config = dataclasses.replace(config, overrides=overrides)
        skipped = [f for f in ("cross_layer_equalization", "bias_correction", "adaround")
                   if getattr(config, f, None)]
        if skipped:
            logger.warning(
                "QuantAnalyzer analyzes the batch-norm-folded model as given; %s in the "
                "config are not applied (apply them to the model first, then analyze it).",
                ", ".join(skipped),
            )
        plan = plan_quantization(graph, config)
        self.plan = plan
        self.layers = [n for n, p in plan.items() if p.quantized]
        if not self.layers:
            raise ValueError(f"Model {graph.name!r} has no layer to quantize under this "
                             "configuration; nothing to analyze.")
        self.evaluations_total = 2 * len(self.layers) + 4
        self._start_summary(folding)
        self._open_listeners(graph.name)
        if self.listeners:
            self._publish("summary", self.summary)  # the tab shows the run from the start
        float_model = graph.to_keras(name=f"{graph.name}_fp32")
        self.result.float_model = float_model
        calibration = analyses.RecordingCalibrationModel(graph, plan, CALIBRATION_SAMPLES_FOR_SQNR)
        logger.info("QuantAnalyzer: calibrating %d quantizers with forward_pass_callback",
                    len(self.layers))
        analyzer.forward_pass_callback(calibration)
        if calibration.batches_seen == 0:
            raise RuntimeError(
                "forward_pass_callback did not run the model it was given: call it (or its "
                "predict/evaluate) on representative data so the quantizers see values."
            )
        warn_if_few_samples(calibration.samples_seen, f"the activation ranges of {graph.name!r}"
                            " (QuantAnalyzer)", "run more samples in forward_pass_callback")
        # the grids first: data that is not finite is named there, as the callback's
        encodings = ptq.calibrated_encodings(graph, plan, calibration)
        if calibration.recorded:  # the float reference must be the user's model
            first = data_lib.load_batches(iter(calibration.recorded[:1]), analyzer.input_specs)[0]
            check_rebuilt_graph(analyzer.model, analyzer.graph, first)
        sim = build_quantized_model(graph, plan, encodings, name=f"{graph.name}_quantsim")
        self.result.quantized_model = sim
        self.summary["calibration"] = {
            "batches": calibration.batches_seen,
            "samples_kept_for_sqnr": calibration.recorded_samples,
        }

        # Analyses that need no evaluation first: an interrupt during the long
        # evaluation loops then still leaves them on disk.
        aimet, table = analyses.min_max_ranges(graph, self.layers, encodings,
                                               calibration.observers)
        table = annotate("min_max_ranges", table)  # the file as published
        self.result.min_max_ranges = aimet
        self._write_json(os.path.join(MIN_MAX_FOLDER, "weights.json"), aimet["weights"])
        self._write_json(os.path.join(MIN_MAX_FOLDER, "activations.json"), aimet["activations"])
        self._write_json(MIN_MAX_TABLE_FILE, table, compact=True)
        self._publish("min_max_ranges", table)
        table = analyses.histograms(graph, plan, self.layers, encodings, calibration.observers)
        self._write_json(HISTOGRAMS_FILE, table, compact=True)
        self._publish("histograms", table)
        table = annotate("weight_sqnr", analyses.weight_sqnr_table(graph, plan, encodings))
        self.result.weight_sqnr = {f"{r['layer']}/{r['kernel']}": r for r in table["rows"]}
        self._write_json(WEIGHT_SQNR_FILE, table, compact=True)
        self._publish("weight_sqnr", table)
        self._activation_errors(encodings, calibration)

        progress = progress_bar(self.evaluations_total, "QuantAnalyzer evaluation")
        self._evaluations_started = time.time()
        self._sensitivity(float_model, sim, progress)
        self._per_layer(sim, progress, enabled=True)
        self._per_layer(sim, progress, enabled=False)
        set_quantizers_enabled(sim, weights=True, activations=True)

    # ------------------------------------------------------------- outputs

    def _open_listeners(self, model_name: str) -> None:
        """The analysis listeners (a `ListenerSet` of kind ANALYSIS; with a log folder
        set, the TensorBoard one, which never fails the analysis)."""
        self.listeners = listeners_lib.ListenerSet(
            listeners_lib.RunInfo(listeners_lib.ANALYSIS, model_name))
        self.result.log_folder = self.listeners.log_folder

    def _write_json(self, relative: str, content, compact: bool = False) -> None:
        """Atomically (never half a file), `compact` for the large tables, indented
        (as AIMET's) otherwise; a failure is a warning, not an error."""
        self.files.write_json(relative, json_ready(content), compact=compact)

    def _publish(self, kind: str, table: dict) -> None:
        """Keeps `table` for the report and gives it, with its "worst_layers"
        ranking, to every analysis listener (again each time it grows); the summary stamped."""
        with self._lock:
            if kind == "summary" and table.get("status") == "running":
                liveness.stamp(table)
            self.tables[kind] = table
            if self.listeners:
                self.listeners.emit(kind, annotate(kind, table))
            self.published.add(kind)

    def _publish_progress(self, kind: str, force: bool = False) -> None:
        """Publishes a growing table and the summary's count of evaluations, at
        most every `utils.progress.LIVE_INTERVAL_SECONDS` (always when `force`)."""
        if not self.listeners or not self.live.due(force):
            return
        now = time.time()
        with self._lock:
            self._publish(kind, self.tables[kind])
            self.summary.update(evaluations_done=self.evaluations_done,
                                seconds=round(now - self.started, 3),
                                evaluation_seconds=round(now - self._evaluations_started, 3))
            self._publish("summary", self.summary)

    def _start_summary(self, folding) -> None:
        self.summary = {
            **self.summary,  # the manifest written at start
            **analyses.summary_header(self.config, self.graph, self.plan, self.layers, folding,
                                      self.analyzer.layers_to_ignore, self.evaluations_total),
        }
        self.result.layers = list(self.layers)

    def _finish(self, failure: BaseException | None) -> None:
        try:
            for kind, table in list(self.tables.items()):
                # unpublished tables, and growing ones whose newest rows the
                # live updates may have skipped
                if kind not in self.published or table.get("complete") is False:
                    self._publish(kind, table)
            if self.summary:
                self.summary.update(
                    status=self.result.status,
                    evaluations_done=self.evaluations_done,
                    seconds=round(time.time() - self.started, 3),
                    error=None if failure is None else f"{type(failure).__name__}: {failure}",
                    analyses=sorted(k for k in self.tables if k != "summary"),
                )
                self.files.write_manifest(SUMMARY_FILE, self.summary)
                self._publish("summary", self.summary)
            if "layers" not in self.summary:
                return  # stopped before planning: nothing to report
            tables = {k: annotate(k, t) for k, t in self.tables.items()}
            self.result.report_path = self.files.attempt(REPORT_FILE, write_report,
                                                         self.results_dir, tables)
            self.files.finish(SUMMARY_FILE, self.summary, self.result.status)
            if self.result.status == "complete":
                if self.result.report_path:
                    logger.info("QuantAnalyzer: report at %s", self.result.report_path)
            else:
                logger.warning(
                    "QuantAnalyzer %s after %d of %s evaluations; the results finished so far "
                    "are in %s", self.result.status, self.evaluations_done,
                    self.evaluations_total, self.results_dir,
                )
        finally:
            if self.listeners is not None:
                self.listeners.close(failure)

    # ------------------------------------------------------------- analyses

    def _activation_errors(self, encodings, calibration) -> None:
        """Per-layer SQNR (accumulated and isolated) and MSE, one pass per batch."""
        sqnr, mse = analyses.activation_error_tables(
            self.graph, self.plan, encodings, self.analyzer.mse_batches,
            data_lib.load_batches(iter(calibration.recorded), self.analyzer.input_specs))
        self.result.per_layer_sqnr = {r["layer"]: r for r in sqnr["rows"]}
        table = annotate("per_layer_sqnr", sqnr)
        self._write_json(SQNR_FILE, table)
        self._publish("per_layer_sqnr", table)
        if mse is not None:
            self.result.per_layer_mse_loss = {r["layer"]: r["mse"] for r in mse["rows"]}
            self._write_json(MSE_FILE, self.result.per_layer_mse_loss)
            self._publish("per_layer_mse_loss", mse)

    def _sensitivity(self, float_model, sim, progress) -> None:
        labels, runs = analyses.sensitivity_runs(
            float_model, sim, self.config.weight_bits, self.config.activation_bits)
        table = {
            "labels": labels,
            "fp32": None, "weights_only": None, "activations_only": None,
            "fully_quantized": None,
            "complete": False,
        }
        self.tables["sensitivity"] = table
        evaluate = self.analyzer.eval_callback
        for key, model, switches in runs:
            if switches is not None:
                set_quantizers_enabled(model, **switches)
            table[key] = self.score(evaluate(model), f"the {key} model ({labels[key]})",
                                    reference=key == "fp32")
            self.result.sensitivity[key] = table[key]
            logger.info("QuantAnalyzer: %s eval score (%s): %.6g",
                        key, table["labels"][key], table[key])
            self.evaluations_done += 1
            progress.update(self.evaluations_done)
            self._write_json(SENSITIVITY_FILE, table)
            self._publish_progress("sensitivity")
        table["complete"] = True
        self._write_json(SENSITIVITY_FILE, table)
        self._publish("sensitivity", table)

    def _per_layer(self, sim, progress, enabled: bool) -> None:
        kind = "per_layer_quant_enabled" if enabled else "per_layer_quant_disabled"
        filename = ENABLED_FILE if enabled else DISABLED_FILE
        scores = self.result.per_layer_quant_enabled if enabled \
            else self.result.per_layer_quant_disabled
        table = {
            "fp32": self.tables["sensitivity"]["fp32"],
            "fully_quantized": self.tables["sensitivity"]["fully_quantized"],
            "layers_total": len(self.layers),
            "rows": [],
            "complete": False,
        }
        self.tables[kind] = table
        set_quantizers_enabled(sim, weights=not enabled, activations=not enabled)
        for name in self.layers:
            set_quantizers_enabled(sim, weights=enabled, activations=enabled, nodes=[name])
            try:
                score = self.score(self.analyzer.eval_callback(sim), f"the model with {name} "
                                   f"{'alone quantized' if enabled else 'alone in float'}")
            finally:
                set_quantizers_enabled(sim, weights=not enabled, activations=not enabled,
                                       nodes=[name])
            scores[name] = score
            table["rows"].append({"layer": name, "class": self.graph.nodes[name].layer_class,
                                  "score": score})
            self.evaluations_done += 1
            progress.update(self.evaluations_done)
            self._write_json(filename, scores)
            self._publish_progress(kind)
        table["complete"] = True
        self._publish(kind, table)
