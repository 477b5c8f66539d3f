"""Finished evaluations as a JSON record (never pickle), written as each one
finishes, so that a killed sweep resumes and evaluates only what is missing.

One store serves every sweep (the QuantAnalyzer's masks, the mixed-precision
search's bit widths, `compress_model`'s candidates). A record file is keyed by
what determines its scores: the fields of `meta` (the model's fingerprint, the
config, the encodings' fingerprint, the candidate list...), all of which must
match for the scores to be reused; inside, a score's key is a tuple of strings
(the quantizer mask or the candidate), stored as nested objects:

```json
{"format": "mct_logger.evaluation_records", "version": 1,
 "model": "digits_cnn", "fingerprint": "3f9a...", "config": {...},
 "scores": {"enabled": {"conv1": 0.91, "dense": 0.95}, "sensitivity": {"fp32": 0.97}}}
```

A score that is not finite is stored as the text "nan", "inf" or "-inf" (JSON
has no such numbers) and read back as the same float. The file is replaced
atomically at each new score (`results_dir.write_atomically`): an interrupt, a
SIGKILL, never leaves half a file. A file that cannot be written mid-sweep
(disk full, a folder put in its way) is one warning naming it and the cause:
the sweep goes on with its scores in memory, and every later score tries again.

`fingerprint` is the SHA-256 of what the scores depend on, e.g. of a model:
its architecture (`to_json`) and every weight's bytes, in order.

Example:

```python
records = ScoreRecords.open("scores.json", {"model": m.name, "fingerprint": fingerprint(m)},
                            what="scores_file")
if not records.has(("enabled", "conv1")):
    records.put(("enabled", "conv1"), 0.91)        # on disk at once
```
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os

import numpy as np

from mct_logger.utils.strict_json import load_strict

FORMAT = "mct_logger.evaluation_records"
VERSION = 1

logger = logging.getLogger("mct_logger")

__all__ = ["FORMAT", "ScoreRecords", "fingerprint", "model_fingerprint"]


def fingerprint(*parts) -> str:
    """SHA-256 (hex) of `parts`: bytes, NumPy arrays (dtype, shape and bytes),
    or anything JSON can write (dicts with sorted keys)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, (bytes, bytearray)):
            digest.update(bytes(part))
        elif isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=repr).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def model_fingerprint(model) -> str:
    """SHA-256 of a Keras model's architecture and weights (names aside: two
    loads of one `.keras` file give the same fingerprint)."""
    import keras

    try:
        config = _without_names(json.loads(model.to_json()))
    except Exception:  # a layer whose config does not serialize: its classes, in order
        config = [type(layer).__name__ for layer in model.layers]
    return fingerprint(config,
                       *[np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights])


def _without_names(value):
    if isinstance(value, dict):
        return {k: _without_names(v) for k, v in value.items() if k != "name"}
    if isinstance(value, list):
        return [_without_names(v) for v in value]
    return value


def _encode(score: float):
    return score if math.isfinite(score) else str(score)  # "nan", "inf", "-inf"


def _decode(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return None


class ScoreRecords:
    """`{key tuple: score}`, mirrored to a JSON file when a path is given.

    Args:
        path: the file (None: in memory only).
        meta: the fields that determine the scores; written in the file and
            compared on `open`.
        what: the argument's name in messages ("scores_file", "eval_scores_file").
        format_name: the file's "format" (compress_model keeps its own name).
    """

    def __init__(self, path, meta: dict, what: str = "scores_file",
                 format_name: str = FORMAT, scores: dict | None = None):
        self.path = None if path is None else os.fspath(path)
        self.meta = dict(meta)
        self.what = what
        self.format_name = format_name
        self.scores: dict = scores or {}  # nested: key[0] -> key[1] -> ... -> score
        self.save_failed = False  # warned once; cleared when a later save succeeds
        self.matched = tuple(meta)
        self.extra: dict = {}  # fields written but not compared (e.g. a score before)

    @classmethod
    def open(cls, path, meta: dict, what: str = "scores_file", format_name: str = FORMAT,
             matched=None) -> "ScoreRecords":
        """The scores already in `path` (none when it does not exist yet).

        Args:
            matched: the fields of `meta` that must be equal in the file (default: all).

        Raises:
            ValueError: the file is not a record of this format, is newer than
                this mct-logger reads, or was computed for another model,
                config or candidate list (the message names the field, both
                values and the fix).
        """
        matched = tuple(meta) if matched is None else tuple(matched)
        if path is None or not os.path.exists(path):
            records = cls(path, meta, what, format_name)
            records.matched = matched
            return records
        shown = repr(os.fspath(path))
        try:
            with open(path, encoding="utf-8") as f:  # a key twice, or too deep: refused
                content = load_strict(f, f"{what} {shown}")
        except (OSError, ValueError) as exc:
            raise ValueError(f"{what} {shown} cannot be read as JSON ({exc}); delete it or "
                             "pass another path.") from None
        if not isinstance(content, dict) or content.get("format") != format_name:
            raise ValueError(f"{what} {shown} is not an mct-logger score file (format "
                             f"{format_name!r}); pass another path.")
        if int(content.get("version", 0) or 0) > VERSION:
            raise ValueError(f"{what} {shown} has version {content.get('version')}; this "
                             f"mct-logger reads up to {VERSION}.")
        for field in matched:
            if json.dumps(content.get(field), sort_keys=True) != \
                    json.dumps(meta.get(field), sort_keys=True, default=repr):
                raise ValueError(
                    f"{what} {shown} holds scores for {field}={_short(content.get(field))}, "
                    f"not {_short(meta.get(field))}: they were computed for another model, "
                    "config or candidate list. Pass another path (or delete the file) to start "
                    "a new sweep.")
        records = cls(path, meta, what, format_name, _read_scores(content.get("scores")))
        records.matched = matched
        records.extra = {k: v for k, v in content.items()
                         if k not in ("format", "version", "scores") and k not in meta}
        return records

    def check(self, field: str, value) -> None:
        """Refuses the file's scores when its `field` (not known at `open`, such
        as the encodings' fingerprint after calibration) differs from `value`;
        a file without it (a new one) takes it."""
        held = self.extra.pop(field, None) if field not in self.meta else self.meta[field]
        if held is not None and held != value and self.scores:
            raise ValueError(
                f"{self.what} {self.path!r} holds scores for {field}={_short(held)}, not "
                f"{_short(value)}: they were computed for another model, config or "
                "calibration. Pass another path (or delete the file) to start anew.")
        self.meta[field] = value

    def __len__(self) -> int:
        return sum(1 for _ in _leaves(self.scores))

    def has(self, key: tuple) -> bool:
        return ScoreRecords.get(self, key) is not None

    def get(self, key: tuple):
        """The score recorded under `key`, or None."""
        node = self.scores
        for part in key:
            if not isinstance(node, dict) or str(part) not in node:
                return None
            node = node[str(part)]
        return node if isinstance(node, float) else None

    def put(self, key: tuple, score: float) -> None:
        """Records a score and rewrites the file atomically."""
        node = self.scores
        for part in key[:-1]:
            node = node.setdefault(str(part), {})
        node[str(key[-1])] = float(score)
        self.save()

    def save(self) -> None:
        """Writes every score so far (no `.tmp` is left behind); a failure is one
        warning naming the file and the cause, and the next save tries again."""
        if self.path is None:
            return
        from mct_logger.utils.atomic_files import write_atomically

        content = {"format": self.format_name, "version": VERSION, **self.extra, **self.meta,
                   "scores": _write_scores(self.scores)}
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            write_atomically(self.path, lambda f: json.dump(content, f, indent=1,
                                                            allow_nan=False))
        except OSError as exc:
            if not self.save_failed:
                logger.warning(
                    "%s %s cannot be written (%s: %s); the sweep goes on with its scores in "
                    "memory and tries again at each new score, but a resumed sweep recomputes "
                    "the scores not saved. Free space or move what is in the way.",
                    self.what, os.path.abspath(self.path), type(exc).__name__,
                    exc.strerror or exc)
            self.save_failed = True
            return
        if self.save_failed:
            logger.info("%s %s holds every score again", self.what, self.path)
        self.save_failed = False


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _read_scores(content) -> dict:
    if not isinstance(content, dict):
        return {}
    result = {}
    for key, value in content.items():
        if isinstance(value, dict):
            result[str(key)] = _read_scores(value)
        else:
            score = _decode(value)
            if score is not None:
                result[str(key)] = score
    return result


def _write_scores(scores: dict) -> dict:
    return {k: _write_scores(v) if isinstance(v, dict) else _encode(v) for k, v in scores.items()}


def _leaves(scores: dict):
    for value in scores.values():
        if isinstance(value, dict):
            yield from _leaves(value)
        else:
            yield value
