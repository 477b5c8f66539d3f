"""`set_log_folder`: from then on every PTQ run (and QuantAnalyzer run) logs to
TensorBoard under `<folder>/<run name>/`, one TensorBoard run per stage.

The listener here only writes: every number it logs comes from a stage result.
Logging never costs the caller its result: the first failure of a run's log
(disk full, permission denied, a plot that cannot be drawn) is one warning
naming the path and the cause (`LogGuard`), and that run's logging stops.
Run folders are created atomically (`new_run_folder`), so concurrent runs never
share one or fail on each other.

Example:

```python
mct_logger.set_log_folder("logs")
model_q, info = mct_logger.keras_post_training_quantization(model, data)
# tensorboard --logdir logs
mct_logger.set_log_folder(None)   # logging off
```
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import errno
import hashlib
import logging
import logging.handlers
import os
import re
import sys
import threading

import numpy as np

from mct_logger.events import EventWriter

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
        OSError (PermissionError...): the folder or its text log cannot be
            created. On any error the previous setting stays as it was.
    """
    global _folder, _run_name, _file_handler, _console_handler
    if path is None:
        with _state_lock:
            _remove_handlers()
            _folder, _run_name = None, None
        return
    path = os.fspath(path)
    if run_name is not None:
        run_name = _checked_run_name(run_name, path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(
            f"set_log_folder({path!r}): that path is a file; pass a folder for the logs."
        )
    folder = os.path.abspath(path)
    try:
        os.makedirs(folder, exist_ok=True)
        file_handler = _TextLog(os.path.join(folder, LOG_FILE))
    except OSError as exc:
        raise type(exc)(
            f"set_log_folder({path!r}): cannot write there ({exc.strerror or exc}); pass a "
            f"folder you can write to. The previous log folder ({_folder}) stays set."
        ) from exc
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    with _state_lock:
        _remove_handlers()
        _folder, _run_name = folder, run_name
        _file_handler, _console_handler = file_handler, _Console()
        logger.addHandler(_file_handler)
        logger.addHandler(_console_handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.info("Logging to %s (tensorboard --logdir %s)", _folder, _folder)


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


class _TextLog(logging.handlers.WatchedFileHandler):
    """The text log: reopened (recreated) when the file is removed or replaced.

    A write that fails (disk full, folder made read-only, a folder where the
    file was) turns the text log off with one warning, which still reaches the
    console; it never raises into the code that logged.
    """

    _failed = False

    def _open(self):
        os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
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
            self.baseFilename, type(cause).__name__, _cause(cause),
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


_named_runs = threading.local()


@contextlib.contextmanager
def named_runs(name: str):
    """Inside the block, this thread's runs are logged under the folder `name`
    (`name_2`... when taken) instead of set_log_folder's run_name or the model
    name. Yields the list the created folders are appended to."""
    name = _checked_run_name(name, _folder or ".")
    previous = getattr(_named_runs, "value", None)
    _named_runs.value = (name, [])
    try:
        yield _named_runs.value[1]
    finally:
        _named_runs.value = previous


def new_run_folder(model_name: str) -> str | None:
    """A fresh folder for one run under the log folder (None when logging is off).

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
    named = getattr(_named_runs, "value", None)
    base = (named[0] if named else None) or run_name or f"{run_folder_name(model_name)}_{stamp}"
    os.makedirs(folder, exist_ok=True)  # it may have been removed since set_log_folder
    for k in range(1, MAX_RUN_SUFFIX + 1):
        candidate = os.path.join(folder, base if k == 1 else f"{base}_{k}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        if named:
            named[1].append(candidate)
        return candidate
    raise FileExistsError(
        errno.EEXIST, f"every run folder {base}, {base}_2 ... {base}_{MAX_RUN_SUFFIX} exists; "
        "pass another run_name to set_log_folder", os.path.join(folder, base),
    )


def open_run_folder(model_name: str, returned: str) -> str | None:
    """`new_run_folder`, or None with one warning when it cannot be created.

    `returned` says what the caller still delivers (e.g. "PTQ returns the
    quantized model"); it ends the warning.
    """
    try:
        return new_run_folder(model_name)
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


def _cause(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def report_log_failure(folder: str | None, exc: BaseException, returned: str,
                       path: str | None = None) -> None:
    """The one warning of a failed log: the path, the cause, and what is still returned."""
    path = getattr(exc, "filename", None) or path or folder
    logger.warning(
        "TensorBoard logging to %s stopped: cannot write %s (%s: %s). %s; the logs written "
        "so far stay readable.", folder, path, type(exc).__name__, _cause(exc), returned,
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

SCALAR_CHUNK = 1000  # loaders keep 1000 scalar steps per tag
HISTOGRAM_CHUNK = 100  # and 100 histogram steps per tag (the Rust loader; Python keeps 500)
RESOURCES_TAG = "Resources"
# Per-channel histograms are redrawn with this many bins over each channel's own
# range: enough to see a channel's shape in the offset view, and it keeps a
# MobileNet's ~10k channel histograms to a few MB.
PER_CHANNEL_BINS = 16


def rebin(edges: np.ndarray, counts: np.ndarray, lo, hi, bins: int):
    """Histograms (C, B) on even per-row grids, redrawn on `bins` even bins over [lo, hi].

    Counts are split by interpolating each row's cumulative counts, so totals are kept.
    """
    edges = np.asarray(edges, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    rows, old_bins = counts.shape
    lo = np.asarray(lo, dtype=np.float64).reshape(rows, 1)
    hi = np.maximum(np.asarray(hi, dtype=np.float64).reshape(rows, 1), lo + 1e-12)
    new_edges = lo + (hi - lo) * np.linspace(0.0, 1.0, bins + 1)
    start, width = edges[:, :1], np.maximum(edges[:, -1:] - edges[:, :1], 1e-300)
    position = np.clip((new_edges - start) / width * old_bins, 0.0, old_bins)
    index = np.minimum(position.astype(np.int64), old_bins - 1)
    cumulative = np.concatenate([np.zeros((rows, 1)), np.cumsum(counts, axis=1)], axis=1)
    at = (np.take_along_axis(cumulative, index, axis=1)
          + (position - index) * np.take_along_axis(counts, index, axis=1))
    at[:, 0], at[:, -1] = 0.0, cumulative[:, -1]  # every count lies within [min, max]
    return new_edges, np.diff(at, axis=1)


def _chunks(count: int, size: int):
    for start in range(0, count, size):
        yield start, min(start + size, count)


def _chunk_tag(base: str, start: int, stop: int, count: int, size: int) -> str:
    return base if count <= size and start == 0 else f"{base} [{start}-{stop - 1}]"


class TensorBoardListener:
    """Turns PTQ stage results into TensorBoard runs under one run folder.

    Stage k becomes the TensorBoard run `NN_<stage>` (zero-padded, so runs sort
    in stage order) with the graph at that stage, its per-node memory under the
    "Resources" tag and a text summary; stages add their own data (histograms,
    per-channel scalars, similarity images, plugin payloads).

    Logging never fails the PTQ run: the first failure (disk full, permission
    denied, a plot that cannot be drawn...) is one warning naming the path and
    the cause; logging then stops for this run and PTQ returns the model.
    """

    RETURNED = "PTQ goes on and returns the quantized model"

    def __init__(self, folder: str):
        self.guard = LogGuard(folder, self.RETURNED)
        self.log = RunLog(folder)
        self.folder = folder
        self.plan = None
        self.encodings = None
        self.graph_run = None
        self.stage_index = 0
        # Writing runs in one worker thread, in stage order, while the engine
        # goes on with the next stage; close() waits for it.
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="mct_logger_tensorboard"
        )
        self._pending: list[concurrent.futures.Future] = []

    def __call__(self, stage: str, graph, result) -> None:
        run = f"{self.stage_index:02d}_{stage}"
        self.stage_index += 1
        if stage == "quantized_model":
            self.graph_run = run  # where the layer table's rows link to in the Graphs tab
        if getattr(result, "plan", None) is not None:
            self.plan = result.plan
        if getattr(result, "encodings", None) is not None:
            self.encodings = result.encodings
        if self.guard.failure is None:
            self._pending.append(
                self._worker.submit(self._write, run, stage, graph, result, self.plan,
                                    self.encodings)
            )

    def _write(self, run, stage, graph, result, plan, encodings) -> None:
        self.guard.call(self._write_stage, run, stage, graph, result, plan, encodings,
                        path=os.path.join(self.folder, run))

    def _write_stage(self, run, stage, graph, result, plan, encodings) -> None:
        writer = self.log.writer(run)
        memory = self._write_graph(writer, graph, plan, encodings)
        writer.text("summary", _stage_summary(stage, graph, result, memory, plan))
        handler = getattr(self, f"_on_{stage}", None)
        if handler is not None:
            handler(run, graph, result)
        self.log.flush()  # what is logged so far stays readable if a later stage fails

    def close(self, error: BaseException | None = None) -> None:
        """Waits for every pending write, records a PTQ failure, closes the files.

        Never raises: a failed write was already reported as the one warning.
        """
        self._worker.shutdown(wait=True)
        if error is not None and self.stage_index:
            run = f"{self.stage_index:02d}_failed"
            self.guard.call(
                lambda: self.log.writer(run).text(
                    "summary", f"**Quantization failed** after {self.stage_index} "
                               f"stage(s):\n\n`{type(error).__name__}: {error}`"),
                path=os.path.join(self.folder, run),
            )
        try:
            self.log.close()
        except OSError as exc:
            self.guard.fail(exc)

    # ------------------------------------------------------------ graph + memory

    def _write_graph(self, writer: EventWriter, graph, plan, encodings) -> dict:
        from mct_logger import events, ptq

        memory = ptq.graph_memory(graph, plan)
        graph_def = events.graph_pb2.GraphDef()
        for node in graph:
            attrs = _node_attrs(node, plan.get(node.name) if plan else None, memory[node.name])
            if encodings is not None:
                _attach_encodings(attrs, encodings.get(node.name))
            inputs = [
                events.graph_node_name(r.node) + (f":{r.index}" if r.index else "")
                for r in node.inputs
            ]
            graph_def.node.append(events.node_def(
                events.graph_node_name(node.name), node.layer_class, inputs, attrs,
                node.output_shapes,
            ))
        writer.graph(
            graph_def,
            {events.graph_node_name(n): m["total"] for n, m in memory.items()},
            RESOURCES_TAG,
        )
        return memory

    # ------------------------------------------------------------ stage extras

    def _on_statistics_collection(self, run, graph, result):
        statistics = getattr(result, "statistics", None)
        if not statistics:
            return
        writer = self.log.writer(run)
        per_stat = {k: self.log.writer(f"{run}/{k}") for k in ("min", "max", "mean")}
        for node, stats in statistics.items():
            edges, counts = stats.histogram(per_channel=False)
            writer.histogram(f"activations/{node}", edges[0], counts[0], total=stats.elements)
            channel_edges, channel_counts = rebin(
                *stats.histogram(per_channel=True), stats.min, stats.max, PER_CHANNEL_BINS
            )
            channels = len(channel_counts)
            for start, stop in _chunks(channels, HISTOGRAM_CHUNK):
                tag = _chunk_tag(f"activations_per_channel/{node}", start, stop, channels,
                                 HISTOGRAM_CHUNK)
                for c in range(start, stop):
                    writer.compact_histogram(tag, channel_edges[c], channel_counts[c], step=c)
            values = {"min": stats.min, "max": stats.max, "mean": stats.mean}
            for start, stop in _chunks(channels, SCALAR_CHUNK):
                tag = _chunk_tag(f"channel_stats/{node}", start, stop, channels, SCALAR_CHUNK)
                for key, array in values.items():
                    for c in range(start, stop):
                        per_stat[key].scalar(tag, array[c], step=c, timed=False)

    def _on_cross_layer_equalization(self, run, graph, result):
        """The CLE dashboard's data: weight ranges (with CLE off too), scale factors, folds."""
        from mct_logger.tb_plugin import metadata
        from mct_logger.tb_plugin.summary import payload_summary

        tables = result.to_tables() if hasattr(result, "to_tables") else {}
        writer = self.log.writer(run)
        for kind, table in tables.items():
            writer.add_summary(payload_summary(metadata.CLE, kind, kind, table))

    def _on_similarity_analysis(self, run, graph, result):
        from mct_logger import events
        from mct_logger.tb_plugin import metadata
        from mct_logger.tb_plugin.summary import payload_summary

        if not hasattr(result, "nodes"):
            return  # skipped: the summary says why
        writer = self.log.writer(run)
        writer.add_summary(payload_summary(
            metadata.QUANT_ANALYZER, "layer_table", "layer_table",
            layer_table(graph, self.plan, self.encodings, result, self.graph_run)))
        writer.add_summary(payload_summary(
            metadata.CLE, "weight_quantization", "weight_quantization", {"rows": result.weights}))
        for node, (edges, counts) in result.quantized_histograms.items():
            writer.histogram(f"activations/{node}", edges, counts, total=counts.sum())
        if not result.nodes:
            writer.text("nodes", "No node is quantized (every layer stays in float): "
                                 "nothing to compare.")
            return
        # An SQNR that is not a number (a float output holding Inf or NaN) is left
        # out of the charts and named in the table; never logged as NaN.
        undefined = sorted({n for values in (result.sqnr_accumulated_db, result.sqnr_isolated_db)
                            for n, v in values.items() if not np.isfinite(v)})
        for path, values in (("accumulated", result.sqnr_accumulated_db),
                             ("isolated", result.sqnr_isolated_db)):
            sqnr_writer = self.log.writer(f"{run}/{path}")
            described = False
            for index, node in enumerate(result.nodes):
                if np.isfinite(values[node]):
                    sqnr_writer.scalar(
                        "sqnr_db", values[node], step=index,
                        description=None if described else
                        f"SQNR in dB ({path}) per quantized node (step = node index, see the "
                        f"Text tab), over the first {result.num_samples} representative samples.")
                    described = True
        plot = SamplePlot(result)
        for sample in range(result.num_samples):
            png, width, height = plot.png(sample)
            writer.image(f"cosine_similarity/sample_{sample:02d}", png, width, height)
        if result.num_samples:
            png, width, height = events.figure_png(_summary_figure(result))
            writer.image("cosine_similarity/summary", png, width, height)
        from mct_logger.activations import elements_per_sample

        single = {n for n in result.nodes if elements_per_sample(graph.nodes[n]) == 1}
        rows = "\n".join(
            f"| {i} | `{n}` | {_db(result.sqnr_accumulated_db[n])} | "
            f"{_db(result.sqnr_isolated_db[n])} | {np.nanmean(result.cosine[:, i]):.5f} |"
            if result.num_samples and n not in single else
            f"| {i} | `{n}` | {_db(result.sqnr_accumulated_db[n])} | "
            f"{_db(result.sqnr_isolated_db[n])} | n/a |"
            for i, n in enumerate(result.nodes)
        )
        note = (f"SQNR n/a: the float output of {', '.join(f'`{n}`' for n in undefined)} holds "
                "Inf or NaN, so its SQNR is undefined and left out of the charts.\n\n"
                if undefined else "")
        writer.text(
            "nodes",
            "Step = node index in the SQNR charts and similarity plots. SQNR and cosine "
            f"over the first {result.num_samples} representative samples (the "
            "QuantAnalyzer tab's layer table shows the same numbers; a QuantAnalyzer run "
            "measures on its own data and says on how many samples). The cosine of a "
            "single-element output is always 1 and is not reported.\n\n" + note +
            "| index | node | SQNR accumulated (dB) | SQNR isolated (dB) | mean cosine |\n"
            "|---:|---|---:|---:|---:|\n" + rows,
        )


def layer_table(graph, plan: dict, encodings: dict, similarity, graph_run: str | None) -> dict:
    """The QuantAnalyzer tab's per-layer table of one PTQ run ("layer_table" payload).

    One row per node in graph order, from what the stages already computed:
    the plan (bits, per-channel or not, why a node stays in float), the
    encodings (min/max), memory at batch 1 before (float32) and after (planned
    bits), and the similarity stage's SQNR (dB) and mean cosine over its samples.
    """
    from mct_logger import events, metrics, ptq
    from mct_logger.activations import elements_per_sample

    before, after = ptq.graph_memory(graph), ptq.graph_memory(graph, plan)

    def counted(node_memory: dict, name: str) -> int:
        # ptq.model_memory's definition: an output fused into the following
        # activation is one tensor on the target, counted at that activation
        m = node_memory[name]
        return m["weights"] + (0 if plan[name].note.startswith("fused") else m["activations"])

    index = {n: i for i, n in enumerate(similarity.nodes)}
    # accumulated SQNR carried through nodes without a measurement (pass-through
    # layers pass their input's error on), for each node's step from its inputs
    carried: dict = {}
    steps: dict = {}
    for node in graph:
        upstream = [carried[r.node] for r in node.inputs if r.node in carried]
        if node.name in similarity.sqnr_accumulated_db:
            acc = similarity.sqnr_accumulated_db[node.name]
            steps[node.name] = metrics.accumulated_step_db(upstream, acc)
            carried[node.name] = acc
        elif upstream:
            carried[node.name] = min(upstream)
    rows = []
    for node in graph:
        p, enc = plan[node.name], encodings.get(node.name)
        kernels = dict(enc.weights) if enc is not None else {}
        kernel = kernels.get("kernel") or next(iter(kernels.values()), None)
        i = index.get(node.name)
        rows.append({
            "layer": node.name,
            "graph_node": events.graph_node_name(node.name),
            "class": node.layer_class,
            "quantized": bool(p.quantized),
            "note": p.note or None,
            "weight_bits": kernel.bitwidth if kernel is not None else None,
            "weight_per_channel": bool(kernel.per_channel) if kernel is not None else None,
            "weight_min": float(np.min(kernel.min)) if kernel is not None else None,
            "weight_max": float(np.max(kernel.max)) if kernel is not None else None,
            "activation_bits": p.activation.bitwidth if p.activation is not None else None,
            "encoding_min": (float(np.min(enc.activation.min))
                             if enc is not None and enc.activation is not None else None),
            "encoding_max": (float(np.max(enc.activation.max))
                             if enc is not None and enc.activation is not None else None),
            "memory_before": counted(before, node.name),
            "memory_after": counted(after, node.name),
            "sqnr_accumulated_db": similarity.sqnr_accumulated_db.get(node.name),
            "sqnr_isolated_db": similarity.sqnr_isolated_db.get(node.name),
            "accumulated_step_db": steps.get(node.name),
            # the cosine of single-element outputs is always +-1: not reported
            "cosine": float(np.nanmean(similarity.cosine[:, i])) if i is not None and
            similarity.num_samples and elements_per_sample(node) > 1 else None,
        })
    return {
        "source": "ptq",
        "model": graph.name,
        "samples": int(similarity.num_samples),
        "graph_run": graph_run,
        "memory_before": ptq.model_memory(before, plan),
        "memory_after": ptq.model_memory(after, plan),
        "rows": rows,
    }


def _db(value: float) -> str:
    return f"{value:.1f}" if np.isfinite(value) else "n/a"


def _node_attrs(node, plan, memory: dict) -> dict:
    attrs = {
        "layer_class": node.layer_class,
        "output_shape": ", ".join(str(tuple(s)) for s in node.output_shapes),
        "parameters": node.parameter_count(),
        "memory_bytes": f"{memory['total']} (weights {memory['weights']}, "
                        f"activations {memory['activations']} at batch 1)",
    }
    activation = getattr(node.layer, "activation", None)
    if activation is not None and getattr(activation, "__name__", "linear") != "linear":
        attrs["fused_activation"] = activation.__name__
    if plan is None:
        return attrs
    for name, spec in plan.weights.items():
        attrs[f"{name}_bits"] = spec.bitwidth
        attrs[f"{name}_per_channel"] = spec.num_channels is not None
        attrs[f"{name}_symmetric"] = spec.is_symmetric
    if plan.activation is not None:
        attrs["activation_bits"] = plan.activation.bitwidth
        attrs["activation_symmetric"] = plan.activation.is_symmetric
    if plan.note:
        attrs["quantization_note"] = plan.note
    return attrs


def _attach_encodings(attrs: dict, encodings) -> dict:
    if encodings is None:
        return attrs
    if encodings.activation is not None:
        attrs["activation_min_max"] = (
            f"[{float(encodings.activation.min):.6g}, {float(encodings.activation.max):.6g}]"
        )
    for name, enc in encodings.weights.items():
        attrs[f"{name}_min_max"] = (
            f"[{float(enc.min.min()):.6g}, {float(enc.max.max()):.6g}]"
            + (f" over {enc.num_channels} channels" if enc.per_channel else "")
        )
    return attrs


def _stage_summary(stage: str, graph, result, memory: dict, plan=None) -> str:
    from mct_logger import ptq

    # the headline definition (ptq.model_memory): a fused output counted once
    total = (ptq.model_memory(memory, plan) if plan is not None and set(plan) >= set(memory)
             else sum(m["total"] for m in memory.values()))
    weights = sum(m["weights"] for m in memory.values())
    lines = [
        f"## {stage.replace('_', ' ').capitalize()}",
        "",
        f"- nodes: {len(graph.nodes)}",
        f"- parameters: {graph.parameter_count():,}",
        f"- memory: {total:,} bytes ({weights:,} weights + {total - weights:,} activations at batch 1)",
    ]
    reason = getattr(result, "reason", None)
    if reason:
        lines.append(f"- skipped: {reason}")
    folded = getattr(result, "folded", None)
    if folded is not None:
        lines.append(f"- folded {len(folded)} batch norm(s): " +
                     (", ".join(f"`{bn}` into `{layer}`" for bn, layer in folded.items()) or "none"))
        for bn, why in getattr(result, "not_folded", {}).items():
            lines.append(f"- kept `{bn}` as a float affine layer: {why}")
    if stage == "cross_layer_equalization" and hasattr(result, "weight_ranges_before"):
        lines += _cle_lines(result)
    if stage == "bias_correction" and hasattr(result, "corrections"):
        lines += _bias_correction_lines(result)
    if hasattr(result, "num_samples") and hasattr(result, "num_batches"):
        batches = "batch" if result.num_batches == 1 else "batches"
        lines.append(f"- calibrated on {result.num_samples} samples in {result.num_batches} {batches}")
    encodings = getattr(result, "encodings", None)
    if encodings is not None:
        lines += ["", "| node | weights | activation range |", "|---|---|---|"]
        for node, enc in encodings.items():
            w = ", ".join(f"{k}: {e.bitwidth} bit{' per-channel' if e.per_channel else ''}"
                          for k, e in enc.weights.items()) or "-"
            a = (f"{enc.activation.bitwidth} bit [{float(enc.activation.min):.4g}, "
                 f"{float(enc.activation.max):.4g}]") if enc.activation is not None else "-"
            lines.append(f"| `{node}` | {w} | {a} |")
    if hasattr(result, "memory_before") and hasattr(result, "memory_after"):
        lines.append(f"- model memory: {result.memory_before:,} -> {result.memory_after:,} bytes "
                     f"({result.memory_after / max(result.memory_before, 1):.1%})")
    return "\n".join(lines)


SUMMARY_LIST_LIMIT = 50  # rows per list in a stage's text summary


def _limited(rows: list[str]) -> list[str]:
    if len(rows) <= SUMMARY_LIST_LIMIT:
        return rows
    return rows[:SUMMARY_LIST_LIMIT] + [f"  - ... and {len(rows) - SUMMARY_LIST_LIMIT} more"]


def _span(values) -> str:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return f"{values.min():.3g} to {values.max():.3g}" if values.size else "none"


def _cle_lines(result) -> list[str]:
    """What cross-layer equalization changed; with CLE off, where the ranges are."""
    from mct_logger.techniques.weight_ranges import rank_by_spread

    if not result.applied:
        ranked = [r for r in rank_by_spread(result.weight_ranges_before) if r[2]][:5]
        lines = ["- nothing changed. The per-channel weight ranges of every weight layer "
                 "(before CLE) are logged with this run as the `cle` payload "
                 "`weight_ranges` (CLE dashboard, or `mct_logger.tb_plugin.reader."
                 "read_payloads(..., \"cle\")`); layers whose channels differ widely are "
                 "what CLE evens out."]
        if ranked:
            lines.append("- widest channel spread: " + ", ".join(
                f"`{node}` {kernel} ({score:.3g})" for node, kernel, score in ranked))
        return lines
    lines = [f"- equalized {len(result.sets)} set(s) in {result.iterations} sweep(s)"
             + ("" if result.converged else " (scales still changing when stopped)")
             + (":" if result.sets else "")]
    rows = []
    for eq in result.sets:
        for k, scales in enumerate(eq.scale_factors):
            via = f" via {', '.join(f'`{n}`' for n in eq.links[k])}" if eq.links[k] else ""
            rows.append(f"  - `{eq.members[k]}` -> `{eq.members[k + 1]}` ({eq.kind}{via}, "
                        f"{eq.activations[k]}): scale factors {_span(scales)} over "
                        f"{np.size(scales)} channels")
    lines += _limited(rows)
    lines.append(f"- high-bias folds (bias moved into the next layer): "
                 f"{len(result.high_bias_folds)} pair(s)")
    lines += _limited([
        f"  - `{fold.source}` -> `{fold.target}` ({fold.activation}): "
        f"{int(np.count_nonzero(fold.amount))} of {np.size(fold.amount)} channel(s), "
        f"amounts {_span(fold.amount)}"
        for fold in result.high_bias_folds])
    if result.high_bias_fold_skipped:
        lines.append("- high-bias fold skipped:")
        lines += _limited([f"  - `{pair}`: {why}"
                           for pair, why in result.high_bias_fold_skipped.items()])
    lines.append(f"- ReLU6 replaced by ReLU (changes the float model): "
                 + (", ".join(f"`{r['node']}` ({r['form']})" for r in result.relu6_replaced)
                    or "none"))
    if result.not_equalized:
        lines.append("- not equalized:")
        lines += _limited([f"  - `{node}`: {why}" for node, why in result.not_equalized.items()])
    if result.float_score_before is not None and result.float_score_after is not None:
        lines.append(f"- float score: {result.float_score_before:.6g} before, "
                     f"{result.float_score_after:.6g} after")
    return lines


def _bias_correction_lines(result) -> list[str]:
    """The corrected layers and the size of each correction."""
    lines = [f"- corrected {len(result.corrections)} layer(s) ({result.mode}"
             + (f", {result.num_samples} samples, {result.passes} passes" if result.num_samples
                else "") + ")"]
    if result.corrections:
        lines += ["", "| layer | method | channels | mean abs correction | max abs correction |",
                  "|---|---|---:|---:|---:|"]
        for node, correction in list(result.corrections.items())[:SUMMARY_LIST_LIMIT]:
            amount = np.abs(np.asarray(correction.correction, dtype=np.float64))
            lines.append(f"| `{node}` | {correction.method} | {amount.size} | "
                         f"{amount.mean() if amount.size else 0.0:.3g} | "
                         f"{amount.max() if amount.size else 0.0:.3g} |")
        if len(result.corrections) > SUMMARY_LIST_LIMIT:
            lines.append(f"\n... and {len(result.corrections) - SUMMARY_LIST_LIMIT} more layers")
        lines.append("")
    lines += _limited([f"- not corrected `{node}`: {why}" for node, why in result.skipped.items()])
    return lines


def _axis_labels(ax, nodes):
    from matplotlib.ticker import FormatStrFormatter

    # Cosines sit near 1: plain numbers, not matplotlib's "1e-5 + 9.999e-1" offset.
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.6f"))
    ax.set_xlabel("Quantized node, in network order")
    if len(nodes) <= 40:
        ax.set_xticks(range(len(nodes)))
        ax.set_xticklabels(nodes, rotation=90, fontsize=7)


class SamplePlot:
    """The per-sample cosine plots, drawn fast: the axes, grid and legend are
    rendered once (all samples share one y-range, which also makes them
    comparable) and only the lines and title are redrawn per sample."""

    def __init__(self, result):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.result = result
        self.figure = Figure(figsize=(7, 3.8), dpi=72)
        self.canvas = FigureCanvasAgg(self.figure)
        self.figure.subplots_adjust(left=0.19, right=0.98, top=0.9,
                                    bottom=0.32 if len(result.nodes) <= 40 else 0.14)
        ax = self.ax = self.figure.add_subplot()
        x = np.arange(len(result.nodes))
        (self.accumulated,) = ax.plot(x, result.cosine[0], marker="o", markersize=3,
                                      label="all nodes quantized", animated=True)
        (self.isolated,) = ax.plot(x, result.cosine_isolated[0], linestyle="--", marker=".",
                                   markersize=3, label="only this node quantized", animated=True)
        finite = np.concatenate([result.cosine.ravel(), result.cosine_isolated.ravel()])
        finite = finite[np.isfinite(finite)]  # NaN (undefined) points are drawn as gaps
        low = float(finite.min()) if finite.size else 0.0
        pad = max((1.0 - low) * 0.05, 1e-7)
        ax.set_ylim(low - pad, 1.0 + pad)
        ax.set_ylabel("Cosine similarity\n(float vs quantized)")
        _axis_labels(ax, result.nodes)
        ax.grid(True, alpha=0.3)
        self.legend = ax.legend(loc="lower left", fontsize=8)
        self.legend.set_animated(True)  # drawn over the lines
        self.title = ax.set_title(" ", animated=True)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)

    def png(self, sample: int):
        from mct_logger import events

        self.canvas.restore_region(self.background)
        self.accumulated.set_ydata(self.result.cosine[sample])
        self.isolated.set_ydata(self.result.cosine_isolated[sample])
        self.title.set_text(f"Sample {sample}: cosine similarity along the network")
        for artist in (self.accumulated, self.isolated, self.legend):
            self.ax.draw_artist(artist)
        self.figure.draw_artist(self.title)
        return events.rgba_png(self.canvas)


def _summary_figure(result):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.8), dpi=72)
    figure.subplots_adjust(left=0.19, right=0.98, top=0.9,
                           bottom=0.32 if len(result.nodes) <= 40 else 0.14)
    ax = figure.add_subplot()
    x = np.arange(len(result.nodes))
    cosine = result.cosine
    ax.fill_between(x, cosine.min(axis=0), cosine.max(axis=0), alpha=0.25,
                    label=f"min-max over {result.num_samples} samples")
    ax.plot(x, cosine.mean(axis=0), marker="o", markersize=3, label="mean")
    ax.set_ylabel("Cosine similarity\n(float vs quantized)")
    ax.set_title("Cosine similarity along the network, all nodes quantized")
    _axis_labels(ax, result.nodes)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return figure
