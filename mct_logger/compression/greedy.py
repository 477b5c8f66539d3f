"""Greedy per-layer compression-ratio selection, as AIMET defines it
(`GreedyCompRatioSelectAlgo`).

With N candidates, the candidate ratios are k / N for k = 1 .. N-1. Each
eligible layer is compressed alone at each ratio and the model evaluated:
score[layer][ratio]. Then a binary search on an evaluation-score threshold t
in [min score, max score]:

- each layer gets the smallest ratio whose score is still >= t, or stays
  uncompressed (ratio None) when no candidate reaches t;
- the model's cost ratio is  cost(selection) / cost(original)  in MACs or
  parameters;
- above the target the threshold is too strict (hi = t), otherwise the
  selection meets it (lo = t);
- it stops once hi - lo <= 1e-4 (max - min) or the ratio is within 0.001 of
  the target, and returns the selection at lo: the highest threshold whose
  selection meets the target.

Example:

```python
scores = {"conv1": {0.25: 0.90, 0.5: 0.95, 0.75: 0.97}, ...}
chosen = select_ratios(scores, cost_of, target=0.5)
chosen.ratios                       # {"conv1": 0.5, ...}
```
"""

from __future__ import annotations

import dataclasses
from typing import Callable

TOLERANCE = 1e-4  # of the score range
TARGET_TOLERANCE = 0.001
MAX_ITERATIONS = 200


def candidate_ratios(num_comp_ratio_candidates: int) -> list[float]:
    """k / N for k = 1 .. N-1, rounded to 6 digits (so they name JSON keys exactly)."""
    n = num_comp_ratio_candidates
    return [round(k / n, 6) for k in range(1, n)]


@dataclasses.dataclass
class Selection:
    """Chosen ratio per layer (None: not compressed), the threshold that chose
    them and the model's cost ratio they give."""

    ratios: dict
    threshold: float
    cost_ratio: float


def ratios_at(scores: dict, threshold: float) -> dict:
    """Per layer, the smallest ratio whose score is >= `threshold` (None if none)."""
    chosen = {}
    for layer, by_ratio in scores.items():
        passing = [r for r, s in by_ratio.items() if s is not None and s >= threshold]
        chosen[layer] = min(passing) if passing else None
    return chosen


def select_ratios(scores: dict, cost_ratio_of: Callable[[dict], float],
                  target: float) -> Selection:
    """The greedy selection (see the module docs).

    Args:
        scores: `{layer: {ratio: eval score or None}}` (None: no candidate there).
        cost_ratio_of: `{layer: ratio or None} -> compressed cost / original cost`.
        target: the cost ratio to reach, in (0, 1].

    Raises:
        ValueError: no score at all, or even the lowest threshold misses `target`.
    """
    values = [s for by_ratio in scores.values() for s in by_ratio.values() if s is not None]
    if not values:
        raise ValueError("No evaluation score to select compression ratios from.")
    lo, hi = min(values), max(values)
    best = Selection(ratios_at(scores, lo), lo, cost_ratio_of(ratios_at(scores, lo)))
    if best.cost_ratio > target + TARGET_TOLERANCE:
        raise ValueError(
            f"Even compressing every layer at its smallest ratio leaves "
            f"{best.cost_ratio:.3f} of the cost, above target_comp_ratio={target}."
        )
    window = (hi - lo) * TOLERANCE
    for _ in range(MAX_ITERATIONS):
        if hi - lo <= window:
            break
        middle = (lo + hi) / 2
        ratios = ratios_at(scores, middle)
        achieved = cost_ratio_of(ratios)
        if achieved > target:
            hi = middle
        else:
            lo = middle
            best = Selection(ratios, middle, achieved)
            if target - achieved < TARGET_TOLERANCE:
                break
    return best
