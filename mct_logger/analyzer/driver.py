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

import logging

import keras
import numpy as np

from mct_logger.data import sources as data_lib
from mct_logger.utils.frozen_heap import frozen_heap
from mct_logger.analyzer.analyses import AnalysisResult
from mct_logger.analyzer.aimet_layout import ignored_layer_names, resolve_config
from mct_logger.analyzer.analysis_run import AnalysisRun
from mct_logger.utils.arguments import check_bool, check_model, check_names, check_path
from mct_logger.utils.callbacks import as_callback
from mct_logger.graph.ir import read_model
from mct_logger.evaluators import check_evaluator
from mct_logger.analyzer.recommend import recommend

__all__ = ["QuantAnalyzer"]

logger = logging.getLogger("mct_logger")

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
        evaluator: where the evaluations run: `mct_logger.evaluators.Local()`
            (default, in this process) or `evaluators.Ray(...)` (Ray workers, each
            rebuilding the simulation once); `recommend` uses it too.
    """

    def __init__(self, model: keras.Model, forward_pass_callback, eval_callback,
                 dummy_input=None, layers_to_ignore=None, evaluator=None):
        self.model = check_model(model)
        self.evaluator = check_evaluator(evaluator)
        self.raw_eval_callback = eval_callback  # as given: it travels to Ray workers
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
                resume: bool = False, **aimet_settings) -> AnalysisResult:
        """Runs every analysis; writes the JSON files and `index.html` into `results_dir`.

        Args:
            config: a QuantizationConfig, or a dict with its fields or AIMET's
                names (`quant_scheme`, `default_param_bw`, `default_output_bw`);
                default `QuantizationConfig()` (W8A8).
            results_dir: where the results go (created if needed). The result
                files of an earlier analysis there are moved into
                `previous_runs/<its start time>/` first.
            resume: reuse the evaluations recorded in `results_dir/evaluations.json`
                by an earlier analysis of the same model and config (killed,
                interrupted or finished) and evaluate only the missing ones.
                Every evaluation is recorded there as it finishes, either way.
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
            TypeError: `results_dir` is not a path, or `resume` not True/False.
            ValueError: `eval_callback` returned NaN or Inf for the FP32 model;
                with `resume`, the record is of another model, config or
                calibration (before any evaluation).
        """
        config = resolve_config(config, **aimet_settings)
        run = AnalysisRun(self, config, check_path("results_dir", results_dir),
                       check_bool("resume", resume))
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
