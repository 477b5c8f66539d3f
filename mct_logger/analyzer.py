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
per batch (`mct_logger.activations`); the SQNR of every quantized kernel
against the float one, per layer and per output channel; the sensitivity
scores persisted; one offline `index.html` report; and, with a log folder set
(`set_log_folder`), the same tables as "quant_analyzer" payloads for
TensorBoard.

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
import itertools
import json
import logging
import math
import os
import re
import time
from typing import Any, Callable

import keras
import numpy as np
from keras import tree

from mct_logger import data as data_lib
from mct_logger import logger as log_lib
from mct_logger import metrics
from mct_logger import results_dir as results_lib
from mct_logger.activations import PairedActivations, elements_per_sample
from mct_logger.graph import Graph, check_rebuilt_graph, layer_name_of, read_model
from mct_logger.quantization.config import LayerOverride, QuantizationConfig
from mct_logger.quantization.encodings import Encoding
from mct_logger.quantization.layers import weight_variable
from mct_logger.quantization.observers import OBSERVERS, HistogramCollector, channels_last_2d
from mct_logger.quantization.plan import plan_quantization
from mct_logger.quantization.quantsim import (
    CalibrationModel,
    NodeEncodings,
    build_quantized_model,
    set_quantizers_enabled,
    weight_encodings,
)
from mct_logger.report import REPORT_FILE, write_report
from mct_logger.weight_quantization import weight_quantization_rows
from mct_logger.tb_plugin.summary import json_ready
from mct_logger.techniques.batch_norm_folding import fold_batch_norms

logger = logging.getLogger("mct_logger")

# AIMET's `quant_scheme` names (and QuantScheme enum member names) -> our observers.
AIMET_SCHEMES = {
    "post_training_tf": "min_max",
    "tf": "min_max",
    "post_training_tf_enhanced": "tf_enhanced",
    "tf_enhanced": "tf_enhanced",
}
# AIMET's `analyze` keyword arguments -> QuantizationConfig fields.
_AIMET_FIELDS = {
    "default_param_bw": "weight_bits",
    "default_output_bw": "activation_bits",
    "default_activation_bw": "activation_bits",  # AIMET ONNX's name
    "per_channel_quantization": "weight_per_channel",
}

# The files AIMET writes, whose names and shapes scripts rely on.
ENABLED_FILE = "per_layer_quant_enabled.json"
DISABLED_FILE = "per_layer_quant_disabled.json"
MSE_FILE = "per_layer_mse_loss.json"
MIN_MAX_FOLDER = "min_max_ranges"
# Ours, beside them.
SENSITIVITY_FILE = "sensitivity.json"
SQNR_FILE = "per_layer_sqnr.json"
WEIGHT_SQNR_FILE = "weight_sqnr.json"
HISTOGRAMS_FILE = "histograms.json"
MIN_MAX_TABLE_FILE = os.path.join(MIN_MAX_FOLDER, "encodings.json")
SUMMARY_FILE = "summary.json"
# While evaluations run, the growing tables go to TensorBoard at most this often.
LIVE_INTERVAL_SECONDS = 1.0
# Every file an analysis writes into results_dir; an earlier run's are moved
# aside at start (see mct_logger.results_dir).
RESULT_FILES = (
    ENABLED_FILE, DISABLED_FILE, MSE_FILE, SENSITIVITY_FILE, SQNR_FILE, WEIGHT_SQNR_FILE,
    HISTOGRAMS_FILE, MIN_MAX_TABLE_FILE, os.path.join(MIN_MAX_FOLDER, "weights.json"),
    os.path.join(MIN_MAX_FOLDER, "activations.json"), SUMMARY_FILE, REPORT_FILE,
)

# Samples of the calibration data kept for the SQNR analysis when no unlabeled
# data was given with `enable_per_layer_mse_loss`.
CALIBRATION_SAMPLES_FOR_SQNR = 256
# Bins of the whole-tensor weight histograms and of the per-channel ones.
WEIGHT_BINS = 512
CHANNEL_BINS = 64


# ----------------------------------------------------------------------------- config


def resolve_config(config=None, **kwargs) -> QuantizationConfig:
    """A QuantizationConfig from ours, from a dict, or from AIMET's names.

    Accepted keys (in the dict or as keyword arguments): every QuantizationConfig
    field, and AIMET's `quant_scheme` ("post_training_tf"/"tf" -> min/max,
    "post_training_tf_enhanced"/"tf_enhanced" -> TF-enhanced, or one of our
    observer names; a QuantScheme enum member works too; it sets both the
    weight and the activation observer), `default_param_bw`,
    `default_output_bw`, `per_channel_quantization`, `rounding_mode`
    ("nearest" only) and `config_file` (None only).
    """
    if isinstance(config, QuantizationConfig):
        base, options = config, dict(kwargs)
    elif config is None or isinstance(config, dict):
        base, options = QuantizationConfig(), {**(config or {}), **kwargs}
    else:
        raise TypeError(
            f"config must be a QuantizationConfig or a dict of settings, got "
            f"{type(config).__name__}."
        )
    fields = {f.name for f in dataclasses.fields(QuantizationConfig)}
    changes: dict[str, Any] = {}
    for key, value in options.items():
        if key == "quant_scheme":
            observer = _observer_of_scheme(value)
            changes["weight_observer"] = changes["activation_observer"] = observer
        elif key in _AIMET_FIELDS:
            changes[_AIMET_FIELDS[key]] = value
        elif key == "rounding_mode":
            if str(value).lower() != "nearest":
                raise ValueError(
                    f"rounding_mode={value!r} is not supported; QuantAnalyzer rounds to nearest."
                )
        elif key == "config_file":
            if value is not None:
                raise ValueError(
                    "AIMET quantsim config files are not read. Set the same choices with "
                    "QuantizationConfig fields (weight_symmetric, activation_symmetric, "
                    "weight_per_channel, overrides=...)."
                )
        elif key in fields:
            changes[key] = value
        else:
            known = sorted(fields | set(_AIMET_FIELDS) | {"quant_scheme", "rounding_mode",
                                                          "config_file"})
            raise ValueError(f"Unknown quantization setting {key!r}; known settings: {known}.")
    return dataclasses.replace(base, **changes) if changes else base


def _observer_of_scheme(scheme) -> str:
    name = getattr(scheme, "name", scheme)  # AIMET's QuantScheme enum member
    name = str(name).split(".")[-1].strip().lower()
    if name in AIMET_SCHEMES:
        return AIMET_SCHEMES[name]
    if name in OBSERVERS:
        return name
    raise ValueError(
        f"quant_scheme={scheme!r} is not supported; use one of "
        f"{sorted(AIMET_SCHEMES)} or an observer name {sorted(OBSERVERS)}."
    )


# ----------------------------------------------------------------------------- callbacks


def as_callback(callback, what: str) -> Callable[[keras.Model], Any]:
    """`(model) -> result` from a plain callable, a `(func, args)` pair (called as
    `func(model, args)`, AIMET's convention) or an object with `.func` and `.args`
    (AIMET's CallbackFunc)."""
    if isinstance(callback, tuple) and len(callback) == 2 and callable(callback[0]):
        func, args = callback
        return lambda model: func(model, args)
    if callable(callback):  # before the CallbackFunc test: functools.partial has .func/.args
        return callback
    if hasattr(callback, "func") and hasattr(callback, "args") and callable(callback.func):
        return lambda model: callback.func(model, callback.args)
    raise TypeError(
        f"{what} must be a callable taking the model, or a (func, args) pair called as "
        f"func(model, args); got {type(callback).__name__}."
    )


def _score(value, what: str) -> float:
    try:
        score = float(np.asarray(value).reshape(()))
    except (TypeError, ValueError):
        raise TypeError(
            f"{what} must return one number (e.g. accuracy, higher is better); it returned "
            f"{type(value).__name__} {value!r:.80}."
        ) from None
    return score


# ----------------------------------------------------------------------------- calibration


class _ObserverWithHistogram:
    """An observer plus a histogram of what it saw, for observers without one
    (min/max): the histogram analysis then works for every scheme."""

    def __init__(self, observer):
        self.observer = observer
        self.collector = observer if hasattr(observer, "histogram") else HistogramCollector()

    def update(self, x) -> None:
        self.observer.update(x)
        if self.collector is not self.observer:
            self.collector.update(x)

    @property
    def is_empty(self) -> bool:
        return self.observer.is_empty

    @property
    def min(self):
        return self.observer.min

    @property
    def max(self):
        return self.observer.max

    def encoding(self, *args, **kwargs) -> Encoding:
        return self.observer.encoding(*args, **kwargs)

    def histogram(self, per_channel: bool = True):
        return self.collector.histogram(per_channel)


class _RecordingCalibrationModel(CalibrationModel):
    """The calibration model, also keeping the first inputs it sees (up to
    `max_samples`) so the SQNR analysis has data without asking for more."""

    def __init__(self, graph: Graph, plan: dict, max_samples: int, **kwargs):
        super().__init__(graph, plan, **kwargs)
        self.max_samples = max_samples
        self.recorded: list = []
        self.recorded_samples = 0
        for name in list(self.observers):
            self.observers[name] = _ObserverWithHistogram(self.observers[name])

    def _record(self, inputs) -> None:
        if self.recorded_samples >= self.max_samples:
            return
        batch = tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), inputs)
        leaves = tree.flatten(batch)
        if not leaves or np.ndim(leaves[0]) == 0:
            return
        keep = min(len(leaves[0]), self.max_samples - self.recorded_samples)
        self.recorded.append(tree.map_structure(lambda a: a[:keep], batch))
        self.recorded_samples += keep

    def call(self, inputs, training=False):
        if not any(isinstance(x, keras.KerasTensor) for x in tree.flatten(inputs)):
            self._record(inputs)
        return super().call(inputs, training=training)

    def collect(self, batch):
        self._record(batch if len(batch) > 1 else batch[0])
        return super().collect(batch)


# ----------------------------------------------------------------------------- result


@dataclasses.dataclass
class AnalysisResult:
    """What `QuantAnalyzer.analyze` found; every table is also on disk in `results_dir`.

    Attributes:
        status: "complete", or "interrupted"/"failed" with the tables finished so far.
        sensitivity: {"fp32", "weights_only", "activations_only"} -> eval score.
        per_layer_quant_enabled: layer -> score with only that layer quantized.
        per_layer_quant_disabled: layer -> score with all but that layer quantized.
        per_layer_mse_loss: layer -> accumulated MSE per element (None unless enabled).
        per_layer_sqnr: layer -> row of the SQNR table (accumulated/isolated dB...).
        weight_sqnr: "layer/kernel" -> row of the weight SQNR table.
        min_max_ranges: {"weights": ..., "activations": ...} in AIMET's shape.
        float_model: the FP32 baseline (batch norms folded).
        quantized_model: the quantized model (all quantizers on).
    """

    results_dir: str
    status: str = "running"
    layers: list = dataclasses.field(default_factory=list)
    sensitivity: dict = dataclasses.field(default_factory=dict)
    per_layer_quant_enabled: dict = dataclasses.field(default_factory=dict)
    per_layer_quant_disabled: dict = dataclasses.field(default_factory=dict)
    per_layer_mse_loss: dict | None = None
    per_layer_sqnr: dict = dataclasses.field(default_factory=dict)
    weight_sqnr: dict = dataclasses.field(default_factory=dict)
    min_max_ranges: dict = dataclasses.field(default_factory=dict)
    report_path: str | None = None
    log_folder: str | None = None
    float_model: keras.Model | None = None
    quantized_model: keras.Model | None = None

    def ranking(self, measure: str) -> list[str]:
        """Layers worst first by `measure`:

        - "per_layer_quant_enabled": lowest score with only that layer quantized;
        - "per_layer_quant_disabled": highest score with that layer left in float;
        - "sqnr_isolated": lowest isolated SQNR (quantized layers only);
        - "sqnr_accumulated_step": largest drop of the accumulated SQNR at the layer;
        - "sqnr_accumulated": lowest accumulated SQNR;
        - "per_layer_mse_loss": largest accumulated MSE;
        - "weight_sqnr": lowest weight SQNR ("layer/kernel" keys).
        """
        def ordered(values: dict, worst_is_high: bool):
            known = [(k, v) for k, v in values.items() if v is not None and not math.isnan(v)]
            return [k for k, _ in sorted(known, key=lambda kv: -kv[1] if worst_is_high else kv[1])]

        rows = self.per_layer_sqnr
        if measure == "per_layer_quant_enabled":
            return ordered(self.per_layer_quant_enabled, False)
        if measure == "per_layer_quant_disabled":
            return ordered(self.per_layer_quant_disabled, True)
        if measure == "sqnr_isolated":
            return ordered({k: r["sqnr_isolated_db"] for k, r in rows.items()}, False)
        if measure == "sqnr_accumulated":
            return ordered({k: r["sqnr_accumulated_db"] for k, r in rows.items()}, False)
        if measure == "sqnr_accumulated_step":
            return ordered({k: r["accumulated_step_db"] for k, r in rows.items()}, True)
        if measure == "per_layer_mse_loss":
            return ordered(self.per_layer_mse_loss or {}, True)
        if measure == "weight_sqnr":
            return ordered({k: r["sqnr_db"] for k, r in self.weight_sqnr.items()}, False)
        raise ValueError(f"Unknown measure {measure!r}; see AnalysisResult.ranking.")


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
        self._model = model
        self._graph = read_model(model)
        self._forward_pass = as_callback(forward_pass_callback, "forward_pass_callback")
        self._evaluate = as_callback(eval_callback, "eval_callback")
        self._specs = data_lib.input_specs(self._graph)
        if dummy_input is not None:
            data_lib.load_batches([dummy_input], self._specs)
        self._ignored = self._ignored_names(layers_to_ignore or [])
        self._mse_batches: list | None = None

    def _ignored_names(self, layers) -> list[str]:
        if isinstance(layers, (str, keras.layers.Layer)):
            layers = [layers]
        names = []
        for layer in layers:
            name = layer if isinstance(layer, str) else getattr(layer, "name", None)
            if not isinstance(name, str):
                raise TypeError(
                    f"layers_to_ignore holds {layer!r}; pass layer names or Keras layers."
                )
            matches = [n for n in self._graph
                       if n.name == name or layer_name_of(n.name) == name]
            if not matches:
                raise ValueError(
                    f"layers_to_ignore: model {self._graph.name!r} has no layer {name!r}; its "
                    f"layers are: {', '.join(list(self._graph.nodes)[:12])}..."
                )
            names.append(name)
        return names

    def enable_per_layer_mse_loss(self, unlabeled_data, num_batches: int) -> None:
        """Turns on the per-layer MSE analysis over the first `num_batches` batches.

        `unlabeled_data` is anything PTQ takes as representative data: a
        `tf.data.Dataset`, a generator or iterable of batches, a zero-argument
        callable returning one, or a NumPy array (batched by 32). About 256
        samples are enough. The same batches feed the per-layer SQNR analysis.
        """
        if isinstance(num_batches, bool) or not isinstance(num_batches, (int, np.integer)) \
                or num_batches < 1:
            raise ValueError(f"num_batches must be a positive integer, got {num_batches!r}.")
        num_batches = int(num_batches)
        if data_lib._is_array(unlabeled_data) or isinstance(unlabeled_data, dict):
            batches = data_lib.load_batches(unlabeled_data, self._specs)
        else:
            if callable(unlabeled_data) and not data_lib._is_dataset(unlabeled_data):
                unlabeled_data = unlabeled_data()
            if data_lib._is_dataset(unlabeled_data):
                source = unlabeled_data.take(num_batches)
            else:
                source = itertools.islice(iter(unlabeled_data), num_batches)
            batches = data_lib.load_batches(source, self._specs)
        if len(batches) < num_batches:
            logger.warning(
                "enable_per_layer_mse_loss: the data holds %d batch(es), fewer than "
                "num_batches=%d; using all of them.", len(batches), num_batches,
            )
        self._mse_batches = batches[:num_batches]

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
        analysis goes on.

        Raises:
            FileExistsError: `results_dir` holds result files without a
                QuantAnalyzer `summary.json` (another tool's?); pass a new folder.
            RuntimeError: another analysis is still writing to `results_dir`.
        """
        config = resolve_config(config, **aimet_settings)
        return _Analysis(self, config, os.fspath(results_dir)).run()


# ----------------------------------------------------------------------------- one run


class _Analysis:
    def __init__(self, analyzer: QuantAnalyzer, config: QuantizationConfig, results_dir: str):
        self.analyzer = analyzer
        self.config = config
        self.results_dir = os.path.abspath(results_dir)
        self.result = AnalysisResult(results_dir=self.results_dir)
        self.tables: dict[str, dict] = {}
        self.published: set[str] = set()
        self.evaluations_done = 0
        self.evaluations_total = None
        self.summary: dict = {}
        self._steps: dict[str, int] = {}
        self._last_live = 0.0
        self._evaluations_started = time.time()
        self.run_log = None
        self.writer = None
        self.started = time.time()

    # ------------------------------------------------------------- driver

    def run(self) -> AnalysisResult:
        # The manifest first: results_dir then never shows an earlier run's files as ours.
        owned = [f for f in RESULT_FILES if f != MSE_FILE or self.analyzer._mse_batches is not None]
        self.summary = results_lib.claim(self.results_dir, RESULT_FILES, owned, SUMMARY_FILE)
        os.makedirs(os.path.join(self.results_dir, MIN_MAX_FOLDER), exist_ok=True)
        failure: BaseException | None = None
        try:
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

    def _run(self) -> None:
        analyzer, config = self.analyzer, self.config
        graph, folding = fold_batch_norms(analyzer._graph)
        self.graph = graph
        if analyzer._ignored:
            overrides = dict(config.overrides)
            for name in analyzer._ignored:
                overrides[name if re.escape(name) == name else re.escape(name)] = \
                    LayerOverride(keep_float=True)
            config = dataclasses.replace(config, overrides=overrides)
        skipped = [f for f in ("cross_layer_equalization", "bias_correction")
                   if getattr(config, f, None)]
        if skipped:
            logger.warning(
                "QuantAnalyzer analyzes the batch-norm-folded model as given; %s in the "
                "config are not applied (apply them to the model first, then analyze it).",
                " and ".join(skipped),
            )
        plan = plan_quantization(graph, config)
        self.plan = plan
        self.layers = [n for n, p in plan.items() if p.quantized]
        if not self.layers:
            raise ValueError(
                f"Model {graph.name!r} has no layer to quantize under this configuration; "
                "nothing to analyze."
            )
        self.evaluations_total = 2 * len(self.layers) + 4
        self._start_summary(folding)
        self._open_log(graph.name)
        if self.writer is not None:
            self._publish("summary", self.summary)  # the tab shows the run from the start

        float_model = graph.to_keras(name=f"{graph.name}_fp32")
        self.result.float_model = float_model
        calibration = _RecordingCalibrationModel(graph, plan, CALIBRATION_SAMPLES_FOR_SQNR)
        logger.info("QuantAnalyzer: calibrating %d quantizers with forward_pass_callback",
                    len(self.layers))
        analyzer._forward_pass(calibration)
        if calibration.batches_seen == 0:
            raise RuntimeError(
                "forward_pass_callback did not run the model it was given: call it (or its "
                "predict/evaluate) on representative data so the quantizers see values."
            )
        weights = weight_encodings(graph, plan)
        activations = calibration.activation_encodings(plan)
        if calibration.recorded:  # the float reference must be the user's model
            first = data_lib.load_batches(iter(calibration.recorded[:1]), analyzer._specs)[0]
            check_rebuilt_graph(analyzer._model, analyzer._graph, first)
        encodings = {
            name: NodeEncodings(weights=weights.get(name, {}), activation=activations.get(name))
            for name in self.layers
        }
        sim = build_quantized_model(graph, plan, encodings, name=f"{graph.name}_quantsim")
        self.result.quantized_model = sim
        self.summary["calibration"] = {
            "batches": calibration.batches_seen,
            "samples_kept_for_sqnr": calibration.recorded_samples,
        }

        # Analyses that need no evaluation first: an interrupt during the long
        # evaluation loops then still leaves them on disk.
        self._min_max_ranges(encodings, calibration)
        self._histograms(encodings, calibration)
        self._weight_sqnr(encodings)
        self._activation_errors(encodings, calibration)

        progress = keras.utils.Progbar(self.evaluations_total,
                                       unit_name="QuantAnalyzer evaluation")
        self._evaluations_started = time.time()
        self._sensitivity(float_model, sim, progress)
        self._per_layer(sim, progress, enabled=True)
        self._per_layer(sim, progress, enabled=False)
        set_quantizers_enabled(sim, weights=True, activations=True)

    # ------------------------------------------------------------- outputs

    def _open_log(self, model_name: str) -> None:
        # A TensorBoard failure is one warning and stops this log; the analysis goes on.
        returned = "The analysis goes on; its results are in results_dir and returned"
        folder = log_lib.open_run_folder(model_name, returned)
        if folder is None:
            return
        self.run_log = log_lib.RunLog(folder, guard=log_lib.LogGuard(folder, returned))
        self.writer = self.run_log.writer("quant_analyzer")
        self.result.log_folder = folder
        logger.info("QuantAnalyzer: logging to %s", os.path.join(folder, "quant_analyzer"))

    def _write_json(self, relative: str, content, compact: bool = False) -> None:
        """Writes atomically (an interrupt never leaves half a file); `compact`
        for the large tables, indented (as AIMET's) otherwise."""
        path = os.path.join(self.results_dir, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.tmp"
        layout = {"separators": (",", ":")} if compact else {"indent": 2}
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(json_ready(content), f, allow_nan=False, **layout)
        os.replace(temporary, path)

    def _publish(self, kind: str, table: dict) -> None:
        """Keeps `table` for the report and writes it as a TensorBoard payload.

        A table published again (one that grows while the analysis runs) gets
        the next step, so both loaders keep its newest version last.
        """
        self.tables[kind] = table
        if self.writer is not None:
            from mct_logger.tb_plugin.summary import payload_summary

            step = self._steps.get(kind, -1) + 1
            self._steps[kind] = step
            self.writer.add_summary(
                payload_summary("quant_analyzer", kind, kind, json_ready(table)), step=step
            )
            self.writer.flush()  # readable now: the tab fills in while the analysis runs
        self.published.add(kind)

    def _publish_progress(self, kind: str, force: bool = False) -> None:
        """Publishes a growing table and the summary's count of evaluations, at
        most every `LIVE_INTERVAL_SECONDS` (always when `force`)."""
        if self.writer is None:
            return
        now = time.time()
        if not force and now - self._last_live < LIVE_INTERVAL_SECONDS:
            return
        self._last_live = now
        self._publish(kind, self.tables[kind])
        self.summary.update(evaluations_done=self.evaluations_done,
                            seconds=round(now - self.started, 3),
                            evaluation_seconds=round(now - self._evaluations_started, 3))
        self._publish("summary", self.summary)

    def _count_evaluation(self, progress) -> None:
        self.evaluations_done += 1
        progress.update(self.evaluations_done)

    def _start_summary(self, folding) -> None:
        graph, plan = self.graph, self.plan
        self.summary = {
            **self.summary,  # the manifest written at start
            "model": graph.name,
            "status": "running",
            "config": {
                "weight_bits": self.config.weight_bits,
                "activation_bits": self.config.activation_bits,
                "weight_observer": self.config.weight_observer,
                "activation_observer": self.config.activation_observer,
                "weight_per_channel": self.config.weight_per_channel,
                "weight_symmetric": self.config.weight_symmetric,
                "activation_symmetric": self.config.activation_symmetric,
                "activation_per_channel": self.config.activation_per_channel,
                "quantize_inputs": self.config.quantize_inputs,
            },
            "layers": [
                {
                    "layer": n,
                    "class": graph.nodes[n].layer_class,
                    "weights": sorted(plan[n].weights),
                    "activation": plan[n].activation is not None,
                }
                for n in self.layers
            ],
            "float_nodes": [
                {"layer": n, "note": p.note} for n, p in plan.items()
                if not p.quantized and p.note
            ],
            "batch_norms_folded": dict(folding.folded),
            "layers_ignored": list(self.analyzer._ignored),
            "evaluations_total": self.evaluations_total,
            "evaluations_done": 0,
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
                self._write_json(SUMMARY_FILE, self.summary)
                self._publish("summary", self.summary)
            if "layers" not in self.summary:
                return  # stopped before planning: nothing to report
            self.result.report_path = write_report(self.results_dir, self.tables)
            if self.result.status == "complete":
                logger.info("QuantAnalyzer: report at %s", self.result.report_path)
            else:
                logger.warning(
                    "QuantAnalyzer %s after %d of %s evaluations; the results finished so far "
                    "are in %s", self.result.status, self.evaluations_done,
                    self.evaluations_total, self.results_dir,
                )
        finally:
            if self.run_log is not None:
                self.run_log.close()

    # ------------------------------------------------------------- analyses

    def _min_max_ranges(self, encodings, calibration) -> None:
        graph = self.graph
        aimet_weights, aimet_activations = {}, {}
        weight_rows, activation_rows = [], []
        for name in self.layers:
            node, enc = graph.nodes[name], encodings[name]
            if enc.activation is not None:
                key = f"{name}_output_0"
                observer = calibration.observers[name]
                aimet_activations[key] = _aimet_range(enc.activation, key)
                activation_rows.append({
                    "layer": name, "key": key, **_range_fields(enc.activation),
                    "observed_min": float(np.min(observer.min)),
                    "observed_max": float(np.max(observer.max)),
                })
            for kernel_name, encoding in enc.weights.items():
                key = f"{name}_{(node.layer.name + '/' + kernel_name).replace('/', '-')}"
                kernel = keras.ops.convert_to_numpy(weight_variable(node.layer, kernel_name))
                aimet_weights[key] = _aimet_range(encoding, key)
                weight_rows.append({
                    "layer": name, "kernel": kernel_name, "key": key, **_range_fields(encoding),
                    "observed_min": float(np.min(kernel)), "observed_max": float(np.max(kernel)),
                })
        self.result.min_max_ranges = {"weights": aimet_weights, "activations": aimet_activations}
        self._write_json(os.path.join(MIN_MAX_FOLDER, "weights.json"), aimet_weights)
        self._write_json(os.path.join(MIN_MAX_FOLDER, "activations.json"), aimet_activations)
        table = {"activations": activation_rows, "weights": weight_rows}
        self._write_json(MIN_MAX_TABLE_FILE, table, compact=True)
        self._publish("min_max_ranges", table)

    def _histograms(self, encodings, calibration) -> None:
        graph, plan = self.graph, self.plan
        activation_rows, weight_rows = [], []
        for name in self.layers:
            enc = encodings[name]
            if enc.activation is not None:
                edges, counts = calibration.observers[name].histogram(per_channel=False)
                lo, width, counts = _trim(edges[0], counts[0])
                activation_rows.append({
                    "layer": name, "lo": lo, "width": width,
                    "counts": [round(float(c), 2) for c in counts],
                    "encoding_min": float(np.min(enc.activation.min)),
                    "encoding_max": float(np.max(enc.activation.max)),
                    "per_channel_encoding": enc.activation.per_channel,
                })
            node = graph.nodes[name]
            for kernel_name, encoding in enc.weights.items():
                spec = plan[name].weights[kernel_name]
                kernel = np.asarray(keras.ops.convert_to_numpy(weight_variable(node.layer, kernel_name)))
                weight_rows.append({
                    "layer": name, "kernel": kernel_name,
                    **_weight_histograms(kernel, spec.channel_axes, encoding),
                })
        table = {"activations": activation_rows, "weights": weight_rows}
        self._write_json(HISTOGRAMS_FILE, table, compact=True)
        self._publish("histograms", table)

    def _weight_sqnr(self, encodings) -> None:
        rows = [
            {"layer": r["layer"], "kernel": r["kernel"], "class": r["class"],
             "bitwidth": r["bitwidth"], "per_channel_encoding": r["per_channel"],
             "sqnr_db": r["sqnr_db"], "channels": r["channels"],
             "channel_sqnr_db": r["channel_sqnr_db"]}
            for r in weight_quantization_rows(self.graph, self.plan, encodings)
        ]
        self.result.weight_sqnr = {f"{r['layer']}/{r['kernel']}": r for r in rows}
        table = {"rows": rows}
        self._write_json(WEIGHT_SQNR_FILE, table, compact=True)
        self._publish("weight_sqnr", table)

    def _activation_errors(self, encodings, calibration) -> None:
        """Per-layer SQNR (accumulated and isolated) and MSE, one pass per batch."""
        graph, plan = self.graph, self.plan
        if self.analyzer._mse_batches is not None:
            batches, source = self.analyzer._mse_batches, "enable_per_layer_mse_loss data"
        else:
            batches = data_lib.load_batches(iter(calibration.recorded), self.analyzer._specs)
            source = "calibration data (forward_pass_callback)"
        nodes = error_nodes(graph, plan)
        paired = PairedActivations(graph, plan, encodings, nodes=nodes)
        errors = paired.errors(batches)
        samples = data_lib.num_samples(batches)
        rows = []
        accumulated = {}
        for name in nodes:
            e, node = errors[name], graph.nodes[name]
            quantized = plan[name].quantized
            producers = [r.node for r in node.inputs]
            upstream = [accumulated[p] for p in producers if p in accumulated]
            acc = e.sqnr_accumulated_db
            accumulated[name] = acc
            step = metrics.accumulated_step_db(upstream, acc)
            rows.append({
                "layer": name,
                "class": node.layer_class,
                "quantized": quantized,
                "inputs": producers,
                "sqnr_accumulated_db": acc,
                "sqnr_isolated_db": e.sqnr_isolated_db if quantized else None,
                "accumulated_step_db": step,
                "mse_accumulated": e.mse_accumulated,
                "mse_isolated": e.mse_isolated if quantized else None,
                # the cosine of one number with another is always +-1: not reported
                "cosine_accumulated": (_mean_cosine(e.sums["ff"], e.sums["qq_acc"], e.sums["fq_acc"])
                                       if elements_per_sample(node) > 1 else None),
            })
        self.result.per_layer_sqnr = {r["layer"]: r for r in rows}
        table = {"samples": samples, "batches": len(batches), "data": source,
                 "max_sqnr_db": metrics.MAX_SQNR_DB, "rows": rows}
        self._write_json(SQNR_FILE, table)
        self._publish("per_layer_sqnr", table)
        if self.analyzer._mse_batches is not None:
            mse = {r["layer"]: r["mse_accumulated"] for r in rows}
            self.result.per_layer_mse_loss = mse
            self._write_json(MSE_FILE, mse)
            self._publish("per_layer_mse_loss", {
                "samples": samples, "batches": len(batches),
                "normalization": "mean over every element of the layer output",
                "rows": [{"layer": k, "mse": v} for k, v in mse.items()],
            })

    def _sensitivity(self, float_model, sim, progress) -> None:
        w, a = self.config.weight_bits, self.config.activation_bits
        table = {
            "labels": {"fp32": "W32A32", "weights_only": f"W{w}A32",
                       "activations_only": f"W32A{a}", "fully_quantized": f"W{w}A{a}"},
            "fp32": None, "weights_only": None, "activations_only": None,
            "fully_quantized": None,
            "complete": False,
        }
        self.tables["sensitivity"] = table
        evaluate = self.analyzer._evaluate
        runs = [
            ("fp32", float_model, None),
            ("weights_only", sim, {"weights": True, "activations": False}),
            ("activations_only", sim, {"weights": False, "activations": True}),
            ("fully_quantized", sim, {"weights": True, "activations": True}),
        ]
        for key, model, switches in runs:
            if switches is not None:
                set_quantizers_enabled(model, **switches)
            table[key] = _score(evaluate(model), "eval_callback")
            self.result.sensitivity[key] = table[key]
            logger.info("QuantAnalyzer: %s eval score (%s): %.6g",
                        key, table["labels"][key], table[key])
            self._count_evaluation(progress)
            self._write_json(SENSITIVITY_FILE, table)
            self._publish_progress("sensitivity")
        table["complete"] = True
        self._write_json(SENSITIVITY_FILE, table)
        self._publish("sensitivity", table)
        if self.writer is not None:
            for key in ("fp32", "weights_only", "activations_only", "fully_quantized"):
                self.writer.scalar(f"sensitivity/{table['labels'][key]}", table[key], step=0)

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
                score = _score(self.analyzer._evaluate(sim), "eval_callback")
            finally:
                set_quantizers_enabled(sim, weights=not enabled, activations=not enabled,
                                       nodes=[name])
            scores[name] = score
            table["rows"].append({"layer": name, "class": self.graph.nodes[name].layer_class,
                                  "score": score})
            self._count_evaluation(progress)
            self._write_json(filename, scores)
            self._publish_progress(kind)
        table["complete"] = True
        self._publish(kind, table)


# ----------------------------------------------------------------------------- helpers


def error_nodes(graph: Graph, plan: dict) -> list[str]:
    """The nodes the per-layer SQNR/MSE analysis reports: every node with one
    floating-point output, except model inputs that have no quantizer."""
    return [
        n.name for n in graph
        if len(n.output_dtypes) == 1 and "float" in str(n.output_dtypes[0])
        and (not n.is_input or plan[n.name].activation is not None)
    ]


def _mean_cosine(ff, qq, fq) -> float:
    """Mean per-sample cosine from the summed products. Unlike
    NodeError.cosine_per_sample, an all-zero output against a non-zero one
    counts 0 (not 1); two all-zero outputs count 1."""
    ff, qq, fq = (np.asarray(a, dtype=np.float64) for a in (ff, qq, fq))
    both = (ff > 0) & (qq > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.where(both, fq / np.sqrt(ff * qq), np.where((ff > 0) | (qq > 0), 0.0, 1.0))
    return float(np.mean(np.clip(cosine, -1.0, 1.0))) if cosine.size else float("nan")


def _aimet_range(encoding: Encoding, key: str):
    """AIMET's min/max value: `[min, max]`, or `{key_ch: [min, max]}` per channel."""
    if encoding.per_channel:
        return {
            f"{key}_{c}": [float(lo), float(hi)]
            for c, (lo, hi) in enumerate(zip(np.ravel(encoding.min), np.ravel(encoding.max)))
        }
    return [float(encoding.min), float(encoding.max)]


def _range_fields(encoding: Encoding) -> dict:
    fields = {
        "min": float(np.min(encoding.min)),
        "max": float(np.max(encoding.max)),
        "bitwidth": encoding.bitwidth,
        "is_symmetric": encoding.is_symmetric,
        "per_channel": encoding.per_channel,
    }
    if encoding.per_channel:
        fields["channel_min"] = [float(v) for v in np.ravel(encoding.min)]
        fields["channel_max"] = [float(v) for v in np.ravel(encoding.max)]
    else:
        fields["scale"] = float(encoding.scale)
        fields["offset"] = float(encoding.offset)
    return fields


def _trim(edges: np.ndarray, counts: np.ndarray):
    """(lower edge, bin width, counts) without the empty bins at both ends."""
    width = float(edges[1] - edges[0])
    nonzero = np.flatnonzero(counts > 0)
    if nonzero.size == 0:
        return float(edges[0]), width, counts
    first, last = nonzero[0], nonzero[-1] + 1
    return float(edges[first]), width, counts[first:last]


def _weight_histograms(kernel: np.ndarray, channel_axes, encoding: Encoding) -> dict:
    """The whole kernel's histogram and one per output channel, with the encodings."""
    values = kernel.astype(np.float64).ravel()
    bins = int(np.clip(values.size // 8, 16, WEIGHT_BINS))
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - (abs(lo) or 1.0), hi + (abs(hi) or 1.0)
    counts, _ = np.histogram(values, bins=bins, range=(lo, hi))
    flat = channels_last_2d(kernel.astype(np.float64), channel_axes)  # (elements, channels)
    elements, channels = flat.shape
    channel_bins = int(np.clip(2 * math.isqrt(max(elements, 1)), 8, CHANNEL_BINS))
    c_lo, c_hi = flat.min(axis=0), flat.max(axis=0)
    flat_channel = c_hi <= c_lo
    c_lo = np.where(flat_channel, c_lo - np.where(c_lo == 0, 1.0, np.abs(c_lo)), c_lo)
    c_hi = np.where(flat_channel, c_hi + np.where(c_hi == 0, 1.0, np.abs(c_hi)), c_hi)
    c_width = (c_hi - c_lo) / channel_bins
    index = np.clip(np.floor((flat - c_lo) / c_width), 0, channel_bins - 1).astype(np.intp)
    index += np.arange(channels) * channel_bins
    channel_counts = np.bincount(index.ravel(), minlength=channels * channel_bins)
    channel_counts = channel_counts.reshape(channels, channel_bins)
    enc_min = np.broadcast_to(np.ravel(encoding.min), (channels,)) if encoding.per_channel \
        else np.full(channels, float(encoding.min))
    enc_max = np.broadcast_to(np.ravel(encoding.max), (channels,)) if encoding.per_channel \
        else np.full(channels, float(encoding.max))
    return {
        "lo": lo, "width": (hi - lo) / bins, "counts": counts.tolist(),
        "encoding_min": float(np.min(encoding.min)),
        "encoding_max": float(np.max(encoding.max)),
        "per_channel_encoding": encoding.per_channel,
        "channels": {
            "lo": [float(v) for v in c_lo],
            "width": [float(v) for v in c_width],
            "counts": channel_counts.tolist(),
            "encoding_min": [float(v) for v in enc_min],
            "encoding_max": [float(v) for v in enc_max],
        },
    }
