"""The PTQ stage results: the contract between the engine and its listeners.

Every stage of `keras_post_training_quantization` returns `(graph, result)` and
the engine calls each listener with `(stage name, graph, result)`. A listener
dispatches on the result's type; every result carries a `version` (bumped when
a field changes meaning) so a reader of logged results can refuse what it does
not know. Besides the types here, stages return
`techniques.batch_norm_folding.BatchNormFoldingResult`,
`techniques.cross_layer_equalization.CrossLayerEqualizationResult`,
`techniques.adaround_results.AdaRoundResult`,
`techniques.bias_correction.BiasCorrectionResult` and
`similarity.SimilarityResult`.

From "quantization_parameters" on, every result carries the run's `plan` and
`encodings` (the bias-correction result and its skipped form, the quantized
model, the similarity analysis and its skipped form), so a listener writes any
of them on its own, without remembering an earlier stage's result.

Units: memory in bytes at batch 1 (`mct_logger.quantization.memory`), counts as integers.

Example:

```python
def listener(stage, graph, result):
    if isinstance(result, QuantizedModelResult):
        print(result.memory_after / result.memory_before)
add_stage_listener(listener)
```
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mct_logger.graph.ir import Graph
from mct_logger.quantization import encodings_file as export
from mct_logger.quantization.plan import PlanReason

__all__ = [
    "FLOAT_REASONS", "InitialGraphResult", "QuantizationInfo", "QuantizationParametersResult",
    "QuantizedModelResult", "SkippedStageResult", "StatisticsResult",
]


@dataclasses.dataclass
class InitialGraphResult:
    """The graph read from the model ("initial_graph").

    Attributes:
        num_nodes: nodes of the graph (layer calls and model inputs).
        num_parameters: weights of every layer, counted once per layer object.
    """

    num_nodes: int
    num_parameters: int
    version: int = 1


@dataclasses.dataclass
class SkippedStageResult:
    """A stage slot that did nothing in this run, and why.

    Attributes:
        reason: a sentence naming the cause (e.g. the config field that turned it off).
        plan / encodings: the run's `NodePlan`s and `NodeEncodings` by node name when
            the slot comes after "quantization_parameters", else None.
        off: True when the config turned an optional stage off (AdaRound, bias
            correction): there is nothing to show, and the TensorBoard log writes
            no run for it (the other runs keep their stage numbers).
    """

    reason: str
    version: int = 1
    plan: dict | None = None
    encodings: dict | None = None
    off: bool = False


@dataclasses.dataclass
class StatisticsResult:
    """Calibration ("statistics_collection").

    Attributes:
        num_batches / num_samples: the calibration data read.
        observers: node name -> the observer of its output (its encoding search).
        statistics: node name -> `quantsim.ChannelStatistics` (per-channel min, max, mean,
            histograms) when a listener declared it needs them, else None.
    """

    num_batches: int
    num_samples: int
    observers: dict
    statistics: dict | None = None
    version: int = 1


@dataclasses.dataclass
class QuantizationParametersResult:
    """The grids ("quantization_parameters").

    Attributes:
        plan: node name -> `NodePlan` (quantizers and, where none, a `PlanReason`).
        encodings: node name -> `NodeEncodings` (weights by kernel name, activation).
        float_nodes: nodes the engine cannot quantize (`PlanReason.UNSUPPORTED`).
    """

    plan: dict
    encodings: dict
    float_nodes: list
    version: int = 1


@dataclasses.dataclass
class QuantizedModelResult:
    """The fake-quantized Keras model ("quantized_model").

    Attributes:
        model: the quantized `keras.Model`.
        memory_before / memory_after: `memory.model_memory` bytes of the
            batch-norm-folded float32 model and of the quantized one.
        plan / encodings: the `NodePlan`s and `NodeEncodings` the model was built
            with, by node name.
    """

    model: Any
    memory_before: int
    memory_after: int
    version: int = 1
    plan: dict | None = None
    encodings: dict | None = None


FLOAT_REASONS = (PlanReason.UNSUPPORTED, PlanReason.TARGET_UNSUPPORTED)  # stays float


@dataclasses.dataclass
class QuantizationInfo:
    """What a PTQ run produced, besides the model.

    Attributes:
        encodings: node name -> NodeEncodings (weights by kernel name, activation).
        plan: node name -> NodePlan (what was quantized and why not).
        float_graph: the reference graph (batch norms folded, CLE applied, biases
            before bias correction) with every quantizer off.
        memory_before / memory_after: model bytes (weights + activations at batch 1,
            `model_memory`): the batch-norm-folded float32 model, and the quantized
            one; an output fused into its activation is counted once.
        node_memory_before / node_memory_after: node name -> {"weights", "activations",
            "total"} of the batch-norm-folded graph, float32 / as quantized.
        stage_seconds: stage name -> wall seconds of the stage's own work (the
            similarity analysis runs alongside the quantized model's build).
        listener_seconds: stage name -> wall seconds its listeners took (logging).
        stage_results: stage name -> the stage's result dataclass.
        quantized_graph: the graph the quantized model is built from: `float_graph`
            with bias-corrected biases (the same graph when bias correction is off).
        parity_source: a zero-argument callable giving `parity_samples` (read once).
        run_id: this run's id for listeners of later events on it (`listeners.new_run_id`).
    """

    encodings: dict
    plan: dict
    float_graph: Graph
    memory_before: int
    memory_after: int
    node_memory_before: dict
    node_memory_after: dict
    stage_seconds: dict
    stage_results: dict
    listener_seconds: dict = dataclasses.field(default_factory=dict)
    quantized_graph: Graph | None = None
    parity_source: Any = None
    run_id: str | None = None

    @property
    def parity_samples(self) -> list | None:
        """The first `similarity_samples` samples of the representative data, as
        batches (`export_litert`'s default data); read from the data on first use
        when the similarity stage did not read them already, None without data."""
        return None if self.parity_source is None else self.parity_source()

    @property
    def float_nodes(self) -> list[str]:
        return [n for n, p in self.plan.items() if p.reason in FLOAT_REASONS]

    def export_encodings(self, path: str) -> str:
        """Writes every tensor's encodings as JSON in AIMET's encodings-file shape.

        Load it back with `QuantizationConfig(encodings_file=path)` to skip calibration.

        Raises:
            IsADirectoryError, NotADirectoryError: `path` is a folder, or a file
                stands where its folder goes.
        """
        return export.save_encodings(self.encodings, path)

    def export_litert(self, path: str, data=None, io_dtype: str = "float32", **kwargs):
        """An int8 LiteRT `.tflite` of these encodings, checked node by node against the
        simulation: see `mct_logger.export.litert.export_litert` (arguments, errors)."""
        from mct_logger.export.litert import export_litert

        return export_litert(self, path, data=data, io_dtype=io_dtype, **kwargs)
