"""The maths of the histogram observers' grid search: the expected quantization
error of candidate grids on a histogram, and the cheapest candidate.

For a histogram with bins [a_i, b_i] holding probability p_i, spread uniformly,
a grid of step Δ = scale over [lower, upper] = [offset Δ, (offset + levels) Δ]
costs

    E = Σ_i p_i / (b_i - a_i) · ( ∫ rounding error inside the grid
                                  + γ ∫ (x - clip(x))^2 outside it )

where the rounding error integrates exactly as Δ^3 times the unit sawtooth
integral (`sawtooth_integral`); γ weights saturation (AIMET's TF-enhanced uses
3). With `midpoint`, each bin's mass sits at its midpoint instead (AIMET's
model, which aliases when bins are wider than the step).

Example:

```python
a, b, p = compact(a, b, p, low, high)
index = cheapest(a, b, p, scale, offset, levels=255, gamma=3.0)
```
"""

from __future__ import annotations

import numpy as np

from mct_logger.quantization.encodings import MIN_RANGE, fake_quantize

__all__ = [
    "cdf", "cheapest", "compact", "expected_error", "grids_from_ranges", "sawtooth_integral",
]


def cdf(lo, width, counts, low, high, points):
    """Cumulative counts at `points` (k, P) of k uniform-grid histograms, each
    bin's mass spread uniformly over its part of [low, high]."""
    bins = counts.shape[1]
    cumulative = np.concatenate([np.zeros((counts.shape[0], 1)), np.cumsum(counts, axis=1)], axis=1)
    lo, width = lo[:, None], width[:, None]
    low, high = low[:, None], high[:, None]
    j = np.clip(np.floor((points - lo) / width), 0, bins - 1).astype(np.intp)
    a = np.clip(lo + j * width, low, high)
    b = np.clip(lo + (j + 1) * width, low, high)
    span = b - a
    inside = np.clip((points - a) / np.where(span > 0, span, 1.0), 0.0, 1.0)
    fraction = np.where(span > 0, inside, (points >= a).astype(np.float64))
    below = np.take_along_axis(cumulative, j, axis=1)
    return below + np.take_along_axis(counts, j, axis=1) * fraction


# ---------------------------------------------------------------------------
# Expected quantization error of candidate grids on a histogram
# ---------------------------------------------------------------------------

# Channels x candidates x bins evaluated at once: small enough to stay in cache
# (faster than bigger chunks on a 2-core box) and to bound memory.
CHUNK_ELEMENTS = 1 << 15


def sawtooth_integral(t):
    """∫_0^t (u - round(u))^2 du, up to a constant: the rounding error on a unit grid."""
    k = np.floor(t + 0.5)
    d = t - k
    return k / 12.0 + (d * d * d) / 3.0


def expected_error(a, b, p, scale, offset, levels, gamma, midpoint=False):
    """Expected squared error of each candidate grid on each histogram.

    a, b, p: (k, n) bin ends and probabilities; scale, offset: (k, K) candidates.
    Returns (k, K). With `midpoint`, each bin's mass sits on its midpoint (AIMET's
    model); otherwise it is uniform over [a, b], which integrates the rounding
    error exactly and does not alias when bins are wider than the step.
    Saturation (the error of values beyond the grid's ends) is weighted by `gamma`.
    """
    s = scale[:, :, None]
    lower = offset[:, :, None] * s
    upper = lower + levels * s
    if midpoint:
        m = (0.5 * (a + b))[:, None, :]
        q = fake_quantize(m, s, offset[:, :, None], levels)
        error = (m - q) ** 2
        error *= np.where((m < lower) | (m > upper), gamma, 1.0)
        return np.einsum("kcn,kn->kc", error, p)
    width = b - a
    a3, b3 = a[:, None, :], b[:, None, :]
    # Saturation below the grid: ∫ over [a, min(b, lower)] of (lower - x)^2.
    u = np.maximum(lower - a3, 0.0)
    v = np.maximum(lower - b3, 0.0)
    total = (u - v) * (u * u + u * v + v * v)
    # Saturation above the grid: ∫ over [max(a, upper), b] of (x - upper)^2.
    u = np.maximum(b3 - upper, 0.0)
    v = np.maximum(a3 - upper, 0.0)
    total += (u - v) * (u * u + u * v + v * v)
    total *= gamma / 3.0
    # Rounding inside the grid: Δ^3 ∫ of the unit sawtooth over the inside part.
    inside_a = np.minimum(np.maximum(a3, lower), upper) / s
    inside_b = np.minimum(np.maximum(b3, lower), upper) / s
    total += (sawtooth_integral(inside_b) - sawtooth_integral(inside_a)) * (s * s * s)
    density = p / width  # mass per unit length
    return np.einsum("kcn,kn->kc", total, density)


def compact(a, b, p, low, high):
    """Drops empty bins (padding rows to the fullest), normalises p, and gives
    every bin a positive width."""
    total = p.sum(axis=1, keepdims=True)
    p = p / np.where(total > 0, total, 1.0)
    keep = int(max(1, (p > 0).sum(axis=1).max()))
    if keep < p.shape[1]:
        order = np.argsort(p <= 0, axis=1, kind="stable")[:, :keep]
        a = np.take_along_axis(a, order, axis=1)
        b = np.take_along_axis(b, order, axis=1)
        p = np.take_along_axis(p, order, axis=1)
    floor = 1e-9 * (high - low)[:, None] + 1e-300
    b = np.maximum(b, a + floor)
    return a, np.maximum(b, np.nextafter(a, np.inf)), p


def cheapest(a, b, p, scale, offset, levels, gamma, midpoint=False):
    """Index of the cheapest candidate per channel, evaluated in bounded chunks."""
    per_channel = max(1, scale.shape[1] * a.shape[1])
    step = max(1, CHUNK_ELEMENTS // per_channel)
    best = np.empty(scale.shape[0], dtype=np.intp)
    for start in range(0, scale.shape[0], step):
        rows = slice(start, start + step)
        cost = expected_error(
            a[rows], b[rows], p[rows], scale[rows], offset[rows], levels, gamma, midpoint
        )
        best[rows] = np.argmin(cost, axis=1)
    return best


def grids_from_ranges(lo, hi, levels):
    """Asymmetric (scale, offset) covering [lo, hi] (lo <= 0 <= hi), zero exact."""
    scale = np.maximum(hi - lo, MIN_RANGE) / levels
    offset = -np.clip(np.round(-lo / scale), 0, levels)
    return scale, offset
