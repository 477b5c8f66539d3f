"""Per-output-channel weight ranges of every weight layer: the data behind the CLE
dashboard (AIMET's "visualize weight ranges" and "relative weight ranges to
identify problematic layers", as plain tables).

For each kernel of each weight layer, per output channel: min, max, mean and
range (max - min). Relative ranges divide each range by the smallest range of
a non-dead channel (a dead channel has all its weights equal, to within
`DEAD_RANGE` of the layer's largest range; it is excluded and gets None).
Channels whose relative range lies above the Tukey fence `Q3 + 1.5 IQR` of the
layer's relative ranges are flagged. A layer's spread score is
`log10(largest / smallest non-dead range)`: 0 for a layer whose channels all
have one range, 3 for a 1000x spread; rank layers by it to find the ones
per-tensor quantization will hurt (and cross-layer equalization can help).

Example:

```python
tables = weight_range_tables(fold_batch_norms(read_model(model))[0])
worst = max(tables, key=lambda t: t["spread_score"])
worst["node"], worst["outlier_channels"]
```
"""

from __future__ import annotations

import keras
import numpy as np

from mct_logger.graph.ir import Graph, Node
from mct_logger.utils.json_safe import json_number, json_numbers
from mct_logger.quantization.layers import quantizable_weights, weight_variable

# A channel whose range is at most this fraction of the layer's largest range is dead.
DEAD_RANGE = 1e-9


def channel_statistics(kernel: np.ndarray, channel_axes) -> dict:
    """Per-channel min, max, mean, range of `kernel` over every axis but `channel_axes`.

    Several channel axes (a depthwise kernel's input channel and multiplier)
    are flattened in row-major order, as the quantizers' per-channel grids are.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    ndim = kernel.ndim
    keep = sorted(a % ndim for a in channel_axes)
    moved = np.moveaxis(kernel, keep, list(range(ndim - len(keep), ndim)))
    per_channel = moved.reshape(-1, int(np.prod([kernel.shape[a] for a in keep])))
    low, high = per_channel.min(axis=0), per_channel.max(axis=0)
    return {"min": low, "max": high, "mean": per_channel.mean(axis=0), "range": high - low}


def range_summary(ranges) -> dict:
    """Relative ranges, dead and Tukey-flagged channels and the spread score of one layer."""
    ranges = np.asarray(ranges, dtype=np.float64)
    largest = float(ranges.max()) if ranges.size else 0.0
    dead = ranges <= DEAD_RANGE * largest if largest > 0 else np.ones(ranges.shape, bool)
    alive = ranges[~dead]
    relative = np.full(ranges.shape, np.nan)
    if alive.size:
        relative[~dead] = ranges[~dead] / alive.min()
    fence = None
    outliers: list[int] = []
    if alive.size:
        q1, q3 = np.percentile(relative[~dead], [25, 75])
        fence = q3 + 1.5 * (q3 - q1)
        outliers = [int(i) for i in np.flatnonzero(~dead & (relative > fence * (1 + 1e-12)))]
    spread = float(np.log10(alive.max() / alive.min())) if alive.size else 0.0
    return {
        "relative_range": relative,
        "dead_channels": [int(i) for i in np.flatnonzero(dead)],
        "outlier_channels": outliers,
        "tukey_fence": fence,
        "spread_score": spread,
    }


def layer_weight_ranges(node: Node) -> list[dict]:
    """One table per quantizable kernel of `node` (see `weight_range_tables`)."""
    tables = []
    for name, axes in quantizable_weights(node.layer).items():
        kernel = keras.ops.convert_to_numpy(weight_variable(node.layer, name))
        stats = channel_statistics(kernel, axes)
        summary = range_summary(stats["range"])
        tables.append({
            "node": node.name,
            "kernel": name,
            "layer_class": node.layer_class,
            "channels": int(stats["range"].size),
            "min": json_numbers(stats["min"]),
            "max": json_numbers(stats["max"]),
            "mean": json_numbers(stats["mean"]),
            "range": json_numbers(stats["range"]),
            "relative_range": json_numbers(summary["relative_range"]),
            "dead_channels": summary["dead_channels"],
            "outlier_channels": summary["outlier_channels"],
            "tukey_fence": None if summary["tukey_fence"] is None else json_number(summary["tukey_fence"]),
            "spread_score": json_number(summary["spread_score"]),
        })
    return tables


def weight_range_tables(graph: Graph) -> list[dict]:
    """Per-channel weight statistics of every weight layer of `graph`, in graph order.

    Each entry is a JSON-able dict: `node`, `kernel` (the kernel's attribute,
    e.g. "kernel" or "depthwise_kernel"), `layer_class`, `channels`, per-channel
    lists `min`, `max`, `mean`, `range`, `relative_range` (None for dead
    channels), `dead_channels` and `outlier_channels` (channel indices),
    `tukey_fence` (the relative-range threshold, None without live channels)
    and `spread_score`. Later calls of a shared layer are not repeated.
    """
    tables = []
    for node in graph:
        if node.owns_weights and quantizable_weights(node.layer):
            tables.extend(layer_weight_ranges(node))
    return tables


def rank_by_spread(tables: list[dict]) -> list[tuple[str, str, float]]:
    """`(node, kernel, spread score)`, widest spread first."""
    ranked = [(t["node"], t["kernel"], t["spread_score"] or 0.0) for t in tables]
    return sorted(ranked, key=lambda r: -r[2])
