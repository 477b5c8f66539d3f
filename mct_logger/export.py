"""Files a PTQ run or an analysis leaves behind: the encodings file.

The encodings file has AIMET's shape, so tools that read AIMET encodings read
ours: `activation_encodings` keyed by the node whose output is quantized,
`param_encodings` keyed by `<node>/<kernel>`, each a list with one entry per
tensor, or one per output channel for per-channel grids.

Example:

```python
save_encodings(info.encodings, "model.encodings.json")
encodings = load_encodings("model.encodings.json")
```
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from mct_logger.quantization.encodings import Encoding, check_bitwidth
from mct_logger.quantization.quantsim import NodeEncodings

FORMAT_VERSION = "0.6.1"  # AIMET's encodings-file version this shape follows


def _entries(encoding: Encoding) -> list[dict]:
    scales = np.atleast_1d(encoding.scale)
    offsets = np.atleast_1d(encoding.offset)
    mins, maxs = np.atleast_1d(encoding.min), np.atleast_1d(encoding.max)
    return [
        {
            "bitwidth": int(encoding.bitwidth),
            "dtype": "int",
            "is_symmetric": str(bool(encoding.is_symmetric)),
            "max": float(hi),
            "min": float(lo),
            "offset": int(round(float(o))),
            "scale": float(s),
        }
        for s, o, lo, hi in zip(scales, offsets, mins, maxs)
    ]


def encodings_to_json(encodings: dict[str, NodeEncodings]) -> dict:
    """The AIMET-shaped dict of `encodings`."""
    activations, params = {}, {}
    for node, enc in encodings.items():
        if enc.activation is not None:
            activations[node] = _entries(enc.activation)
        for name, e in enc.weights.items():
            params[f"{node}/{name}"] = _entries(e)
    return {
        "version": FORMAT_VERSION,
        "activation_encodings": activations,
        "param_encodings": params,
        "excluded_layers": [],
        "quantizer_args": {"dtype": "int", "per_channel_quantization": any(
            e.per_channel for enc in encodings.values() for e in enc.weights.values()
        )},
    }


def save_encodings(encodings: dict[str, NodeEncodings], path: str) -> str:
    """Writes the encodings file; returns its path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(encodings_to_json(encodings), f, indent=2)
    return path


def _encoding(entries, where: str) -> Encoding:
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: expected a non-empty list of encodings.")
    try:
        bits = {int(e["bitwidth"]) for e in entries}
        symmetric = {str(e["is_symmetric"]).lower() == "true" for e in entries}
        scale = np.array([float(e["scale"]) for e in entries])
        offset = np.array([float(e["offset"]) for e in entries])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: malformed entry ({exc!r}); each needs bitwidth, "
                         "is_symmetric, scale and offset.") from None
    if len(bits) != 1 or len(symmetric) != 1:
        raise ValueError(f"{where}: channels disagree on bitwidth or symmetry.")
    bitwidth = bits.pop()
    check_bitwidth(bitwidth)
    if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
        raise ValueError(f"{where}: scales must be positive and finite.")
    if len(entries) == 1:
        scale, offset = scale[0], offset[0]
    return Encoding(scale=scale, offset=offset, bitwidth=bitwidth, is_symmetric=symmetric.pop())


def load_encodings(path: str) -> dict[str, NodeEncodings]:
    """Reads an encodings file written by `save_encodings` (or by AIMET, same shape)."""
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"Encodings file {path!r} does not exist.") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"Encodings file {path!r} is not valid JSON: {exc}") from None
    if not isinstance(content, dict) or not (
        "activation_encodings" in content or "param_encodings" in content
    ):
        raise ValueError(
            f"{path!r} is not an encodings file: it has no 'activation_encodings' or "
            "'param_encodings'. Write one with QuantizationInfo.export_encodings()."
        )
    result: dict[str, NodeEncodings] = {}
    for node, entries in content.get("activation_encodings", {}).items():
        result.setdefault(node, NodeEncodings()).activation = _encoding(
            entries, f"{path}: activation_encodings[{node!r}]"
        )
    for key, entries in content.get("param_encodings", {}).items():
        node, _, name = key.rpartition("/")
        if not node:
            raise ValueError(f"{path}: param_encodings key {key!r} is not '<node>/<kernel>'.")
        result.setdefault(node, NodeEncodings()).weights[name] = _encoding(
            entries, f"{path}: param_encodings[{key!r}]"
        )
    return result


def adopt_encodings(plan: dict, loaded: dict[str, NodeEncodings], source: str) -> dict[str, NodeEncodings]:
    """Fits the plan's quantizers to loaded grids (their bits, symmetry, channels).

    Every planned quantizer needs a grid in the file; a missing one means the
    file was written for another model or configuration.
    """
    adopted = {}
    for node, p in plan.items():
        if not p.quantized:
            continue
        enc = loaded.get(node, NodeEncodings())
        missing = [k for k in p.weights if k not in enc.weights]
        if p.activation is not None and enc.activation is None:
            missing.append("output")
        if missing:
            raise ValueError(
                f"The encodings file {source!r} has no grid for node {node!r} "
                f"({', '.join(missing)}). It was written for another model or "
                "configuration; re-export it, or calibrate instead."
            )
        for name, e in enc.weights.items():
            if name in p.weights:
                p.weights[name] = dataclasses.replace(
                    p.weights[name], num_channels=e.num_channels,
                    bitwidth=e.bitwidth, is_symmetric=e.is_symmetric,
                )
        if p.activation is not None:
            a = enc.activation
            p.activation = dataclasses.replace(
                p.activation, bitwidth=a.bitwidth, is_symmetric=a.is_symmetric,
                per_channel=a.per_channel,
            )
        adopted[node] = NodeEncodings(
            weights={k: v for k, v in enc.weights.items() if k in p.weights},
            activation=enc.activation if p.activation is not None else None,
        )
    return adopted
