"""Quantized models of one float graph under many configurations, calibrated once.

A search or a recommendation tries many `QuantizationConfig`s that differ in
bit widths, observers or layers kept in float. Re-running PTQ for each would
calibrate every time; here the activation observers of each observer kind are
fed once (one forward pass over the calibration data per kind), and every
trial takes its grids from them:

    activation grid of node n under config c = observer[kind(c, n)][n].encoding(bits(c, n), ...)
    weight grid of a kernel                  = its weight observer on the kernel (no data)

so a trial costs only building the fake-quantized model and evaluating it.
Bias correction and AdaRound, when the config asks for them, run per trial
(they depend on the weight grids). The models are the ones `keras_post_training_quantization`
builds for the same config from the same graph.

Example:

```python
graph, _ = fold_batch_norms(read_model(model))
trials = QuantizationTrials(graph, lambda calib: calib.collect_all(batches), evaluate)
trials.score(QuantizationConfig(weight_bits=4))          # eval score of W4A8
trials.build(config).model                               # the fake-quantized Keras model
```
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from mct_logger.graph.ir import Graph
from mct_logger.quantization.calibration_size import warn_if_few_samples
from mct_logger.quantization.config import QuantizationConfig
from mct_logger.quantization.plan import NodePlan, inner_name, plan_quantization
from mct_logger.quantization.quantsim import (
    CalibrationModel,
    NodeEncodings,
    build_quantized_model,
    weight_encodings,
)

logger = logging.getLogger("mct_logger")


@dataclasses.dataclass
class Trial:
    """One configuration tried: its plan, grids, model and (if evaluated) score."""

    config: QuantizationConfig
    plan: dict
    encodings: dict
    model: object
    score: float | None = None


class QuantizationTrials:
    """Builds and scores quantized models of `graph` under configurations.

    Args:
        graph: the float graph as PTQ quantizes it (batch norms folded; CLE
            applied if the configurations ask for it: this class does not
            equalize).
        calibrate: `(calibration_model) -> None`, runs representative data
            through the calibration model (e.g. `lambda m: m.collect_all(batches)`
            or a QuantAnalyzer forward_pass_callback).
        evaluate: `(model) -> float`, higher is better; None when only models
            are built.
        batches: representative batches for empirical bias correction (None:
            a config asking for it gets the analytical kind, with a warning).
        calibration_model: `(graph, plan) -> CalibrationModel`, to use a subclass.
    """

    def __init__(self, graph: Graph, calibrate: Callable, evaluate: Callable | None = None,
                 batches=None, calibration_model: Callable = CalibrationModel):
        self.graph = graph
        self._calibration_model = calibration_model
        self._calibrate = calibrate
        self._evaluate = evaluate
        self._batches = batches
        self._calibrations: dict[str, tuple] = {}  # kind -> (model, node -> spec)
        self.evaluations = 0

    def plan(self, config: QuantizationConfig) -> dict:
        return plan_quantization(self.graph, config, report=False)

    def _observers(self, plan: dict, kind: str):
        """The observers of `kind`, fed the calibration data, of every node `plan` quantizes."""
        needed = {n: p for n, p in plan.items()
                  if p.activation is not None or p.inner_activations}
        cached = self._calibrations.get(kind)
        if cached is not None and set(needed) <= set(cached[1]):
            return cached[0].observers
        specs = dict(cached[1]) if cached is not None else {}
        # node -> (its output's spec or None, {sublayer point: spec} of a composite)
        specs.update({n: (dataclasses.replace(p.activation, observer=kind)
                          if p.activation is not None else None,
                          {k: dataclasses.replace(a, observer=kind)
                           for k, a in p.inner_activations.items()})
                      for n, p in needed.items()})
        calibration_plan = {n: NodePlan(activation=specs[n][0], inner_activations=specs[n][1])
                            if n in specs else NodePlan() for n in self.graph.nodes}
        calibration = self._calibration_model(self.graph, calibration_plan)
        self._calibrate(calibration)
        if calibration.batches_seen == 0:
            raise RuntimeError(
                "The calibration callback did not run the model it was given: call it (or "
                "its predict) on representative data so the quantizers see values."
            )
        if not self._calibrations and needed:  # once: every kind sees the same data
            warn_if_few_samples(calibration.samples_seen, f"the activation ranges of the trial "
                                f"configurations of model {self.graph.name!r}",
                                "give more representative data (or forward_pass_callback "
                                "samples)")
        self._calibrations[kind] = (calibration, specs)
        return calibration.observers

    @property
    def calibration_factory(self) -> Callable:
        """`(graph, plan) -> CalibrationModel` these trials calibrate with."""
        return self._calibration_model

    @property
    def calibration_models(self) -> list:
        """The calibration models fed so far (one per activation observer kind)."""
        return [model for model, _ in self._calibrations.values()]

    def encodings(self, plan: dict) -> dict[str, NodeEncodings]:
        weights = weight_encodings(self.graph, plan)
        result = {}
        for name, p in plan.items():
            if not p.quantized:
                continue
            activation = None
            if p.activation is not None:
                spec = p.activation
                observer = self._observers(plan, spec.observer)[name]
                activation = observer.encoding(spec.bitwidth, spec.is_symmetric, spec.per_channel)
            inner = {}
            for point, spec in p.inner_activations.items():  # a composite's sublayer outputs
                observer = self._observers(plan, spec.observer)[inner_name(name, point)]
                inner[point] = observer.encoding(spec.bitwidth, spec.is_symmetric, False)
            result[name] = NodeEncodings(weights=weights.get(name, {}), activation=activation,
                                         inner_activations=inner)
        return result

    def build(self, config: QuantizationConfig) -> Trial:
        """The quantized model of `config` (not evaluated)."""
        plan = self.plan(config)
        encodings = self.encodings(plan)
        graph = self.graph
        if config.adaround is not None:
            from mct_logger.techniques.adaround import adaround_graph

            graph, _ = adaround_graph(graph, plan, encodings, self._learning_batches(),
                                      config.adaround)
        if config.bias_correction is not None:
            from mct_logger.techniques.bias_correction import correct_bias_graph

            mode = config.bias_correction
            if self._batches is None and mode != "analytical":
                logger.warning("Trial models get analytical bias correction: no "
                               "representative batches were given for %r.", mode)
                mode = "analytical"
            graph, _ = correct_bias_graph(graph, plan, encodings, self._batches, mode,
                                          float_graph=self.graph)
        model = build_quantized_model(graph, plan, encodings, name=f"{self.graph.name}_trial")
        return Trial(config, plan, encodings, model)

    def _learning_batches(self):
        """Batches AdaRound learns from: `batches`, else the samples a recording
        calibration model kept (QuantAnalyzer's `RecordingCalibrationModel`)."""
        if self._batches:
            return self._batches
        from mct_logger.data import sources as data_lib

        for model in self.calibration_models:
            recorded = getattr(model, "recorded", None)
            if recorded:
                return data_lib.load_batches(iter(recorded), data_lib.input_specs(self.graph))
        raise ValueError("AdaRound learns from data: these trials have no representative "
                         "batches and their calibration kept no samples; pass batches.")

    def score(self, config: QuantizationConfig) -> float:
        """The eval score of `config`'s quantized model."""
        return self.run(config).score

    def run(self, config: QuantizationConfig) -> Trial:
        """Builds and evaluates `config`'s quantized model."""
        if self._evaluate is None:
            raise ValueError("These trials have no eval_callback to score a model with.")
        trial = self.build(config)
        trial.score = self._evaluate(trial.model)
        self.evaluations += 1
        return trial


class TrialWorkspace:
    """Evaluates configurations of one float graph (a sweep's workspace): the
    calibration is done once per observer kind, each configuration's quantized
    model is built from those observers and scored. Specs: `("float", None)`,
    the user's float model; `("trial", config)`, a QuantizationConfig."""

    def __init__(self, model, trials: QuantizationTrials, evaluate: Callable):
        self.model, self.trials, self.callback = model, trials, evaluate

    def evaluate(self, spec) -> float:
        from mct_logger.utils.callbacks import eval_score

        kind, config = spec
        model = self.model if kind == "float" else self.trials.build(config).model
        return eval_score(self.callback(model), "eval_callback")


def trial_shipment(model, graph: Graph, batches, calibrate: Callable | None = None,
                   calibration_model: Callable | None = None) -> dict:
    """What a worker needs to rebuild the trials: the user's model (None when
    only trials are scored) and the prepared float graph as `.keras` bytes, and
    the calibration batches, or the callback that calibrates (it travels by
    Ray's serialization, as the eval callback), with the calibration model's
    factory when it is not the plain one (a recording one keeps the samples
    AdaRound learns from when no batches are shipped)."""
    from mct_logger.evaluators.shipment import model_to_bytes

    return {"model": None if model is None else model_to_bytes(model),
            "graph": model_to_bytes(graph.to_keras()), "nodes": list(graph.nodes),
            "batches": batches, "calibrate": calibrate, "calibration_model": calibration_model}


def rebuild_trial_workspace(content: dict, eval_callback) -> TrialWorkspace:
    """On a worker: the trials of `trial_shipment`'s content, calibrated on first use."""
    from mct_logger.utils.callbacks import as_callback
    from mct_logger.evaluators.shipment import model_from_bytes
    from mct_logger.graph.ir import read_model

    graph = read_model(model_from_bytes(content["graph"]))
    if list(graph.nodes) != content["nodes"]:
        raise RuntimeError("The graph read on the Ray worker has other nodes than on the "
                           f"driver ({list(graph.nodes)[:5]}... vs {content['nodes'][:5]}...).")
    batches, calibrate = content["batches"], content.get("calibrate")
    factory = content.get("calibration_model") or CalibrationModel
    trials = QuantizationTrials(graph, calibrate or (lambda m: m.collect_all(batches)), None,
                                batches, calibration_model=factory)
    model = None if content["model"] is None else model_from_bytes(content["model"])
    return TrialWorkspace(model, trials, as_callback(eval_callback, "eval_callback"))
