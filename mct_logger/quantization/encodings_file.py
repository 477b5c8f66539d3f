"""Files a PTQ run or an analysis leaves behind: the encodings file.

The encodings file has AIMET's shape, so tools that read AIMET encodings read
ours: `activation_encodings` keyed by the node whose output is quantized,
`param_encodings` keyed by `<node>/<kernel>`, each a list with one entry per
tensor, or one per output channel for per-channel grids. Node and kernel names
may both hold '/' (`outer/inner/kernel` in a nested model,
`attention/query/kernel` in MultiHeadAttention): a key is split against the
model's node names when the file is loaded for a model. A composite layer's
sublayer outputs (a KerasHub transformer block's query projection) are
`activation_encodings` keyed `<node>/<sublayer path>`.

Example:

```python
save_encodings(info.encodings, "model.encodings.json")
encodings = load_encodings("model.encodings.json")
```
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import numpy as np

from mct_logger.graph import layer_kinds
from mct_logger.utils import output_paths
from mct_logger.quantization.encodings import Encoding, check_bitwidth
from mct_logger.quantization.layers import quantizable_weights, weight_variable
from mct_logger.quantization.plan import inner_name
from mct_logger.quantization.quantsim import NodeEncodings
from mct_logger.utils.arguments import check_path
from mct_logger.utils.strict_json import load_strict

FORMAT_VERSION = "0.6.1"  # AIMET's encodings-file version this shape follows
SHOWN_NAMES = 5  # how many names a warning lists

logger = logging.getLogger("mct_logger")


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
        for point, e in enc.inner_activations.items():  # a composite's sublayer outputs
            activations[inner_name(node, point)] = _entries(e)
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
    """Writes the encodings file; returns its path.

    Raises:
        IsADirectoryError, NotADirectoryError: `path` is a folder, or a file
            stands where its folder goes (checked before anything is written).
    """
    path = check_path("export_encodings path", path)
    output_paths.check_file(path, "export_encodings path")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(encodings_to_json(encodings), f, indent=2)
    return path


def _encoding(entries, where: str) -> Encoding:
    """One grid from its file entries; every field checked, errors naming `where`
    (the file and the key).

    Each entry needs `bitwidth` (2 to 16), `is_symmetric`, a positive finite
    `scale` and an integer `offset` in [-(2**bitwidth - 1), 0]; `min` and
    `max`, when present, must be the grid's ends, `offset * scale` and
    `(offset + 2**bitwidth - 1) * scale`, within one scale step.
    """
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: expected a non-empty list of encodings.")
    fix = "Re-export the file with QuantizationInfo.export_encodings(), or calibrate instead."
    bits, symmetric, scales, offsets = set(), set(), [], []
    for i, e in enumerate(entries):
        at = f"{where} entry {i}"
        if not isinstance(e, dict):
            raise ValueError(f"{at}: expected an object with bitwidth, is_symmetric, scale "
                             f"and offset, got {type(e).__name__}. {fix}")
        missing = [k for k in ("bitwidth", "is_symmetric", "scale", "offset") if k not in e]
        if missing:
            raise ValueError(f"{at}: missing {', '.join(missing)}. {fix}")
        if str(e.get("dtype", "int")).lower() != "int":
            raise ValueError(f"{at}: dtype {e['dtype']!r} is not supported; only integer "
                             f"(dtype 'int') grids are. {fix}")
        try:
            bitwidth = e["bitwidth"]
            if isinstance(bitwidth, float) and bitwidth.is_integer():
                bitwidth = int(bitwidth)
            check_bitwidth(bitwidth)
        except ValueError as exc:
            raise ValueError(f"{at}: {exc}") from None
        flag = str(e["is_symmetric"]).lower()
        if flag not in ("true", "false"):
            raise ValueError(
                f"{at}: is_symmetric is {e['is_symmetric']!r}; use \"True\" or \"False\".")
        values = {}
        for key in ("scale", "offset", "min", "max"):
            if key not in e:
                continue
            value = e[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{at}: {key} is {value!r}, not a number. {fix}")
            if not np.isfinite(value):
                raise ValueError(f"{at}: {key} is {value!r}; it must be finite. {fix}")
            values[key] = float(value)
        scale, offset, levels = values["scale"], values["offset"], 2**bitwidth - 1
        if scale <= 0:
            raise ValueError(f"{at}: scale is {scale!r}; it must be positive. {fix}")
        if offset != round(offset) or not -levels <= offset <= 0:
            raise ValueError(
                f"{at}: offset {e['offset']!r} is not an integer in [{-levels}, 0], the range "
                f"of a {bitwidth}-bit grid (AIMET's offset is minus the zero point). {fix}")
        for key, end in (("min", offset * scale), ("max", (offset + levels) * scale)):
            if key in values and abs(values[key] - end) > scale * (1 + 1e-6) + 1e-12 * abs(end):
                raise ValueError(
                    f"{at}: {key} {values[key]!r} disagrees with scale and offset, which put "
                    f"the grid's {key} at {end!r} (bitwidth {bitwidth}). {fix}")
        bits.add(bitwidth)
        symmetric.add(flag == "true")
        scales.append(scale)
        offsets.append(offset)
    if len(bits) != 1 or len(symmetric) != 1:
        raise ValueError(f"{where}: channels disagree on bitwidth or symmetry. {fix}")
    scale, offset = np.array(scales), np.array(offsets)
    if len(entries) == 1:
        scale, offset = scale[0], offset[0]
    return Encoding(scale=scale, offset=offset, bitwidth=bits.pop(), is_symmetric=symmetric.pop())


def load_encodings(path: str, graph=None) -> dict[str, NodeEncodings]:
    """Reads and validates an encodings file written by `save_encodings` (or by
    AIMET, same shape).

    With `graph` (the model's `Graph`), each `param_encodings` key is split
    into node and weight against the graph (`split_param_key`), and entries
    that match no node of it are left out with one warning naming the file
    and the first few of them. Without it, a key splits at its last '/',
    which is right only for one-word weight names such as "kernel" (not for
    MultiHeadAttention's "query/kernel").

    Raises:
        FileNotFoundError: no such file.
        ValueError: the path cannot be read as a file (a directory, no
            permission), the file is not UTF-8 text, not JSON, not an
            encodings file, a key appears twice in one object, the nesting is
            deeper than Python's recursion limit, a `param_encodings` key is
            not `<node>/<weight>`, or an entry is malformed or inconsistent;
            the message names the file and the key.
        TypeError: `path` is not a str or os.PathLike (an int is never read
            as a file descriptor).
    """
    path = check_path("encodings_file", path)
    content = _read_json(path)
    result: dict[str, NodeEncodings] = {}
    unknown: list[str] = []
    for node, entries in content.get("activation_encodings", {}).items():
        encoding = _encoding(entries, f"{path}: activation_encodings[{node!r}]")
        if graph is not None and node not in graph.nodes:
            inner = split_inner_key(node, graph)
            if inner is None:
                unknown.append(node)
            else:
                result.setdefault(inner[0], NodeEncodings()).inner_activations[inner[1]] = encoding
            continue
        result.setdefault(node, NodeEncodings()).activation = encoding
    for key, entries in content.get("param_encodings", {}).items():
        node, _, name = key.rpartition("/")
        if not node or not name:
            raise ValueError(f"{path}: param_encodings key {key!r} is not '<node>/<kernel>'.")
        encoding = _encoding(entries, f"{path}: param_encodings[{key!r}]")
        split = split_param_key(key, graph)
        if split is None:
            unknown.append(key)
            continue
        node, name = split
        result.setdefault(node, NodeEncodings()).weights[name] = encoding
    if unknown:
        logger.warning(
            "The encodings file %r has %d entr%s for nodes model %r lacks (%s); they are "
            "ignored. Was the file written for another model?", path, len(unknown),
            "y" if len(unknown) == 1 else "ies", graph.name, _shown(unknown))
    return result


def _shown(names: list) -> str:
    """The first `SHOWN_NAMES` names, quoted, and how many more there are."""
    more = len(names) - SHOWN_NAMES
    shown = ", ".join(repr(n) for n in names[:SHOWN_NAMES])
    return shown + (f" and {more} more" if more > 0 else "")


def _read_json(path: str) -> dict:
    """The JSON object of an encodings file, checked to have an encodings file's sections."""
    try:
        with open(path, encoding="utf-8") as f:
            content = load_strict(f, f"Encodings file {path!r}")
    except FileNotFoundError:
        raise FileNotFoundError(f"Encodings file {path!r} does not exist.") from None
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"Encodings file {path!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "pass the JSON file written by QuantizationInfo.export_encodings()."
        ) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"Encodings file {path!r} is not valid JSON: {exc}") from None
    except OSError as exc:  # a directory, no permission...
        raise ValueError(
            f"encodings_file {path!r} cannot be read ({exc.strerror or exc}); pass the path "
            "of the JSON file written by QuantizationInfo.export_encodings()."
        ) from None
    if not isinstance(content, dict) or not (
        "activation_encodings" in content or "param_encodings" in content
    ):
        raise ValueError(
            f"{path!r} is not an encodings file: it has no 'activation_encodings' or "
            "'param_encodings'. Write one with QuantizationInfo.export_encodings()."
        )
    for section in ("activation_encodings", "param_encodings"):
        if not isinstance(content.get(section, {}), dict):
            raise ValueError(f"{path}: {section} must be an object keyed by node name.")
    return content


def split_param_key(key: str, graph=None) -> tuple[str, str] | None:
    """`(node, weight name)` of a `param_encodings` key `<node>/<weight>`, or None
    when no node of `graph` fits it.

    Node names may hold '/' (a nested model's "outer/inner", a shared layer's
    "conv/call_1") and so may weight names (MultiHeadAttention's
    "query/kernel", Bidirectional's "forward_gru/gru_cell/kernel", as
    `quantizable_weights` names them), so the key is split against the graph:
    after the longest prefix naming a node that quantizes the rest as a
    weight, else after the longest prefix naming a node. Without a graph, at
    the last '/'.
    """
    if graph is None:
        node, _, name = key.rpartition("/")
        return (node, name) if node and name else None
    splits = [(key[:i], key[i + 1:]) for i, c in enumerate(key) if c == "/"]
    candidates = [(node, name) for node, name in splits if name and node in graph.nodes]
    for node, name in reversed(candidates):
        n = graph.nodes[node]
        if n.owns_weights and name in quantizable_weights(n.layer):
            return node, name
    return candidates[-1] if candidates else None


def split_inner_key(key: str, graph) -> tuple[str, str] | None:
    """`(node, point)` of an `activation_encodings` key naming a composite layer's
    sublayer output (`transformer_layer_0/self_attention_layer/query`), else None."""
    parts = key.split("/")
    for cut in range(len(parts) - 1, 0, -1):
        node, point = "/".join(parts[:cut]), "/".join(parts[cut:])
        if node in graph.nodes and point in layer_kinds.sublayer_outputs(graph.nodes[node].layer):
            return node, point
    return None


def check_encodings_fit(graph, loaded: dict[str, NodeEncodings], source: str) -> None:
    """Checks every per-channel grid in `loaded` against the graph's tensors.

    A weight grid with one entry per channel must have as many entries as the
    kernel has output channels, an activation grid as many as the output's
    last axis.

    Raises:
        ValueError: naming the file, the node, the tensor and both counts.
    """
    for name, enc in loaded.items():
        node = graph.nodes.get(name)
        if node is None:
            continue  # a node this model lacks: adopt_encodings reports missing grids
        axes = quantizable_weights(node.layer) if node.owns_weights else {}
        for kernel, e in enc.weights.items():
            if not e.per_channel or kernel not in axes:
                continue
            shape = tuple(weight_variable(node.layer, kernel).shape)
            channels = int(np.prod([shape[a] for a in axes[kernel]]))
            if e.num_channels != channels:
                raise ValueError(
                    f"The encodings file {source!r} has {e.num_channels} per-channel grids "
                    f"for param_encodings['{name}/{kernel}'], but node {name!r} "
                    f"({node.layer_class}) has {channels} output channels in this model. The "
                    "file was written for another model; re-export it, or calibrate instead."
                )
        if enc.activation is not None and enc.activation.per_channel and node.output_shapes:
            channels = node.output_shapes[0][-1] if node.output_shapes[0] else None
            if channels is not None and enc.activation.num_channels != channels:
                raise ValueError(
                    f"The encodings file {source!r} has {enc.activation.num_channels} "
                    f"per-channel grids for activation_encodings[{name!r}], but node {name!r} "
                    f"outputs {channels} channels in this model. The file was written for "
                    "another model; re-export it, or calibrate instead."
                )


def adopt_encodings(plan: dict, loaded: dict[str, NodeEncodings], source: str) -> dict[str, NodeEncodings]:
    """Fits the plan's quantizers to loaded grids (their bits, symmetry, channels).

    Every planned quantizer needs a grid in the file; a missing one means the
    file was written for another model or configuration.

    Raises:
        ValueError: a planned quantizer has no grid in `loaded`, naming the
            file, the node and the missing weights (or "output").
    """
    adopted = {}
    for node, p in plan.items():
        if not p.quantized:
            continue
        enc = loaded.get(node, NodeEncodings())
        missing = [k for k in p.weights if k not in enc.weights]
        if p.activation is not None and enc.activation is None:
            missing.append("output")
        missing += [f"output of {k}" for k in p.inner_activations if k not in enc.inner_activations]
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
        for point, a in enc.inner_activations.items():
            if point in p.inner_activations:
                p.inner_activations[point] = dataclasses.replace(
                    p.inner_activations[point], bitwidth=a.bitwidth, is_symmetric=a.is_symmetric)
        adopted[node] = NodeEncodings(
            weights={k: v for k, v in enc.weights.items() if k in p.weights},
            activation=enc.activation if p.activation is not None else None,
            inner_activations={k: v for k, v in enc.inner_activations.items()
                               if k in p.inner_activations},
        )
    return adopted


def _channels(graph, node: str, kernel: str | None) -> int | None:
    """How many channels a per-channel grid of the tensor has in `graph`: the
    kernel's output channels, or (`kernel` None) the output's last axis; None
    when unknown."""
    n = graph.nodes.get(node)
    if n is None:
        return None
    if kernel is None:
        shape = n.output_shapes[0] if n.output_shapes else None
        return int(shape[-1]) if shape and shape[-1] is not None else None
    axes = quantizable_weights(n.layer).get(kernel) if n.owns_weights else None
    if axes is None:
        return None
    shape = tuple(weight_variable(n.layer, kernel).shape)
    return int(np.prod([shape[a] for a in axes]))


def _grid_settings(kind: str, e: Encoding, channels: int | None):
    """(config field, the file grid's value, how the grid reads) per setting a
    grid fixes. Per-channel is left out where one grid and one per channel are
    the same (a tensor of one channel, or of unknown channels when per-tensor)."""
    yield f"{kind}_bits", e.bitwidth, f"{e.bitwidth}-bit"
    yield f"{kind}_symmetric", e.is_symmetric, "symmetric" if e.is_symmetric else "asymmetric"
    if e.per_channel or (channels or 1) > 1:
        yield (f"{kind}_per_channel", e.per_channel,
               "per-channel" if e.per_channel else "per-tensor")


def warn_config_conflicts(adopted: dict[str, NodeEncodings], config, source: str,
                          graph) -> None:
    """Logs one warning when grids adopted from the encodings file `source`
    disagree with the settings `config` gives their nodes (`config.for_node`,
    overrides included): bit-widths (`weight_bits`, `activation_bits`),
    symmetry (`weight_symmetric`, `activation_symmetric`) or per-channel versus
    per-tensor (`weight_per_channel`, `activation_per_channel`; not for a
    tensor of one channel in `graph`, where both are one grid). It names the
    file, each setting (or the override that made it) and the first
    `SHOWN_NAMES` tensors. The file's grids are used either way: the config's
    defaults cannot be told from settings made on purpose.
    """
    groups: dict[tuple, list[str]] = {}
    for node, enc in adopted.items():
        settings, matched = config.for_node(node)
        tensors = [("weight", f"{node}/{name}", name, e) for name, e in enc.weights.items()]
        if enc.activation is not None:
            tensors.append(("activation", node, None, enc.activation))
        for kind, key, kernel, e in tensors:
            for field, value, grid in _grid_settings(kind, e, _channels(graph, node, kernel)):
                if value == settings[field]:
                    continue
                setters = [p for p in matched if getattr(config.overrides[p], field) is not None]
                setting = (f"overrides[{setters[-1]!r}].{field}={settings[field]}" if setters
                           else f"{field}={settings[field]}")
                groups.setdefault((setting, kind, grid), []).append(key)
    if not groups:
        return
    parts = []
    for (setting, kind, grid), keys in groups.items():
        parts.append(f"{grid} {kind} grids where the config sets {setting} "
                     f"({len(keys)}: {_shown(keys)})")
    logger.warning(
        "The encodings file %r has %s. The file's grids are used; to quantize with the "
        "config's settings, calibrate instead (leave encodings_file unset) or re-export "
        "the file from a run with this config.", source, "; ".join(parts))
