"""Spatial SVD and weight SVD: one linear layer becomes two of rank r.

Spatial SVD (Jaderberg, Vedaldi and Zisserman, "Speeding up Convolutional
Neural Networks with Low Rank Expansions", BMVC 2014; AIMET's
`spatial_svd`): a kh x kw Conv2D with kernel W[i, j, c, o] is the matrix
M[(i, c), (j, o)] of shape (kh*Cin, kw*Cout). With M = U S V^T and rank r,

    A = U_r sqrt(S_r)   -> a kh x 1 conv, Cin -> r   (strides and dilation along h)
    B = sqrt(S_r) V_r^T -> a 1 x kw conv, r -> Cout  (along w; bias and activation)

and conv_B(conv_A(x)) = conv(x; M_r) exactly (padding "same" and "valid" are
separable per axis). At full rank R = min(kh*Cin, kw*Cout) the pair
reproduces the layer. MACs at rank r, for output size Ho x Wo and the first
conv's output width Wa (= Wi):

    MACs(r) = r * (Ho * Wa * kh * Cin + Ho * Wo * kw * Cout)

Weight SVD (AIMET's `weight_svd`): a Dense (Cin -> Cout), or a 1x1 Conv2D,
with kernel W (Cin x Cout) = U S V^T becomes Cin -> r -> Cout, with
MACs(r) = r * P * (Cin + Cout) at P positions.

The rank for a compression ratio q (AIMET's `calculate_rank_given_comp_ratio`)
is the one whose cost is closest to q times the layer's: r = round(q * cost /
cost_per_rank), at least 1, at most R; a ratio whose rank saves nothing is no
candidate.

Example:

```python
layer = SvdLayer.of(graph, graph.nodes["conv2"], "spatial_svd")
rank = layer.rank_for_ratio(0.5, "mac")
graph2 = layer.apply(graph, rank)            # conv2 -> conv2_a, conv2_b
```
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from mct_logger.compression.cost import LayerCost, layer_cost, positions
from mct_logger.graph.ir import Graph, Node, TensorRef
from mct_logger.techniques.batch_norm_folding import rebuild_layer

SCHEMES = ("spatial_svd", "weight_svd")


def why_not(graph: Graph, node: Node, scheme: str) -> str | None:
    """Why `node` cannot be compressed by `scheme` (None when it can)."""
    layer = node.layer
    if not node.owns_weights or sum(n.layer is layer for n in graph) != 1:
        return "the layer is shared by several calls"
    if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
        return "the layer is quantized or has LoRA weights"
    if len(node.inputs) != 1:
        return "the layer has several inputs"
    if scheme == "weight_svd" and type(layer) is keras.layers.Dense:
        return None
    if type(layer) is not keras.layers.Conv2D:
        kinds = "Dense or 1x1 Conv2D" if scheme == "weight_svd" else "k x k Conv2D"
        return f"{node.layer_class} is not a {kinds} layer"
    if layer.data_format != "channels_last":
        return "the layer is channels_first"
    if layer.groups != 1:
        return "the layer is a grouped convolution"
    kh, kw = layer.kernel_size
    if scheme == "weight_svd" and (kh, kw) != (1, 1):
        return f"a {kh}x{kw} convolution (weight SVD takes 1x1 convolutions; use spatial_svd)"
    if scheme == "spatial_svd" and (kh == 1 or kw == 1):
        return f"a {kh}x{kw} convolution (spatial SVD needs kh, kw > 1; use weight_svd)"
    return None


@dataclasses.dataclass
class SvdLayer:
    """One layer's decomposition, computed once and truncated at any rank.

    `first` (rows x R) and `second` (R x columns) are U sqrt(S) and sqrt(S) V^T;
    `per_rank` is the cost one rank adds; `fixed` what does not scale (the bias).
    """

    node: Node
    scheme: str
    input_shape: tuple
    first: np.ndarray
    second: np.ndarray
    cost: LayerCost
    per_rank: LayerCost
    fixed: LayerCost

    @classmethod
    def of(cls, graph: Graph, node: Node, scheme: str) -> "SvdLayer":
        ref = node.inputs[0]
        input_shape = graph.nodes[ref.node].output_shapes[ref.index]
        kernel = np.asarray(keras.ops.convert_to_numpy(node.layer.kernel), dtype=np.float64)
        if scheme == "spatial_svd":
            kh, kw, cin, cout = kernel.shape
            matrix = kernel.transpose(0, 2, 1, 3).reshape(kh * cin, kw * cout)
        else:
            cin, cout = kernel.shape[-2:]
            matrix = kernel.reshape(cin, cout)
        u, s, vt = np.linalg.svd(matrix, full_matrices=False)
        root = np.sqrt(s)
        first, second = u * root, root[:, None] * vt
        layer_a, layer_b = _pair_configs(node.layer, scheme, 1)
        a_shape = type(node.layer).from_config(layer_a).compute_output_shape(input_shape)
        out_positions = positions(node.output_shapes[0])
        bias = cout if node.layer.use_bias else 0
        if scheme == "spatial_svd":
            per_rank = LayerCost(positions(a_shape) * kh * cin + out_positions * kw * cout,
                                 kh * cin + kw * cout)
        else:
            per_rank = LayerCost(positions(a_shape) * cin + out_positions * cout, cin + cout)
        return cls(node, scheme, tuple(input_shape), first.astype(np.float32),
                   second.astype(np.float32), layer_cost(node), per_rank, LayerCost(0, bias))

    @property
    def max_rank(self) -> int:
        return int(self.first.shape[1])

    def cost_at(self, rank: int) -> LayerCost:
        return LayerCost(rank * self.per_rank.macs + self.fixed.macs,
                         rank * self.per_rank.params + self.fixed.params)

    def rank_for_ratio(self, ratio: float, cost_metric: str) -> int | None:
        """The rank whose cost is closest to `ratio` times the layer's; None when
        no rank saves anything at that ratio."""
        per_rank = self.per_rank.of(cost_metric)
        rank = int(round(ratio * self.cost.of(cost_metric) / per_rank)) if per_rank else 0
        rank = min(max(rank, 1), self.max_rank)
        if self.cost_at(rank).of(cost_metric) >= self.cost.of(cost_metric):
            return None
        return rank

    def kernels(self, rank: int, capacity: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The two kernels at `rank`, zero-padded to `capacity` ranks (the same function)."""
        capacity = capacity or rank
        a = np.zeros((self.first.shape[0], capacity), np.float32)
        b = np.zeros((capacity, self.second.shape[1]), np.float32)
        a[:, :rank], b[:rank] = self.first[:, :rank], self.second[:rank]
        shape = self.node.layer.kernel.shape
        if self.scheme == "spatial_svd":
            kh, kw, cin, cout = shape
            a = a.reshape(kh, cin, 1, capacity).transpose(0, 2, 1, 3)
            b = b.reshape(capacity, kw, cout).transpose(1, 0, 2)[None]
        elif len(shape) == 4:  # 1x1 conv
            a, b = a[None, None], b[None, None]
        return a, b

    def apply(self, graph: Graph, rank: int, capacity: int | None = None) -> Graph:
        """A copy of `graph` with the layer replaced by the pair at `rank`.

        With `capacity` > rank the pair has `capacity` ranks, the extra ones zero:
        the same function, and new ranks are a weight assignment away."""
        capacity = capacity or rank
        node = self.node
        config_a, config_b = _pair_configs(node.layer, self.scheme, capacity)
        kernel_a, kernel_b = self.kernels(rank, capacity)
        layer_a = rebuild_layer(node.layer, config_a, self.input_shape, {"kernel": kernel_a})
        a_shape = layer_a.compute_output_shape(self.input_shape)
        weights_b = {"kernel": kernel_b}
        if node.layer.use_bias:
            weights_b["bias"] = keras.ops.convert_to_numpy(node.layer.bias)
        layer_b = rebuild_layer(node.layer, config_b, a_shape, weights_b)
        return replace_with_pair(graph, node.name, layer_a, layer_b, a_shape)


def _pair_configs(layer, scheme: str, rank: int) -> tuple[dict, dict]:
    config = layer.get_config()
    first = dict(config, name=f"{layer.name}_a", activation="linear", use_bias=False,
                 activity_regularizer=None)
    second = dict(config, name=f"{layer.name}_b")
    first.pop("bias_regularizer", None)
    first.pop("bias_constraint", None)
    if isinstance(layer, keras.layers.Dense):
        first["units"] = rank
        return first, second
    first["filters"] = rank
    if scheme == "spatial_svd":
        (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
        first.update(kernel_size=(kh, 1), strides=(sh, 1), dilation_rate=(dh, 1))
        second.update(kernel_size=(1, kw), strides=(1, sw), dilation_rate=(1, dw))
    else:  # 1x1: the first conv strides, the second sees every position it left
        second.update(strides=(1, 1), dilation_rate=(1, 1), padding="valid")
    return first, second


def replace_with_pair(graph: Graph, name: str, layer_a, layer_b, a_shape) -> Graph:
    """A copy of `graph` where node `name` is replaced by `layer_b(layer_a(x))`;
    its consumers read the second layer."""
    old = graph.nodes[name]
    first = Node(name=f"{name}_a", layer=layer_a, args=old.args, kwargs=dict(old.kwargs),
                 output_shapes=[tuple(a_shape)], output_dtypes=list(old.output_dtypes))
    second = Node(name=f"{name}_b", layer=layer_b, args=(TensorRef(first.name),),
                  output_shapes=list(old.output_shapes), output_dtypes=list(old.output_dtypes),
                  info={"compressed_from": name})
    nodes = []
    for node in graph.copy():
        nodes.extend([first, second] if node.name == name else [node])
    new = Graph(graph.name, nodes, graph.input_names, graph.outputs, graph.inputs_struct,
                graph.outputs_struct)
    swap = {TensorRef(name, 0): TensorRef(second.name, 0)}
    _redirect(new, swap)
    return new


def _redirect(graph: Graph, swap: dict) -> None:
    from keras import tree

    fix = lambda x: swap.get(x, x) if isinstance(x, TensorRef) else x  # noqa: E731
    for node in graph:
        node.args = tree.map_structure(fix, node.args)
        node.kwargs = tree.map_structure(fix, node.kwargs)
    graph.outputs = [fix(r) for r in graph.outputs]
