"""Is a run that says "running" still running? Process stamps, heartbeats, signals.

A long run (a QuantAnalyzer analysis, a compression sweep) writes its status
into the tables it publishes and, for the analyzer, into `summary.json`. A
process killed with SIGKILL (or a machine that went down) never writes its
end, so the status alone would read "running" forever. Each such table
therefore carries a stamp (`stamp`): the process id, the host name and a
heartbeat (Unix time), refreshed at least every `HEARTBEAT_SECONDS` by a
`Heartbeat` thread while the run lives. A reader calls `check`:

- the table's host is this host and its process is gone (or a zombie):
  interrupted ("process 123 on host stopped");
- else no heartbeat for `STALE_SECONDS` (10 min, ten missed beats): interrupted
  ("no heartbeat for 12 min"), the only sign a reader on another host has;
- else still running.

SIGTERM and SIGINT become a `KeyboardInterrupt` inside `interrupt_on_signals`,
so a run stopped by `kill` or Ctrl-C goes through its "interrupted" path and
marks itself so before the process exits. Inside `deferred_interrupt()` (an
evaluation: the user's callback running TensorFlow) the first signal waits for
the block to end: an exception raised at an arbitrary point of TensorFlow's
Python code (a finalizer half run, an iterator torn down under its prefetch
threads) crashed a process natively ("free(): invalid next size") before it
could mark itself. A second signal stops at once.

Example:

```python
table = stamp({"status": "running", "evaluations_done": 20})
check(table)        # None while the process lives and beats
```
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

__all__ = ["HEARTBEAT_SECONDS", "STALE_SECONDS", "Heartbeat", "check", "deferred_interrupt",
           "interrupt_on_signals", "process_alive", "running", "stamp"]

# How often a running run refreshes its heartbeat, and how long without one
# makes a reader call it interrupted.
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 600.0


def stamp(table: dict, now: float | None = None) -> dict:
    """`table` with "pid", "host" and "heartbeat" (Unix seconds) set (in place; returned)."""
    table["pid"] = os.getpid()
    table["host"] = socket.gethostname()
    table["heartbeat"] = round(time.time() if now is None else now, 3)
    return table


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host runs (a zombie, dead but not yet reaped,
    does not; a process of another user does)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): the kill check stands


def check(table: dict, now: float | None = None, stale_seconds: float = STALE_SECONDS):
    """Why a table whose status is "running" is not running any more, or None.

    Returns:
        None when the status is not "running", or the run still looks alive (or
        the table has no stamp: written before stamps existed, nothing to go
        on); else `{"reason": str, "heartbeat": float | None}`.
    """
    if not isinstance(table, dict) or table.get("status") != "running":
        return None
    now = time.time() if now is None else now
    heartbeat = table.get("heartbeat")
    heartbeat = float(heartbeat) if isinstance(heartbeat, (int, float)) and \
        not isinstance(heartbeat, bool) else None
    pid, host = table.get("pid"), table.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() \
            and not process_alive(pid):
        return {"reason": f"process {pid} on {host} stopped", "heartbeat": heartbeat}
    if heartbeat is not None and now - heartbeat > stale_seconds:
        return {"reason": f"no heartbeat for {_minutes(now - heartbeat)} (a running run beats "
                          f"every {HEARTBEAT_SECONDS:.0f} s)", "heartbeat": heartbeat}
    return None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class Heartbeat:
    """Calls `beat()` every `interval` seconds on a daemon thread until `stop()`.

    `beat` runs on that thread: it must take the locks its writes need. An
    exception in it stops the heartbeat (the run itself goes on).
    """

    def __init__(self, beat, interval: float = HEARTBEAT_SECONDS):
        self._beat, self._interval = beat, interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mct_logger_heartbeat",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._beat()
            except Exception:  # a heartbeat never fails the run
                return

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self._interval + 5)


# main thread only (signal handlers run there): how deep it is in deferred_interrupt
# blocks, and the signal that came in meanwhile
_deferring = 0
_pending: str | None = None


def _raise_interrupt(signum, frame):
    global _pending
    name = signal.Signals(signum).name
    if _deferring and _pending is None:
        _pending = name  # raised when the evaluation returns
        return
    _pending = None
    raise KeyboardInterrupt(f"stopped by {name}")


def _forget_pending() -> None:
    global _pending
    _pending = None


@contextlib.contextmanager
def deferred_interrupt():
    """A stop signal that arrives inside the block (in the main thread, under
    `interrupt_on_signals`) is raised as KeyboardInterrupt when the block ends,
    unless the block is already raising; a second one is raised at once. Wrap
    work that must not be torn mid-way, such as one evaluation."""
    global _deferring, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring += 1
    try:
        yield
    except BaseException:
        _pending = None  # the block stops anyway
        raise
    finally:
        _deferring -= 1
    if _pending is not None and not _deferring:
        name, _pending = _pending, None
        raise KeyboardInterrupt(f"stopped by {name}")


@contextlib.contextmanager
def interrupt_on_signals():
    """Inside the block, SIGTERM (and SIGINT where its handler is the system's
    default, not Python's) raise KeyboardInterrupt in the main thread, so the
    run records "interrupted" before the process exits; the previous handlers
    come back after. A handler the application set is left alone, and outside
    the main thread (signals only reach it) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                previous[signum] = signal.signal(signum, _raise_interrupt)
        except (ValueError, OSError):  # not settable here
            pass
    try:
        yield
    finally:
        _forget_pending()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def running(beat, interval: float = HEARTBEAT_SECONDS):
    """`interrupt_on_signals` with a `Heartbeat(beat, interval)` beating inside the
    block (stopped, and its last beat done, when the block ends)."""
    heartbeat = Heartbeat(beat, interval)
    try:
        with interrupt_on_signals():
            yield heartbeat
    finally:
        heartbeat.stop()
