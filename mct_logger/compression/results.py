"""What a compression sweep reports: the plan at start, each score as it comes,
and the final statistics (`CompressionStats`).

Costs are `LayerCost(macs, params)` (see `cost`); a ratio is the fraction of
a layer's cost kept (1.0: uncompressed). Scores are the user's eval score,
higher is better.

Example:

```python
compressed, stats = compress_model(...)
stats.cost_ratio                    # cost after / cost before, in the cost metric
stats.layers[0]                     # {"layer", "class", "ratio", "setting", "macs_before", ...}
stats.eval_scores["conv1"]["0.5"]   # the score with conv1 alone at 0.5
```
"""

from __future__ import annotations

import dataclasses

from mct_logger.compression.cost import LayerCost


@dataclasses.dataclass
class _Settings:
    """What a sweep was asked for."""

    model: str
    scheme: str
    cost_metric: str
    target_comp_ratio: float
    candidates: list


@dataclasses.dataclass
class SweepPlan(_Settings):
    """The sweep about to run. `layers`: per eligible layer `{"layer", "class",
    "macs", "params", "settings"}` (the rank or kept channels per candidate,
    None where the ratio saves nothing); `scores`: those already known (from
    `eval_scores_file`), `{layer: {ratio key: score}}`, updated as the sweep goes."""

    layers: list
    ineligible: dict
    score_before: float
    cost_before: LayerCost
    scores: dict
    evaluations_total: int
    evaluations_reused: int


@dataclasses.dataclass(frozen=True)
class ScoreUpdate:
    """One evaluation done: `done` of `total` this call, `seconds` since the sweep began."""

    layer: str
    ratio: float
    score: float
    done: int
    total: int
    seconds: float


@dataclasses.dataclass
class CompressionStats(_Settings):
    """The result of `compress_model`.

    `layers`: per eligible layer `{"layer", "class", "ratio" (None: kept),
    "setting" (rank or kept channels), "macs_before", "macs_after",
    "params_before", "params_after"}`; `eval_scores`: `{layer: {ratio key:
    score}}`; `threshold`: the score threshold of the greedy selection (None:
    above every score, nothing compressed, the target needing no compression);
    `next_cost_ratio`: the cost ratio of the next less compressed selection,
    above the target (None: this one compresses nothing), so the gap between
    `cost_ratio` and the target is the candidate steps' doing; `evaluations`:
    evaluations run by this call (the rest were reused from the score file).
    """

    layers: list
    eval_scores: dict
    threshold: float | None
    cost_before: LayerCost
    cost_after: LayerCost
    score_before: float
    score_after: float
    evaluations: int
    evaluations_reused: int
    seconds: float
    ineligible: dict = dataclasses.field(default_factory=dict)
    next_cost_ratio: float | None = None

    @property
    def cost_ratio(self) -> float:
        """Cost after / cost before, in `cost_metric`."""
        return self.cost_after.of(self.cost_metric) / max(self.cost_before.of(self.cost_metric), 1)

    @property
    def chosen_ratios(self) -> dict:
        """`{layer: ratio}` of the compressed layers."""
        return {row["layer"]: row["ratio"] for row in self.layers if row["ratio"] is not None}

    def as_dict(self) -> dict:
        """JSON-ready."""
        out = dataclasses.asdict(self)
        for key in ("cost_before", "cost_after"):
            out[key] = {"macs": getattr(self, key).macs, "params": getattr(self, key).params}
        out["cost_ratio"] = self.cost_ratio
        return out

    def __str__(self) -> str:
        lines = [f"{self.scheme} of {self.model!r}: {self.cost_metric} cost "
                 f"{self.cost_before.of(self.cost_metric):,} -> "
                 f"{self.cost_after.of(self.cost_metric):,} ({self.cost_ratio:.3f}, target "
                 f"{self.target_comp_ratio}{self._next_step()}); score {self.score_before:.4f} -> "
                 f"{self.score_after:.4f}"]
        for row in self.layers:
            ratio = "kept" if row["ratio"] is None else f"{row['ratio']:g}"
            lines.append(f"  {row['layer']:<28} {ratio:>5}  MACs {row['macs_before']:>11,} -> "
                         f"{row['macs_after']:>11,}")
        return "\n".join(lines)

    def _next_step(self) -> str:
        if self.next_cost_ratio is None:
            return "; nothing compressed" if not self.chosen_ratios else ""
        return f"; the next less compressed choice keeps {self.next_cost_ratio:.3f}"


def layer_rows(graph, eligible: list, before: dict, after: dict, chosen: dict,
               settings: dict, compressed_graph=None) -> list:
    """Per eligible layer: its own chosen ratio, its cost before and after (an SVD
    pair `<name>_a` + `<name>_b` counted as the layer it replaced; the cost also
    falls when a neighbour's pruning removes this layer's channels), and its
    output channels before and after (`out_channels_*`: channel pruning of the
    layers it feeds removes its output channels too; None for SVD pairs)."""
    rows = []
    for name in eligible:
        out_before = _out_channels(graph, name)
        out_after = _out_channels(compressed_graph, name) if compressed_graph is not None \
            else out_before
        if name in after:
            now = after[name]
        else:
            now = after.get(f"{name}_a", LayerCost()) + after.get(f"{name}_b", LayerCost())
        ratio = chosen.get(name)
        rows.append({
            "layer": name, "class": graph.nodes[name].layer_class, "ratio": ratio,
            "setting": None if ratio is None else settings[name][ratio],
            "macs_before": before[name].macs, "macs_after": now.macs,
            "params_before": before[name].params, "params_after": now.params,
            "out_channels_before": out_before, "out_channels_after": out_after,
        })
    return rows


def _out_channels(graph, name: str):
    node = graph.nodes.get(name) if graph is not None else None
    if node is None or not node.output_shapes:
        return None
    last = node.output_shapes[0][-1]
    return int(last) if last is not None else None
