"""Channel pruning: a Conv2D loses input channels, its producer the matching outputs.

AIMET's channel pruning (after He, Zhang and Sun, "Channel Pruning for
Accelerating Very Deep Neural Networks", ICCV 2017), for a Conv2D L with
kernel W (kh, kw, Cin, Cout) and a compression ratio q:

1. channel selection: keep the k = round(q * Cin) input channels of largest
   L1 weight magnitude sum_{i, j, o} |W[i, j, c, o]|;
2. winnowing: the producer of L's input (the Conv2D upstream, through
   per-channel layers: batch norms, activations, zero padding, depthwise
   convolutions; `layer_kinds.is_channelwise`)
   loses the pruned output channels, the layers between lose them too;
3. weight reconstruction: with X the sampled input patches of L (rows of
   kh*kw*Cin values at random output positions of the representative data)
   and Y = X W + b the original layer's outputs there, the kept weights are
   the least-squares solution  W_k = argmin ||X_k W_k - (Y - b)||^2 +
   lambda ||W_k - W0_k||^2,  where X_k holds the kept channels' columns, W0_k
   their original weights and lambda = RIDGE * trace(X_k^T X_k) / columns. The
   small pull toward W0 keeps the fit well-posed where sampled columns are
   collinear or constant (dead or saturated ReLU6 channels): without it,
   MobileNetV2's refit layers fit the samples (output cosine 0.99) and fail on
   other inputs (0.07). When layers are pruned one after another, X comes from
   the model pruned so far and Y from the original.

L's MACs and its producer's scale by k / Cin. Pruning at q = 1.0 keeps every
channel and changes nothing.

Example:

```python
chain = trace_chain(graph, graph.nodes["pw1"])     # producer "stem", via "dw1"
layer = PruningLayer(graph.nodes["pw1"], chain, patches)
kept, kernel = layer.reconstruct(layer.keep_for_ratio(0.5))
graph2 = layer.apply(graph, kept, kernel)
```
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from mct_logger.graph.ir import Graph, Node, variable_name
from mct_logger.graph.layer_kinds import is_channelwise
from mct_logger.techniques.batch_norm_folding import rebuild_layer

# Output positions sampled per image for the least-squares reconstruction.
POSITIONS_PER_IMAGE = 16
# Strength of the pull toward the original weights, relative to the mean
# diagonal of X_k^T X_k.
RIDGE = 0.01


@dataclasses.dataclass(frozen=True)
class Chain:
    """How L's input channels are made: `producer` (a Conv2D) then `between`
    (per-channel layers, in order)."""

    producer: str
    between: tuple[str, ...]


def _single_consumer(graph: Graph, name: str) -> bool:
    return len(graph.consumers(name)) == 1 and not graph.is_model_output(name)


def _plain_conv(layer) -> bool:
    return (type(layer) is keras.layers.Conv2D and layer.groups == 1
            and layer.data_format == "channels_last")


def trace_chain(graph: Graph, node: Node) -> Chain | str:
    """The producer chain of `node`'s input channels, or why it cannot be pruned."""
    if not _plain_conv(node.layer):
        return f"{node.layer_class} is not an ungrouped channels-last Conv2D"
    if len(node.inputs) != 1 or not node.owns_weights:
        return "the layer has several inputs or is shared"
    between = []
    current = graph.nodes[node.inputs[0].node]
    while True:
        if current.is_input:
            return "its input channels come from the model input"
        if not _single_consumer(graph, current.name) or len(current.inputs) != 1:
            return (f"its input comes through {current.name!r}, whose output also feeds "
                    "other layers (or which has several inputs)")
        if sum(n.layer is current.layer for n in graph) != 1:
            return f"{current.name!r} is shared by several calls"
        layer = current.layer
        if _plain_conv(layer):
            return Chain(current.name, tuple(reversed(between)))
        if not is_channelwise(layer):
            return (f"its input comes from {current.layer_class} {current.name!r}, which is "
                    "neither a Conv2D nor a per-channel layer (batch norm, activation, depthwise)")
        between.append(current.name)
        current = graph.nodes[current.inputs[0].node]


def sample_positions(output_shape, images: int, rng: np.random.Generator) -> np.ndarray:
    """`(images * POSITIONS_PER_IMAGE, 3)` rows of (image, row, column) output positions."""
    _, height, width, _ = output_shape
    count = min(POSITIONS_PER_IMAGE, height * width)
    rows = []
    for image in range(images):
        flat = rng.choice(height * width, size=count, replace=False)
        rows.append(np.stack([np.full(count, image), flat // width, flat % width], axis=1))
    return np.concatenate(rows)


def patches(layer, x: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Input patches of conv `layer` at output positions `where` (image, row, col),
    as rows of kh*kw*Cin values in the kernel's (i, j, c) order."""
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
    _, height, width, _ = x.shape
    if layer.padding == "same":
        out_h, out_w = -(-height // sh), -(-width // sw)
        pad_h = max((out_h - 1) * sh + (kh - 1) * dh + 1 - height, 0)
        pad_w = max((out_w - 1) * sw + (kw - 1) * dw + 1 - width, 0)
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                       (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    image, row, col = where[:, 0], where[:, 1] * sh, where[:, 2] * sw
    taps = [x[image, row + i * dh, col + j * dw] for i in range(kh) for j in range(kw)]
    return np.concatenate(taps, axis=1)


class PruningLayer:
    """One prunable layer: its channel order by weight magnitude, and sampled
    input patches `x` (rows x kh*kw*Cin) with the original outputs `y` there."""

    def __init__(self, node: Node, chain: Chain, x: np.ndarray | None = None):
        self.node = node
        self.chain = chain
        kernel = np.asarray(keras.ops.convert_to_numpy(node.layer.kernel), np.float64)
        self.kernel = kernel
        self.channels = kernel.shape[2]
        magnitude = np.abs(kernel).sum(axis=(0, 1, 3))
        self.order = np.argsort(-magnitude, kind="stable")  # most important first
        self.x = self.y = None
        if x is not None:
            self.set_patches(x)

    def set_patches(self, x: np.ndarray) -> None:
        """The sampled input patches of the original model; the targets follow."""
        self.x = np.asarray(x, np.float64)
        self.y = self.x @ self.kernel.reshape(-1, self.kernel.shape[-1])  # bias stays as is

    def keep_for_ratio(self, ratio: float) -> int | None:
        """Channels kept at `ratio`; None when that keeps them all."""
        keep = max(1, int(round(ratio * self.channels)))
        return None if keep >= self.channels else keep

    def kept_channels(self, keep: int) -> np.ndarray:
        return np.sort(self.order[:keep])

    def reconstruct(self, keep: int, x: np.ndarray | None = None):
        """`(kept channel indices, kernel (kh, kw, keep, Cout))`, least squares on the
        patches (`x`: patches from the model pruned so far; default the original's),
        regularized toward the original weights (see the module docs)."""
        kept = self.kept_channels(keep)
        kh, kw, cin, cout = self.kernel.shape
        x = self.x if x is None else np.asarray(x, np.float64)
        columns = (np.arange(kh * kw)[:, None] * cin + kept[None, :]).ravel()
        design = x[:, columns]
        original = self.kernel.reshape(-1, cout)[columns]
        gram = design.T @ design
        strength = RIDGE * np.trace(gram) / len(columns)
        solution, *_ = np.linalg.lstsq(gram + strength * np.eye(len(columns)),
                                       design.T @ self.y + strength * original, rcond=None)
        return kept, solution.reshape(kh, kw, len(kept), cout).astype(np.float32)

    def masked_kernel(self, kept: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        """The full-width kernel with pruned input channels zero: the pruned layer's
        function on the unpruned model."""
        full = np.zeros(self.kernel.shape, np.float32)
        full[:, :, kept, :] = kernel
        return full

    def effects(self, keep: int) -> dict:
        """`{node: (input fraction, output fraction)}` of pruning to `keep` channels."""
        fraction = keep / self.channels
        effects = {self.node.name: (fraction, 1.0), self.chain.producer: (1.0, fraction)}
        for name in self.chain.between:
            effects[name] = (fraction, 1.0)  # depthwise: one kernel per channel
        return effects

    def apply(self, graph: Graph, kept: np.ndarray, kernel: np.ndarray) -> Graph:
        """A copy of `graph` with the channels outside `kept` removed from L, its
        producer and the layers between, and L's kernel set to `kernel`."""
        new = graph.copy()
        for name in (self.chain.producer, *self.chain.between, self.node.name):
            node = new.nodes[name]
            ref = node.inputs[0]
            input_shape = new.nodes[ref.node].output_shapes[ref.index]
            layer = node.layer
            config = layer.get_config()
            weights = {variable_name(w): keras.ops.convert_to_numpy(w) for w in layer.weights}
            if name == self.node.name:
                weights["kernel"] = kernel
            elif name == self.chain.producer:
                config["filters"] = len(kept)
                weights = {k: v[..., kept] for k, v in weights.items()}
            elif isinstance(layer, keras.layers.DepthwiseConv2D):
                weights = {k: (v[:, :, kept] if k == "kernel" else v[kept]) for k, v in weights.items()}
            else:  # batch norm; weightless per-channel layers keep their config
                weights = {k: v[kept] for k, v in weights.items()}
            # weightless per-channel layers (activations) stay as they are
            rebuilt = rebuild_layer(layer, config, input_shape, weights) if weights else layer
            shapes = node.output_shapes
            if name != self.node.name:
                shapes = [tuple(shapes[0][:-1]) + (len(kept),)]
            new.nodes[name] = dataclasses.replace(node, layer=rebuilt, output_shapes=shapes)
        return new
