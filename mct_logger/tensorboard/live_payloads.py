"""Plugin payloads published while a long computation runs: each kind's newest
table as the next step of its tag (both loaders keep the newest step last),
flushed at once so TensorBoard reads it, and growing tables at most every
`LIVE_INTERVAL_SECONDS`.

Used by the QuantAnalyzer (its evaluation tables) and by model compression
(its score table); the writer is any `EventWriter`-like object.

Example:

```python
publisher = PayloadPublisher(run_log.writer("compression"), "compression")
publisher.publish("eval_scores", table)          # step 0, 1, 2... of tag "eval_scores"
if publisher.due():                               # throttled live updates
    publisher.publish("eval_scores", table)
```
"""

from __future__ import annotations

from mct_logger.utils.progress import LIVE_INTERVAL_SECONDS, Throttle


class PayloadPublisher:
    """Writes one plugin's payload tables to one TensorBoard run."""

    def __init__(self, writer, plugin_name: str, interval: float = LIVE_INTERVAL_SECONDS):
        self.writer = writer
        self.plugin_name = plugin_name
        self.throttle = Throttle(interval)
        self._steps: dict[str, int] = {}

    def publish(self, kind: str, table: dict) -> None:
        """Writes `table` as the next step of tag `kind`, and flushes."""
        from mct_logger.tb_plugin.summary import json_ready, payload_summary

        step = self._steps.get(kind, -1) + 1
        self._steps[kind] = step
        self.writer.add_summary(payload_summary(self.plugin_name, kind, kind, json_ready(table)),
                                step=step)
        self.writer.flush()  # readable now: the tab fills in while the work runs

    def due(self, force: bool = False) -> bool:
        """True at most every `interval` seconds (always when `force`)."""
        return self.throttle.due(force)
