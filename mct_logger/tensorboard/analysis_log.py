"""The TensorBoard analysis listener: QuantAnalyzer tables in, "quant_analyzer" payloads out.

The QuantAnalyzer driver (`mct_logger.analyzer.driver`) publishes every table it
computes, and again as a growing table gains rows, to the analysis listeners
(`mct_logger.listeners`); `set_log_folder` registers this one, made fresh for
every analysis in its own run folder. A table of kind k becomes one step of
the payload k (`tb_plugin.metadata`) in the TensorBoard run
`<run folder>/quant_analyzer`: step s is its s-th publication, so both loaders
keep its newest version last and the tab fills in while the analysis runs. The
finished sensitivity table also becomes scalars, `sensitivity/<label>` (eval
score, step 0), one per setting whose score is finite; a finite score beyond
float32's range (TensorBoard's scalars are float32: 1e39 would read as Inf) is
left out of the charts and named in one warning (the tab and results_dir have it).

Logging never costs the analysis: the first failure is one warning naming the
path and the cause (`run_log.LogGuard`) and the listener writes nothing more.

Example:

```python
listener = AnalysisLogListener("logs/mlp_20260101-000000")
listener("sensitivity", table)   # one payload step
listener.close()
```
"""

from __future__ import annotations

import logging
import math

from mct_logger.tensorboard.live_payloads import PayloadPublisher
from mct_logger.tensorboard.run_log import LogGuard, RunLog
from mct_logger.tb_plugin import metadata

__all__ = ["AnalysisLogListener", "RETURNED", "RUN"]

RUN = "quant_analyzer"  # the TensorBoard run of the tables, inside the run folder
RETURNED = "The analysis goes on; its results are in results_dir and returned"
SENSITIVITY_KEYS = ("fp32", "weights_only", "activations_only", "fully_quantized")

logger = logging.getLogger("mct_logger")


class AnalysisLogListener:
    """Writes QuantAnalyzer tables as "quant_analyzer" payloads under one run folder.

    Attributes:
        folder: the run folder (`AnalysisResult.log_folder`).
    """

    def __init__(self, folder: str):
        self.folder = folder
        self.run_log = RunLog(folder, guard=LogGuard(folder, RETURNED))
        self.writer = self.run_log.writer(RUN)
        self.publisher = PayloadPublisher(self.writer, metadata.QUANT_ANALYZER)
        self._sensitivity_scalars = False

    def __call__(self, event) -> None:
        """Writes the table `event.data` as the next step of payload `event.name` (its
        kind) and flushes it (readable now)."""
        kind, table = event.name, event.data
        if kind == "sensitivity" and table.get("complete") and not self._sensitivity_scalars:
            self._sensitivity_scalars = True
            left_out = []
            for key in SENSITIVITY_KEYS:  # a NaN/Inf score (warned about) is no point
                if table[key] is not None and math.isfinite(table[key]):
                    label = table["labels"][key]
                    # False: beyond float32 (None: the log failed, already warned)
                    if self.writer.scalar(f"sensitivity/{label}", table[key], step=0) is False:
                        left_out.append(f"{label} ({table[key]:.6g})")
            if left_out:
                logger.warning(
                    "The eval scores of %s are beyond float32's range (about +-3.4e38), which "
                    "TensorBoard's scalars are stored in: they are left out of the sensitivity/ "
                    "charts of %s (they would read as Inf). The QuantAnalyzer tab and "
                    "results_dir have them.", ", ".join(left_out), self.folder)
        self.publisher.publish(kind, table)  # flushes: readable now

    def close(self, error: BaseException | None = None) -> None:
        """Closes the files (never raises: a failure is the one warning)."""
        self.run_log.close()
