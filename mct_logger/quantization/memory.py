"""Memory accounting: bytes of each node and of the whole model, float32 or as planned.

A node costs its weights plus its output activations at batch 1:

    weights     = ceil(sum_k size(k) * bits(k) / 8)   (kernels at their planned bits,
                                                       biases and the rest at 32)
    activations = ceil(elements(output) * bits(output) / 8)

The headline model figure (`model_memory`) sums every node, except that an
output fused into the following activation (`PlanReason.FUSED`) is one tensor on
the target and is counted once, as the activation's output.

Example:

```python
before = graph_memory(graph)            # float32
after = graph_memory(graph, plan)       # planned bits
model_memory(after, plan) / model_memory(before, plan)   # about 0.25 for W8A8
```
"""

from __future__ import annotations

import numpy as np

from mct_logger.quantization.plan import PlanReason

__all__ = [
    "activation_bits", "counted_bytes", "elements_per_sample", "graph_memory",
    "model_memory", "node_memory",
]


def elements_per_sample(node) -> int:
    """Elements of a node's (first) output per sample; dynamic dimensions are left out."""
    dims = [d for d in node.output_shapes[0][1:] if d is not None]
    return int(np.prod(dims)) if dims else 1


def node_memory(node, weight_bits: dict | None = None, activation_bits: int = 32) -> dict:
    """Bytes of a node at batch 1: `{"weights", "activations", "total"}`.

    `weight_bits` maps kernel names to their bits; other weights (biases,
    anything unquantized) count 32 bits.
    """
    bits = 0
    if node.owns_weights:
        for name, size in node.weight_sizes().items():
            bits += size * (weight_bits or {}).get(name, 32)
    weights = (bits + 7) // 8
    activations = (node.output_elements() * activation_bits + 7) // 8
    return {"weights": weights, "activations": activations, "total": weights + activations}


def graph_memory(graph, plan: dict | None = None) -> dict[str, dict]:
    """`node_memory` of every node: float32 without a plan, planned bits with one."""
    if plan is None:
        return {n.name: node_memory(n) for n in graph}
    act_bits = activation_bits(graph, plan)
    return {
        n.name: node_memory(
            n, {k: s.bitwidth for k, s in plan[n.name].weights.items()}, act_bits[n.name]
        )
        for n in graph
    }


def counted_bytes(node_memory: dict, plan: dict, name: str) -> int:
    """One node's share of `model_memory`: an output fused into the following
    activation is counted at that activation, so it adds only its weights."""
    m = node_memory[name]
    return m["weights"] + (0 if plan[name].reason is PlanReason.FUSED else m["activations"])


def model_memory(node_memory: dict, plan: dict) -> int:
    """The headline model bytes: the sum of `counted_bytes` over every node.

    `node_memory` is `graph_memory(graph)` (float32) or `graph_memory(graph, plan)`.
    """
    return int(sum(counted_bytes(node_memory, plan, name) for name in node_memory))


def activation_bits(graph, plan: dict) -> dict[str, int]:
    """The precision each node's output is stored at on the target.

    A quantized output has its quantizer's bits; a pass-through layer keeps its
    input's; an output fused into the following activation is stored at that
    activation's; anything else stays float32.
    """
    bits: dict[str, int] = {}
    for node in graph:
        p = plan[node.name]
        if p.activation is not None:
            bits[node.name] = p.activation.bitwidth
        elif p.reason is PlanReason.PASSTHROUGH and node.inputs:
            bits[node.name] = bits.get(node.inputs[0].node, 32)
        else:
            bits[node.name] = 32
    for node in graph:
        p = plan[node.name]
        if p.reason is PlanReason.FUSED:
            consumer = plan[graph.consumers(node.name)[0].name].activation
            bits[node.name] = consumer.bitwidth if consumer else 32
    return bits
