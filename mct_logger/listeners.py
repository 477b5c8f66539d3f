"""Who listens to a run: one listener protocol for PTQ, QuantAnalyzer and compression runs.

A run (a PTQ call, an analysis, a compression sweep) tells its listeners what it
produces as `Event`s, in order, and closes them once when it ends. A listener is
any callable `listener(event)`; it may also have

- `close(error)`: called once when the run ends, with the exception if it failed;
- `needs`: the extra work it wants from the engine, among `STATISTICS`
  (per-channel statistics and histograms kept during calibration) and
  `SIMILARITY` (the float-vs-quantized similarity stage). Without `needs` a
  listener gets everything.

Listeners only write: what they are told never changes the run's result, and a
run's engine never reads anything back from them.

The events of each kind of run (`Event.name`, `Event.data`):

- `PTQ`: each stage's name and its result (`mct_logger.ptq.results`), with the
  graph after it in `Event.graph`; then, for the PTQ runs a mixed-precision
  search or a recommendation makes, `TABLES` with `{payload kind: table}`.
- `ANALYSIS`: the QuantAnalyzer's table kind and the table (again each time it grows).
- `COMPRESSION`: "start" (the sweep's plan), "score" (one evaluation), "done"
  (the `CompressionStats`).
- `EXPORT`: "litert_export" with the `LiteRTExport` (`mct_logger.export`) and the
  exported graph; its `RunInfo.run_id` is the exported PTQ run's, so a listener
  can log the export beside that run.

Registration: `add_stage_listener(fn)` for a callable that hears every PTQ stage as
`fn(stage_name, graph, result)`, and `set_run_listener_factory(key, factory, kind)`
for a listener made fresh per run (`factory(RunInfo)` returns it, or None to
sit the run out); `mct_logger.set_log_folder` registers the TensorBoard ones
this way. An engine opens one `ListenerSet` per run.

Example:

```python
seen = []
add_stage_listener(lambda stage, graph, result: seen.append(stage))
```
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Iterable

__all__ = [
    "ANALYSIS", "COMPRESSION", "EXPORT", "PTQ", "new_run_id", "SIMILARITY", "STATISTICS", "TABLES", "Event",
    "ListenerSet", "RunInfo", "add_stage_listener", "has_run_listeners", "remove_stage_listener",
    "set_run_listener_factory",
]

STATISTICS = "statistics"
SIMILARITY = "similarity"
ALL_NEEDS = frozenset({STATISTICS, SIMILARITY})
# The kinds of run.
PTQ = "ptq"
COMPRESSION = "compression"
ANALYSIS = "analysis"
EXPORT = "export"
KINDS = (PTQ, COMPRESSION, ANALYSIS, EXPORT)
# The event after a PTQ run's stages that carries a search's or recommendation's tables.
TABLES = "tables"


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a listener factory is told of the run it makes a listener for.

    Attributes:
        kind: PTQ, ANALYSIS or COMPRESSION.
        model_name: the model's name.
        run_name: the run's name when the engine gives one (e.g.
            "<model>_baseline" for a search's baseline PTQ run), else None: the
            listener names the run itself (set_log_folder's run_name, or the
            model's name and the time).
        role: what the run is for, when the engine says ("baseline",
            "recommended"), else None.
        origin: what made the run, when not a plain call ("search" for
            `search_mixed_precision`, "recommend" for `QuantAnalyzer.recommend`),
            else None.
        run_id: a PTQ run's unique id (`new_run_id`); an EXPORT run carries the id
            of the PTQ run it exports (None when unknown).
    """

    kind: str
    model_name: str
    run_name: str | None = None
    role: str | None = None
    origin: str | None = None
    run_id: str | None = None


def new_run_id() -> str:
    """A fresh unique id for one run."""
    import uuid

    return uuid.uuid4().hex


@dataclasses.dataclass(frozen=True)
class Event:
    """One thing a run tells its listeners.

    Attributes:
        kind: the kind of run (PTQ, ANALYSIS, COMPRESSION).
        name: the stage, table kind or event name (see the module docs).
        data: the stage result, table, plan or score.
        graph: for a PTQ stage, the graph after it; else None.
    """

    kind: str
    name: str
    data: Any
    graph: Any = None


class ListenerSet:
    """The listeners of one run: the added stage listeners (PTQ runs), the caller's
    own, then one per registered factory of the run's kind that made one.

    A listener that raises stops the run (the run then closes every listener
    with the error); the TensorBoard listeners report their own failures as one
    warning and never raise.
    """

    def __init__(self, run: RunInfo, extra: Iterable[Callable] = ()):
        self.run = run
        with _lock:
            added = list(_stage_listeners) if run.kind == PTQ else []
            factories = [f for (kind, _), f in _factories.items() if kind == run.kind]
        self.listeners: list = added + list(extra)
        for factory in factories:
            listener = factory(run)
            if listener is not None:
                self.listeners.append(listener)

    def __bool__(self) -> bool:
        return bool(self.listeners)

    def __len__(self) -> int:
        return len(self.listeners)

    def needs(self, what: str) -> bool:
        """True if any listener declared (or, without `needs`, implies) `what`."""
        return any(what in getattr(listener, "needs", ALL_NEEDS) for listener in self.listeners)

    def emit(self, name: str, data, graph=None) -> None:
        """Tells every listener `Event(self.run.kind, name, data, graph)`."""
        event = Event(self.run.kind, name, data, graph)
        for listener in self.listeners:
            listener(event)

    def close(self, error: BaseException | None = None) -> None:
        """Closes every listener that has `close`, once, with the run's error if any;
        every one is closed even when one of them raises (the first error is raised)."""
        first = None
        for listener in self.listeners:
            close = getattr(listener, "close", None)
            if close is None:
                continue
            try:
                close(error)
            except Exception as exc:  # the others still close; the first is re-raised
                first = first or exc
        if first is not None:
            raise first

    @property
    def log_folder(self) -> str | None:
        """The folder the first listener that says so (`folder`) writes this run to."""
        return next((f for f in (getattr(x, "folder", None) for x in self.listeners)
                     if f is not None), None)


class StageCallback:
    """A plain `fn(stage_name, graph, result)` as a PTQ listener: it hears the stages
    (not the tables after them)."""

    def __init__(self, fn: Callable[[str, Any, Any], None]):
        self.fn = fn
        self.needs = getattr(fn, "needs", ALL_NEEDS)

    def __call__(self, event: Event) -> None:
        if event.name != TABLES:
            self.fn(event.name, event.graph, event.data)

    def close(self, error: BaseException | None) -> None:
        close = getattr(self.fn, "close", None)
        if close is not None:
            close(error)

    def __eq__(self, other) -> bool:
        return isinstance(other, StageCallback) and other.fn == self.fn

    def __hash__(self) -> int:
        return hash(self.fn)


_stage_listeners: list[StageCallback] = []
_factories: dict[tuple[str, str], Callable[[RunInfo], Any]] = {}
_lock = threading.Lock()


def add_stage_listener(listener: Callable[[str, Any, Any], None]) -> None:
    """Calls `listener(stage_name, graph, result)` after every stage of every PTQ run.

    Raises:
        TypeError: `listener` is not callable.
    """
    if not callable(listener):
        raise TypeError(f"add_stage_listener takes a callable fn(stage_name, graph, result), "
                        f"got {type(listener).__name__}.")
    with _lock:
        if StageCallback(listener) not in _stage_listeners:
            _stage_listeners.append(StageCallback(listener))


def remove_stage_listener(listener: Callable) -> None:
    """Stops calling `listener` (nothing happens if it was not added)."""
    with _lock:
        if StageCallback(listener) in _stage_listeners:
            _stage_listeners.remove(StageCallback(listener))


def set_run_listener_factory(key: str, factory: Callable[[RunInfo], Any] | None,
                             kind: str = PTQ) -> None:
    """Registers (or with None removes) `factory(run_info) -> listener | None`
    under `key`, for runs of `kind` (PTQ, COMPRESSION, ANALYSIS or EXPORT).

    Raises:
        ValueError: `kind` is not one of them.
        TypeError: `factory` is neither callable nor None.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    if factory is not None and not callable(factory):
        raise TypeError(f"set_run_listener_factory's factory must be a callable "
                        f"factory(run_info) -> listener or None (to remove {key!r}), got "
                        f"{type(factory).__name__}.")
    with _lock:
        if factory is None:
            _factories.pop((kind, key), None)
        else:
            _factories[(kind, key)] = factory


def has_run_listeners(kind: str) -> bool:
    """True when a per-run listener factory is registered for runs of `kind` (e.g.
    `set_log_folder`'s): the runs an engine makes only to be seen are then worth
    making (see `mct_logger.ptq.paired_runs`)."""
    with _lock:
        return any(k == kind for k, _ in _factories)
