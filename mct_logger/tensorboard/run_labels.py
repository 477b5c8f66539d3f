"""Run labels: what tells one logged run from another in the tabs' run menus.

A folder name (`digits_cnn_20261206-201500`) says which model and when; the
label says what was done: the configuration (`W8A8`, per-tensor weights,
`CLE`, bias correction, encodings from a file, overrides) and, for the PTQ
runs a search or a recommendation logs, which of the two and which side
(`search: recommended`). It is written into the run's "layer_table" payload
as `run_info` and shown beside the folder name.

Example:

```python
config_label({"weight_bits": 8, "activation_bits": 8, "cross_layer_equalization": True})
# 'W8A8, CLE'
run_label(config, "recommend: baseline")   # 'recommend: baseline, W8A8'
```
"""

from __future__ import annotations

__all__ = ["config_label", "run_info", "run_label"]


def config_label(config: dict | None) -> str:
    """`W<bits>A<bits>` and what differs from the defaults, comma-separated.

    Args:
        config: the "config" fields of `quantization.config.config_to_dict`
            (missing fields count as the defaults); None gives "".
    """
    if not config:
        return ""
    bits = {o.get("weight_bits") for o in config.get("overrides") or []
            if o.get("weight_bits") is not None}
    weight_bits = config.get("weight_bits", 8)
    if bits - {weight_bits}:
        shown = "/".join(str(b) for b in sorted(bits | {weight_bits}))
    else:
        shown = str(weight_bits)
    parts = [f"W{shown}A{config.get('activation_bits', 8)}"]
    if config.get("weight_per_channel") is False:
        parts.append("per-tensor weights")
    if config.get("cross_layer_equalization"):
        parts.append("CLE")
    if config.get("bias_correction"):
        parts.append(f"bias correction {config['bias_correction']}")
    if config.get("encodings_file"):
        parts.append("encodings from file")
    overrides = config.get("overrides") or []
    if overrides:
        parts.append(f"{len(overrides)} override{'s' if len(overrides) != 1 else ''}")
    return ", ".join(parts)


def run_label(config: dict | None, origin: str | None = None) -> str:
    """`origin` (e.g. "search: recommended"), then `config_label`."""
    return ", ".join(p for p in (origin, config_label(config)) if p)


def run_info(config: dict | None, origin: str | None = None) -> dict:
    """The "run_info" entry of a layer table: `{"label", "origin", "config"}`."""
    return {"label": run_label(config, origin), "origin": origin, "config": config}
