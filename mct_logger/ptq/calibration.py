"""PTQ's statistics_collection stage: one pass of the representative data through
the calibration model, whose observers give the activation grids.

When a listener asks for per-channel statistics and histograms (the TensorBoard
log does), they are collected in the same pass. They are for the log only, so
they never cost the model: under an address-space limit (`ulimit -v`) without
room for them (`utils.address_space`), or when the pass with them fails (e.g.
an allocation failure inside TensorFlow), the pass runs without them, with one
warning, and the log shows no histograms for the run.

    statistics room ~= STATISTICS_RESERVE (64 MiB: histogram reductions, per-channel tables)

Example:

```python
calibrations = []
graph, result = collect(graph, plan, batches, clones, True, calibrations.append)
grids = calibrated_encodings(graph, plan, calibrations[-1])
```
"""

from __future__ import annotations

import logging

from mct_logger.data import sources as data_lib
from mct_logger.ptq.results import StatisticsResult
from mct_logger.quantization.calibration_size import warn_if_few_samples
from mct_logger.quantization.quantsim import CalibrationModel
from mct_logger.utils import address_space
from mct_logger.utils.progress import progress_bar

logger = logging.getLogger("mct_logger")

# Bytes the log's statistics may need beyond the grids' own pass (compiled
# histogram reductions, per-channel tables), checked against the headroom.
STATISTICS_RESERVE = 64 << 20


def collect(graph, plan: dict, batches, clones, statistics: bool, keep) -> tuple:
    """Runs the stage; `keep(calibration_model)` receives the model whose observers
    saw the data. Returns `(graph, StatisticsResult)`.

    Raises:
        what the pass without statistics raises (its data errors name the input;
        a ValueError or TypeError, the data's, is raised at once, never retried).
    """
    if statistics and not address_space.afford(
            "Collecting activation statistics for the log", STATISTICS_RESERVE):
        statistics = False
    try:
        calibration = _calibrated(graph, plan, batches, clones, statistics)
    except Exception as exc:  # noqa: BLE001 - with the log's extras only; retried without
        if not statistics or isinstance(exc, (ValueError, TypeError)):
            raise  # the data's fault (named in the message), not the statistics'
        logger.warning("Calibration with activation statistics for the log failed (%s: %s); "
                       "calibrating again without them: the log has no histograms for this "
                       "run, PTQ goes on and returns the quantized model.",
                       type(exc).__name__, (str(exc).strip().splitlines() or [""])[-1][:200])
        calibration = _calibrated(graph, plan, batches, clones, False)
    keep(calibration)
    if calibration.observers:
        warn_if_few_samples(calibration.samples_seen, f"the activation ranges of model "
                            f"{graph.name!r} (PTQ)", "pass more representative_data")
    return graph, StatisticsResult(
        num_batches=len(batches), num_samples=data_lib.num_samples(batches),
        observers=calibration.observers, statistics=calibration.statistics)


def _calibrated(graph, plan, batches, clones, statistics: bool) -> CalibrationModel:
    calibration = CalibrationModel(graph, plan, statistics=statistics, clones=clones)
    progress = progress_bar(len(batches), "calibration batch")
    calibration.collect_all(batches, on_batch=progress.update)
    return calibration
