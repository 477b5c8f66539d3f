"""Progress on the console and the pace of live updates.

`progress_bar` is a Keras progress bar labelled with what it counts; `Throttle`
says when a growing table is due to go out again (at most every
`LIVE_INTERVAL_SECONDS`).

Example:

```python
bar = progress_bar(10, "calibration batch")
live = Throttle()
for k in range(10):
    bar.update(k + 1)
    if live.due():
        publish()
```
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["LIVE_INTERVAL_SECONDS", "PlainProgress", "Throttle", "progress_bar"]

logger = logging.getLogger("mct_logger")

# While long work runs, growing tables reach listeners at most this often.
LIVE_INTERVAL_SECONDS = 1.0


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


def progress_bar(total: int, unit_name: str, stateful_metrics=None):
    """Progress of `total` `unit_name`s: `update(done)` after each.

    On a terminal or in a notebook, a live Keras progress bar. Elsewhere (nohup,
    CI, a pipe, a log file), where the live bar would fill the file with carriage
    returns and ANSI colour codes and Keras's quiet mode prints nothing until the
    end, plain lines (`PlainProgress`). Either way the "mct_logger" log (and so
    `mct_logger.log` under a log folder) gets the plain lines. `stateful_metrics`
    names the `update(done, values)` values the live bar shows as they are, not
    averaged (Keras' Progbar).
    """
    live = (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()) or "ipykernel" in sys.modules
    if not live:
        return PlainProgress(total, unit_name)
    import keras

    return _LoggedProgbar(keras.utils.Progbar(total, verbose=1, unit_name=unit_name,
                                              stateful_metrics=stateful_metrics),
                          PlainProgress(total, unit_name, stream=None))


class PlainProgress:
    """Plain progress lines: "QuantAnalyzer evaluation 27 of 268 (10%), 1.4 min
    elapsed, about 13 min left", one each time the count has moved on by 10% of
    `total` and 30 s have passed since the last line (whichever comes later),
    and one at the end; each to `stream` (sys.stdout when written, by default;
    None for none) and
    to the "mct_logger" log at INFO level.
    """

    STEP = 0.1  # of total
    SECONDS = 30.0

    STDOUT = "stdout"  # the stream: whatever sys.stdout is when a line goes out

    def __init__(self, total: int, unit_name: str, stream=STDOUT):
        self.total, self.unit_name = max(int(total), 1), unit_name
        self.stream = stream
        self.started = self._last_time = time.time()
        self._last_done = 0
        self.lines: list[str] = []

    def update(self, current, values=None, finalize=None) -> None:
        current = int(current)
        now = time.time()
        done = current >= self.total
        moved = current - self._last_done >= self.STEP * self.total
        if not done and not (moved and now - self._last_time >= self.SECONDS):
            return
        if done and self._last_done >= self.total:
            return
        self._last_done, self._last_time = current, now
        self._emit(self.text(current, now))

    def text(self, current: int, now: float) -> str:
        elapsed = now - self.started
        line = (f"{self.unit_name}: {current} of {self.total} ({current / self.total:.0%}), "
                f"{_duration(elapsed)} elapsed")
        if 0 < current < self.total:
            line += f", about {_duration(elapsed / current * (self.total - current))} left"
        return line

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        if self.stream is not None:
            print(line, file=sys.stdout if self.stream == self.STDOUT else self.stream,
                  flush=True)
        logger.info("%s", line)


class _LoggedProgbar:
    """A live Keras bar on the console, the plain lines in the log only."""

    def __init__(self, bar, plain: PlainProgress):
        self.bar, self.plain = bar, plain

    def update(self, current, values=None, finalize=None) -> None:
        self.bar.update(current, values=values, finalize=finalize)
        self.plain.update(current)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
