"""The results of cross-layer equalization: what was rescaled, folded and why not.

`CrossLayerEqualizationResult` is the "cross_layer_equalization" stage's result
(the listener contract, see `mct_logger.ptq.results`) and what
`equalize_model` returns beside its model; `to_tables()` gives the CLE
dashboard's payload tables (`tb_plugin.metadata.CLE` kinds).

Example:

```python
tables = result.to_tables()
tables["scale_factors"]["sets"][0]["members"]
```
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mct_logger.utils.json_safe import json_number, json_numbers

__all__ = [
    "CrossLayerEqualizationResult", "EqualizationSet", "HighBiasFold", "output_distribution",
]


@dataclasses.dataclass
class EqualizationSet:
    """One CLE set: 2 members (pair) or 3 (layer, depthwise, layer).

    `scale_factors[k]` is the per-channel factor between `members[k]` and
    `members[k + 1]` (the product over all sweeps): the first one's output
    channel c was divided by it, the second one's input channel c multiplied.
    `links[k]` are the nodes between them; `activations[k]` names what they
    apply ("relu", "leaky_relu", "prelu" or "none").
    """

    members: list
    links: list
    activations: list
    scale_factors: list

    @property
    def kind(self) -> str:
        return "pair" if len(self.members) == 2 else "triplet"

    def as_dict(self) -> dict:
        return {
            "members": list(self.members),
            "kind": self.kind,
            "links": [list(x) for x in self.links],
            "activations": list(self.activations),
            "scale_factors": [json_numbers(s) for s in self.scale_factors],
        }


@dataclasses.dataclass
class HighBiasFold:
    """`amount` (per channel) moved out of `source`'s bias into `target`'s."""

    source: str
    target: str
    amount: np.ndarray
    activation: str  # "relu" (3-sigma rule) or "none" (the whole beta)

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "target": self.target,
            "activation": self.activation,
            "amount": json_numbers(self.amount),
            "total": json_number(np.sum(np.abs(self.amount))),
            "channels_folded": int(np.count_nonzero(self.amount)),
        }


@dataclasses.dataclass
class CrossLayerEqualizationResult:
    """The CLE stage's result; always has the weight ranges, with CLE off too.

    Attributes:
        applied: whether CLE ran (False: only `weight_ranges_before` is filled).
        weight_ranges_before: `weight_range_tables` of the graph given in
            (batch norms folded).
        weight_ranges_after: the same after equalization, or None.
        sets: the `EqualizationSet`s, with their scale factors.
        high_bias_folds: the `HighBiasFold`s applied.
        high_bias_fold_skipped: `{"source -> target": reason}` for pairs not folded.
        relu6_replaced: `[{"node", "form"}]`: ReLU6s that became ReLU (this
            changes the float function).
        not_equalized: `{node: reason}` for weight layers that start no set.
        iterations: sweeps over the sets until the scales converged.
        converged: False if `max_iterations` ran out first.
        float_score_before / float_score_after: `eval_callback` on the model
            before and after (None without a callback).
        reason: why CLE did not run, when it did not.
        node_info: for `equalize_model`'s model, `{layer name: {"folded_batch_norm",
            "cle"}}`: the batch norms folded into each layer (their statistics) and
            its CLE scales, which `correct_bias(..., equalization=result)` reads
            (the equalized model has no batch norms left to read them from).
    """

    applied: bool
    weight_ranges_before: list
    weight_ranges_after: list | None = None
    sets: list = dataclasses.field(default_factory=list)
    high_bias_folds: list = dataclasses.field(default_factory=list)
    high_bias_fold_skipped: dict = dataclasses.field(default_factory=dict)
    relu6_replaced: list = dataclasses.field(default_factory=list)
    not_equalized: dict = dataclasses.field(default_factory=dict)
    iterations: int = 0
    converged: bool = True
    float_score_before: float | None = None
    float_score_after: float | None = None
    reason: str = ""
    node_info: dict = dataclasses.field(default_factory=dict)
    version: int = 1

    def to_tables(self) -> dict:
        """JSON-able tables by CLE payload kind ("weight_ranges", "scale_factors",
        "high_bias_fold"); see the module docs of `mct_logger.techniques`."""
        after = {(t["node"], t["kernel"]): t for t in (self.weight_ranges_after or [])}
        layers = []
        for table in self.weight_ranges_before:
            key = (table["node"], table["kernel"])
            entry = {k: table[k] for k in ("node", "kernel", "layer_class", "channels")}
            entry["before"] = _stats_only(table)
            entry["after"] = _stats_only(after[key]) if key in after else None
            layers.append(entry)
        return {
            "weight_ranges": {"cle_applied": self.applied, "reason": self.reason,
                              "layers": layers},
            "scale_factors": {
                "cle_applied": self.applied,
                "sets": [s.as_dict() for s in self.sets],
                "iterations": self.iterations,
                "converged": self.converged,
                "not_equalized": dict(self.not_equalized),
                "relu6_replaced": [dict(r) for r in self.relu6_replaced],
                "float_score_before": _optional_number(self.float_score_before),
                "float_score_after": _optional_number(self.float_score_after),
            },
            "high_bias_fold": {
                "cle_applied": self.applied,
                "folds": [f.as_dict() for f in self.high_bias_folds],
                "skipped": [
                    {"pair": pair, "reason": reason}
                    for pair, reason in self.high_bias_fold_skipped.items()
                ],
            },
        }


def _optional_number(value):
    return None if value is None else json_number(value)


def _stats_only(table: dict) -> dict:
    return {k: v for k, v in table.items() if k not in ("node", "kernel", "layer_class", "channels")}


def output_distribution(info: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel mean and std (beta, |gamma|) of a layer's pre-activation output,
    from its folded batch norm, rescaled by CLE and shifted by high-bias folding.

    None when no batch norm was folded into the layer.
    """
    bn = info.get("folded_batch_norm")
    if bn is None:
        return None
    cle = info.get("cle", {})
    scale = np.asarray(cle.get("output_scale", 1.0), np.float64)
    beta = np.asarray(bn["beta"], np.float64) * scale - np.asarray(
        cle.get("bias_absorbed", 0.0), np.float64)
    gamma = np.abs(np.asarray(bn["gamma"], np.float64)) * scale
    return beta, gamma
