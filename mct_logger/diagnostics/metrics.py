"""Float-vs-quantized error measures. SQNR in dB is the primary per-layer number;
cosine similarity is secondary (it saturates near 1 for small errors).

Example:

```python
sqnr_db(float_out, quantized_out)   # 10 * log10(sum(f^2) / sum((f - q)^2))
```
"""

from __future__ import annotations

import numpy as np

# SQNR of a bit-exact pair: reported as this many dB instead of infinity.
MAX_SQNR_DB = 200.0


def sqnr_from_powers(signal_power, noise_power):
    """SQNR in dB from summed signal and noise powers (arrays broadcast)."""
    signal = np.asarray(signal_power, dtype=np.float64)
    noise = np.asarray(noise_power, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(signal / noise)
    db = np.where(noise <= 0, MAX_SQNR_DB, db)
    db = np.where((signal <= 0) & (noise > 0), -MAX_SQNR_DB, db)
    return np.clip(db, -MAX_SQNR_DB, MAX_SQNR_DB)


def accumulated_step_db(upstream_db, accumulated_db):
    """dB the accumulated SQNR loses at a node: the lowest accumulated SQNR of its
    inputs minus its own (positive: the node adds error; negative: it hides some).

    None without a measured input, or when the node or an input is bit-exact
    (at `MAX_SQNR_DB`) or not finite: there is no meaningful step to or from it.
    """
    values = list(upstream_db) + [accumulated_db]
    if not upstream_db or any(v is None or not np.isfinite(v) or v >= MAX_SQNR_DB for v in values):
        return None
    return float(min(upstream_db) - accumulated_db)


def sqnr_db(reference, quantized) -> float:
    reference = np.asarray(reference, dtype=np.float64)
    noise = np.sum((reference - np.asarray(quantized, dtype=np.float64)) ** 2)
    return float(sqnr_from_powers(np.sum(reference**2), noise))


def mse(reference, quantized) -> float:
    """Mean squared error per element."""
    diff = np.asarray(reference, dtype=np.float64) - np.asarray(quantized, dtype=np.float64)
    return float(np.mean(diff**2))


def cosine_from_products(dot, reference_power, quantized_power):
    """Cosine from summed products: `dot / sqrt(reference_power * quantized_power)`
    (arrays broadcast), clipped to [-1, 1]. Two all-zero tensors are identical (1);
    one all-zero tensor against a non-zero one has nothing in common (0)."""
    dot, ff, qq = (np.asarray(v, dtype=np.float64) for v in (dot, reference_power, quantized_power))
    denominator = np.sqrt(ff * qq)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.where(denominator > 0, dot / denominator, np.where(ff == qq, 1.0, 0.0))
    return np.clip(cosine, -1.0, 1.0)


def cosine_similarity(reference, quantized) -> float:
    """Cosine of the angle between the flattened tensors, in [-1, 1]."""
    a = np.asarray(reference, dtype=np.float64).ravel()
    b = np.asarray(quantized, dtype=np.float64).ravel()
    return float(cosine_from_products(np.dot(a, b), np.dot(a, a), np.dot(b, b)))


def norm_relative_error(a, b) -> float:
    """`||a - b|| / ||b||` in float64 over all elements (`||a - b||` when b is all
    zeros); inf when the arrays' shapes or NaN/Inf positions differ. Positions
    where both hold the same non-finite value count as equal."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    finite = np.isfinite(b)
    if np.any(np.isfinite(a) != finite):
        return float("inf")
    x, y = a[~finite], b[~finite]
    if not np.all((x == y) | (np.isnan(x) & np.isnan(y))):
        return float("inf")
    a, b = a[finite], b[finite]
    denominator = np.linalg.norm(b)
    numerator = np.linalg.norm(a - b)
    return float(numerator / denominator) if denominator > 0 else float(numerator)
