"""The "worst layers" ranking: which layers each QuantAnalyzer measure blames first.

One implementation, used by `AnalysisResult.ranking`, by the QuantAnalyzer
tables as they are published (each table carries the ranking of its own rows
under "worst_layers") and by the PTQ layer table; the QuantAnalyzer tab and
the offline report read it from there instead of ranking again.

A measure ranks the rows of one table by a value, worst first (lowest for
SQNR and scores with one layer quantized, highest for drops, MSE, scores with
one layer left in float and range widths). Rows whose value is not a finite
number are left out; ties keep table order. For the top of a ranking:

- `all_equal`: the first and last of at least two ranked values are equal
  within |a - b| <= 1e-9 * max(1, |a|, |b|): nothing stands out;
- `decisive`: one ranked value, or the first two not equal in that sense.

Example:

```python
table = {"rows": [{"layer": "a", "score": 0.9}, {"layer": "b", "score": 0.5}]}
annotate("per_layer_quant_enabled", table)["worst_layers"]["enabled"]
# {"count": 2, "layers": [{"layer": "b", "value": 0.5}, {"layer": "a", "value": 0.9}],
#  "decisive": True, "all_equal": False}
```
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Iterable

__all__ = ["MEASURES", "TOP", "annotate", "rank", "worst_layers"]

# Entries kept per measure in a published table (the tab and report show 5).
TOP = 10


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(value) else None


def _width(row) -> float | None:
    low, high = _number(row.get("min")), _number(row.get("max"))
    return None if low is None or high is None else high - low


def _quantized_rows(table):
    return [r for r in table.get("rows", []) if r.get("quantized")]


def _positive(value):
    return value if value is not None and value > 0 else None


# kind -> [(measure id, rows of the table, value of a row, worst is high)]
MEASURES: dict[str, list[tuple[str, Callable, Callable, bool]]] = {
    "per_layer_sqnr": [
        ("sqnr_isolated", _quantized_rows, lambda r: _number(r.get("sqnr_isolated_db")), False),
        ("sqnr_step", lambda t: t.get("rows", []),
         lambda r: _positive(_number(r.get("accumulated_step_db"))), True),
    ],
    "per_layer_quant_enabled": [
        ("enabled", lambda t: t.get("rows", []), lambda r: _number(r.get("score")), False)],
    "per_layer_quant_disabled": [
        ("disabled", lambda t: t.get("rows", []), lambda r: _number(r.get("score")), True)],
    "per_layer_mse_loss": [
        ("mse", lambda t: t.get("rows", []), lambda r: _number(r.get("mse")), True)],
    "weight_sqnr": [
        ("weight_sqnr", lambda t: t.get("rows", []), lambda r: _number(r.get("sqnr_db")), False)],
    "min_max_ranges": [
        ("widest_range", lambda t: t.get("activations", []), _width, True)],
    # a PTQ run's table: the SQNR of its quantized rows and their activation encodings
    "layer_table": [
        ("sqnr_isolated", _quantized_rows, lambda r: _number(r.get("sqnr_isolated_db")), False),
        ("sqnr_step", _quantized_rows,
         lambda r: _positive(_number(r.get("accumulated_step_db"))), True),
        ("widest_range", lambda t: t.get("rows", []),
         lambda r: _width({"min": r.get("encoding_min"), "max": r.get("encoding_max")}), True),
    ],
}


def rank(pairs: Iterable[tuple], worst_is_high: bool) -> list[tuple]:
    """`(key, value)` pairs worst first; pairs whose value is not a finite number dropped."""
    known = [(key, _number(value)) for key, value in pairs]
    known = [(key, value) for key, value in known if value is not None]
    return sorted(known, key=lambda kv: -kv[1] if worst_is_high else kv[1])


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def _summary(ranked: list[tuple], top: int) -> dict:
    count = len(ranked)
    layers = []
    for row, value in ranked[:top]:
        entry = {"layer": row.get("layer")}
        if "kernel" in row:
            entry["kernel"] = row["kernel"]
        layers.append({**entry, "value": value})
    return {
        "count": count,
        "layers": layers,
        "decisive": count == 1 or (count > 1 and not _close(ranked[0][1], ranked[1][1])),
        "all_equal": count > 1 and _close(ranked[0][1], ranked[-1][1]),
    }


def worst_layers(kind: str, table: dict, top: int = TOP) -> dict:
    """Measure id -> `{"count", "layers": [{"layer", "kernel"?, "value"}], "decisive",
    "all_equal"}` for the measures of a table of `kind` (empty for kinds without one).

    `count` is how many rows have a value; `layers` the first `top` of them, worst first.
    """
    result = {}
    for measure, rows_of, value_of, worst_is_high in MEASURES.get(kind, []):
        rows = [r for r in rows_of(table) if isinstance(r, dict)]
        result[measure] = _summary(rank(((r, value_of(r)) for r in rows), worst_is_high), top)
    return result


def annotate(kind: str, table: dict) -> dict:
    """`table` with its "worst_layers" added (a shallow copy), or `table` itself when
    `kind` has no measure."""
    if kind not in MEASURES or not isinstance(table, dict):
        return table
    return {**table, "worst_layers": worst_layers(kind, table)}
