"""Biases on the int32 grid of an integer kernel (LiteRT's CONV_2D,
DEPTHWISE_CONV_2D, FULLY_CONNECTED), for `QuantizationConfig(target="litert")`.

LiteRT stores a bias as int32 with scale `s_in * s_w[c]` (the input's activation
scale times the output channel's weight scale) and zero point 0, so the bias
the kernel adds is

    b_q[c] = round(b[c] / (s_in * s_w[c])) * s_in * s_w[c]

This module rounds the biases of a graph that way, so the simulation adds the
bias LiteRT adds (the difference is at most half of `s_in * s_w[c]`).

Example:

```python
rounded = round_biases(graph, plan, encodings)   # a new graph; `graph` is unchanged
```
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mct_logger.graph.ir import Graph
from mct_logger.quantization.litert_target import input_grid, runs_int8
from mct_logger.techniques.batch_norm_folding import rebuild_layer

INT32_MAX = 2**31 - 1


def round_biases(graph: Graph, plan: dict, encodings: dict) -> Graph:
    """A copy of `graph` whose int8-run Conv/Depthwise/Dense biases lie on their
    int32 grid (`s_in * s_w`); a layer without a bias, a kernel grid or an input
    grid is left as it is."""
    rounded = graph.copy()
    for node in graph:
        weights = plan[node.name].weights
        if ("kernel" not in weights or getattr(node.layer, "bias", None) is None
                or not runs_int8(node.layer) or not node.inputs):
            continue
        grid = input_grid(graph, plan, encodings, node.inputs[0].node)
        kernel = encodings.get(node.name)
        if grid is None or kernel is None or "kernel" not in kernel.weights:
            continue
        values = node.weights()
        bias = values["bias"].astype(np.float64)
        step = float(np.max(grid.scale)) * np.asarray(kernel.weights["kernel"].scale, np.float64)
        step = np.broadcast_to(np.maximum(step, 1e-30), bias.shape)
        values["bias"] = (np.clip(np.round(bias / step), -INT32_MAX, INT32_MAX) * step).astype(
            values["bias"].dtype)
        ref = node.inputs[0]
        layer = rebuild_layer(node.layer, node.layer.get_config(),
                              graph.nodes[ref.node].output_shapes[ref.index], values)
        rounded.nodes[node.name] = dataclasses.replace(node, layer=layer)
    return rounded
