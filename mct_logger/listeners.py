"""Where PTQ stage listeners are registered: the one place the engine asks who listens.

A stage listener is a callable `listener(stage_name, graph, result)` called
after every stage of every PTQ run (`mct_logger.ptq.results` documents the
results). It may also have:

- `close(error)`: called once when the run ends, with the exception if a stage failed;
- `needs`: a set of the extra work it wants from the engine, among `STATISTICS`
  (per-channel statistics and histograms kept during calibration) and
  `SIMILARITY` (the float-vs-quantized similarity stage). A listener without
  `needs` gets everything.

A recommendation listener (`set_recommendation_listener`) hears the end of a
mixed-precision search or a QuantAnalyzer recommendation, as
`listener(model, representative_batches, baseline_config, recommended_config,
tables)`; `set_log_folder` registers the one that logs both PTQ runs and the
tables.

Two kinds of registration: `add_stage_listener(listener)` for one object that
hears every run, and `set_run_listener_factory(key, factory)` for a listener
made fresh per run (`factory(model_name)` returns it, or None to sit this run
out); `mct_logger.set_log_folder` registers the TensorBoard listener this way.

A LiteRT export (`QuantizationInfo.export_litert`) asks for `kind=EXPORT`
listeners (`listener(graph, plan, result)` with the `LiteRTExport`) with the
PTQ run's `run_id`, so that a factory registered `with_run_id=True` (called
`factory(model_name, run_id)`) can log the export beside that run.

Model compression (`mct_logger.compress_model`) and the QuantAnalyzer ask here
too, for their own kinds of run listener: `kind=COMPRESSION` (`listener(event,
data)`, see `mct_logger.compression.compress`) and `kind=ANALYSIS` (the tables of
one analysis, see `mct_logger.tensorboard.analysis_log`); `set_log_folder` registers their
TensorBoard listeners the same way.

Example:

```python
seen = []
add_stage_listener(lambda stage, graph, result: seen.append(stage))
```
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

__all__ = [
    "ANALYSIS", "COMPRESSION", "EXPORT", "PTQ", "new_run_id", "SIMILARITY", "STATISTICS", "add_stage_listener", "needs",
    "notify_recommendation", "open_run_listeners", "recommendation_listeners",
    "LIVE_INTERVAL_SECONDS", "Throttle", "progress_bar", "remove_stage_listener", "set_recommendation_listener", "set_run_listener_factory",
]

STATISTICS = "statistics"
SIMILARITY = "similarity"
ALL_NEEDS = frozenset({STATISTICS, SIMILARITY})
# The kinds of run that ask for listeners.
PTQ = "ptq"
COMPRESSION = "compression"
ANALYSIS = "analysis"
EXPORT = "export"

# While long work runs, growing tables reach listeners at most this often.
LIVE_INTERVAL_SECONDS = 1.0

_listeners: list[Callable] = []
_factories: dict[tuple[str, str], tuple[Callable, bool]] = {}
_recommendation: dict[str, Callable] = {}
_lock = threading.Lock()


def add_stage_listener(listener: Callable[[str, Any, Any], None]) -> None:
    """Calls `listener(stage_name, graph, result)` after every stage of every PTQ run."""
    with _lock:
        if listener not in _listeners:
            _listeners.append(listener)


def remove_stage_listener(listener: Callable) -> None:
    """Stops calling `listener` (nothing happens if it was not added)."""
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def set_run_listener_factory(key: str, factory: Callable[..., Any] | None,
                             kind: str = PTQ, with_run_id: bool = False) -> None:
    """Registers (or with None removes) `factory(model_name) -> listener | None`
    under `key`, for runs of `kind` (PTQ, COMPRESSION, ANALYSIS or EXPORT);
    `with_run_id=True`: called `factory(model_name, run_id)`."""
    _register(_factories, (kind, key), None if factory is None else (factory, with_run_id))


def new_run_id() -> str:
    """A fresh identifier for one run (PTQ gives its run one, an export names it)."""
    import uuid

    return uuid.uuid4().hex


def open_run_listeners(model_name: str, kind: str = PTQ, run_id: str | None = None) -> list:
    """The listeners of one run of `kind`: for PTQ the added ones first, then one
    per factory of that kind that made one."""
    with _lock:
        listeners = list(_listeners) if kind == PTQ else []
        factories = [f for (k, _), f in _factories.items() if k == kind]
    for factory, with_run_id in factories:
        listener = factory(model_name, run_id) if with_run_id else factory(model_name)
        if listener is not None:
            listeners.append(listener)
    return listeners


def needs(listeners, what: str) -> bool:
    """True if any of `listeners` declared (or, without `needs`, implies) `what`."""
    return any(what in getattr(listener, "needs", ALL_NEEDS) for listener in listeners)


def set_recommendation_listener(key: str, listener: Callable | None) -> None:
    """Registers (or with None removes) a recommendation listener under `key`."""
    _register(_recommendation, key, listener)


def recommendation_listeners() -> list:
    with _lock:
        return list(_recommendation.values())


def notify_recommendation(model, batches, baseline_config, recommended_config,
                          tables: dict) -> None:
    """Tells every recommendation listener about a finished search or recommendation."""
    for listener in recommendation_listeners():
        listener(model, batches, baseline_config, recommended_config, tables)


def _register(registry: dict, key, value) -> None:
    with _lock:
        if value is None:
            registry.pop(key, None)
        else:
            registry[key] = value


class Throttle:
    """True at most every `interval` seconds: how often live updates go out."""

    def __init__(self, interval: float = LIVE_INTERVAL_SECONDS):
        self.interval = interval
        self._last = 0.0

    def due(self, force: bool = False) -> bool:
        """True when `interval` has passed since the last True (always when
        `force`); a True starts the next interval."""
        now = time.time()
        if not force and now - self._last < self.interval:
            return False
        self._last = now
        return True


def progress_bar(total: int, unit_name: str):
    """A Keras progress bar of `total` `unit_name`s on the console: live on a
    terminal or in a notebook; elsewhere (a log file, CI, a pipe) one plain line
    when done, since the live bar would fill the file with carriage returns and
    ANSI colour codes (Keras takes any POSIX stdout for a terminal)."""
    import keras

    live = (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()) or "ipykernel" in sys.modules
    return keras.utils.Progbar(total, verbose=1 if live else 2, unit_name=unit_name)
