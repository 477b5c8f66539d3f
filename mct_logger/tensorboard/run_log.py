"""A run's TensorBoard files, written so that logging never costs the caller its result.

`RunLog` holds one `EventWriter` per TensorBoard run under a run folder;
`LogGuard` turns the first failure of that folder's logging (disk full,
permission denied, a plot that cannot be drawn) into one warning naming the
path and the cause (`report_log_failure`), after which that run's logging stops.
Imports without TensorFlow or Keras.

Example:

```python
with RunLog("logs/run") as log:
    log.writer("00_initial_graph").scalar("s", 1.5, step=0)
```
"""

from __future__ import annotations

import logging
import os
import threading

from mct_logger.tensorboard.events import EventWriter

__all__ = ["LogGuard", "RunLog", "failure_cause", "report_log_failure"]

logger = logging.getLogger("mct_logger")


def failure_cause(exc: BaseException) -> str:
    """The short cause of a failed write: the OS error text, else the message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def report_log_failure(folder: str | None, exc: BaseException, returned: str,
                       path: str | None = None) -> None:
    """The one warning of a failed log: the path, the cause, and what is still returned."""
    path = getattr(exc, "filename", None) or path or folder
    logger.warning(
        "TensorBoard logging to %s stopped: cannot write %s (%s: %s). %s; the logs written "
        "so far stay readable.", folder, path, type(exc).__name__, failure_cause(exc), returned,
    )


class LogGuard:
    """Stops a run's logging at its first failure, reported as one warning.

    `call(fn, ...)` runs `fn` unless logging already failed; an exception
    (any `Exception`: a full disk, a permission error, a plot that cannot be
    drawn) is reported by `report_log_failure` and never reaches the caller.
    """

    def __init__(self, folder: str, returned: str):
        self.folder = folder
        self.returned = returned
        self.failure: BaseException | None = None
        self._lock = threading.Lock()

    def call(self, fn, *args, path: str | None = None, **kwargs):
        if self.failure is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # reported below: the one warning of this run's log
            self.fail(exc, path)
            return None

    def fail(self, exc: BaseException, path: str | None = None) -> None:
        with self._lock:
            if self.failure is not None:
                return
            self.failure = exc
        report_log_failure(self.folder, exc, self.returned, path)


class RunLog:
    """The event writers of one run folder, one per TensorBoard run, all closed together.

    With a `guard` (LogGuard), writers never raise: the first failure is
    reported once and later writes are skipped.
    """

    def __init__(self, folder: str, guard: LogGuard | None = None):
        self.folder = folder
        self.guard = guard
        self._writers: dict[str, EventWriter] = {}

    def writer(self, run: str) -> EventWriter:
        """The writer of TensorBoard run `<folder>/<run>` (created on first use)."""
        if self.guard is not None:
            return _GuardedWriter(self, run)
        return self._writer(run)

    def _writer(self, run: str) -> EventWriter:
        if run not in self._writers:
            self._writers[run] = EventWriter(os.path.join(self.folder, run))
        return self._writers[run]

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        """Closes every writer (each one, even when another fails)."""
        errors = []
        for writer in self._writers.values():
            try:
                writer.close()
            except OSError as exc:  # kept and raised (or reported) below
                errors.append((writer, exc))
        self._writers.clear()
        for writer, exc in errors:
            if self.guard is None:
                raise exc
            self.guard.fail(exc, writer.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _GuardedWriter:
    """An EventWriter's methods (methods only), each run through the run log's guard."""

    def __init__(self, log: RunLog, run: str):
        self._log, self._run = log, run

    def __getattr__(self, name):
        def guarded(*args, **kwargs):
            def write():
                return getattr(self._log._writer(self._run), name)(*args, **kwargs)
            return self._log.guard.call(write, path=os.path.join(self._log.folder, self._run))
        return guarded


# ---------------------------------------------------------------- the PTQ listener


