"""The "worst layers" ranking: which layers each QuantAnalyzer measure blames first.

One implementation, used by `AnalysisResult.ranking`, by the QuantAnalyzer
tables as they are published (each table carries the ranking of its own rows
under "worst_layers"), by the PTQ layer table, by the TensorBoard plugin (which
ranks the tables of older logs again with these rules) and by the console
summary (`headline_lines`); the QuantAnalyzer tab and the offline report read
it from there instead of ranking again.

A measure ranks the rows of one table by a value, worst first (lowest for
SQNR and scores with one layer quantized, highest for drops, MSE, scores with
one layer left in float and range widths). Rows whose value is not a finite
number are left out; ties keep table order. A headline measure ranks only the
rows that cross its stated threshold (`RULES`), so a card either names layers
that matter or says that none does:

- isolated SQNR below 30 dB (8 bits give about 40 dB);
- a drop of the accumulated SQNR above 3 dB at the layer, counted from its
  inputs' SQNR capped at `INPUT_CAP_DB` = 6.02 * 8 + 1.76 = 49.9 dB (what an
  8-bit grid gives a full-scale signal): an input at 186 dB that leaves at 138
  dB loses nothing that matters, so lossless layers never rank;
- a score with only this layer quantized below FP32 by more than 0.2% of |FP32|;
- a score with this layer left in float above the fully quantized score by
  more than 0.2% of |FP32|;
- weight SQNR below 35 dB.

MSE and range widths depend on each output's scale: they rank every row, for
reference, and are no headline (`headline` False). For the top of a ranking:

- `ties`: how many ranked values equal the first within |a - b| <= 1e-9 *
  max(1, |a|, |b|) (1 when the first stands alone);
- `all_equal`: at least two ranked values, the first and last equal: nothing stands out;
- `decisive`: one ranked value, or the first two not equal.

Example:

```python
table = {"fp32": 1.0, "rows": [{"layer": "a", "score": 0.9}, {"layer": "b", "score": 0.999}]}
annotate("per_layer_quant_enabled", table)["worst_layers"]["enabled"]
# {"count": 1, "ranked": 2, "layers": [{"layer": "a", "value": 0.9}], "decisive": True,
#  "all_equal": False, "ties": 1, "headline": True, "rule": "score with only ..."}
```
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Iterable

from mct_logger.diagnostics.metrics import INPUT_CAP_DB

__all__ = ["INPUT_CAP_DB", "MEASURES", "RULES", "TOP", "annotate", "capped_step_db",
           "headline_lines", "rank", "worst_layers"]

# Entries kept per measure in a published table (the tab and report show 5).
TOP = 10
ISOLATED_SQNR_BELOW_DB = 30.0
STEP_ABOVE_DB = 3.0
WEIGHT_SQNR_BELOW_DB = 35.0
SCORE_CHANGE_ABOVE = 0.002  # of |FP32|


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(value) else None


def _width(row) -> float | None:
    low, high = _number(row.get("min")), _number(row.get("max"))
    return None if low is None or high is None else high - low


def _quantized_rows(table):
    return [r for r in table.get("rows", []) if r.get("quantized")]


def capped_step_db(step_db, accumulated_db) -> float | None:
    """The drop of the accumulated SQNR at a layer with its inputs' SQNR counted
    at most `INPUT_CAP_DB`: `min(inputs, cap) - accumulated`, where the stored
    step is `inputs - accumulated` (capped or not: capping twice changes nothing)."""
    step, accumulated = _number(step_db), _number(accumulated_db)
    if step is None or accumulated is None:
        return None
    return min(step + accumulated, INPUT_CAP_DB) - accumulated


def _step(row) -> float | None:
    return capped_step_db(row.get("accumulated_step_db"), row.get("sqnr_accumulated_db"))


def _score_margin(table) -> float | None:
    fp32 = _number(table.get("fp32"))
    return None if fp32 is None else SCORE_CHANGE_ABOVE * max(abs(fp32), 1e-12)


def _enabled_crosses(value, table) -> bool:
    margin = _score_margin(table)
    return margin is not None and value < table["fp32"] - margin


def _disabled_crosses(value, table) -> bool:
    margin, full = _score_margin(table), _number(table.get("fully_quantized"))
    return margin is not None and full is not None and value > full + margin


# measure id -> (the stated rule, does a value of a table cross it); a measure
# without a rule ranks every row for reference and is no headline
RULES: dict[str, tuple[str, Callable]] = {
    "sqnr_isolated": (f"isolated SQNR below {ISOLATED_SQNR_BELOW_DB:g} dB (8 bits give about "
                      "40 dB)", lambda v, t: v < ISOLATED_SQNR_BELOW_DB),
    "sqnr_step": (f"accumulated SQNR dropping by more than {STEP_ABOVE_DB:g} dB at the layer, "
                  f"its inputs counted at most {INPUT_CAP_DB:.1f} dB (what an 8-bit grid "
                  "gives)", lambda v, t: v > STEP_ABOVE_DB),
    "enabled": (f"score with only this layer quantized more than {SCORE_CHANGE_ABOVE:.1%} of "
                "|FP32| below FP32", _enabled_crosses),
    "disabled": (f"score with this layer left in float more than {SCORE_CHANGE_ABOVE:.1%} of "
                 "|FP32| above the fully quantized score", _disabled_crosses),
    "weight_sqnr": (f"weight SQNR below {WEIGHT_SQNR_BELOW_DB:g} dB",
                    lambda v, t: v < WEIGHT_SQNR_BELOW_DB),
}


# kind -> [(measure id, rows of the table, value of a row, worst is high)]
MEASURES: dict[str, list[tuple[str, Callable, Callable, bool]]] = {
    "per_layer_sqnr": [
        ("sqnr_isolated", _quantized_rows, lambda r: _number(r.get("sqnr_isolated_db")), False),
        ("sqnr_step", lambda t: t.get("rows", []), _step, True),
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
        ("sqnr_step", _quantized_rows, _step, True),
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


def _summary(ranked: list[tuple], total: int, top: int, rule: str | None) -> dict:
    count = len(ranked)
    layers = []
    for row, value in ranked[:top]:
        entry = {"layer": row.get("layer")}
        if "kernel" in row:
            entry["kernel"] = row["kernel"]
        layers.append({**entry, "value": value})
    return {
        "count": count,
        "ranked": total,
        "layers": layers,
        "decisive": count == 1 or (count > 1 and not _close(ranked[0][1], ranked[1][1])),
        "all_equal": count > 1 and _close(ranked[0][1], ranked[-1][1]),
        "ties": sum(_close(ranked[0][1], v) for _, v in ranked) if ranked else 0,
        "headline": rule is not None,
        "rule": rule,
    }


def worst_layers(kind: str, table: dict, top: int = TOP) -> dict:
    """Measure id -> `{"count", "ranked", "layers": [{"layer", "kernel"?, "value"}],
    "decisive", "all_equal", "ties", "headline", "rule"}` for the measures of a
    table of `kind` (empty for kinds without one).

    `ranked` is how many rows have a value; `count` how many of them cross the
    measure's rule (all of them for a measure without one); `layers` the first
    `top` of those, worst first.
    """
    result = {}
    for measure, rows_of, value_of, worst_is_high in MEASURES.get(kind, []):
        rows = [r for r in rows_of(table) if isinstance(r, dict)]
        ranked = rank(((r, value_of(r)) for r in rows), worst_is_high)
        rule, crosses = RULES.get(measure, (None, None))
        crossing = ranked if crosses is None else [(r, v) for r, v in ranked if crosses(v, table)]
        result[measure] = _summary(crossing, len(ranked), top, rule)
    return result


def annotate(kind: str, table: dict) -> dict:
    """`table` with its "worst_layers" added (a shallow copy), or `table` itself when
    `kind` has no measure."""
    if kind not in MEASURES or not isinstance(table, dict):
        return table
    return {**table, "worst_layers": worst_layers(kind, table)}


# measure id -> what the console calls its worst layers
_CONSOLE = {"sqnr_isolated": "lowest isolated SQNR", "sqnr_step": "sharpest SQNR drop",
            "enabled": "costliest alone quantized", "disabled": "most recovered in float",
            "weight_sqnr": "lowest weight SQNR"}


def headline_lines(tables: dict, top: int = 3) -> list[str]:
    """The console's summary of the headline findings, as the tab shows them:
    one line per measure with layers past its rule ("lowest isolated SQNR: a
    (12.3 dB), b (18.0 dB)", or "... : 4 layers tie at 25.0 dB"), or one line
    saying that no layer crosses any rule."""
    lines = []
    for kind, table in tables.items():
        if not isinstance(table, dict):
            continue
        for measure, found in (table.get("worst_layers") or worst_layers(kind, table)).items():
            if not found.get("headline") or not found["count"]:
                continue
            first = found["layers"][0]["value"]
            if found["ties"] > 1:
                shown = f"{found['ties']} layers tie at {_value(measure, first)}"
            else:
                shown = ", ".join(f"{e['layer']} ({_value(measure, e['value'])})"
                                  for e in found["layers"][:top])
            lines.append(f"{_CONSOLE[measure]}: {shown}")
    if not lines:
        lines.append("no layer crosses a threshold (" + "; ".join(
            rule for rule, _ in RULES.values()) + ")")
    return lines


def _value(measure: str, value: float) -> str:
    if measure in ("sqnr_isolated", "weight_sqnr"):
        return f"{value:.1f} dB"
    if measure == "sqnr_step":
        return f"{value:.1f} dB lost"
    return f"{value:.6g}"
