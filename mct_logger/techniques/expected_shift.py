"""The expected output shift weight quantization adds to a layer: analytical bias
correction's maths (Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction", ICCV 2019, section 4.2).

A layer's input that comes from a folded batch norm is about `z ~ N(beta, gamma^2)`
per channel, put through its activation; its mean has a closed form
(`expected_activation`): `beta` without activation,
`beta * Phi(beta/gamma) + gamma * phi(beta/gamma)` through a ReLU, and the
clipped-Gaussian mean through a ReLU6. The output's mean shift is then
`E = sum_taps(coverage * (W_q - W))^T E[x]` (`analytical_shift`), each kernel
tap weighted by the share of output positions where it reads real input rather
than "same" padding (`tap_coverage`).

Example:

```python
mean_x = expected_activation(beta, gamma, "relu6")   # (channels,)
shift = analytical_shift(node, plan[node.name].weights["kernel"], encoding, mean_x,
                         input_shape=(None, 32, 32, 16))   # (out_channels,)
```
"""

from __future__ import annotations

import math

import keras
import numpy as np

from mct_logger.graph import layer_kinds
from mct_logger.graph.ir import Node
from mct_logger.quantization.encodings import quantize_dequantize
from mct_logger.quantization.layers import broadcast_shape

__all__ = ["analytical_shift", "expected_activation", "tap_coverage"]


def _phi(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _cdf(x):
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * (1.0 + erf(np.asarray(x, np.float64) / math.sqrt(2.0)))


def expected_activation(beta, gamma, activation: str, clip: float = 6.0) -> np.ndarray:
    """`E[act(z)]` for `z ~ N(beta, gamma^2)` per channel; act is "none", "relu" or "relu6"."""
    beta = np.asarray(beta, np.float64)
    gamma = np.abs(np.asarray(gamma, np.float64))
    if activation == "none":
        return beta.copy()
    safe = np.where(gamma > 0, gamma, 1.0)
    if activation == "relu":
        a = beta / safe
        value = beta * _cdf(a) + gamma * _phi(a)
        return np.where(gamma > 0, value, np.maximum(beta, 0.0))
    if activation == "relu6":
        low, high = -beta / safe, (clip - beta) / safe
        value = (gamma * (_phi(low) - _phi(high)) + beta * (_cdf(high) - _cdf(low))
                 + clip * (1.0 - _cdf(high)))
        return np.where(gamma > 0, value, np.clip(beta, 0.0, clip))
    raise ValueError(f"No closed form for activation {activation!r}.")


def _kernel_error(node: Node, spec, encoding, float_node: Node | None = None) -> np.ndarray:
    """`W_q - W` (W: `float_node`'s kernel when given, e.g. before AdaRound)."""
    kernel = np.asarray(keras.ops.convert_to_numpy(node.layer.kernel), np.float64)
    quantized = quantize_dequantize(
        kernel, encoding, broadcast_shape(kernel.shape, spec.channel_axes))
    if float_node is not None:
        kernel = np.asarray(keras.ops.convert_to_numpy(float_node.layer.kernel), np.float64)
    return quantized - kernel


def tap_coverage(layer, input_shape) -> np.ndarray | None:
    """Per kernel tap, the fraction of output positions where it reads real input.

    1 everywhere for "valid" padding; below 1 at the edge taps for "same"
    padding, whose zeros add nothing to the mean. None for Dense layers.
    """
    kernel_size = getattr(layer, "kernel_size", None)
    if kernel_size is None:
        return None
    coverage = np.ones(tuple(kernel_size))
    if getattr(layer, "padding", "valid") != "same":
        return coverage
    spatial = list(input_shape[1:-1])
    for axis, (n, k, s, r) in enumerate(zip(spatial, kernel_size, layer.strides,
                                            layer.dilation_rate)):
        if n is None:
            continue  # dynamic size: no correction for the borders
        out = -(-n // s)
        pad_before = max((out - 1) * s + (k - 1) * r + 1 - n, 0) // 2
        positions = np.arange(out)[:, None] * s - pad_before + np.arange(k)[None, :] * r
        fraction = ((positions >= 0) & (positions < n)).mean(axis=0)
        shape = [1] * len(kernel_size)
        shape[axis] = k
        coverage = coverage * fraction.reshape(shape)
    return coverage


def analytical_shift(node: Node, spec, encoding, expected_input, input_shape=None,
                     float_node: Node | None = None) -> np.ndarray:
    """`sum_taps(coverage * (W_q - W))^T E[x]`: the mean output shift from quantizing
    the kernel, with "same"-padding borders counted (`tap_coverage`); W is
    `float_node`'s kernel when given (the kernel before AdaRound)."""
    error = _kernel_error(node, spec, encoding, float_node)
    coverage = tap_coverage(node.layer, input_shape) if input_shape is not None else None
    if coverage is not None:
        error = error * coverage.reshape(coverage.shape + (1, 1))
    summed = error.reshape(-1, error.shape[-2], error.shape[-1]).sum(axis=0)
    if isinstance(node.layer, layer_kinds.DEPTHWISE):
        return (summed * expected_input[:, None]).reshape(-1)  # (channels, multiplier)
    return expected_input @ summed  # (in, out)
