"""The QuantAnalyzer's evaluations as one sweep of quantizer masks, on any evaluator.

The sensitivity analysis and the per-layer enabled/disabled analyses are
`4 + 2 L` evaluations (L quantized layers) of one quantization simulation
under different quantizer masks:

    fp32                   the float model (batch norms folded)
    weights_only           every weight quantizer on, every activation one off
    activations_only       the reverse
    fully_quantized        every quantizer on
    enabled[l]             only layer l's quantizers on
    disabled[l]            every quantizer on but layer l's

A mask is `(weights on, activations on, layer flipped)`: every quantizer set
to the first two, then the layer's own set to the opposite. `MaskWorkspace`
switches only what differs from the previous mask (the quantizers' on/off
state is a variable: nothing is rebuilt or retraced). A Ray worker rebuilds
it once from the float model and the simulation as `.keras` bytes (the
encodings ride in the simulation's variables).

Each score is recorded as it finishes in `results_dir/evaluations.json`
(`evaluators.records`), keyed by the mask, under the model's fingerprint,
the config and the encodings' fingerprint: `analyze(resume=True)` reuses
them, and a record of another model, config or calibration is refused.

Example:

```python
jobs = mask_jobs(labels, ["conv1", "dense"])     # 4 + 2 x 2 jobs
workspace = MaskWorkspace(float_model, sim, evaluate)
workspace.evaluate(jobs[4].spec)                 # conv1 alone quantized
```
"""

from __future__ import annotations

import os

from mct_logger.analyzer.aimet_layout import DISABLED_FILE, ENABLED_FILE, SENSITIVITY_FILE
from mct_logger.analyzer.aimet_layout import EVALUATIONS_FILE as RECORD_FILE
from mct_logger.utils.callbacks import as_callback, eval_score
from mct_logger.evaluators.jobs import Job
from mct_logger.evaluators.records import ScoreRecords, fingerprint, model_fingerprint
from mct_logger.evaluators.shipment import model_from_bytes, model_to_bytes
from mct_logger.graph import layer_kinds
from mct_logger.quantization.config import config_to_dict
from mct_logger.quantization.plan import inner_name, sublayer_groups
from mct_logger.quantization.quantsim import set_quantizers_enabled

RECORD_FORMAT = "mct_logger.QuantAnalyzer.evaluations"
SENSITIVITY = "sensitivity"
ENABLED = "per_layer_quant_enabled"
DISABLED = "per_layer_quant_disabled"
SENSITIVITY_MASKS = {  # key -> (weights on, activations on)
    "weights_only": (True, False),
    "activations_only": (False, True),
    "fully_quantized": (True, True),
}


def mask_units(graph, plan: dict) -> dict[str, str]:
    """`{unit: layer class}`: what the per-layer analyses switch one at a time,
    in graph order. Every quantized node, and after a composite layer (a
    KerasHub transformer block) each of its sublayer groups, `node/point`
    (that sublayer's kernels and output; the node's own row switches the
    whole block)."""
    units = {}
    for name, p in plan.items():
        if not p.quantized:
            continue
        node = graph.nodes[name]
        units[name] = node.layer_class
        sublayers = layer_kinds.sublayer_outputs(node.layer) if p.inner_activations else {}
        for point in sublayer_groups(p):
            sublayer = sublayers.get(point)
            units[inner_name(name, point)] = (type(sublayer).__name__ if sublayer is not None
                                              else node.layer_class)
    return units


def mask_jobs(labels: dict, layers) -> list[Job]:
    """The analysis's jobs in the local order: the sensitivity settings (fp32
    first, the reference), then every layer alone quantized, then every layer
    alone in float."""
    jobs = [Job((SENSITIVITY, "fp32"), ("fp32", None, None, None),
                f"the fp32 model ({labels['fp32']})")]
    for key, (w, a) in SENSITIVITY_MASKS.items():
        jobs.append(Job((SENSITIVITY, key), ("sim", w, a, None), f"the {key} model ({labels[key]})"))
    jobs += [Job((ENABLED, n), ("sim", False, False, n), f"the model with {n} alone quantized")
             for n in layers]
    jobs += [Job((DISABLED, n), ("sim", True, True, n), f"the model with {n} alone in float")
             for n in layers]
    return jobs


class MaskTables:
    """The sensitivity and per-layer tables, filled as scores arrive in any order;
    rows and scores always in layer order (`order`)."""

    def __init__(self, labels: dict, units: dict, result):
        """`units`: `{unit: layer class}` (`mask_units`), in table order."""
        self.layers, self.classes, self.result = list(units), dict(units), result
        self.tables = {SENSITIVITY: dict(labels=labels, fp32=None, weights_only=None,
                                         activations_only=None, fully_quantized=None,
                                         complete=False)}
        for kind in (ENABLED, DISABLED):
            self.tables[kind] = {"fp32": None, "fully_quantized": None,
                                 "layers_total": len(self.layers), "rows": [], "complete": False}

    def take(self, job, score: float) -> tuple[str, str, dict]:
        """Puts `score` in its table; returns `(kind, result file, its content)`."""
        kind, name = job.key
        table = self.tables[kind]
        if kind == SENSITIVITY:
            table[name] = self.result.sensitivity[name] = score
            for other in (ENABLED, DISABLED):
                if name in ("fp32", "fully_quantized"):
                    self.tables[other][name] = score
            table["complete"] = all(table[k] is not None for k in
                                    ("fp32", *SENSITIVITY_MASKS))
            return kind, SENSITIVITY_FILE, table
        scores = getattr(self.result, kind)
        scores[name] = score
        table["rows"].append({"layer": name, "class": self.classes[name], "score": score})
        table["complete"] = len(scores) == len(self.layers)
        return kind, ENABLED_FILE if kind == ENABLED else DISABLED_FILE, \
            {n: scores[n] for n in self.layers if n in scores}

    def order(self) -> None:
        """Rows and scores in layer order, whatever order the evaluations finished in."""
        index = {n: i for i, n in enumerate(self.layers)}
        for kind in (ENABLED, DISABLED):
            self.tables[kind]["rows"].sort(key=lambda r: index[r["layer"]])
            scores = getattr(self.result, kind)
            ordered = {n: scores[n] for n in self.layers if n in scores}
            scores.clear()
            scores.update(ordered)


class MaskWorkspace:
    """The float model and the simulation, and the mask the simulation is under."""

    def __init__(self, float_model, sim, evaluate):
        self.float_model, self.sim, self.callback = float_model, sim, evaluate
        self.globals = None  # (weights, activations) of every quantizer
        self.flipped = None  # the layer set to the opposite

    def evaluate(self, spec) -> float:
        kind, weights, activations, node = spec
        if kind == "fp32":
            return eval_score(self.callback(self.float_model), "eval_callback")
        self.set_mask(weights, activations, node)
        return eval_score(self.callback(self.sim), "eval_callback")

    def set_mask(self, weights: bool, activations: bool, node) -> None:
        if self.globals != (weights, activations):
            set_quantizers_enabled(self.sim, weights=weights, activations=activations)
            self.globals, self.flipped = (weights, activations), None
        if self.flipped is not None and self.flipped != node:
            set_quantizers_enabled(self.sim, weights=weights, activations=activations,
                                   nodes=[self.flipped])
            self.flipped = None
        if node is not None and self.flipped != node:
            set_quantizers_enabled(self.sim, weights=not weights, activations=not activations,
                                   nodes=[node])
            self.flipped = node

    def restore(self) -> None:
        """Every quantizer on (the simulation as the analysis returns it)."""
        set_quantizers_enabled(self.sim, weights=True, activations=True)
        self.globals, self.flipped = (True, True), None


def rebuild_workspace(shipment: dict, eval_callback) -> MaskWorkspace:
    """On a worker: the workspace from the shipped `.keras` bytes."""
    return MaskWorkspace(model_from_bytes(shipment["float_model"]),
                         model_from_bytes(shipment["sim"]),
                         as_callback(eval_callback, "eval_callback"))


def shipment(float_model, sim) -> dict:
    return {"float_model": model_to_bytes(float_model), "sim": model_to_bytes(sim)}


def open_records(results_dir: str, model, graph_name: str, config, ignored,
                 resume: bool) -> ScoreRecords:
    """The record of this analysis: the earlier one in `results_dir` when
    `resume` (refused if it is another model's or config's), else a new one.

    Raises:
        ValueError: the earlier record is not one, or is another model's or
            config's (the message names the field and the fix).
    """
    path = os.path.join(results_dir, RECORD_FILE)
    meta = {"model": graph_name, "fingerprint": model_fingerprint(model),
            "config": config_to_dict(config)["config"], "layers_ignored": list(ignored)}
    meta = _plain(meta)
    if not resume:
        return ScoreRecords(path, meta, what="results_dir's evaluation record",
                            format_name=RECORD_FORMAT)
    return ScoreRecords.open(path, meta, what="results_dir's evaluation record (resume=True)",
                             format_name=RECORD_FORMAT)


def encodings_fingerprint(encodings: dict) -> str:
    """SHA-256 of every node's grids (what the calibration gave)."""
    return fingerprint({name: enc.as_dict() for name, enc in sorted(encodings.items())})


def _plain(value):
    import json

    return json.loads(json.dumps(value, default=repr))
