"""AIMET's names and QuantAnalyzer's file layout, in one place.

What a script written for AIMET's QuantAnalyzer relies on: the keyword names
of `analyze` (`quant_scheme`, `default_param_bw`...) mapped to
`QuantizationConfig` fields (`resolve_config`), the callback conventions
(`as_callback`: a callable, a `(func, args)` pair or a CallbackFunc), the
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
import inspect
import logging
import math
import os
from typing import Any, Callable

import keras
import numpy as np

from mct_logger.graph import layer_name_of
from mct_logger.quantization.config import QuantizationConfig
from mct_logger.quantization.encodings import Encoding
from mct_logger.quantization.observers import OBSERVERS
from mct_logger.report import REPORT_FILE

__all__ = [
    "AIMET_SCHEMES", "DISABLED_FILE", "ENABLED_FILE", "HISTOGRAMS_FILE", "MIN_MAX_FOLDER",
    "MIN_MAX_TABLE_FILE", "MSE_FILE", "RESULT_FILES", "SENSITIVITY_FILE", "SQNR_FILE",
    "SUMMARY_FILE", "WEIGHT_SQNR_FILE", "ScoreCheck", "aimet_range", "as_callback", "eval_score",
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
# aside at start (see mct_logger.results_dir).
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


# ----------------------------------------------------------------------------- callbacks


def as_callback(callback, what: str) -> Callable[[Any], Any]:
    """`(model) -> result` from a plain callable, a `(func, args)` pair (called as
    `func(model, args)`, AIMET's convention) or an object with `.func` and `.args`
    (AIMET's CallbackFunc). Refuses anything else, a generator object and a
    generator function (its call runs none of its body), with a TypeError naming
    `what`: every entry point checks its callbacks here, before any evaluation."""
    expected = (f"{what} must be a callable taking the model, or a (func, args) pair called "
                "as func(model, args)")
    if inspect.isgenerator(callback) or inspect.isasyncgen(callback):
        raise TypeError(f"{expected}; got a generator object, which cannot take the model: pass "
                        "a function that runs it (e.g. lambda model: model.predict(x)).")
    if isinstance(callback, tuple) and len(callback) == 2 and callable(callback[0]):
        func, args = callback
        _refuse_generator_function(func, expected)
        return lambda model: func(model, args)
    if callable(callback):  # before the CallbackFunc test: functools.partial has .func/.args
        _refuse_generator_function(callback, expected)
        return callback
    if hasattr(callback, "func") and hasattr(callback, "args") and callable(callback.func):
        _refuse_generator_function(callback.func, expected)
        return lambda model: callback.func(model, callback.args)
    raise TypeError(f"{expected}; got {type(callback).__name__}.")


def _refuse_generator_function(func, expected: str) -> None:
    """TypeError if calling `func` would only create a generator (it has `yield`)."""
    for f in (func, getattr(func, "__call__", None)):
        if inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f):
            name = getattr(func, "__name__", type(func).__name__)
            raise TypeError(f"{expected}; got generator function {name!r}, whose call only "
                            "creates a generator and runs none of its body: write it without "
                            "yield.")


def eval_score(value, what: str) -> float:
    """The one number an eval callback returned; TypeError naming `what` otherwise."""
    try:
        score = float(np.asarray(value).reshape(()))
    except (TypeError, ValueError):
        raise TypeError(
            f"{what} must return one number (e.g. accuracy, higher is better); it returned "
            f"{type(value).__name__} {value!r:.80}."
        ) from None
    return score


class ScoreCheck:
    """The eval callback's scores, checked for NaN/Inf: the reference score (the
    float model's, every other one is compared with it) must be finite; a later
    non-finite score is kept (null in the JSON files, no TensorBoard point) with
    one warning, for the first, naming the callback and the configuration."""

    def __init__(self, what: str = "eval_callback"):
        self.what = what
        self.warned = False

    def __call__(self, value, configuration: str, reference: bool = False) -> float:
        """`value` as a float.

        Raises:
            TypeError: `value` is not one number.
            ValueError: the `reference` score is NaN or infinite (raised before
                any other evaluation).
        """
        score = eval_score(value, self.what)
        if math.isfinite(score):
            return score
        if reference:
            raise ValueError(
                f"{self.what} returned {score} for {configuration}, the score every other one is "
                "compared with; it must return a finite number (e.g. accuracy, or a negated "
                f"loss). Check {self.what}(model) on the float model first."
            )
        if not self.warned:
            self.warned = True
            logger.warning(
                "%s returned %s for %s; the score is kept as missing (null in the results, no "
                "TensorBoard point). Further non-finite scores are not reported again.",
                self.what, score, configuration)
        return score


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
