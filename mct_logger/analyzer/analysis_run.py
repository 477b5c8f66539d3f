"""One QuantAnalyzer analysis run: plan, calibrate, then each analysis in turn,
every table written to `results_dir`, published to the analysis listeners as it
grows, and kept for the report (`QuantAnalyzer.analyze` makes one per call).

The order is the one an interrupt should find: the tables that need no
evaluation first (min/max ranges, histograms, weight SQNR, activation SQNR and
MSE), then the evaluations: the sensitivity settings and every layer alone
quantized and alone in float, 4 + 2 N evaluations for N quantized layers (and
sublayer groups of composite layers, each switched on its own), one
sweep of quantizer masks on the analyzer's evaluator (`analyzer.evaluations`,
`mct_logger.evaluators`: in process or on Ray workers). Each score is recorded
in `results_dir/evaluations.json` as it arrives, so a run with `resume=True`
reuses the finished ones (the record must be of the same model, config and
calibration). A killed run leaves the cheap tables on disk; while it runs, a
heartbeat stamps `summary.json` (`utils.liveness`), SIGTERM/SIGINT end it as
"interrupted". Eval scores follow `ScoreCheck`: the FP32 one must be finite, a
later NaN/Inf is kept as missing with one warning. See
`mct_logger.analyzer.driver` for the analyses themselves.

Example:

```python
run = AnalysisRun(analyzer, QuantizationConfig(), "quant_analyzer_results")
result = run.run()      # an AnalysisResult; status "complete", "interrupted" or "failed"
```
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time

from mct_logger.analyzer import analyses
from mct_logger.ptq import pipeline as ptq
from mct_logger.data import sources as data_lib
from mct_logger.utils import liveness
from mct_logger.utils.progress import Throttle, progress_bar
from mct_logger import listeners as listeners_lib
from mct_logger.analyzer import results_dir as results_lib
from mct_logger.analyzer.analyses import AnalysisResult
from mct_logger.analyzer.aimet_layout import (HISTOGRAMS_FILE, MIN_MAX_FOLDER,
                                              MIN_MAX_TABLE_FILE, MSE_FILE, RESULT_FILES,
                                              SQNR_FILE, SUMMARY_FILE, WEIGHT_SQNR_FILE)
from mct_logger.utils.callbacks import ScoreCheck
from mct_logger.diagnostics.rebuild_check import check_rebuilt_graph
from mct_logger.quantization.calibration_size import warn_if_few_samples
from mct_logger.quantization.config import LayerOverride, QuantizationConfig
from mct_logger.quantization.plan import plan_quantization
from mct_logger.quantization.quantsim import build_quantized_model
from mct_logger.analyzer import evaluations
from mct_logger.evaluators import Sweep, run_jobs
from mct_logger.analyzer.report import REPORT_FILE, write_report
from mct_logger.analyzer.worst_layers import annotate
from mct_logger.utils.json_safe import json_ready

__all__ = ["AnalysisRun"]

logger = logging.getLogger("mct_logger")

# Samples of the calibration data kept for the SQNR analysis when no unlabeled
# data was given with `enable_per_layer_mse_loss`.
CALIBRATION_SAMPLES_FOR_SQNR = 256


class AnalysisRun:
    """One `analyze` call of `analyzer` (a QuantAnalyzer: its public model, graph,
    callbacks, evaluator and data) under `config` (a resolved QuantizationConfig),
    writing into `results_dir` (a str path); with `resume`, the evaluations
    recorded there by an earlier run of the same analysis are reused. `run()`
    returns the AnalysisResult; it raises what `QuantAnalyzer.analyze` documents.
    """

    def __init__(self, analyzer, config: QuantizationConfig, results_dir: str,
                 resume: bool = False):
        self.analyzer = analyzer
        self.resume = resume
        self.evaluations_reused = 0
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
        # read before the claim moves an earlier run aside; refused before any work
        self.records = evaluations.open_records(
            self.results_dir, self.analyzer.model, self.analyzer.graph.name, self.config,
            self.analyzer.layers_to_ignore, self.resume)
        self.summary = results_lib.claim(self.results_dir, RESULT_FILES, owned, SUMMARY_FILE)
        self.records.save()  # back in results_dir at once (the claim moved an earlier one)
        os.makedirs(os.path.join(self.results_dir, MIN_MAX_FOLDER), exist_ok=True)
        failure: BaseException | None = None
        try:
            # a heartbeat (a killed run reads as interrupted); SIGTERM/SIGINT interrupt;
            # the evaluator's workers start now, while the driver calibrates
            with liveness.running(self._beat), self.analyzer.evaluator.workers():
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
        # what the per-layer analyses switch: the layers, and each sublayer group of
        # a composite layer (`evaluations.mask_units`)
        self.mask_units = evaluations.mask_units(graph, plan)
        self.evaluations_total = 2 * len(self.mask_units) + 4
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
        self._evaluations(float_model, sim, encodings, progress)

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
            if kind == "summary":
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
                    evaluations_reused=self.evaluations_reused,
                    evaluation_seconds=round(time.time() - self._evaluations_started, 3),
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

    def _evaluations(self, float_model, sim, encodings, progress) -> None:
        """Sensitivity and per-layer analyses: one sweep of masks (`analyzer.evaluations`)."""
        labels, _ = analyses.sensitivity_runs(
            float_model, sim, self.config.weight_bits, self.config.activation_bits)
        self.records.check("encodings", evaluations.encodings_fingerprint(encodings))
        masks = evaluations.MaskTables(labels, self.mask_units, self.result)
        self.tables.update(masks.tables)
        jobs = evaluations.mask_jobs(labels, self.mask_units)
        workspaces = []

        def local():
            workspaces.append(evaluations.MaskWorkspace(float_model, sim,
                                                        self.analyzer.eval_callback))
            return workspaces[-1]

        def on_result(job, score, reused):
            score = self.score(score, job.what, reference=job.key == jobs[0].key)
            kind, filename, content = masks.take(job, score)
            if kind == evaluations.SENSITIVITY:
                logger.info("QuantAnalyzer: %s%s", job.what,
                            f" eval score: {score:.6g}" + (" (recorded)" if reused else ""))
            self.evaluations_reused += reused
            self.evaluations_done += 1
            progress.update(self.evaluations_done)
            self._write_json(filename, content)
            if self.tables[kind]["complete"]:
                masks.order()
                self._publish(kind, self.tables[kind])
            else:
                self._publish_progress(kind)

        sweep = Sweep("QuantAnalyzer", local, evaluations.rebuild_workspace,
                      lambda: evaluations.shipment(float_model, sim),
                      self.analyzer.raw_eval_callback)
        try:
            with self.analyzer.evaluator.open(sweep, jobs_hint=len(jobs)) as session:
                # fp32 first: the reference score is checked before any other evaluation
                run_jobs(session, jobs[:1], self.records, on_result)
                run_jobs(session, jobs[1:], self.records, on_result)
        finally:
            for workspace in workspaces:
                workspace.restore()
            masks.order()
