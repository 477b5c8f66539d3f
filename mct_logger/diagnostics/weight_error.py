"""Weights before vs after quantization, per quantized kernel (AIMET's "compare
weights before and after quantization" view, as a table).

For a kernel W and its fake-quantized Q(W), with channels along the kernel's
output-channel axes (flattened row-major, as the per-channel grids are):

    SQNR_c = 10 log10( sum_i W[i, c]^2 / sum_i (W[i, c] - Q(W)[i, c])^2 )   (dB)

for each channel c, and the same sums over every channel for the whole
kernel. A channel far below the others has a range its grid does not fit
(with a per-tensor grid, a channel much narrower than the widest). The float
and quantized values are also counted on one set of even bins over the float
range, so the two histograms overlay.

Example:

```python
rows = weight_quantization_rows(info.float_graph, info.plan, info.encodings)
worst = min(rows, key=lambda r: r["sqnr_db"])
worst["layer"], worst["channel_sqnr_db"]
```
"""

from __future__ import annotations

import keras
import numpy as np

from mct_logger.diagnostics import metrics
from mct_logger.quantization.encodings import quantize_dequantize
from mct_logger.quantization.layers import broadcast_shape, weight_variable
from mct_logger.quantization.histogram import channels_last_2d

__all__ = ["weight_quantization_rows", "HISTOGRAM_BINS"]

# Bins of the whole-kernel float vs quantized histogram: enough to see the
# grid's levels at 4 bits and the shape of the distribution at 8.
HISTOGRAM_BINS = 96


def weight_quantization_rows(graph, plan: dict, encodings: dict) -> list[dict]:
    """One row per quantized kernel of `graph`, in graph order.

    Args:
        graph: the float graph (kernels as the quantized model was built from).
        plan: node name -> NodePlan (the kernels' channel axes).
        encodings: node name -> NodeEncodings (the weight grids).

    Returns:
        JSON-able dicts: `layer`, `kernel`, `class`, `bitwidth`, `per_channel`,
        `sqnr_db` (whole kernel, dB), `channels`, `channel_sqnr_db` (per output
        channel, dB), `encoding_min`, `encoding_max` (the widest grid), and
        `histogram`: `{"lo", "width", "float", "quantized"}`, counts of the float
        and the fake-quantized values on the same even bins.
    """
    rows = []
    for node in graph:
        encoding = encodings.get(node.name)
        if encoding is None or not encoding.weights or not node.owns_weights:
            continue
        for kernel_name, grid in encoding.weights.items():
            axes = plan[node.name].weights[kernel_name].channel_axes
            kernel = np.asarray(keras.ops.convert_to_numpy(weight_variable(node.layer, kernel_name)))
            rows.append(_row(node, kernel_name, kernel, grid, axes))
    return rows


def _row(node, kernel_name: str, kernel: np.ndarray, grid, axes) -> dict:
    shape = broadcast_shape(kernel.shape, axes) if grid.per_channel else None
    quantized = quantize_dequantize(kernel, grid, shape)
    f = channels_last_2d(kernel.astype(np.float64), axes)
    q = channels_last_2d(quantized.astype(np.float64), axes)
    signal, noise = np.sum(f * f, axis=0), np.sum((f - q) ** 2, axis=0)
    lo, hi = float(f.min()), float(f.max())
    if hi <= lo:
        lo, hi = lo - (abs(lo) or 1.0), hi + (abs(hi) or 1.0)
    # Quantized values can land just outside the float range (rounding to the grid's ends).
    edges_lo = min(lo, float(q.min()))
    edges_hi = max(hi, float(q.max()))
    width = (edges_hi - edges_lo) / HISTOGRAM_BINS
    float_counts = _even_counts(f, edges_lo, width)
    quantized_counts = _even_counts(q, edges_lo, width)
    return {
        "layer": node.name,
        "kernel": kernel_name,
        "class": node.layer_class,
        "bitwidth": grid.bitwidth,
        "per_channel": bool(grid.per_channel),
        "sqnr_db": float(metrics.sqnr_from_powers(signal.sum(), noise.sum())),
        "channels": int(f.shape[1]),
        "channel_sqnr_db": [round(float(v), 3) for v in metrics.sqnr_from_powers(signal, noise)],
        "encoding_min": float(np.min(grid.min)),
        "encoding_max": float(np.max(grid.max)),
        "histogram": {
            "lo": edges_lo,
            "width": width,
            "float": float_counts.tolist(),
            "quantized": quantized_counts.tolist(),
        },
    }


def _even_counts(values: np.ndarray, lo: float, width: float) -> np.ndarray:
    """Counts of `values` (all within [lo, lo + HISTOGRAM_BINS * width]) in
    `HISTOGRAM_BINS` even bins, the top edge in the last bin: one bincount
    (`np.histogram` loops over blocks of the data in Python, 5x slower here)."""
    index = ((values.ravel() - lo) / width).astype(np.intp)
    np.clip(index, 0, HISTOGRAM_BINS - 1, out=index)
    return np.bincount(index, minlength=HISTOGRAM_BINS)
