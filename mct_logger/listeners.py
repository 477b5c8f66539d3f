"""Where PTQ stage listeners are registered: the one place the engine asks who listens.

A stage listener is a callable `listener(stage_name, graph, result)` called
after every stage of every PTQ run (`mct_logger.stage_results` documents the
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

Example:

```python
seen = []
add_stage_listener(lambda stage, graph, result: seen.append(stage))
```
"""

from __future__ import annotations

import threading
from typing import Any, Callable

__all__ = [
    "SIMILARITY", "STATISTICS", "add_stage_listener", "needs", "notify_recommendation",
    "open_run_listeners", "recommendation_listeners", "remove_stage_listener",
    "set_recommendation_listener", "set_run_listener_factory",
]

STATISTICS = "statistics"
SIMILARITY = "similarity"
ALL_NEEDS = frozenset({STATISTICS, SIMILARITY})

_listeners: list[Callable] = []
_factories: dict[str, Callable[[str], Any]] = {}
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


def set_run_listener_factory(key: str, factory: Callable[[str], Any] | None) -> None:
    """Registers (or with None removes) `factory(model_name) -> listener | None` under `key`."""
    with _lock:
        if factory is None:
            _factories.pop(key, None)
        else:
            _factories[key] = factory


def open_run_listeners(model_name: str) -> list:
    """The listeners of one PTQ run: the added ones, then one per factory that made one."""
    with _lock:
        listeners, factories = list(_listeners), list(_factories.values())
    for factory in factories:
        listener = factory(model_name)
        if listener is not None:
            listeners.append(listener)
    return listeners


def needs(listeners, what: str) -> bool:
    """True if any of `listeners` declared (or, without `needs`, implies) `what`."""
    return any(what in getattr(listener, "needs", ALL_NEEDS) for listener in listeners)


def set_recommendation_listener(key: str, listener: Callable | None) -> None:
    """Registers (or with None removes) a recommendation listener under `key`."""
    with _lock:
        if listener is None:
            _recommendation.pop(key, None)
        else:
            _recommendation[key] = listener


def recommendation_listeners() -> list:
    with _lock:
        return list(_recommendation.values())


def notify_recommendation(model, batches, baseline_config, recommended_config,
                          tables: dict) -> None:
    """Tells every recommendation listener about a finished search or recommendation."""
    for listener in recommendation_listeners():
        listener(model, batches, baseline_config, recommended_config, tables)
