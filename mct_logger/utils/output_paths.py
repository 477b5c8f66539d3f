"""Output paths checked before any work: a file or folder argument that cannot be
written there fails at once, with an error naming the argument and the fix,
instead of after the evaluations it was meant to keep.

A path can be written when it is not the wrong kind (a folder where a file goes,
a file where a folder goes) and every folder on the way either is a folder or
can be created (no file stands where one of them goes).

Example:

```python
check_file("runs/scores.json", "eval_scores_file")   # before the sweep
check_folder("quant_analyzer_results", "results_dir")
```
"""

from __future__ import annotations

import os


def check_folder(path, argument: str) -> str:
    """The absolute path of the folder `path`, which exists or can be created.

    Raises:
        NotADirectoryError: `path` is a file, or a file stands where one of its
            parent folders goes; the message names `argument` and the fix.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{argument} {path!r} is a file; pass a folder (created if needed).")
    _check_parents(path, path, argument)
    return path


def check_file(path, argument: str) -> str:
    """The absolute path of the file `path`, which can be written: not a folder,
    its folder exists or can be created.

    Raises:
        IsADirectoryError: `path` is a folder.
        NotADirectoryError: a file stands where its folder (or one above) goes.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{argument} {path!r} is a folder; pass a file path, e.g. "
            f"{os.path.join(path, 'name.json')!r}."
        )
    _check_parents(os.path.dirname(path), path, argument)
    return path


def _check_parents(folder: str, path: str, argument: str) -> None:
    """Refuses a file at `folder` or at the nearest existing folder above it."""
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent
    if not os.path.isdir(folder):
        raise NotADirectoryError(
            f"{argument} {path!r} cannot be written: {folder!r} is a file, not a folder. "
            f"Pass a path in a folder (or move that file away)."
        )
