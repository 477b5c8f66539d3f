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

import sys
import time

__all__ = ["LIVE_INTERVAL_SECONDS", "Throttle", "progress_bar"]

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


def progress_bar(total: int, unit_name: str):
    """A Keras progress bar of `total` `unit_name`s on the console: live on a
    terminal or in a notebook; elsewhere (a log file, CI, a pipe) one plain line
    when done, since the live bar would fill the file with carriage returns and
    ANSI colour codes (Keras takes any POSIX stdout for a terminal)."""
    import keras

    live = (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()) or "ipykernel" in sys.modules
    return keras.utils.Progbar(total, verbose=1 if live else 2, unit_name=unit_name)
