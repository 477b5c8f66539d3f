"""PTQ's rebuild checks, before any stage: the float graph rebuilt from the model
computes the model (`check_rebuild`), and, when a model input feeds a Keras
mask, so do the rebuilt graph and the quantized model with its quantizers off
on padded rows (`check_masks`). Both compare outputs by the norm-relative
error `||y' - y|| / ||y|| <= 1e-5` on `REBUILD_CHECK_SAMPLES` samples.

Example:

```python
check_masks(model, graph, first_batch, config, clones)   # or RebuildMismatchError
```
"""

from __future__ import annotations

import logging

import numpy as np

from mct_logger.diagnostics.mask_check import check_quantizers_off, padded_batch
from mct_logger.diagnostics.rebuild_check import RebuildMismatchError, check_rebuilt_graph
from mct_logger.graph.clone import REUSE_LAYER
from mct_logger.graph.ir import Graph
from mct_logger.quantization.config import QuantizationConfig
from mct_logger.quantization.plan import plan_quantization

__all__ = ["REBUILD_CHECK_SAMPLES", "check_masks", "check_rebuild"]

logger = logging.getLogger("mct_logger")

# A few samples prove the rebuilt graph (eager calls cost per sample).
REBUILD_CHECK_SAMPLES = 4


def check_rebuild(model, graph: Graph, batch, config: QuantizationConfig, clones) -> None:
    """`check_rebuilt_graph`, except that a diverging node the config keeps in
    float is built from the user's own layer object instead of a clone (its
    state then needs no copying) and the check runs again."""
    for _ in range(len(graph.nodes) + 1):
        try:
            check_rebuilt_graph(model, graph, batch, clones=clones)
            return
        except RebuildMismatchError as exc:
            node = graph.nodes.get(exc.node) if exc.node else None
            if (node is None or node.info.get(REUSE_LAYER)
                    or not config.for_node(node.name)[0]["keep_float"]):
                raise
            logger.info("Node %r (%s) is kept in float and its clone differs from your "
                        "layer: the quantized model uses your layer object itself.",
                        node.name, node.layer_class)
            node.info[REUSE_LAYER] = True


def check_masks(model, graph: Graph, batch, config: QuantizationConfig, clones) -> None:
    """The rebuild check (`check_rebuild`) on `batch`, and, when a model input feeds
    a masking layer (or is a padding mask), on padded copies of its rows too (one
    run of both), then the quantized model with its quantizers off against the
    model on the padded rows (`mask_check`): a Keras mask lost on the way is a
    `RebuildMismatchError` naming the node, never a silent drift."""
    padded = padded_batch(graph, batch)
    if padded is None:
        check_rebuild(model, graph, batch, config, clones)
        return
    both = [np.concatenate([np.asarray(a), b]) for a, b in zip(batch, padded)]
    check_rebuild(model, graph, both, config, clones)
    check_quantizers_off(model, graph, plan_quantization(graph, config, report=False), padded,
                         clones=clones)
