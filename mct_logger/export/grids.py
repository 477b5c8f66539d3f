"""Our encodings as LiteRT int8 grids: what the TFLite converter's FakeQuant ops
must carry so that the `.tflite` holds exactly (or as close as it can) the
simulation's grids.

LiteRT int8 (the "LiteRT 8-bit quantization specification"):
`real = (q - zero_point) * scale`.

- Weights: q in [-127, 127], zero point 0, per output channel for convolutions
  (Conv2D: last kernel axis; Depthwise: `in * multiplier`), per tensor for
  FULLY_CONNECTED (a per-channel FakeQuant on a Dense kernel does not convert).
  `tf.quantization.fake_quant_with_min_max_vars(_per_channel)` with
  `narrow_range=True` and `[min, max] = [-127 s, 127 s]` gives scale exactly `s`.
- Activations: q in [-128, 127], one grid per tensor, any zero point. Our
  encoding `(scale s, offset o, 8 bits)` covers `[o s, (o + 255) s]`; a
  FakeQuant over that range gives scale `s` and zero point `-128 - o`.

Where a grid cannot be carried (asymmetric or wider than 8-bit weights,
per-channel Dense kernels, per-channel or non-8-bit activations) it is adapted
to the nearest LiteRT grid and the adaptation is reported (`Adaptation`); a
weight grid under 8 bits is carried exactly (its values lie on an int8 grid of
the same scale) but saves no memory.

Example:

```python
grid = activation_grid(Encoding.from_range(-1.0, 3.0, 8, symmetric=False))
grid.minimum, grid.maximum     # the FakeQuant range: -1.0039..., 2.9960...
```
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mct_logger.quantization.encodings import Encoding, quantize_dequantize

INT8_WEIGHT_MAX = 127  # narrow range: [-127, 127]


@dataclasses.dataclass(frozen=True)
class ActivationGrid:
    """One FakeQuant range for an int8 activation (asymmetric, per tensor)."""

    minimum: float
    maximum: float

    @property
    def scale(self) -> float:
        return (self.maximum - self.minimum) / 255.0

    @property
    def zero_point(self) -> int:
        return int(np.clip(np.round(-128 - self.minimum / self.scale), -128, 127))


@dataclasses.dataclass(frozen=True)
class WeightGrid:
    """A kernel, already on our grid, and its int8 FakeQuant range.

    Attributes:
        values: the fake-quantized kernel (float32, the kernel's shape).
        scale: int8 scale per channel (1-D, channels last after `flat_shape`)
            or a scalar for one grid.
        flat_shape: the kernel reshaped so its channel axes are one last axis
            (what `fake_quant_with_min_max_vars_per_channel` quantizes), or None
            for a per-tensor grid.
    """

    values: np.ndarray
    scale: np.ndarray
    flat_shape: tuple | None


def activation_grid(encoding: Encoding) -> tuple[ActivationGrid, str | None]:
    """The int8 FakeQuant range of an activation encoding, and the adaptation
    made (None when the grid is carried exactly)."""
    scale = np.asarray(encoding.scale, dtype=np.float64)
    offset = np.asarray(encoding.offset, dtype=np.float64)
    note = None
    if encoding.per_channel or encoding.bitwidth != 8:
        lo = float(np.min(offset * scale))
        hi = float(np.max((offset + encoding.levels) * scale))
        exact = Encoding.from_range(lo, hi, 8, symmetric=False)
        what = []
        if encoding.per_channel:
            what.append(f"per-channel ({encoding.num_channels} grids) -> one per-tensor grid")
        if encoding.bitwidth != 8:
            what.append(f"{encoding.bitwidth}-bit -> 8-bit over the same range")
        note = "activation grid adapted: " + ", ".join(what) + " (LiteRT int8 activations)"
        scale, offset = float(exact.scale), float(exact.offset)
    scale, offset = float(scale), float(offset)
    return ActivationGrid(offset * scale, (offset + 255.0) * scale), note


def range_grid(minimum: float, maximum: float) -> ActivationGrid:
    """The int8 grid the export calibrates itself for a tensor the plan leaves
    without one (an asymmetric min/max grid, zero exactly representable)."""
    encoding = Encoding.from_range(minimum, maximum, 8, symmetric=False)
    return activation_grid(encoding)[0]


def weight_grid(kernel: np.ndarray, encoding: Encoding, channel_axes: tuple,
                per_channel_allowed: bool) -> tuple[WeightGrid, str | None]:
    """The int8 form of `kernel` fake-quantized on `encoding`, and the adaptation
    made (None when exact).

    `channel_axes`: the kernel axes of its output channels (as in the plan);
    `per_channel_allowed`: whether the LiteRT op takes per-channel weights
    (False for FULLY_CONNECTED) and the axes are the kernel's last ones.
    """
    kernel = np.asarray(kernel, dtype=np.float32)
    ndim = kernel.ndim
    axes = tuple(sorted(a % ndim for a in channel_axes))
    trailing = axes == tuple(range(ndim - len(axes), ndim))
    shape = tuple(d if i in axes else 1 for i, d in enumerate(kernel.shape))
    values = quantize_dequantize(kernel.astype(np.float64), encoding,
                                 shape if encoding.per_channel else None)
    notes = []
    if encoding.per_channel and (not per_channel_allowed or not trailing):
        notes.append("per-channel -> per-tensor (LiteRT runs this op with one weight grid)")
    per_channel = encoding.per_channel and per_channel_allowed and trailing
    # The channel axes merged into the last one, the rank kept (a depthwise kernel
    # (kh, kw, in, multiplier) -> (kh, kw, 1, in * multiplier), as LiteRT stores it).
    flat = (tuple(kernel.shape[:ndim - len(axes)]) + (1,) * (len(axes) - 1)
            + (int(np.prod([kernel.shape[a] for a in axes])),)) if per_channel else None
    if per_channel:
        flat_values = values.reshape(-1, flat[-1])
        scale = np.asarray(encoding.scale, dtype=np.float64).reshape(-1)
    else:
        flat_values = values.reshape(1, -1)
        scale = np.asarray(np.max(encoding.scale), dtype=np.float64).reshape(1)
    exact = (encoding.is_symmetric and encoding.bitwidth <= 8 and not notes)
    if exact and np.any(np.round(flat_values / scale) < -INT8_WEIGHT_MAX):
        exact = False
        notes.append("a weight clipped to -128 moves to -127 (LiteRT weights are narrow-range)")
    if not exact:
        if not encoding.is_symmetric:
            notes.append("asymmetric -> symmetric (LiteRT weights have zero point 0)")
        if encoding.bitwidth > 8:
            notes.append(f"{encoding.bitwidth}-bit -> 8-bit")
        magnitude = np.max(np.abs(flat_values), axis=0 if per_channel else None)
        scale = np.maximum(np.asarray(magnitude, dtype=np.float64).reshape(-1) / INT8_WEIGHT_MAX,
                           1e-12)
    if not per_channel:
        scale = np.asarray(scale[0])
    note = None
    if notes:
        note = "weight grid adapted: " + "; ".join(dict.fromkeys(notes))
    if encoding.bitwidth < 8:
        stored = (f"{encoding.bitwidth}-bit weights stored on their grid in int8 (LiteRT has "
                  "no sub-byte weights: no memory saved beyond int8)")
        note = f"{note}; {stored}" if note else stored
    grid = WeightGrid(values=values.astype(np.float32), scale=scale,
                      flat_shape=flat)
    return grid, note
