"""`set_log_folder`: from then on every PTQ run (and QuantAnalyzer run) logs to
TensorBoard under `<folder>/<run name>/`, one TensorBoard run per stage.

The listener here only writes: every number it logs comes from a stage result.

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
import logging
import os
import re

from mct_logger.events import EventWriter

logger = logging.getLogger("mct_logger")

LOG_FILE = "mct_logger.log"

_folder: str | None = None
_run_name: str | None = None
_file_handler: logging.FileHandler | None = None


def set_log_folder(path: str | os.PathLike | None, run_name: str | None = None) -> None:
    """Logs every following PTQ and QuantAnalyzer run into `path`; None turns logging off.

    Args:
        path: the TensorBoard log folder (`tensorboard --logdir path`).
        run_name: the folder of the next runs inside `path`; default the model
            name plus a timestamp. An existing folder is never reused: a suffix
            `_2`, `_3`... keeps every run apart.

    The library's Python log goes to `path/mct_logger.log` as well.
    """
    global _folder, _run_name, _file_handler
    if _file_handler is not None:
        logger.removeHandler(_file_handler)
        _file_handler.close()
        _file_handler = None
    if path is None:
        _folder, _run_name = None, None
        return
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(
            f"set_log_folder({path!r}): that path is a file; pass a folder for the logs."
        )
    os.makedirs(path, exist_ok=True)
    _folder, _run_name = os.path.abspath(path), run_name
    _file_handler = logging.FileHandler(os.path.join(_folder, LOG_FILE), encoding="utf-8")
    _file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(_file_handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.info("Logging to %s (tensorboard --logdir %s)", _folder, _folder)


def get_log_folder() -> str | None:
    """The folder set by `set_log_folder`, or None when logging is off."""
    return _folder


def new_run_folder(model_name: str) -> str | None:
    """A fresh folder for one run under the log folder (None when logging is off)."""
    if _folder is None:
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = _run_name or f"{_safe(model_name)}_{stamp}"
    candidate, k = os.path.join(_folder, base), 1
    while os.path.exists(candidate):
        k += 1
        candidate = os.path.join(_folder, f"{base}_{k}")
    os.makedirs(candidate)
    return candidate


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"


class RunLog:
    """The event writers of one run folder, one per TensorBoard run, all closed together."""

    def __init__(self, folder: str):
        self.folder = folder
        self._writers: dict[str, EventWriter] = {}

    def writer(self, run: str) -> EventWriter:
        """The writer of TensorBoard run `<folder>/<run>` (created on first use)."""
        if run not in self._writers:
            self._writers[run] = EventWriter(os.path.join(self.folder, run))
        return self._writers[run]

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
