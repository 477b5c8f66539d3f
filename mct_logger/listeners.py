"""Where PTQ stage listeners are registered: the one place the engine asks who listens.

A stage listener is a callable `listener(stage_name, graph, result)` called
after every stage of every PTQ run (`mct_logger.stage_results` documents the
results). It may also have:

- `close(error)`: called once when the run ends, with the exception if a stage failed;
- `needs`: a set of the extra work it wants from the engine, among `STATISTICS`
  (per-channel statistics and histograms kept during calibration) and
  `SIMILARITY` (the float-vs-quantized similarity stage). A listener without
  `needs` gets everything.

An analysis listener hears a QuantAnalyzer run: `listener(kind, table)` for
every table the analysis publishes (a "quant_analyzer" payload kind and its
JSON-able table, again each time a growing table gains rows), and
`close(error)` when the analysis ends. It is made fresh per analysis by a
factory registered with `set_analysis_listener_factory(key, factory)`
(`factory(model_name)` returns it, or None); it may have a `folder` (where it
logs, reported as `AnalysisResult.log_folder`). `set_log_folder` registers
the TensorBoard one (`analysis_log.AnalysisLogListener`).

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
    "open_analysis_listeners", "open_run_listeners", "recommendation_listeners",
    "remove_stage_listener", "set_analysis_listener_factory", "set_recommendation_listener",
    "set_run_listener_factory",
]

STATISTICS = "statistics"
SIMILARITY = "similarity"
ALL_NEEDS = frozenset({STATISTICS, SIMILARITY})

_listeners: list[Callable] = []
_factories: dict[str, Callable[[str], Any]] = {}
_analysis_factories: dict[str, Callable[[str], Any]] = {}
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
    _register(_factories, key, factory)


def open_run_listeners(model_name: str) -> list:
    """The listeners of one PTQ run: the added ones, then one per factory that made one."""
    with _lock:
        listeners, factories = list(_listeners), list(_factories.values())
    return listeners + _made(factories, model_name)


def set_analysis_listener_factory(key: str, factory: Callable[[str], Any] | None) -> None:
    """Registers (or with None removes) `factory(model_name) -> analysis listener | None`."""
    _register(_analysis_factories, key, factory)


def open_analysis_listeners(model_name: str) -> list:
    """The analysis listeners of one QuantAnalyzer run: one per factory that made one."""
    with _lock:
        factories = list(_analysis_factories.values())
    return _made(factories, model_name)


def _register(registry: dict, key: str, value) -> None:
    with _lock:
        if value is None:
            registry.pop(key, None)
        else:
            registry[key] = value


def _made(factories, model_name: str) -> list:
    made = (factory(model_name) for factory in factories)
    return [listener for listener in made if listener is not None]


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
