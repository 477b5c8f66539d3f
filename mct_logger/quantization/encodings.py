"""Quantization grids (encodings) and their math, in AIMET's convention.

An encoding maps x to the integer grid `q = clip(round(x / scale) - offset, 0, 2**b - 1)`
and back to `(q + offset) * scale`. The offset is <= 0 (the negative of the
usual zero point), so `min = offset * scale` and `max = (offset + 2**b - 1) * scale`.
Symmetric encodings use `offset = -2**(b-1)`; asymmetric ones shift the grid so
that zero is exactly representable.

Example:

```python
enc = Encoding.from_range(-1.0, 3.0, bitwidth=8, symmetric=False)
quantize_dequantize(np.array([0.5]), enc)
```
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Ranges narrower than this are widened to it, so a dead (all-zero) channel
# still gets a valid grid. It is tiny on purpose: a tensor whose values are all
# around 1e-10 (e.g. an untrained model's pooled features) keeps a fine grid,
# and range / 65535 stays far from float32 denormals (slow arithmetic).
MIN_RANGE = 1e-20


@dataclasses.dataclass(frozen=True)
class Encoding:
    """A per-tensor (scalar arrays) or per-channel (1-D arrays) quantization grid."""

    scale: np.ndarray
    offset: np.ndarray
    bitwidth: int
    is_symmetric: bool

    def __post_init__(self):
        """Refuses a grid no quantizer can run, when it is made rather than when a
        layer applies it (the same rules as an encodings file's entry).

        Raises:
            ValueError: bitwidth not an integer from 2 to 16; is_symmetric not a
                bool; scale or offset not finite numbers, of different shapes or
                more than 1-D; a scale <= 0; an offset not an integer in
                [-(2**bitwidth - 1), 0].
        """
        fix = ("Build one with Encoding.from_range(min, max, bitwidth, symmetric), or "
               "pass scale > 0 and offset = -zero_point as numbers or 1-D arrays.")
        try:
            check_bitwidth(self.bitwidth)
        except ValueError as exc:
            raise ValueError(f"Encoding: {exc}") from None
        if not isinstance(self.is_symmetric, (bool, np.bool_)):
            raise ValueError(f"Encoding.is_symmetric must be True or False, got "
                             f"{self.is_symmetric!r}.")
        arrays = {}
        for field in ("scale", "offset"):
            value = getattr(self, field)
            try:
                array = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                array = None
            if (array is None or isinstance(value, (bool, str, bytes)) or array.ndim > 1
                    or not np.all(np.isfinite(array))):
                raise ValueError(f"Encoding.{field} must be a finite number or a 1-D array "
                                 f"of finite numbers (one per channel), got {value!r}. {fix}")
            arrays[field] = array
        scale, offset, levels = arrays["scale"], arrays["offset"], 2**int(self.bitwidth) - 1
        if scale.shape != offset.shape:
            raise ValueError(f"Encoding.scale has shape {scale.shape} but Encoding.offset has "
                             f"{offset.shape}; give one of each per channel. {fix}")
        if np.any(scale <= 0):
            raise ValueError(f"Encoding.scale must be positive, got {np.min(scale)!r}. {fix}")
        if np.any(offset != np.round(offset)) or np.any((offset < -levels) | (offset > 0)):
            raise ValueError(
                f"Encoding.offset must hold integers in [{-levels}, 0], the range of a "
                f"{self.bitwidth}-bit grid (AIMET's offset is minus the zero point), got "
                f"{self.offset!r}. {fix}")

    @property
    def levels(self) -> int:
        """The largest integer on the grid, 2**bitwidth - 1."""
        return 2**self.bitwidth - 1

    @property
    def min(self) -> np.ndarray:
        return self.offset * self.scale

    @property
    def max(self) -> np.ndarray:
        return (self.offset + self.levels) * self.scale

    @property
    def per_channel(self) -> bool:
        return np.ndim(self.scale) > 0

    @property
    def num_channels(self) -> int | None:
        return int(np.size(self.scale)) if self.per_channel else None

    @classmethod
    def from_range(cls, min_value, max_value, bitwidth: int, symmetric: bool) -> "Encoding":
        """The grid covering [min_value, max_value] (arrays give per-channel grids)."""
        check_bitwidth(bitwidth)
        lo = np.minimum(np.asarray(min_value, dtype=np.float64), 0.0)
        hi = np.maximum(np.asarray(max_value, dtype=np.float64), 0.0)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError(
                "Cannot build an encoding from a non-finite range "
                f"[{np.min(lo)}, {np.max(hi)}]; the observed tensor holds NaN or Inf."
            )
        levels = 2**bitwidth - 1
        if symmetric:
            magnitude = np.maximum(np.maximum(-lo, hi), MIN_RANGE)
            scale = magnitude / (levels // 2)
            offset = np.full_like(scale, -((levels + 1) // 2))
        else:
            hi = np.maximum(hi, lo + MIN_RANGE)
            scale = (hi - lo) / levels
            offset = -np.clip(np.round(-lo / scale), 0, levels)
        return cls(scale=scale, offset=offset, bitwidth=bitwidth, is_symmetric=symmetric)

    def as_dict(self) -> dict:
        """Plain-Python fields (lists for per-channel), for JSON and logs."""
        def plain(a):
            return np.asarray(a, dtype=np.float64).tolist()

        return {
            "scale": plain(self.scale),
            "offset": plain(self.offset),
            "min": plain(self.min),
            "max": plain(self.max),
            "bitwidth": self.bitwidth,
            "is_symmetric": self.is_symmetric,
        }


def check_bitwidth(bitwidth) -> None:
    if isinstance(bitwidth, bool) or not isinstance(bitwidth, (int, np.integer)) or not 2 <= bitwidth <= 16:
        raise ValueError(
            f"bitwidth={bitwidth!r} is not supported; use an integer from 2 to 16."
        )


def quantize_dequantize(x: np.ndarray, encoding: Encoding, channel_shape=None) -> np.ndarray:
    """NumPy fake quantization; `channel_shape` reshapes per-channel grids to broadcast."""
    scale, offset = encoding.scale, encoding.offset
    if encoding.per_channel and channel_shape is not None:
        scale = np.reshape(scale, channel_shape)
        offset = np.reshape(offset, channel_shape)
    return fake_quantize(x, scale, offset, encoding.levels).astype(np.asarray(x).dtype, copy=False)


def fake_quantize(x, scale, offset, levels, ops=np):
    """The one fake-quantization formula: `(clip(round(x / scale) - offset, 0, levels)
    + offset) * scale`, with the offset moved into the clip bounds (two fewer ops
    over the whole tensor; the same values, integers add exactly).

    `ops` is NumPy (default) or `keras.ops` (inside a Keras layer or function);
    `scale` and `offset` broadcast against `x`.
    """
    return ops.clip(ops.round(x / scale), offset, offset + levels) * scale
