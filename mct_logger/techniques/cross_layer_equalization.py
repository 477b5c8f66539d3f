"""Cross-layer equalization (CLE): data-free rescaling of consecutive weight layers so
their per-channel weight ranges match, as in Nagel et al., "Data-Free Quantization
Through Weight Equalization and Bias Correction" (ICCV 2019).

Steps, on a graph whose batch norms are already folded:

1. **Sets.** Chains of Conv1D/2D/3D, DepthwiseConv1D/2D and Dense layers joined
   only through positively homogeneous operations (`f(s x) = s f(x)` for
   `s > 0`): ReLU (and ReLU6, see 2), LeakyReLU, PReLU, zero padding, identity
   layers (Identity, linear Activation, dropout and noise layers), max and
   average pooling (global ones too). Every layer in between has a single
   consumer and is no model output, so a branch, an Add, a sigmoid or a clipped
   ReLU between two layers ends the chain. A chain is cut into pairs
   `(layer, layer)` and triplets `(layer, depthwise, layer)`.
2. **ReLU6 -> ReLU.** A ReLU6 (fused `activation="relu6"`, `ReLU(max_value=6)`,
   `Activation("relu6")`, `keras.ops.relu6`) linking a set becomes a ReLU: scaling
   would move its clip point. This is the only change of the float function;
   the result lists every replaced ReLU6, and ReLU6s outside sets stay.
3. **Scaling.** With `r1` the per-output-channel ranges (max |w|) of the first
   layer and `r2` the per-input-channel ranges of the second:
   `s = sqrt(r1 / r2)`, `W1[..., c] /= s`, `b1 /= s`, `W2[..., c, :] *= s`. A
   triplet uses the closed form `k = cbrt(r1 r2 r3)`, `S12 = r1 / k`,
   `S23 = k / r3`, after which all three ranges equal `k`. Sets that share a
   layer are swept again until every factor is 1 to within `tolerance`.
4. **High-bias folding.** Where the first layer of a pair had a batch norm
   folded into it, its output is about `N(beta, gamma^2)` (rescaled by CLE), so
   `c = max(0, beta - 3|gamma|)` (through a ReLU) or `c = beta` (no activation)
   can leave its bias: `b1 -= c`, `b2 += sum_spatial(W2) . c`. This is exact
   except at padded borders (and, through a ReLU, for pre-activations below
   `c`, which the batch norm's statistics make rare).

Example:

```python
model_eq, result = equalize_model(model)  # new model; BNs folded, CLE applied
model_eq, result = equalize_model(model, eval_callback=score)
result.relu6_replaced, result.float_score_before, result.float_score_after
result.to_tables()["scale_factors"]
```
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import keras
import numpy as np

from mct_logger.graph import layer_kinds
from mct_logger.graph.ir import Graph, Node, read_model
from mct_logger.graph.layer_kinds import activation_name, fused_activation_kind, homogeneous_kind
from mct_logger.quantization.layers import linear_weights
from mct_logger.techniques.batch_norm_folding import fold_batch_norms, rebuild_layer
from mct_logger.techniques.cle_results import (
    CrossLayerEqualizationResult,
    EqualizationSet,
    HighBiasFold,
    output_distribution,
)
from mct_logger.techniques.weight_ranges import weight_range_tables

logger = logging.getLogger("mct_logger")

L = keras.layers

DEFAULT_TOLERANCE = 1e-6
DEFAULT_MAX_ITERATIONS = 500


# ---------------------------------------------------------------- graph facts


def member_kind(graph: Graph, node: Node) -> tuple[str | None, str]:
    """`("conv" | "depthwise" | "dense", "")` for a layer CLE can rescale, else `(None, why)`."""
    layer = node.layer
    if isinstance(layer, layer_kinds.DEPTHWISE):
        kind = "depthwise"
        if layer.depth_multiplier != 1:
            return None, f"depthwise with depth_multiplier={layer.depth_multiplier}"
    elif isinstance(layer, layer_kinds.CONV):
        kind = "conv"
        if getattr(layer, "groups", 1) != 1:
            return None, f"grouped convolution (groups={layer.groups})"
    elif isinstance(layer, L.Dense):
        kind = "dense"
    else:
        return None, f"{node.layer_class} is not a Conv, DepthwiseConv or Dense layer"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None, "channels_first data format"
    if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
        return None, "layer is already quantized or has LoRA weights"
    if not node.owns_weights or sum(n.layer is layer for n in graph) != 1:
        return None, "layer is shared by several calls"
    if len(node.inputs) != 1:
        return None, "layer has several inputs"
    return kind, ""


def link_kind(node: Node) -> str | None:
    """What a one-input node between two weight layers does to per-channel scales
    (`layer_kinds.homogeneous_kind` of its layer)."""
    return homogeneous_kind(node.layer)


def _in_channels(node: Node, kind: str) -> int:
    return int(node.layer.kernel.shape[-2])


def _out_channels(node: Node, kind: str) -> int:
    return int(node.layer.kernel.shape[-2 if kind == "depthwise" else -1])


def _follow(graph: Graph, first: Node) -> tuple[Node | None, list[Node], str]:
    """The next weight layer after `first` through homogeneous links: (node, links, why not)."""
    kind, why = member_kind(graph, first)
    if kind is None:
        return None, [], why
    if fused_activation_kind(first.layer) is None:
        return None, [], (f"its fused activation "
                          f"{activation_name(first.layer.activation)!r} is not ReLU-like")
    links: list[Node] = []
    current = first
    while True:
        if graph.is_model_output(current.name):
            return None, [], f"the output of {current.name!r} is a model output"
        consumers = graph.consumers(current.name)
        if len(consumers) != 1:
            return None, [], f"the output of {current.name!r} feeds {len(consumers)} layers"
        nxt = consumers[0]
        if len(nxt.inputs) != 1:
            return None, [], f"{nxt.name!r} ({nxt.layer_class}) has several inputs"
        next_kind, next_why = member_kind(graph, nxt)
        if next_kind is not None:
            if _in_channels(nxt, next_kind) != _out_channels(first, kind):
                return None, [], f"{nxt.name!r} does not take {first.name!r}'s channels"
            return nxt, links, ""
        if quantizable_layer(nxt):
            return None, [], f"the next weight layer {nxt.name!r} cannot be rescaled: {next_why}"
        if link_kind(nxt) is None:
            return None, [], f"{nxt.name!r} ({nxt.layer_class}) between is not ReLU-like"
        links.append(nxt)
        current = nxt


def quantizable_layer(node: Node) -> bool:
    return bool(linear_weights(node.layer))


def find_equalization_sets(graph: Graph) -> tuple[list[EqualizationSet], dict]:
    """The CLE sets of `graph` and, per weight layer starting none, the reason."""
    following: dict[str, tuple[str, list[str]]] = {}
    not_equalized: dict[str, str] = {}
    for node in graph:
        if not quantizable_layer(node):
            continue
        nxt, links, why = _follow(graph, node)
        if nxt is None:
            not_equalized[node.name] = why
        else:
            following[node.name] = (nxt.name, [n.name for n in links])
    preceded = {nxt for nxt, _ in following.values()}
    sets = []
    for start in [n for n in following if n not in preceded]:
        chain, links = [start], []
        while chain[-1] in following:
            nxt, between = following[chain[-1]]
            chain.append(nxt)
            links.append(between)
        i = 0
        while i < len(chain) - 1:
            triplet = (
                i + 2 < len(chain)
                and member_kind(graph, graph.nodes[chain[i + 1]])[0] == "depthwise"
            )
            size = 3 if triplet else 2
            members = chain[i:i + size]
            between = links[i:i + size - 1]
            sets.append(EqualizationSet(
                members=members,
                links=between,
                activations=[_link_activation(graph, members[k], between[k])
                             for k in range(size - 1)],
                scale_factors=[np.ones(_out_channels(graph.nodes[m], member_kind(
                    graph, graph.nodes[m])[0])) for m in members[:-1]],
            ))
            i += size - 1
    return sets, not_equalized


def _link_activation(graph: Graph, first: str, links: list[str]) -> str:
    kinds = [fused_activation_kind(graph.nodes[first].layer)]
    kinds += [link_kind(graph.nodes[n]) for n in links]
    for name in ("prelu", "leaky_relu"):
        if name in kinds:
            return name
    return "relu" if ("relu" in kinds or "relu6" in kinds) else "none"


# ---------------------------------------------------------------- the math


class _Weights:
    """Float64 working copies of the members' kernels and biases."""

    def __init__(self, graph: Graph, names):
        self.graph = graph
        self.kind = {n: member_kind(graph, graph.nodes[n])[0] for n in names}
        self.kernel = {}
        self.bias = {}
        self.output_scale = {}
        for n in names:
            layer = graph.nodes[n].layer
            self.kernel[n] = np.asarray(keras.ops.convert_to_numpy(layer.kernel), np.float64)
            bias = getattr(layer, "bias", None)
            self.bias[n] = (None if bias is None
                            else np.asarray(keras.ops.convert_to_numpy(bias), np.float64))
            self.output_scale[n] = np.ones(_out_channels(graph.nodes[n], self.kind[n]))

    def out_ranges(self, n) -> np.ndarray:
        k = np.abs(self.kernel[n])
        if self.kind[n] == "depthwise":  # (..., channels, 1)
            return k.reshape(-1, k.shape[-2]).max(axis=0)
        return k.reshape(-1, k.shape[-1]).max(axis=0)

    def in_ranges(self, n) -> np.ndarray:
        k = np.moveaxis(np.abs(self.kernel[n]), -2, -1)
        return k.reshape(-1, k.shape[-1]).max(axis=0)

    def scale(self, first: str, second: str, s: np.ndarray) -> None:
        """Output channels of `first` / s, input channels of `second` * s."""
        if self.kind[first] == "depthwise":
            self.kernel[first] = self.kernel[first] / s[:, None]
        else:
            self.kernel[first] = self.kernel[first] / s
        if self.bias[first] is not None:
            self.bias[first] = self.bias[first] / s
        self.output_scale[first] = self.output_scale[first] / s
        self.kernel[second] = self.kernel[second] * s[:, None]

    def absorb(self, target: str, c: np.ndarray) -> np.ndarray:
        """What a constant `c` per input channel adds to `target`'s output (no padding)."""
        kernel = self.kernel[target]
        if self.kind[target] == "depthwise":
            return kernel.reshape(-1, kernel.shape[-2]).sum(axis=0) * c
        flat = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).sum(axis=0)
        return c @ flat


def _pair_scale(r1, r2) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(r1 / r2)
    return np.where((r1 > 0) & (r2 > 0) & np.isfinite(s), s, 1.0)


def _triplet_scales(r1, r2, r3) -> tuple[np.ndarray, np.ndarray]:
    ok = (r1 > 0) & (r2 > 0) & (r3 > 0)
    k = np.cbrt(np.where(ok, r1 * r2 * r3, 1.0))
    s12 = np.where(ok, r1 / np.where(ok, k, 1.0), 1.0)
    s23 = np.where(ok, k / np.where(ok, r3, 1.0), 1.0)
    return s12, s23


def _sweep(weights: _Weights, sets: list[EqualizationSet]) -> float:
    """One pass over all sets; returns the largest |log s| applied."""
    largest = 0.0
    for st in sets:
        m = st.members
        if len(m) == 2:
            factors = [_pair_scale(weights.out_ranges(m[0]), weights.in_ranges(m[1]))]
        else:
            factors = list(_triplet_scales(
                weights.out_ranges(m[0]), weights.out_ranges(m[1]), weights.in_ranges(m[2])))
        for k, s in enumerate(factors):
            weights.scale(m[k], m[k + 1], s)
            st.scale_factors[k] = st.scale_factors[k] * s
            largest = max(largest, float(np.max(np.abs(np.log(s)))) if s.size else 0.0)
    return largest


def _high_bias_fold(graph, weights: _Weights, sets, result: CrossLayerEqualizationResult):
    for st in sets:
        for k in range(len(st.members) - 1):
            source, target = st.members[k], st.members[k + 1]
            pair = f"{source} -> {target}"
            bn = graph.nodes[source].info.get("folded_batch_norm")
            activation = st.activations[k]
            if bn is None:
                result.high_bias_fold_skipped[pair] = (
                    f"{source!r} had no batch norm folded into it (no beta and gamma)")
                continue
            if activation not in ("relu", "none"):
                result.high_bias_fold_skipped[pair] = (
                    f"the {activation} between does not commute with a bias shift")
                continue
            if weights.bias[source] is None:
                result.high_bias_fold_skipped[pair] = f"{source!r} has no bias"
                continue
            beta, gamma = output_distribution(graph.nodes[source].info)
            beta, gamma = beta * weights.output_scale[source], gamma * weights.output_scale[source]
            c = np.maximum(0.0, beta - 3.0 * gamma) if activation == "relu" else beta
            weights.bias[source] = weights.bias[source] - c
            if weights.bias[target] is None:
                weights.bias[target] = np.zeros(weights.kernel[target].shape[-1]
                                                if weights.kind[target] != "depthwise"
                                                else weights.kernel[target].shape[-2])
            weights.bias[target] = weights.bias[target] + weights.absorb(target, c)
            result.high_bias_folds.append(HighBiasFold(source, target, c, activation))


# ---------------------------------------------------------------- graph rewriting


def _input_shape(graph: Graph, node: Node):
    ref = node.inputs[0]
    return graph.nodes[ref.node].output_shapes[ref.index]


def _replace_relu6(graph: Graph, sets, result: CrossLayerEqualizationResult) -> None:
    for st in sets:
        for k, links in enumerate(st.links):
            first = graph.nodes[st.members[k]]
            if fused_activation_kind(first.layer) == "relu6":
                result.relu6_replaced.append({"node": first.name,
                                              "form": "fused activation='relu6'"})
            for name in links:
                node = graph.nodes[name]
                if link_kind(node) != "relu6":
                    continue
                layer = node.layer
                if isinstance(layer, L.ReLU):
                    new = L.ReLU.from_config({**layer.get_config(), "max_value": None})
                    form = "ReLU(max_value=6)"
                elif isinstance(layer, L.Activation):
                    new = L.Activation.from_config({**layer.get_config(), "activation": "relu"})
                    form = "Activation('relu6')"
                else:
                    new = L.ReLU(name=layer.name)
                    form = "keras.ops.relu6"
                graph.nodes[name] = dataclasses.replace(node, layer=new)
                result.relu6_replaced.append({"node": name, "form": form})


def _write_back(graph: Graph, weights: _Weights, changed, folds, unfuse) -> None:
    """Rebuilds the changed layers with their new kernels and biases."""
    absorbed = {f.source: f.amount for f in folds}
    for name in changed:
        node = graph.nodes[name]
        layer = node.layer
        config = layer.get_config()
        if name in unfuse:
            config["activation"] = "relu"
        values = node.weights()
        dtype = values["kernel"].dtype
        values["kernel"] = weights.kernel[name].astype(dtype)
        if weights.bias[name] is not None:
            values["bias"] = weights.bias[name].astype(dtype)
            config["use_bias"] = True
        new = rebuild_layer(layer, config, _input_shape(graph, node), values)
        info = dict(node.info)
        previous = info.get("cle", {})
        info["cle"] = {
            "output_scale": weights.output_scale[name]
            * np.asarray(previous.get("output_scale", 1.0)),
            "bias_absorbed": absorbed.get(name, np.zeros_like(weights.output_scale[name]))
            + np.asarray(previous.get("bias_absorbed", 0.0)) * weights.output_scale[name],
        }
        graph.nodes[name] = dataclasses.replace(node, layer=new, info=info)


# ---------------------------------------------------------------- public API


def equalize_graph(
    graph: Graph,
    *,
    high_bias_fold: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> tuple[Graph, CrossLayerEqualizationResult]:
    """CLE on a graph whose batch norms are folded (`fold_batch_norms`); returns a new graph.

    Args:
        high_bias_fold: move high biases into the next layer where a folded
            batch norm gives beta and gamma.
        tolerance: the sweeps stop when every scale factor of a sweep is within
            `exp(+-tolerance)` of 1.
        max_iterations: at most this many sweeps (a warning says if it ran out).

    Each rescaled node's `info["cle"]` holds `output_scale` (the per-channel
    factor its outputs were multiplied by) and `bias_absorbed` (what high-bias
    folding took out of its bias), which analytical bias correction needs.
    """
    result = CrossLayerEqualizationResult(applied=True,
                                          weight_ranges_before=weight_range_tables(graph))
    graph = graph.copy()
    sets, result.not_equalized = find_equalization_sets(graph)
    result.sets = sets
    members = list(dict.fromkeys(m for st in sets for m in st.members))
    weights = _Weights(graph, members)
    iterations, change = 0, 0.0
    while sets and iterations < max_iterations:
        change = _sweep(weights, sets)
        iterations += 1
        if change <= tolerance:
            break
    result.iterations = iterations
    result.converged = not sets or change <= tolerance
    if not result.converged:
        logger.warning(
            "Cross-layer equalization stopped after %d sweeps with scale factors still "
            "changing by up to %.3g (log); the ranges may be slightly unequal.",
            iterations, change,
        )
    if high_bias_fold:
        _high_bias_fold(graph, weights, sets, result)
    _replace_relu6(graph, sets, result)
    unfuse = {r["node"] for r in result.relu6_replaced if r["form"].startswith("fused")}
    _write_back(graph, weights, members, result.high_bias_folds, unfuse)
    result.weight_ranges_after = weight_range_tables(graph)
    if result.relu6_replaced:
        logger.warning(
            "Cross-layer equalization replaced %d ReLU6 with ReLU, which changes the "
            "float model: %s", len(result.relu6_replaced),
            ", ".join(r["node"] for r in result.relu6_replaced),
        )
    logger.info("Cross-layer equalization: %d sets, %d sweeps, high-bias fold on %d pairs "
                "(%d channels had a bias above 3 sigma to move)", len(sets), iterations,
                len(result.high_bias_folds),
                sum(int(np.count_nonzero(f.amount)) for f in result.high_bias_folds))
    return graph, result


def weight_ranges_only(graph: Graph, reason: str) -> CrossLayerEqualizationResult:
    """The CLE result of a run without CLE: the weight ranges, and why nothing else."""
    return CrossLayerEqualizationResult(
        applied=False, weight_ranges_before=weight_range_tables(graph), reason=reason
    )


def equalize_model(
    model: keras.Model,
    eval_callback: Callable[[keras.Model], float] | None = None,
    *,
    high_bias_fold: bool = True,
):
    """Data-free cross-layer equalization of a Keras model; returns a new model and what changed.

    Folds batch norms, replaces the ReLU6s linking equalized layers with ReLU,
    rescales conv -> conv and conv -> depthwise -> conv sets to equal
    per-channel weight ranges, and folds high biases (Nagel et al., "Data-Free
    Quantization Through Weight Equalization and Bias Correction", ICCV 2019).
    `model` is not changed.

    Args:
        model: a Functional or Sequential Keras model.
        eval_callback: `callback(model) -> float`, a float score (e.g. accuracy);
            when given, it runs on `model` and on the result so the effect of
            ReLU6 -> ReLU (the only change of the float function) is measured.
        high_bias_fold: see `equalize_graph`.

    Returns:
        `(equalized_model, CrossLayerEqualizationResult)`; the result's
        `node_info` holds the batch-norm statistics analytical bias correction
        needs (`correct_bias(equalized_model, ..., equalization=result)`).

    Raises (before any work): TypeError naming a wrong argument; ValueError when
        `eval_callback` returns NaN or inf for `model` (`utils.callbacks.ScoreCheck`).
    """
    from mct_logger.utils.arguments import check_bool, check_model
    from mct_logger.utils.callbacks import ScoreCheck, as_callback

    check_model(model)
    check_bool("high_bias_fold", high_bias_fold)
    evaluate = None if eval_callback is None else as_callback(eval_callback, "eval_callback")
    check = ScoreCheck("eval_callback")
    score_before = None if evaluate is None else check(
        evaluate(model), "the model before equalization", reference=True)
    graph = read_model(model)
    folded, fold_result = fold_batch_norms(graph)
    equalized, result = equalize_graph(folded, high_bias_fold=high_bias_fold)
    names: dict[str, str] = {}

    def remember(node, clone):
        names[node.name] = getattr(clone, "name", node.name)
        return clone

    new_model = equalized.to_keras(name=f"{model.name}_equalized", make_layer=remember)
    result.node_info = {
        names[n.name]: {k: n.info[k] for k in ("folded_batch_norm", "cle") if k in n.info}
        for n in equalized if n.name in names and n.info
    }
    if evaluate is not None:
        result.float_score_before = score_before
        result.float_score_after = check(evaluate(new_model), "the equalized model")
        if result.relu6_replaced:
            logger.warning("Float score before ReLU6 -> ReLU: %.6g, after: %.6g",
                           result.float_score_before, result.float_score_after)
    return new_model, result
