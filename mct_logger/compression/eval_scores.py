"""The greedy sweep's evaluation scores as a JSON file (never pickle), written as
each score is computed, so an interrupted sweep resumes where it stopped.

Layout (`FORMAT`, version `VERSION`):

```json
{"format": "mct_logger.compression.eval_scores", "version": 1,
 "model": "digits_cnn", "scheme": "spatial_svd", "cost_metric": "mac",
 "candidates": [0.1, 0.2, ...], "score_before": 0.97,
 "scores": {"conv1": {"0.1": 0.41, "0.2": 0.77}, ...}}
```

A ratio's key is its decimal text (`ratio_key`); a candidate that saves
nothing at that ratio is absent. Reusing a file computed for another scheme,
cost metric or candidate list is refused (its scores mean something else).
A file that cannot be written mid-sweep (disk full, a folder put in its way) is
one warning naming it and the cause: the sweep goes on with its scores in
memory, and every later score tries again to write them all.

Example:

```python
store = EvalScores.open("scores.json", meta)
if not store.has("conv1", 0.5):
    store.put("conv1", 0.5, eval_callback(candidate))   # on disk at once
```
"""

from __future__ import annotations

import json
import logging
import math
import os

from mct_logger.utils.atomic_files import write_atomically
from mct_logger.utils.strict_json import load_strict

FORMAT = "mct_logger.compression.eval_scores"
VERSION = 1
# Fields that must match for a file's scores to be reused (the cost metric
# too: it sets the rank or channels a ratio means).
MATCHED = ("model", "scheme", "cost_metric", "candidates")

logger = logging.getLogger("mct_logger")


def ratio_key(ratio: float) -> str:
    return f"{ratio:g}"


class EvalScores:
    """`{layer: {ratio: score}}`, mirrored to a JSON file (when a path is given)."""

    def __init__(self, path: str | None, meta: dict, scores: dict | None = None):
        self.path = None if path is None else os.fspath(path)
        self.meta = dict(meta)
        self.scores: dict[str, dict[str, float]] = scores or {}
        self.save_failed = False  # warned once; cleared when a later save succeeds

    @classmethod
    def open(cls, path, meta: dict) -> "EvalScores":
        """The scores already in `path` (none when it does not exist yet).

        Raises:
            ValueError: the file is not a score file of this format, or was
                computed for another model, scheme or candidate list.
        """
        if path is None or not os.path.exists(path):
            return cls(path, meta)
        try:
            with open(path, encoding="utf-8") as f:  # a key twice, or too deep: refused
                content = load_strict(f, f"eval_scores_file {os.fspath(path)!r}")
        except (OSError, ValueError) as exc:
            raise ValueError(f"eval_scores_file {os.fspath(path)!r} cannot be read as JSON "
                             f"({exc}); delete it or pass another path.") from None
        if not isinstance(content, dict) or content.get("format") != FORMAT:
            raise ValueError(f"eval_scores_file {os.fspath(path)!r} is not an mct-logger score "
                             "file; pass another path.")
        if int(content.get("version", 0)) > VERSION:
            raise ValueError(f"eval_scores_file {os.fspath(path)!r} has version "
                             f"{content.get('version')}; this mct-logger reads up to {VERSION}.")
        for field in MATCHED:
            if content.get(field) != meta.get(field):
                raise ValueError(
                    f"eval_scores_file {os.fspath(path)!r} holds scores for {field}="
                    f"{content.get(field)!r}, not {meta.get(field)!r}; pass another path (or "
                    "delete the file) to start a new sweep."
                )
        scores = {
            layer: {str(k): float(v) for k, v in by_ratio.items()
                    if isinstance(v, (int, float)) and math.isfinite(v)}
            for layer, by_ratio in (content.get("scores") or {}).items()
        }
        return cls(path, {**meta, "score_before_in_file": content.get("score_before")}, scores)

    def has(self, layer: str, ratio: float) -> bool:
        return ratio_key(ratio) in self.scores.get(layer, {})

    def get(self, layer: str, ratio: float) -> float | None:
        return self.scores.get(layer, {}).get(ratio_key(ratio))

    def put(self, layer: str, ratio: float, score: float) -> None:
        """Records a score and rewrites the file atomically (an interrupt never
        leaves half a file)."""
        self.scores.setdefault(layer, {})[ratio_key(ratio)] = float(score)
        self.save()

    def save(self) -> None:
        """Writes every score so far (no `.tmp` is left behind); a failure is one
        warning naming the file and the cause, and the next save tries again."""
        if self.path is None:
            return
        meta = {k: v for k, v in self.meta.items() if k != "score_before_in_file"}
        content = {"format": FORMAT, "version": VERSION, **meta, "scores": self.scores}
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            write_atomically(self.path, lambda f: json.dump(content, f, indent=1, allow_nan=False))
        except OSError as exc:
            if not self.save_failed:
                logger.warning(
                    "eval_scores_file %s cannot be written (%s: %s); the sweep goes on with its "
                    "scores in memory and tries again at each new score, but a resumed sweep "
                    "recomputes the scores not saved. Free space or move what is in the way.",
                    os.path.abspath(self.path), type(exc).__name__, exc.strerror or exc)
            self.save_failed = True
            return
        if self.save_failed:
            logger.info("eval_scores_file %s holds every score again", self.path)
        self.save_failed = False
