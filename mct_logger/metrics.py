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


def cosine_similarity(reference, quantized) -> float:
    """Cosine of the angle between the flattened tensors, in [-1, 1]."""
    a = np.asarray(reference, dtype=np.float64).ravel()
    b = np.asarray(quantized, dtype=np.float64).ravel()
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    if norms == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / norms)


def norm_relative_error(actual, reference) -> float:
    """||actual - reference|| / ||reference||."""
    reference = np.asarray(reference, dtype=np.float64)
    diff = np.linalg.norm(np.asarray(actual, dtype=np.float64) - reference)
    norm = np.linalg.norm(reference)
    return float(diff / norm) if norm else float(diff)
