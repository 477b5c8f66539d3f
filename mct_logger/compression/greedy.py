"""Greedy per-layer compression-ratio selection, after AIMET's
`GreedyCompRatioSelectAlgo` (aimet_common/comp_ratio_select.py).

With N candidates, the candidate ratios are k / N for k = 1 .. N-1. Each
eligible layer is compressed alone at each ratio and the model evaluated:
score[layer][ratio]. Then a binary search on an evaluation-score threshold t:

- each layer gets the smallest ratio whose score is still >= t, or stays
  uncompressed (ratio None) when no candidate reaches t;
- the model's cost ratio is  cost(selection) / cost(original)  in MACs or
  parameters; it does not fall as t rises (a higher bar only keeps more);
- above the target the threshold is too strict, otherwise the selection meets
  it; the result is the selection of the highest threshold that meets the
  target: the least compressed one of the family.

Where this differs from AIMET: the selection only changes at a score value, so
the thresholds searched are the distinct scores plus one above them all (no
layer compressed; AIMET's [min score, max score] never reaches it, so a target
of 1.0 still compressed a layer). The search over that sorted list is exact:
it needs no stopping window or 0.001 early stop, which could settle on a more
compressed selection than needed. The next threshold's selection misses the
target, so the result keeps as much as the candidate steps allow.

Example:

```python
scores = {"conv1": {0.25: 0.90, 0.5: 0.95, 0.75: 0.97}, ...}
chosen = select_ratios(scores, cost_of, target=0.5)
chosen.ratios                       # {"conv1": 0.5, ...}
chosen.cost_ratio, chosen.next_cost_ratio   # <= 0.5, and > 0.5 (None: none above)
```
"""

from __future__ import annotations

import dataclasses
from typing import Callable

TARGET_TOLERANCE = 0.001  # accepted above the target only when nothing reaches it


def candidate_ratios(num_comp_ratio_candidates: int) -> list[float]:
    """k / N for k = 1 .. N-1, rounded to 6 digits (so they name JSON keys exactly)."""
    n = num_comp_ratio_candidates
    return [round(k / n, 6) for k in range(1, n)]


@dataclasses.dataclass
class Selection:
    """Chosen ratio per layer (None: not compressed), the threshold that chose
    them (None: above every score, nothing compressed), the model's cost ratio
    they give, and the cost ratio of the next less compressed selection, which
    misses the target (None: there is none, this one compresses nothing)."""

    ratios: dict
    threshold: float | None
    cost_ratio: float
    next_cost_ratio: float | None = None


def ratios_at(scores: dict, threshold: float | None) -> dict:
    """Per layer, the smallest ratio whose score is >= `threshold` (None if none;
    a `threshold` of None passes no score)."""
    chosen = {}
    for layer, by_ratio in scores.items():
        passing = [r for r, s in by_ratio.items()
                   if s is not None and threshold is not None and s >= threshold]
        chosen[layer] = min(passing) if passing else None
    return chosen


def select_ratios(scores: dict, cost_ratio_of: Callable[[dict], float],
                  target: float) -> Selection:
    """The greedy selection (see the module docs): the least compressed
    selection of the threshold family whose cost ratio is <= `target` (the
    uncompressed one when it already meets `target`).

    Source: AIMET's `GreedyCompRatioSelectAlgo`, searched over the distinct
    scores plus "no layer compressed" instead of a continuous window.

    Args:
        scores: `{layer: {ratio: eval score or None}}` (None: no candidate there).
        cost_ratio_of: `{layer: ratio or None} -> compressed cost / original cost`.
        target: the cost ratio to reach, in (0, 1].

    Raises:
        ValueError: no score at all, or even the lowest threshold misses `target`
            by more than `TARGET_TOLERANCE`.
    """
    values = sorted({s for by_ratio in scores.values() for s in by_ratio.values()
                     if s is not None})
    if not values:
        raise ValueError("No evaluation score to select compression ratios from.")
    thresholds = values + [None]  # ascending strictness; None: nothing compressed
    selections = {}

    def at(index: int) -> Selection:
        if index not in selections:
            ratios = ratios_at(scores, thresholds[index])
            selections[index] = Selection(ratios, thresholds[index], cost_ratio_of(ratios))
        return selections[index]

    if at(0).cost_ratio > target:
        if at(0).cost_ratio > target + TARGET_TOLERANCE:
            raise ValueError(
                f"Even compressing every layer at its smallest ratio leaves "
                f"{at(0).cost_ratio:.3f} of the cost, above target_comp_ratio={target}.")
        best = 0
    else:  # invariant: at(lo) meets the target, at(hi) does not (or hi is past the end)
        lo, hi = 0, len(thresholds)
        while hi - lo > 1:
            middle = (lo + hi) // 2
            if at(middle).cost_ratio <= target:
                lo = middle
            else:
                hi = middle
        best = lo
    chosen = at(best)
    if best + 1 < len(thresholds):
        chosen.next_cost_ratio = at(best + 1).cost_ratio
    return chosen
