"""The TensorBoard listener of model compression: turns the sweep's events into
"compression" plugin payloads (the Compression tab) under one run folder.

- `eval_scores`: the layers x candidate-ratios score table, re-published as
  scores come (at most every `LIVE_INTERVAL_SECONDS`), with the evaluation
  count and time for "N of M evaluations, about T left";
- `selection`: the chosen per-layer ratios, each layer's MACs and parameters
  before and after, the model's cost and score before and after, and the cost
  ratio of the next less compressed selection (`next_cost_ratio`, above the
  target; None when nothing was compressed).

It only writes: every number comes from the engine's events
(`mct_logger.compression.results`). Logging never fails the compression:
the first failure is one warning and this run's log stops (`LogGuard`).

Example:

```python
mct_logger.set_log_folder("logs")
compressed, stats = mct_logger.compress_model(model, evaluate, 0.5)
# tensorboard --logdir logs   -> the Compression tab
```
"""

from __future__ import annotations

import os

from mct_logger.compression.eval_scores import ratio_key
from mct_logger.tensorboard.live_payloads import PayloadPublisher
from mct_logger.tensorboard.run_log import LogGuard, RunLog

RUN = "compression"  # the TensorBoard run inside the run folder


class CompressionTensorBoardListener:
    """Compression events ("start", "score", "done") -> payloads; `close(error)`
    records how the sweep ended.

    Registered per compression run by `mct_logger.set_log_folder`
    (`listeners.set_run_listener_factory(..., kind=listeners.COMPRESSION)`).
    """

    RETURNED = "Compression goes on and returns the compressed model"

    def __init__(self, folder: str):
        self.folder = folder
        self.guard = LogGuard(folder, self.RETURNED)
        self.log = RunLog(folder, guard=self.guard)
        self.publisher = PayloadPublisher(self.log.writer(RUN), "compression")
        self.table: dict | None = None
        self.fresh = 0

    def __call__(self, event) -> None:
        handler = getattr(self, f"_on_{event.name}", None)
        if handler is not None:
            self.guard.call(handler, event.data, path=os.path.join(self.folder, RUN))

    def _on_start(self, plan) -> None:
        keys = [ratio_key(r) for r in plan.candidates]
        self.keys = keys
        self.table = {
            "model": plan.model, "scheme": plan.scheme, "cost_metric": plan.cost_metric,
            "target_comp_ratio": plan.target_comp_ratio, "candidates": list(plan.candidates),
            "score_before": plan.score_before, "status": "running",
            "evaluations_total": plan.evaluations_total,
            "evaluations_done": plan.evaluations_reused,
            "evaluations_reused": plan.evaluations_reused, "evaluation_seconds": 0.0,
            "error": None,
            "rows": [{**{k: row[k] for k in ("layer", "class", "macs", "params", "settings")},
                      "scores": [plan.scores.get(row["layer"], {}).get(k) for k in keys]}
                     for row in plan.layers],
            "ineligible": dict(plan.ineligible),
        }
        self.rows = {row["layer"]: row for row in self.table["rows"]}
        self.publisher.publish("eval_scores", self.table)

    def _on_score(self, update) -> None:
        row = self.rows[update.layer]
        row["scores"][self.keys.index(ratio_key(update.ratio))] = update.score
        self.table["evaluations_done"] = self.table["evaluations_reused"] + update.done
        self.table["evaluation_seconds"] = round(update.seconds, 3)
        if self.publisher.due():
            self.publisher.publish("eval_scores", self.table)

    def _on_done(self, stats) -> None:
        self.table["status"] = "complete"
        self.publisher.publish("eval_scores", self.table)
        self.publisher.publish("selection", {
            "model": stats.model, "scheme": stats.scheme, "cost_metric": stats.cost_metric,
            "target_comp_ratio": stats.target_comp_ratio, "threshold": stats.threshold,
            "cost_before": {"macs": stats.cost_before.macs, "params": stats.cost_before.params},
            "cost_after": {"macs": stats.cost_after.macs, "params": stats.cost_after.params},
            "cost_ratio": float(stats.cost_ratio), "next_cost_ratio": stats.next_cost_ratio,
            "score_before": stats.score_before,
            "score_after": stats.score_after, "seconds": round(stats.seconds, 3),
            "rows": stats.layers,
        })

    def close(self, error: BaseException | None = None) -> None:
        if error is not None and self.table is not None and self.table["status"] == "running":
            self.table["status"] = ("interrupted" if isinstance(error, KeyboardInterrupt)
                                    else "failed")
            self.table["error"] = f"{type(error).__name__}: {error}"
            self.guard.call(self.publisher.publish, "eval_scores", self.table)
        try:
            self.log.close()
        except OSError as exc:
            self.guard.fail(exc)
