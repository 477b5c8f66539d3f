"""JSON-safe values: the one place tables are cleaned before they leave as JSON.

JSON has no NaN or infinities (browsers' `JSON.parse` rejects them), and NumPy
scalars and arrays are not JSON types. `json_ready` makes a JSON-safe copy of a
nested table; `json_number` also rounds to 7 significant digits, for the large
per-channel tables whose float64 digits are noise. Imports NumPy only.

Example:

```python
json_ready({"sqnr": np.float32(np.inf), "rows": np.arange(2)})   # {"sqnr": None, "rows": [0, 1]}
json_number(0.123456789)                                          # 0.1234568
```
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["json_number", "json_numbers", "json_ready"]


def json_ready(value):
    """JSON-safe copy: NumPy to Python, non-finite floats to None (JSON has no NaN,
    and browsers' JSON.parse rejects it)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def json_number(value) -> float | None:
    """A JSON-safe float with 7 significant digits (None for NaN and infinities)."""
    value = json_ready(float(value))
    return None if value is None else float(f"{value:.7g}")


def json_numbers(values) -> list:
    """`json_number` of every element of `values`, flattened (one loop over
    Python floats: a per-channel table has tens of thousands)."""
    finite = math.isfinite
    return [float(f"{v:.7g}") if finite(v) else None
            for v in np.asarray(values, dtype=np.float64).ravel().tolist()]
