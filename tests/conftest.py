"""Shared test helpers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def norm_relative_error(a, b) -> float:
    """`||a - b|| / ||b||` over all elements (0 when both are all zeros)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    denominator = np.linalg.norm(b)
    numerator = np.linalg.norm(a - b)
    if denominator == 0.0:
        return float(numerator)
    return float(numerator / denominator)
