"""The greedy sweep's evaluation scores as a JSON file (never pickle), written as
each score is computed, so an interrupted sweep resumes where it stopped: the
compression view of the one record store, `mct_logger.evaluators.records`.

Layout (`FORMAT`, version `records.VERSION`):

```json
{"format": "mct_logger.compression.eval_scores", "version": 1,
 "model": "digits_cnn", "fingerprint": "3f9a...", "scheme": "spatial_svd",
 "cost_metric": "mac", "candidates": [0.1, 0.2, ...], "score_before": 0.97,
 "scores": {"conv1": {"0.1": 0.41, "0.2": 0.77}, ...}}
```

A ratio's key is its decimal text (`ratio_key`); a candidate that saves
nothing at that ratio is absent. Reusing a file computed for another model
(its weights' fingerprint), scheme, cost metric or candidate list is refused
(its scores mean something else). A file that cannot be written mid-sweep is
one warning naming it and the cause (see `records`).

Example:

```python
store = EvalScores.open("scores.json", meta)
if not store.has("conv1", 0.5):
    store.put("conv1", 0.5, eval_callback(candidate))   # on disk at once
```
"""

from __future__ import annotations

from mct_logger.evaluators.records import ScoreRecords

FORMAT = "mct_logger.compression.eval_scores"
# Fields that must match for a file's scores to be reused (the cost metric
# too: it sets the rank or channels a ratio means).
MATCHED = ("model", "fingerprint", "scheme", "cost_metric", "candidates")


def ratio_key(ratio: float) -> str:
    return f"{ratio:g}"


class EvalScores(ScoreRecords):
    """`{layer: {ratio: score}}`, mirrored to a JSON file (when a path is given)."""

    @classmethod
    def open(cls, path, meta: dict) -> "EvalScores":
        """The scores already in `path` (none when it does not exist yet).

        Raises:
            ValueError: the file is not a score file of this format, or was
                computed for another model, scheme or candidate list.
        """
        return super().open(path, meta, what="eval_scores_file", format_name=FORMAT,
                            matched=MATCHED)

    def has(self, layer: str, ratio: float) -> bool:  # noqa: D102
        return super().has((layer, ratio_key(ratio)))

    def get(self, layer: str, ratio: float) -> float | None:  # noqa: D102
        return super().get((layer, ratio_key(ratio)))

    def put(self, layer: str, ratio: float, score: float) -> None:
        """Records a score and rewrites the file atomically."""
        super().put((layer, ratio_key(ratio)), score)
