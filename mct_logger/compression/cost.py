"""Cost of a layer and of a model: multiply-accumulates (MACs) and parameters.

For a layer with kernel K (all its weights: `K.size` elements) applied at P
output positions (the product of the output's spatial dimensions; 1 for a
Dense on a vector; the input's for a transposed convolution):

    MACs   = P * K.size          (Conv: P * kh * kw * Cin/groups * Cout;
                                  Depthwise: P * kh * kw * C * multiplier;
                                  Dense: P * Cin * Cout)
    params = K.size + bias size  (every weight of the layer)

Layers without a kernel (batch norms, activations, adds, pooling) count zero
MACs, as AIMET's cost calculator does; the model's cost is the sum over its
layers. The memory cost metric (`cost_metric="memory"`) counts parameters.

Example:

```python
costs = layer_costs(read_model(model))
costs["conv1"]                          # LayerCost(macs=..., params=...)
model_cost(costs)                       # LayerCost summed over layers
```
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
              keras.layers.Conv3DTranspose)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
COST_METRICS = ("mac", "memory")


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """MACs of one forward pass at batch size 1, and the parameter count."""

    macs: int = 0
    params: int = 0

    def __add__(self, other: "LayerCost") -> "LayerCost":
        return LayerCost(self.macs + other.macs, self.params + other.params)

    def of(self, cost_metric: str) -> int:
        """The number `cost_metric` ("mac" or "memory") counts."""
        return self.macs if cost_metric == "mac" else self.params


def positions(shape) -> int:
    """Product of a channels-last shape's spatial dimensions (batch and channels excluded)."""
    dims = [d for d in shape[1:-1]]
    if any(d is None for d in dims):
        raise ValueError(f"Cannot count MACs at a dynamic spatial size {tuple(shape)}; "
                         "give the model a fixed input shape.")
    return int(np.prod(dims)) if dims else 1


def layer_cost(node, input_shape=None) -> LayerCost:
    """The cost of one graph node (`mct_logger.graph.ir.Node`); zero without a kernel.

    `input_shape` is needed for transposed convolutions only (their positions
    are the input's)."""
    layer = node.layer
    if not isinstance(layer, keras.layers.Layer) or not node.owns_weights:
        return LayerCost()
    params = node.parameter_count()
    if isinstance(layer, _SEPARABLE):
        where = positions(node.output_shapes[0])
        macs = where * (int(np.prod(layer.depthwise_kernel.shape))
                        + int(np.prod(layer.pointwise_kernel.shape)))
        return LayerCost(macs, params)
    kernel = getattr(layer, "kernel", None)
    if kernel is None or not hasattr(kernel, "shape"):
        return LayerCost(0, params)
    if isinstance(layer, _TRANSPOSE):
        where = positions(input_shape)
    else:
        where = positions(node.output_shapes[0])
    return LayerCost(where * int(np.prod(kernel.shape)), params)


def layer_costs(graph) -> dict:
    """`{node name: LayerCost}` for every node of `graph` that has weights."""
    costs = {}
    for node in graph:
        shape = None
        if isinstance(node.layer, _TRANSPOSE):
            ref = node.inputs[0]
            shape = graph.nodes[ref.node].output_shapes[ref.index]
        cost = layer_cost(node, shape)
        if cost.macs or cost.params:
            costs[node.name] = cost
    return costs


def model_cost(costs: dict) -> LayerCost:
    """The sum of `layer_costs`."""
    total = LayerCost()
    for cost in costs.values():
        total = total + cost
    return total
