"""The process's address-space budget under `ulimit -v` (RLIMIT_AS), and what
mct-logger does to stay inside it.

Under an address-space limit every reservation counts, used or not. Per thread
these are: its stack (glibc reserves RLIMIT_STACK, usually 8 MiB, for each new
thread) and, for a thread that allocates, a malloc arena: glibc gives threads up
to 8 x cores arenas, and each reserves 64 MiB (HEAP_MAX_SIZE) of address space.
TensorFlow's intra-/inter-op pools, the calibration prefetch thread, the
similarity thread and the TensorBoard writer thread each add one, so logging
(two more threads) could push a run past the limit, where glibc aborts the
process natively ("cannot allocate memory for thread-local data") or TensorFlow
dies, taking the model with it.

With a finite limit, `bound_per_thread_memory` (called by PTQ before any stage)
caps glibc's arenas at `ARENA_MAX` (what MALLOC_ARENA_MAX does, via mallopt;
arenas are then shared, never a new 64 MiB reservation per thread) and
`thread_stacks` gives mct-logger's own threads `THREAD_STACK` bytes of stack.
Optional work then degrades before the budget runs out, cheapest loss first:

    headroom = RLIMIT_AS - VmSize + reserved but free (arena tails, free chunks)
    headroom < THREAD_RESERVE     -> no extra thread: the stage runs inline
    RLIMIT_AS - VmSize < a view's working set + THREAD_RESERVE
                                  -> the view runs after the work it would
                                     overlap, not beside it (a lower peak)
    headroom (for eager TensorFlow views: also RLIMIT_AS - VmSize) < the view's
    working set                   -> the view is skipped, one warning

Without a limit (RLIM_INFINITY), or off Linux/glibc, nothing changes.

Example:

```python
bound_per_thread_memory()
if afford("The similarity analysis", working_set_bytes(graph, 20)):
    ...  # else skipped, with a warning naming headroom_text()
```
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import logging
import threading

logger = logging.getLogger("mct_logger")

MIB = 1 << 20
ARENA_MAX = 2                   # malloc arenas under a limit (glibc's M_ARENA_MAX)
THREAD_STACK = 4 * MIB          # stack of mct-logger's own threads under a limit
THREAD_RESERVE = 96 * MIB       # a new thread: stack, a possible arena, its working set
_M_ARENA_MAX = -8               # mallopt parameter number (malloc.h)
ARENA_HEAP = 64 * MIB           # glibc's HEAP_MAX_SIZE on 64-bit: one thread arena's heap
_bounded = False
_lock = threading.Lock()
_stack_lock = threading.Lock()


def limit() -> int | None:
    """RLIMIT_AS in bytes, or None when unlimited (or unknown on this platform)."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY or soft <= 0 else int(soft)


def in_use() -> int | None:
    """Bytes of address space the process holds now (VmSize), or None if unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def reserved_spare() -> int:
    """Bytes reserved already but free to use without new address space: the unused
    tails of glibc's thread arenas (the PROT_NONE rest of each 64 MiB heap, which
    the arena grows into) plus the free chunks malloc holds (mallinfo2)."""
    spare = 0
    try:
        with open("/proc/self/maps", encoding="ascii") as f:
            rows = [line.split() for line in f]
    except OSError:
        rows = []
    heap_start = None
    for row in rows:
        start, end = (int(v, 16) for v in row[0].split("-"))
        anonymous = len(row) < 6
        if anonymous and row[1] == "---p" and heap_start is not None \
                and end - heap_start == ARENA_HEAP:
            spare += end - start
        heap_start = start if anonymous and row[1].startswith("rw") \
            and start % ARENA_HEAP == 0 else None
    return spare + _free_chunks()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _free_chunks() -> int:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return int(libc.mallinfo2().fordblks)
    except (OSError, AttributeError):
        return 0


def headroom() -> int | None:
    """Bytes still usable under the limit (never reserved, or reserved and free);
    None without a limit (or unknown)."""
    cap, used = limit(), in_use()
    return None if cap is None or used is None else cap - used + reserved_spare()


def affordable(nbytes: int) -> bool:
    """Whether `nbytes` more address space fits under the limit (always, without one)."""
    room = headroom()
    return room is None or room >= nbytes


def affordable_alongside(nbytes: int) -> bool:
    """Whether `nbytes` fit in address space not reserved yet (RLIMIT_AS - VmSize),
    without counting reserved-but-free memory: work running alongside other work
    (a thread beside the model build) cannot count on free chunks the other may
    take first, nor on fragments too small for its large buffers (always True
    without a limit)."""
    cap, used = limit(), in_use()
    return cap is None or used is None or cap - used >= nbytes


def headroom_text() -> str:
    room, cap = headroom(), limit()
    return f"{room / MIB:.0f} MiB of the {cap / MIB:.0f} MiB address-space limit (ulimit -v) left"


def afford(what: str, nbytes: int, unreserved: bool = False) -> bool:
    """Whether optional work `what` fits (`affordable`; with `unreserved`, also in
    address space not reserved yet, `affordable_alongside`: for work whose large
    buffers need fresh mappings, e.g. TensorFlow's eager kernels, which crash
    natively rather than raise when one fails); if not, one warning saying it is
    skipped, naming the headroom, so the run keeps its model."""
    if affordable(nbytes) and (not unreserved or affordable_alongside(nbytes)):
        return True
    if affordable(nbytes):  # the room is there, but only in reserved, fragmented memory
        cap, used = limit(), in_use()
        logger.warning("%s is skipped: only %.0f MiB of the %.0f MiB address-space limit "
                       "(ulimit -v) are not reserved yet, it needs about %.0f MiB in fresh "
                       "mappings (its large buffers cannot use the %.0f MiB free inside "
                       "memory already reserved); PTQ goes on and returns the quantized "
                       "model. Raise the limit to get it.", what, (cap - used) / MIB,
                       cap / MIB, nbytes / MIB, reserved_spare() / MIB)
        return False
    logger.warning("%s is skipped: only %s, it needs about %.0f MiB; PTQ goes on and returns "
                   "the quantized model. Raise the limit to get it.", what, headroom_text(),
                   nbytes / MIB)
    return False


def bound_per_thread_memory() -> bool:
    """Under a finite limit, caps glibc's malloc arenas at ARENA_MAX (once per process);
    returns whether the cap is in force. Arenas already made stay; no new one is
    made past the cap, so no thread reserves another 64 MiB."""
    global _bounded
    with _lock:
        if _bounded or limit() is None:
            return _bounded
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            ok = libc is not None and hasattr(libc, "mallopt") and \
                libc.mallopt(_M_ARENA_MAX, ARENA_MAX) == 1
        except OSError:
            ok = False
        _bounded = bool(ok)
        if ok:
            logger.info("Address-space limit of %.0f MiB: malloc arenas capped at %d, "
                        "mct_logger threads get %d MiB stacks.", limit() / MIB, ARENA_MAX,
                        THREAD_STACK // MIB)
        return _bounded


@contextlib.contextmanager
def thread_stacks():
    """Threads started inside get THREAD_STACK bytes of stack under a limit (the
    process default, RLIMIT_STACK, otherwise)."""
    if limit() is None:
        yield
        return
    with _stack_lock:
        try:
            previous = threading.stack_size(THREAD_STACK)
        except (ValueError, RuntimeError):
            previous = None
        try:
            yield
        finally:
            if previous is not None:
                threading.stack_size(previous)


class _SmallStackPool(concurrent.futures.ThreadPoolExecutor):
    """A one-thread pool whose thread (made at the first submit) gets `thread_stacks`."""

    def submit(self, fn, /, *args, **kwargs):
        with thread_stacks():
            return super().submit(fn, *args, **kwargs)


class _Inline(concurrent.futures.Executor):
    """Runs each call at once in the caller's thread: no thread, no arena, no stack."""

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed over as the Future's, as a pool would
            future.set_exception(exc)
        return future


def worker(name: str) -> concurrent.futures.Executor:
    """A one-thread executor for background work of mct-logger (e.g. TensorBoard
    writing); under a limit with less than THREAD_RESERVE left, one that runs the
    work inline instead (fewer threads before any view is given up)."""
    if not affordable(THREAD_RESERVE):
        logger.info("%s runs inline, not on a thread: %s.", name, headroom_text())
        return _Inline()
    return _SmallStackPool(max_workers=1, thread_name_prefix=name)


def start_thread(thread: threading.Thread) -> bool:
    """Starts `thread` (with `thread_stacks`); False, not started, when less than
    THREAD_RESERVE is left or the thread cannot be made ("can't start new thread"):
    the caller then does the work inline."""
    if not affordable(THREAD_RESERVE):
        logger.info("%s runs inline, not on a thread: %s.", thread.name, headroom_text())
        return False
    try:
        with thread_stacks():
            thread.start()
    except RuntimeError as exc:
        logger.info("%s runs inline, not on a thread: %s.", thread.name, exc)
        return False
    return True
