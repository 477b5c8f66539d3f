"""A results folder that never mixes two runs' files (QuantAnalyzer's `results_dir`).

At start a run claims the folder: the result files of an earlier run (named in
its manifest, `summary.json`) are moved into `previous_runs/<its start>/`, and
the new manifest is written at once, with status "running" and the files this
run owns. A run interrupted or killed part way therefore never leaves an
earlier run's file beside its own. A manifest is recognised by its "format"
(`MANIFEST_FORMAT`): result files, or a `summary.json`, that no manifest of
ours claims are another tool's, and the folder is refused with them untouched.
Every path the run writes is checked before anything is written; a symbolic
link where a result file or folder (or `previous_runs`) goes is refused, never
followed, so a user's own files are never moved or overwritten through it.

During the run `ResultWriter` writes the files: one that cannot be written (disk
full, a folder put in its way) leaves no `.tmp` behind and is a warning naming
it, the folder and the cause; the run goes on and lists it as not written.

Example:

```python
manifest = claim("results", all_files=["a.json", "b.json"], owned=["a.json"],
                 manifest_file="summary.json")
...
release("results")
```
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import socket
import threading

from mct_logger.utils import output_paths
from mct_logger.utils.atomic_files import write_atomically
from mct_logger.utils.json_safe import json_ready

logger = logging.getLogger("mct_logger")

PREVIOUS_RUNS = "previous_runs"
# The manifest's "format": a summary.json without it (nor every field an older
# manifest had) is another tool's file, never taken for an earlier run.
MANIFEST_FORMAT = "mct_logger.QuantAnalyzer.summary"

_active: set[str] = set()  # results folders claimed by runs of this process
_active_lock = threading.Lock()


def claim(results_dir: str, all_files, owned, manifest_file: str) -> dict:
    """Makes `results_dir` this run's and returns the manifest written there.

    Args:
        results_dir: the folder (created if needed).
        all_files: every file name, relative to `results_dir`, a run may write:
            those present are moved aside (with `manifest_file` and their
            `.tmp` leftovers).
        owned: the files this run writes (listed in the manifest as "files").
        manifest_file: the manifest's name (e.g. "summary.json").

    Returns:
        The manifest dict: format `MANIFEST_FORMAT`, status "running", started
        (ISO time), host, pid, files, and "earlier_run_moved_to" when an earlier
        run was moved.

    Raises:
        NotADirectoryError: `results_dir` is a file, or a file stands where it
            or a result file's folder goes.
        IsADirectoryError: a folder stands where a result file goes.
        FileExistsError: result files are present without a manifest saying
            which run wrote them, or `manifest_file` is another tool's (its
            files are left in place); a symbolic link stands where a result
            file or folder goes, or a file or link where `previous_runs` goes
            when an earlier run must be moved there.
        RuntimeError: a manifest says an analysis is still writing there.
        OSError: moving the earlier run aside or writing the manifest failed
            (the message names the path and the cause).
    """
    results_dir = output_paths.check_folder(results_dir, "results_dir")
    names = set(all_files) | {manifest_file}
    _check_result_paths(results_dir, names)
    os.makedirs(results_dir, exist_ok=True)
    with _active_lock, _claim_lock(results_dir):
        manifest_path = os.path.join(results_dir, manifest_file)
        earlier = _read_manifest(manifest_path)
        if earlier is None and os.path.isfile(manifest_path):
            raise FileExistsError(
                f"results_dir {results_dir!r} holds a {manifest_file} that QuantAnalyzer did "
                "not write (another tool's results?); its files are left as they are. Pass a "
                "new or empty results_dir, or move those files away, then analyze again."
            )
        if earlier is not None:
            names |= {f for f in earlier.get("files", []) if _inside(f)}
            _check_result_paths(results_dir, names)  # the earlier run's files too
        present = sorted(f for f in names | {f"{n}.tmp" for n in names}
                         if os.path.isfile(os.path.join(results_dir, f)))
        moved_to = None
        if present:
            if earlier is None:
                raise FileExistsError(
                    f"results_dir {results_dir!r} already holds {', '.join(present[:5])}"
                    f"{'...' if len(present) > 5 else ''} but no {manifest_file} of a "
                    "QuantAnalyzer run saying they are its own (another tool's results?). Pass "
                    "a new or empty results_dir, or move those files away, then analyze again."
                )
            if _still_running(earlier, results_dir):
                raise RuntimeError(
                    f"results_dir {results_dir!r} is in use: its {manifest_file} says an "
                    f"analysis started {earlier.get('started')} (process {earlier.get('pid')} "
                    f"on {earlier.get('host')}) is still running. Wait for it to end or pass "
                    f"another results_dir; if no analysis runs there any more, delete "
                    f"{manifest_file} and analyze again."
                )
            _check_previous_runs(results_dir)
            moved_to = _claim_step(results_dir, "moving the earlier results aside",
                                   _move_aside, results_dir, present, earlier, manifest_file)
            logger.info("QuantAnalyzer: the earlier results in %s (status %s) were moved to %s",
                        results_dir, earlier.get("status"), moved_to)
        manifest = {
            "format": MANIFEST_FORMAT,
            "status": "running",
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "files": sorted(set(owned) | {manifest_file}),
        }
        if moved_to is not None:
            manifest["earlier_run_moved_to"] = os.path.relpath(moved_to, results_dir)
        _claim_step(results_dir, f"writing {manifest_file}", write_json_atomically,
                    os.path.join(results_dir, manifest_file), manifest)
        _active.add(results_dir)
    return manifest


@contextlib.contextmanager
def _claim_lock(folder: str):
    """Holds an exclusive lock on `folder` itself while a run claims it, so two
    processes never both find it free; no lock file is left behind. Released
    when the claim is done, or by the system if the process dies (only the
    in-process lock on systems without fcntl)."""
    try:
        import fcntl
    except ImportError:  # Windows: the in-process lock still holds
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def release(results_dir: str) -> None:
    """Marks `results_dir` as no longer written by this process (after the final manifest)."""
    with _active_lock:
        _active.discard(os.path.abspath(results_dir))


def write_json_atomically(path: str, content, compact: bool = False) -> None:
    """Writes `content` as JSON, indented (as AIMET's files) or `compact` (the large
    tables); an interrupt never leaves half a file. ValueError on NaN/Inf: clean
    the content first (`tb_plugin.summary.json_ready`)."""
    layout = {"separators": (",", ":")} if compact else {"indent": 2}
    write_atomically(path, lambda f: json.dump(content, f, allow_nan=False, **layout))


class ResultWriter:
    """Writes a run's result files into `results_dir`, never losing the run to one.

    A file that cannot be written (disk full, a folder or a symbolic link put
    where it goes) is recorded in `not_written` (relative name -> cause) and
    warned about, the first such file at once; the run goes on, since its
    results are held in memory and returned. `write_manifest` lists them in the
    manifest; `warn_at_end` names them all when there were more than the one
    already warned about. A file written later after all is taken off the list.
    """

    def __init__(self, results_dir: str):
        self.results_dir = results_dir
        self.not_written: dict[str, str] = {}
        self._warned: str | None = None

    def write_json(self, relative: str, content, compact: bool = False) -> bool:
        """`write_json_atomically` of `relative`; False when it was not written."""
        path = os.path.join(self.results_dir, relative)
        return self.attempt(relative, write_json_atomically, path, content, compact=compact) \
            is not None

    def write_manifest(self, relative: str, manifest: dict) -> bool:
        """Writes the manifest with the files not written so far ("files_not_written",
        relative name -> cause; absent when every file was written)."""
        manifest.pop("files_not_written", None)
        if self.not_written:
            manifest["files_not_written"] = dict(self.not_written)
        return self.write_json(relative, json_ready(manifest))

    def attempt(self, relative: str, write, *args, **kwargs):
        """`write(*args, **kwargs)`, which writes `relative`: its return value (True
        when it returns None), or None when it failed with an OSError."""
        path = os.path.join(self.results_dir, relative)
        try:
            link = _linked_part(self.results_dir, relative)
            if link is not None:
                raise FileExistsError(errno.EEXIST, f"{link!r} is a symbolic link (never "
                                      "followed); remove it", path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            returned = write(*args, **kwargs)
        except OSError as exc:
            cause = f"{type(exc).__name__}: {exc.strerror or exc}"
            self.not_written[relative] = cause
            if self._warned is None:
                self._warned = relative
                logger.warning(
                    "QuantAnalyzer cannot write %s in results_dir %s (%s); the analysis goes on "
                    "and returns its AnalysisResult, and summary.json lists the files not written "
                    "(\"files_not_written\"). Free space or move what is in the way, then "
                    "analyze again for the files.", path, self.results_dir, cause)
            else:
                logger.info("QuantAnalyzer cannot write %s (%s)", path, cause)
            return None
        self.not_written.pop(relative, None)
        return True if returned is None else returned

    def finish(self, relative: str, manifest: dict, status: str) -> None:
        """At the run's end, after its last file: rewrites the manifest `relative`
        when a file failed since it was written (so it lists every file not
        written), then `warn_at_end(status)`."""
        if set(self.not_written) - set(manifest.get("files_not_written", {})) - {relative}:
            self.write_manifest(relative, manifest)
        self.warn_at_end(status)

    def warn_at_end(self, status: str) -> None:
        """One warning naming every file not written, unless it is only the one
        already warned about."""
        if set(self.not_written) - {self._warned}:
            logger.warning(
                "QuantAnalyzer %s, but %d result file(s) in results_dir %s could not be "
                "written: %s. Their scores and tables (all but the histograms) are in the returned "
                "AnalysisResult.", status,
                len(self.not_written), self.results_dir,
                "; ".join(f"{name} ({cause})" for name, cause in sorted(self.not_written.items())))


def _read_manifest(path: str) -> dict | None:
    """The manifest a run of ours wrote at `path`, or None (none, unreadable, or
    another tool's file of the same name)."""
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    if manifest.get("format") == MANIFEST_FORMAT:
        return manifest
    # written before the "format" marker: every field claim() writes, of its type
    legacy = (isinstance(manifest.get("status"), str) and isinstance(manifest.get("started"), str)
              and isinstance(manifest.get("host"), str) and type(manifest.get("pid")) is int
              and isinstance(manifest.get("files"), list))
    return manifest if legacy else None


def _claim_step(results_dir: str, step: str, function, *args):
    """`function(*args)`; an OSError names results_dir, the step, the path and the fix."""
    try:
        return function(*args)
    except OSError as exc:
        raise type(exc)(
            f"results_dir {results_dir!r}: {step} failed at {exc.filename or results_dir!r} "
            f"({exc.strerror or exc}); nothing was evaluated. Make the folder writable (free "
            "space, fix its permissions) or pass another results_dir."
        ) from exc


def _linked_part(results_dir: str, relative: str) -> str | None:
    """The first part of `relative` (a folder on its way, or itself) that is a
    symbolic link inside `results_dir`, or None."""
    parts = relative.replace("\\", "/").split("/")
    for k in range(1, len(parts) + 1):
        part = "/".join(parts[:k])
        if os.path.islink(os.path.join(results_dir, part)):
            return part
    return None


def _check_previous_runs(results_dir: str) -> None:
    """Refuses a file or a symbolic link where the earlier runs go (`PREVIOUS_RUNS`)."""
    path = os.path.join(results_dir, PREVIOUS_RUNS)
    if os.path.islink(path) or (os.path.exists(path) and not os.path.isdir(path)):
        kind = "a symbolic link" if os.path.islink(path) else "a file"
        raise FileExistsError(
            f"{kind.capitalize()} stands at {path!r}, where results_dir {results_dir!r} keeps "
            f"earlier runs' results (moved into {PREVIOUS_RUNS}/<its start>/); nothing was "
            "moved or evaluated. Rename or move it away, or pass another results_dir."
        )


def _check_result_paths(results_dir: str, names) -> None:
    """Refuses, before anything is written, a symbolic link where a result file or
    its folder goes (never followed: the user's own files stay untouched), a
    folder where a result file goes or a file where its folder goes (the run
    would fail after its work otherwise)."""
    for name in sorted(names | {f"{n}.tmp" for n in names}):
        path = os.path.join(results_dir, name)
        link = _linked_part(results_dir, name)
        if link is not None:
            raise FileExistsError(
                f"A symbolic link stands at {os.path.join(results_dir, link)!r}, where results_dir "
                f"{results_dir!r} holds (or moves aside) results; links there are never "
                "followed, so that no file they point to is moved or overwritten. Remove the "
                "link (its target stays as it is) or pass another results_dir."
            )
        if os.path.isdir(path):
            raise IsADirectoryError(
                f"results_dir {results_dir!r} holds a folder {name!r} where the analysis "
                "writes a file of that name; move it away or pass another results_dir."
            )
        folder = os.path.dirname(path)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise NotADirectoryError(
                f"results_dir {results_dir!r} holds a file "
                f"{os.path.relpath(folder, results_dir)!r} where the analysis writes a folder "
                "of that name; move it away or pass another results_dir."
            )


def _inside(relative) -> bool:
    """A manifest's file name that stays inside the results folder."""
    return bool(isinstance(relative, str) and relative and not os.path.isabs(relative)
            and ".." not in relative.replace("\\", "/").split("/"))


def _still_running(manifest: dict, results_dir: str) -> bool:
    if manifest.get("status") != "running":
        return False
    pid, host = manifest.get("pid"), manifest.get("host")
    if host != socket.gethostname() or not isinstance(pid, int):
        return True  # cannot check another machine's process: assume it runs
    if pid == os.getpid():
        return results_dir in _active  # another thread of this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False  # killed: its files are an earlier run's
    except PermissionError:
        return True
    return True


def _move_aside(results_dir: str, present: list, earlier: dict, manifest_file: str) -> str:
    started = str(earlier.get("started") or "")
    if not started:
        mtime = os.path.getmtime(os.path.join(results_dir, present[0]))
        started = datetime.datetime.fromtimestamp(mtime).isoformat(timespec="seconds")
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in started)
    parent = os.path.join(results_dir, PREVIOUS_RUNS)
    os.makedirs(parent, exist_ok=True)
    target, k = os.path.join(parent, name), 1
    while True:
        try:
            os.mkdir(target)
            break
        except FileExistsError:
            k += 1
            target = os.path.join(parent, f"{name}_{k}")
    # The manifest last: until then it still names every file not yet moved.
    for relative in sorted(present, key=lambda f: f == manifest_file):
        destination = os.path.join(target, relative)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        os.replace(os.path.join(results_dir, relative), destination)
    return target
