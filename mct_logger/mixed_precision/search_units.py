"""What the mixed-precision search gives a width: a weight layer, or one sublayer
group of a composite layer.

A plain weight layer (Conv, Dense, EinsumDense, MultiHeadAttention, ...) is one
unit: all its kernels take the unit's width. A composite layer (a KerasHub
`TransformerEncoder`, a user's block of Dense/EinsumDense sublayers) is split
into its sublayer groups, `node/point` ("transformer_layer_0/self_attention_layer/query"),
each with the kernels below that point: the attention projections and the
feed-forward layers of one block then get widths of their own, as any other
layer's would, and the chosen width is an override naming that group
(`QuantizationConfig.for_inner`).

Memory of a unit at b bits: its kernels at b bits, plus, for a plain layer, its
other weights (biases) at 32 bits; a composite's biases and other weights count
in the fixed part.

Example:

```python
units = search_units(graph, plan)
[(u.name, u.kernels) for u in units]
# [("conv1", ("kernel",)), ("block/attention/query", ("attention/query/kernel",)), ...]
unit_memory(graph, plan, units[0], 4)      # bytes at 4 bits
```
"""

from __future__ import annotations

import dataclasses
import re

from mct_logger.graph import layer_kinds
from mct_logger.graph.ir import layer_name_of
from mct_logger.quantization.config import QuantizationConfig
from mct_logger.quantization.memory import node_memory
from mct_logger.quantization.plan import inner_name, sublayer_groups

__all__ = ["SearchUnit", "override_key", "search_units", "unit_memory", "unit_settings"]


@dataclasses.dataclass(frozen=True)
class SearchUnit:
    """One searched width.

    Attributes:
        name: the node's name, or `node/point` for a composite's sublayer group.
        node: the graph node that holds the kernels.
        kernels: the kernel names (as in the node's plan) that take the width.
        layer_class: the class of the layer (the sublayer's for a group).
        point: the sublayer's path below the node, or None for a whole layer.
    """

    name: str
    node: str
    kernels: tuple
    layer_class: str
    point: str | None = None


def search_units(graph, plan: dict) -> list[SearchUnit]:
    """Every weight layer PTQ quantizes, in graph order, a composite one as its
    sublayer groups (those with kernels)."""
    units = []
    for node in graph:
        p = plan[node.name]
        if not (p.weights and node.owns_weights):
            continue
        groups = sublayer_groups(p)
        if not groups:
            units.append(SearchUnit(node.name, node.name, tuple(p.weights), node.layer_class))
            continue
        sublayers = layer_kinds.sublayer_outputs(node.layer)
        for point in groups:
            kernels = tuple(k for k in p.weights if k.rpartition("/")[0] == point)
            if kernels:
                sublayer = sublayers.get(point)
                units.append(SearchUnit(
                    inner_name(node.name, point), node.name, kernels,
                    type(sublayer).__name__ if sublayer is not None else node.layer_class,
                    point))
    return units


def unit_memory(graph, plan: dict, unit: SearchUnit, bits: int | None) -> int:
    """Bytes of the unit's weights with its kernels at `bits` (None: as planned)."""
    node = graph.nodes[unit.node]
    specs = plan[unit.node].weights
    widths = {k: (specs[k].bitwidth if bits is None else bits) for k in unit.kernels}
    if unit.point is None:
        return node_memory(node, widths)["weights"]
    sizes = node.weight_sizes()
    return (sum(sizes[k] * b for k, b in widths.items()) + 7) // 8


def unit_settings(config: QuantizationConfig, unit: SearchUnit) -> tuple[dict, list[str]]:
    """The unit's effective settings and the override patterns that set them."""
    if unit.point is None:
        return config.for_node(unit.node)
    return config.for_inner(unit.node, unit.point)


def override_key(unit: SearchUnit) -> str:
    """The override pattern that names the unit alone: the layer's name for a
    layer (as a user writes it), the full `node/point` for a sublayer group."""
    name = layer_name_of(unit.name) if unit.point is None else unit.name
    return name if re.escape(name) == name else re.escape(name)
