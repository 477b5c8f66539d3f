"""Bit allocation: the least total cost of per-layer choices at every memory, exactly.

Each layer l takes one candidate k (a bit width) with cost c[l, k] (e.g. its
relative noise power) and memory m[l, k] (bytes). For every memory M the
least cost is a multiple-choice knapsack:

    best_l(M) = min_k  best_{l-1}(M - m[l, k]) + c[l, k],     best_0(0) = 0

filled layer by layer over M = 0 .. capacity (O(layers x candidates x
capacity), vectorised over M). The points where the least cost, taken over
all memories up to M, drops form the Pareto frontier (memory ascending, cost
strictly descending). MCT states its mixed-precision choice as an integer
linear program solved with PuLP; this table gives the same optimum for an
additive cost without a solver, and every budget's optimum at once.

Example:

```python
frontier = Frontier(costs, memories, capacity=budget_bytes)
frontier.choice(len(frontier) - 1)   # candidate index per layer, least cost in budget
```
"""

from __future__ import annotations

import math

import numpy as np

# The table holds at most this many memory cells; above it, memory is counted in
# coarser units (rounded up per layer, so a choice within the budget stays within).
MAX_DP_CELLS = 1_000_000


class Frontier:
    """The least-cost choice at every memory (multiple-choice knapsack by dynamic programming).

    Args:
        costs, memories: (layers, candidates) arrays: relative noise power and bytes.
        capacity: the most bytes the layers may take together (None: no limit).

    `len(frontier)` points, bytes ascending and cost strictly descending, each
    the optimum within its memory; `choice(i)` is point i's candidate index
    per layer (rebuilt from the table on demand).
    """

    def __init__(self, costs: np.ndarray, memories: np.ndarray, capacity: int | None):
        top = int(memories.max(axis=1).sum())
        capacity = top if capacity is None else int(min(capacity, top))
        unit = max(1, math.ceil(capacity / MAX_DP_CELLS))
        self._sizes = -(-memories // unit)  # rounded up: what fits in units fits in bytes
        cells = capacity // unit
        best = np.full(cells + 1, np.inf)
        best[0] = 0.0
        self._picks = np.zeros((len(costs), cells + 1), dtype=np.int8)
        for layer, (cost, size) in enumerate(zip(costs, self._sizes)):
            new = np.full(cells + 1, np.inf)
            for k in range(len(cost)):
                if size[k] > cells:
                    continue
                shifted = np.full(cells + 1, np.inf)
                shifted[size[k]:] = best[: cells + 1 - size[k]] + cost[k]
                better = shifted < new
                new[better] = shifted[better]
                self._picks[layer, better] = k
            best = new
        finite = np.flatnonzero(np.isfinite(best))
        running = np.minimum.accumulate(best[finite]) if finite.size else finite
        keep = np.ones(finite.size, dtype=bool)
        keep[1:] = running[1:] < running[:-1] * (1 - 1e-12)
        self._cells = finite[keep]
        self.costs = best[self._cells]
        self.memories = memories

    def __len__(self) -> int:
        return len(self._cells)

    def choice(self, i: int) -> list:
        choice, cell = [], int(self._cells[i])
        for layer in range(len(self._picks) - 1, -1, -1):
            k = int(self._picks[layer, cell])
            choice.append(k)
            cell -= int(self._sizes[layer, k])
        return choice[::-1]
