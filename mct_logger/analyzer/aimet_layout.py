"""AIMET's names and QuantAnalyzer's file layout, in one place.

What a script written for AIMET's QuantAnalyzer relies on: the keyword names
of `analyze` (`quant_scheme`, `default_param_bw`...) mapped to
`QuantizationConfig` fields (`resolve_config`), the callback conventions
(`mct_logger.utils.callbacks.as_callback`: a callable, a `(func, args)` pair or a
CallbackFunc), the
result file names under `results_dir` and the JSON shapes of AIMET's min/max
files (`aimet_range`).

Example:

```python
config = resolve_config({"quant_scheme": "post_training_tf_enhanced", "default_param_bw": 4})
config.weight_observer, config.weight_bits   # ("tf_enhanced", 4)
```
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import keras
import numpy as np

from mct_logger.graph.ir import layer_name_of
from mct_logger.quantization.config import QuantizationConfig
from mct_logger.quantization.encodings import Encoding
from mct_logger.quantization.observers import OBSERVERS
from mct_logger.analyzer.report import REPORT_FILE

__all__ = [
    "AIMET_SCHEMES", "DISABLED_FILE", "ENABLED_FILE", "HISTOGRAMS_FILE", "MIN_MAX_FOLDER",
    "MIN_MAX_TABLE_FILE", "MSE_FILE", "RESULT_FILES", "SENSITIVITY_FILE", "SQNR_FILE",
    "SUMMARY_FILE", "WEIGHT_SQNR_FILE", "aimet_range",
    "ignored_layer_names", "range_fields", "resolve_config",
]

logger = logging.getLogger("mct_logger")

# AIMET's `quant_scheme` names (and QuantScheme enum member names) -> our observers.
AIMET_SCHEMES = {
    "post_training_tf": "min_max",
    "tf": "min_max",
    "post_training_tf_enhanced": "tf_enhanced",
    "tf_enhanced": "tf_enhanced",
}
# AIMET's `analyze` keyword arguments -> QuantizationConfig fields.
_AIMET_FIELDS = {
    "default_param_bw": "weight_bits",
    "default_output_bw": "activation_bits",
    "default_activation_bw": "activation_bits",  # AIMET ONNX's name
    "per_channel_quantization": "weight_per_channel",
}

# The files AIMET writes, whose names and shapes scripts rely on.
ENABLED_FILE = "per_layer_quant_enabled.json"
DISABLED_FILE = "per_layer_quant_disabled.json"
MSE_FILE = "per_layer_mse_loss.json"
MIN_MAX_FOLDER = "min_max_ranges"
# Ours, beside them.
SENSITIVITY_FILE = "sensitivity.json"
SQNR_FILE = "per_layer_sqnr.json"
WEIGHT_SQNR_FILE = "weight_sqnr.json"
HISTOGRAMS_FILE = "histograms.json"
MIN_MAX_TABLE_FILE = os.path.join(MIN_MAX_FOLDER, "encodings.json")
SUMMARY_FILE = "summary.json"
# Every evaluation as it finishes, for `analyze(resume=True)` (evaluators.records).
EVALUATIONS_FILE = "evaluations.json"
# Every file an analysis writes into results_dir; an earlier run's are moved
# aside at start (see mct_logger.analyzer.results_dir).
RESULT_FILES = (
    ENABLED_FILE, DISABLED_FILE, MSE_FILE, SENSITIVITY_FILE, SQNR_FILE, WEIGHT_SQNR_FILE,
    HISTOGRAMS_FILE, MIN_MAX_TABLE_FILE, os.path.join(MIN_MAX_FOLDER, "weights.json"),
    os.path.join(MIN_MAX_FOLDER, "activations.json"), SUMMARY_FILE, REPORT_FILE,
    EVALUATIONS_FILE,
)

# ----------------------------------------------------------------------------- config


def resolve_config(config=None, **kwargs) -> QuantizationConfig:
    """A QuantizationConfig from ours, from a dict, or from AIMET's names.

    Accepted keys (in the dict or as keyword arguments): every QuantizationConfig
    field, and AIMET's `quant_scheme` ("post_training_tf"/"tf" -> min/max,
    "post_training_tf_enhanced"/"tf_enhanced" -> TF-enhanced, or one of our
    observer names; a QuantScheme enum member works too; it sets both the
    weight and the activation observer), `default_param_bw`,
    `default_output_bw`, `per_channel_quantization`, `rounding_mode`
    ("nearest" only) and `config_file` (None only).
    """
    if isinstance(config, QuantizationConfig):
        base, options = config, dict(kwargs)
    elif config is None or isinstance(config, dict):
        base, options = QuantizationConfig(), {**(config or {}), **kwargs}
    else:
        raise TypeError(
            f"config must be a QuantizationConfig or a dict of settings, got "
            f"{type(config).__name__}."
        )
    fields = {f.name for f in dataclasses.fields(QuantizationConfig)}
    changes: dict[str, Any] = {}
    for key, value in options.items():
        if key == "quant_scheme":
            observer = _observer_of_scheme(value)
            changes["weight_observer"] = changes["activation_observer"] = observer
        elif key in _AIMET_FIELDS:
            changes[_AIMET_FIELDS[key]] = value
        elif key == "rounding_mode":
            if str(value).lower() != "nearest":
                raise ValueError(
                    f"rounding_mode={value!r} is not supported; QuantAnalyzer rounds to nearest."
                )
        elif key == "config_file":
            if value is not None:
                raise ValueError(
                    "AIMET quantsim config files are not read. Set the same choices with "
                    "QuantizationConfig fields (weight_symmetric, activation_symmetric, "
                    "weight_per_channel, overrides=...)."
                )
        elif key in fields:
            changes[key] = value
        else:
            known = sorted(fields | set(_AIMET_FIELDS) | {"quant_scheme", "rounding_mode",
                                                          "config_file"})
            raise ValueError(f"Unknown quantization setting {key!r}; known settings: {known}.")
    return dataclasses.replace(base, **changes) if changes else base


def _observer_of_scheme(scheme) -> str:
    name = getattr(scheme, "name", scheme)  # AIMET's QuantScheme enum member
    name = str(name).split(".")[-1].strip().lower()
    if name in AIMET_SCHEMES:
        return AIMET_SCHEMES[name]
    if name in OBSERVERS:
        return name
    raise ValueError(
        f"quant_scheme={scheme!r} is not supported; use one of "
        f"{sorted(AIMET_SCHEMES)} or an observer name {sorted(OBSERVERS)}."
    )


def aimet_range(encoding: Encoding, key: str):
    """AIMET's min/max value: `[min, max]`, or `{key_ch: [min, max]}` per channel."""
    if encoding.per_channel:
        return {
            f"{key}_{c}": [float(lo), float(hi)]
            for c, (lo, hi) in enumerate(zip(np.ravel(encoding.min), np.ravel(encoding.max)))
        }
    return [float(encoding.min), float(encoding.max)]


def range_fields(encoding: Encoding) -> dict:
    """An encoding's grid as table fields: min, max, bits, symmetry and per-channel
    ranges, or scale and offset for a per-tensor grid."""
    fields = {
        "min": float(np.min(encoding.min)),
        "max": float(np.max(encoding.max)),
        "bitwidth": encoding.bitwidth,
        "is_symmetric": encoding.is_symmetric,
        "per_channel": encoding.per_channel,
    }
    if encoding.per_channel:
        fields["channel_min"] = [float(v) for v in np.ravel(encoding.min)]
        fields["channel_max"] = [float(v) for v in np.ravel(encoding.max)]
    else:
        fields["scale"] = float(encoding.scale)
        fields["offset"] = float(encoding.offset)
    return fields


def ignored_layer_names(graph, layers) -> list[str]:
    """The node names of AIMET's `layers_to_ignore` (names or Keras layers); TypeError
    or ValueError naming the entry that is neither or that the model lacks."""
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    names = []
    for layer in layers:
        name = layer if isinstance(layer, str) else getattr(layer, "name", None)
        if not isinstance(name, str):
            raise TypeError(
                f"layers_to_ignore holds {layer!r}; pass layer names or Keras layers."
            )
        matches = [n for n in graph
                   if n.name == name or layer_name_of(n.name) == name]
        if not matches:
            raise ValueError(
                f"layers_to_ignore: model {graph.name!r} has no layer {name!r}; its "
                f"layers are: {', '.join(list(graph.nodes)[:12])}..."
            )
        names.append(name)
    return names
