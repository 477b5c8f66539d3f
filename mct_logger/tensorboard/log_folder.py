"""`set_log_folder`: from then on every PTQ run (and QuantAnalyzer run) logs to
TensorBoard under `<folder>/<run name>/`, one TensorBoard run per stage.

This module owns the log folder setting, the library's text log and the run
folders; `set_log_folder` registers the TensorBoard listener
(`ptq_log.TensorBoardListener`, made fresh for every PTQ run) with
`mct_logger.listeners`, and the QuantAnalyzer one
(`analysis_log.AnalysisLogListener`, fresh for every analysis). They only
write: every number they log comes from a stage result or an analysis table.
Logging never costs the caller its result: the first
failure of a run's log (disk full, permission denied, a plot that cannot be
drawn) is one warning naming the path and the cause (`run_log.LogGuard`), and
that run's logging stops. Run folders are created atomically
(`new_run_folder`), so concurrent runs never share one or fail on each other.
Imports without TensorFlow or Keras.

Example:

```python
mct_logger.set_log_folder("logs")
model_q, info = mct_logger.keras_post_training_quantization(model, data)
# tensorboard --logdir logs
mct_logger.set_log_folder(None)   # logging off
```
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import logging
import logging.handlers
import os
import re
import sys
import threading

from mct_logger import listeners
from mct_logger.utils.arguments import check_path
from mct_logger.tensorboard.run_log import (
    LogGuard,
    RunLog,
    failure_cause,
    report_log_failure,
)

__all__ = [
    "LogGuard", "RunLog", "get_log_folder", "new_run_folder", "open_run_folder",
    "report_log_failure", "run_folder_name", "set_log_folder",
]

logger = logging.getLogger("mct_logger")

LOG_FILE = "mct_logger.log"
# Model names longer than this become a run folder name of this many characters:
# the start of the name, "_" and a hash of the whole name (names stay apart).
MAX_MODEL_NAME_CHARS = 64
NAME_HASH_CHARS = 8
# Run folder suffixes `_2`, `_3`... tried before giving up (a folder full of runs).
MAX_RUN_SUFFIX = 100_000

_folder: str | None = None
_run_name: str | None = None
_file_handler: logging.Handler | None = None
_console_handler: logging.Handler | None = None
_state_lock = threading.Lock()


def set_log_folder(path: str | os.PathLike | None, run_name: str | None = None) -> None:
    """Logs every following PTQ and QuantAnalyzer run into `path`; None turns logging off.

    Args:
        path: the TensorBoard log folder (`tensorboard --logdir path`), created
            if needed.
        run_name: the folder of the next runs inside `path`: a plain folder
            name, no path separator, not `.` or `..`. Default: the model name
            (shortened with a hash when longer than 64 characters) plus a
            timestamp. An existing folder is never reused: a suffix `_2`,
            `_3`... keeps every run apart, also for runs started at once from
            threads or processes.

    The library's Python log goes to `path/mct_logger.log` as well (recreated if
    removed); its warnings still reach the console as without a log folder,
    unless the application set logging handlers of its own.

    Raises:
        ValueError / TypeError: `run_name` is not a plain folder name.
        NotADirectoryError: `path` is a file.
        IsADirectoryError: `path/mct_logger.log` is a folder (FileExistsError:
            another kind of non-regular file).
        OSError (PermissionError...): the folder or its text log cannot be
            created; the message names which. On any error the previous
            setting stays as it was.
    """
    global _folder, _run_name, _file_handler, _console_handler
    if path is None:
        with _state_lock:
            _remove_handlers()
            _folder, _run_name = None, None
        listeners.set_run_listener_factory(TENSORBOARD, None)
        listeners.set_run_listener_factory(TENSORBOARD, None, kind=listeners.COMPRESSION)
        listeners.set_run_listener_factory(TENSORBOARD, None, kind=listeners.ANALYSIS)
        return
    path = check_path("path", path)
    if run_name is not None:
        run_name = _checked_run_name(run_name, path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(
            f"set_log_folder({path!r}): that path is a file; pass a folder for the logs."
        )
    folder = os.path.abspath(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise type(exc)(
            f"set_log_folder({path!r}): cannot write there ({exc.strerror or exc}); pass a "
            f"folder you can write to. The previous log folder ({_folder}) stays set."
        ) from exc
    file_handler = _open_text_log(path, os.path.join(folder, LOG_FILE))
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    with _state_lock:
        _remove_handlers()
        _folder, _run_name = folder, run_name
        _file_handler, _console_handler = file_handler, _Console()
        logger.addHandler(_file_handler)
        logger.addHandler(_console_handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    listeners.set_run_listener_factory(TENSORBOARD, _tensorboard_listener)
    listeners.set_run_listener_factory(TENSORBOARD, _compression_listener,
                                       kind=listeners.COMPRESSION)
    listeners.set_run_listener_factory(TENSORBOARD, _analysis_listener, kind=listeners.ANALYSIS)
    logger.info("Logging to %s (tensorboard --logdir %s)", _folder, _folder)


TENSORBOARD = "tensorboard"  # the key of the TensorBoard listener's factory


def _tensorboard_listener(run: listeners.RunInfo):
    """A TensorBoard listener for one PTQ run in a fresh run folder; None when
    logging is off or the folder cannot be created (one warning)."""
    from mct_logger.tensorboard.ptq_log import TensorBoardListener

    folder = open_run_folder(run, TensorBoardListener.RETURNED)
    if folder is None:
        return None
    # a search's or recommendation's baseline/recommended run is there to be
    # compared: its graph and layer table only
    compared = run.role is not None
    origin = ": ".join(p for p in (run.origin, run.role) if p) or None
    return TensorBoardListener(folder, logdir=get_log_folder(), origin=origin,
                               stages=TensorBoardListener.COMPARISON_STAGES if compared else None)


def _compression_listener(run: listeners.RunInfo):
    """A TensorBoard listener for one compression run in a fresh run folder (the
    Compression tab); None when logging is off or the folder cannot be made."""
    from mct_logger.tensorboard.compression_log import CompressionTensorBoardListener

    folder = open_run_folder(run, CompressionTensorBoardListener.RETURNED)
    return None if folder is None else CompressionTensorBoardListener(folder)


def _analysis_listener(run: listeners.RunInfo):
    """A TensorBoard analysis listener for one QuantAnalyzer run in a fresh run
    folder; None when logging is off or the folder cannot be created (one warning)."""
    from mct_logger.tensorboard.analysis_log import RETURNED, RUN, AnalysisLogListener

    folder = open_run_folder(run, RETURNED)
    if folder is None:
        return None
    logger.info("QuantAnalyzer: logging to %s", os.path.join(folder, RUN))
    return AnalysisLogListener(folder)


def _remove_handlers() -> None:
    global _file_handler, _console_handler
    for handler in (_file_handler, _console_handler):
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()
    _file_handler = _console_handler = None


def _checked_run_name(run_name, path: str) -> str:
    if not isinstance(run_name, str):
        raise TypeError(
            f"run_name must be a folder name (str) or None, got {type(run_name).__name__}."
        )
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if not run_name or run_name in (".", "..") or "\0" in run_name \
            or any(s in run_name for s in separators):
        raise ValueError(
            f"run_name={run_name!r} is not a plain folder name: runs are written inside the "
            f"log folder, so run_name may hold no '/' or '\\' and may not be '.' or '..'. "
            f"Pass a name such as 'experiment_1', or pass the folder you want to "
            f"set_log_folder instead."
        )
    limit = _name_max(path) - len(f"_{MAX_RUN_SUFFIX}")
    if len(run_name.encode("utf-8")) > limit:
        raise ValueError(
            f"run_name is {len(run_name.encode('utf-8'))} bytes long; folder names here hold "
            f"at most {limit} (with room for a `_k` suffix). Pass a shorter run_name."
        )
    return run_name


def _name_max(path: str) -> int:
    """The longest file name, in bytes, the file system at `path` takes (255 if unknown)."""
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        path = parent if parent != path else ""
    try:
        return int(os.pathconf(path or ".", "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return 255


def _open_text_log(path: str, log_file: str) -> "_TextLog":
    """The text log `log_file` in the folder `path` given to `set_log_folder`; an
    error naming `log_file` when something else holds its name or it cannot be
    opened (a FIFO there would block the open: refused before)."""
    fix = f"remove or rename it, or pass another folder to set_log_folder. The previous " \
        f"log folder ({_folder}) stays set."
    if os.path.exists(log_file) and not os.path.isfile(log_file):
        error = IsADirectoryError if os.path.isdir(log_file) else FileExistsError
        what = "a folder" if os.path.isdir(log_file) else "not a regular file"
        raise error(
            f"set_log_folder({path!r}): the text log {log_file!r} is {what}, so the "
            f"library's log cannot be written there; {fix}"
        )
    try:
        return _TextLog(log_file)
    except OSError as exc:
        raise type(exc)(
            f"set_log_folder({path!r}): cannot write the text log {log_file!r} "
            f"({exc.strerror or exc}); make it writable, {fix}"
        ) from exc


class _TextLog(logging.handlers.WatchedFileHandler):
    """The text log: reopened (recreated) when the file is removed or replaced.

    A write that fails (disk full, folder made read-only, a folder where the
    file was) turns the text log off with one warning, which still reaches the
    console; it never raises into the code that logged.
    """

    _failed = False

    def _open(self):
        os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
        if os.path.exists(self.baseFilename) and not os.path.isdir(self.baseFilename) \
                and not os.path.isfile(self.baseFilename):  # a FIFO's open would block
            raise FileExistsError(errno.EEXIST, "not a regular file", self.baseFilename)
        return super()._open()

    def emit(self, record) -> None:
        if self._failed:
            return
        try:  # reopening (outside logging's own error handling) can fail too
            self.reopenIfNeeded()
            logging.FileHandler.emit(self, record)
        except Exception:  # reported by handleError as the one warning
            self.handleError(record)

    def handleError(self, record) -> None:
        global _file_handler
        if self._failed:
            return
        self._failed = True
        cause = sys.exc_info()[1]
        logger.removeHandler(self)
        if _file_handler is self:
            _file_handler = None
        try:
            self.close()
        except OSError:
            pass  # the file was already unwritable; the warning below says so
        logger.warning(
            "The text log %s cannot be written (%s: %s); it is off from now on. TensorBoard "
            "logging goes on, and warnings still reach the console.",
            self.baseFilename, type(cause).__name__, failure_cause(cause),
        )


class _Console(logging.Handler):
    """Warnings to stderr, exactly as Python shows them when no handler is set
    (`logging.lastResort`), for as long as the application set no handler of
    its own on the "mct_logger" logger or its parents: the text log must not
    silence the console."""

    def __init__(self):
        super().__init__(logging.WARNING)

    def emit(self, record) -> None:
        last_resort = logging.lastResort
        if last_resort is None or record.levelno < last_resort.level:
            return
        current = logger
        while current is not None:
            if any(h is not self and not isinstance(h, (_TextLog, _Console))
                   for h in current.handlers):
                return  # the application's handlers show it
            current = current.parent if current.propagate else None
        last_resort.handle(record)


def get_log_folder() -> str | None:
    """The folder set by `set_log_folder`, or None when logging is off."""
    return _folder


def new_run_folder(run: listeners.RunInfo) -> str | None:
    """A fresh folder for one run under the log folder (None when logging is off):
    `run.run_name` when the engine names the run, else set_log_folder's run_name,
    else `<model>_<time>`.

    Created atomically: callers racing for one name (threads, processes) each
    get their own folder (`name`, `name_2`...), never an error. Model names
    longer than MAX_MODEL_NAME_CHARS are shortened with a hash.

    Raises:
        OSError: the folder cannot be created (permissions, disk full...).
    """
    with _state_lock:
        folder, run_name = _folder, _run_name
    if folder is None:
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = run_folder_name(run.run_name) if run.run_name else \
        run_name or f"{run_folder_name(run.model_name)}_{stamp}"
    os.makedirs(folder, exist_ok=True)  # it may have been removed since set_log_folder
    for k in range(1, MAX_RUN_SUFFIX + 1):
        candidate = os.path.join(folder, base if k == 1 else f"{base}_{k}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(
        errno.EEXIST, f"every run folder {base}, {base}_2 ... {base}_{MAX_RUN_SUFFIX} exists; "
        "pass another run_name to set_log_folder", os.path.join(folder, base),
    )


def open_run_folder(run: listeners.RunInfo, returned: str) -> str | None:
    """`new_run_folder`, or None with one warning when it cannot be created.

    `returned` says what the caller still delivers (e.g. "PTQ returns the
    quantized model"); it ends the warning.
    """
    try:
        return new_run_folder(run)
    except OSError as exc:
        report_log_failure(get_log_folder(), exc, returned)
        return None


def run_folder_name(model_name: str) -> str:
    """A folder name for a model: characters outside `A-Za-z0-9_.-` become `_`; a
    name longer than MAX_MODEL_NAME_CHARS keeps its start plus a short hash."""
    safe = _safe(model_name)
    if len(safe) <= MAX_MODEL_NAME_CHARS:
        return safe
    digest = hashlib.sha1(model_name.encode("utf-8")).hexdigest()[:NAME_HASH_CHARS]
    return f"{safe[:MAX_MODEL_NAME_CHARS - NAME_HASH_CHARS - 1]}_{digest}"


def _safe(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip(".")
    return safe or "model"
