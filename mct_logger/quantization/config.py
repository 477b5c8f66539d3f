"""`QuantizationConfig`: what the user chooses about a PTQ run, globally and per layer.

Example:

```python
config = QuantizationConfig(
    weight_bits=8,
    overrides={
        "classifier": LayerOverride(weight_bits=4),
        r"block_\\d+_project": LayerOverride(keep_float=True),
    },
)
model_q, info = keras_post_training_quantization(model, data, config)
config.to_json("w8_mixed.json")            # review it, keep it with the model
QuantizationConfig.from_json("w8_mixed.json") == config   # True
```

The JSON file is `{"format": "mct_logger.QuantizationConfig", "version": 1,
"config": {field: value, "overrides": [{"pattern": ..., field: value}]}}`:
overrides are a list, so their order (later patterns win) survives every
JSON tool; fields left at None are left out of an override.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from mct_logger.graph.ir import layer_name_of
from mct_logger.quantization import litert_target
from mct_logger.quantization.encodings import check_bitwidth
from mct_logger.utils.arguments import check_path, described
from mct_logger.utils.strict_json import load_strict

BIAS_CORRECTION_MODES = (None, "empirical", "analytical", "hybrid")


def _positive_int(owner: str, field: str, value, zero: bool = False) -> None:
    low = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner}.{field} must be an integer >= {low}, got {value!r}.")


def _positive_number(owner: str, field: str, value, zero: bool = False) -> None:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float))
          and (value >= 0 if zero else value > 0) and value == value and value != float("inf"))
    if not ok:
        raise ValueError(f"{owner}.{field} must be a finite number {'>= 0' if zero else '> 0'}, "
                         f"got {value!r}.")


@dataclasses.dataclass(frozen=True)
class AdaRoundConfig:
    """Adaptive rounding of the weights (AdaRound: Nagel et al., "Up or Down? Adaptive
    Rounding for Post-Training Quantization", ICML 2020). The defaults are the
    paper's and AIMET's (`AdaroundParameters`): 10,000 iterations per layer,
    regularisation weight 0.01, beta annealed from 20 to 2 after a 20% warm start,
    Adam at learning rate 1e-3.

    Attributes:
        iterations: optimisation steps per layer (0: nearest rounding, exactly).
        batch_size: samples per step, drawn at random from the layer's cached
            inputs and float outputs.
        reg_weight: lambda, the weight of the rounding regulariser
            `sum(1 - |2 h(V) - 1| ** beta)` against the reconstruction loss.
        beta_range: (start, end) of beta, annealed (cosine) after the warm start.
        warm_start: share of the iterations run without the regulariser (0 to < 1).
        learning_rate: Adam's step size.
        num_samples: representative samples AdaRound learns from (None: all that
            PTQ read, `QuantizationConfig.num_calibration_samples`); fewer are
            used when one layer's inputs and outputs for them would pass `cache_mib`.
        cache_mib: MiB one layer's cached (quantized input, float output) pairs
            may take: peak memory stays flat however much data there is.
        seed: seeds the minibatch draws (runs are repeatable).
    """

    iterations: int = 10000
    batch_size: int = 32
    reg_weight: float = 0.01
    beta_range: tuple = (20.0, 2.0)
    warm_start: float = 0.2
    learning_rate: float = 1e-3
    num_samples: int | None = None
    cache_mib: float = 256.0
    seed: int = 0

    def __post_init__(self):
        owner = "AdaRoundConfig"
        _positive_int(owner, "iterations", self.iterations, zero=True)
        _positive_int(owner, "batch_size", self.batch_size)
        _positive_number(owner, "reg_weight", self.reg_weight, zero=True)
        _positive_number(owner, "learning_rate", self.learning_rate)
        _positive_number(owner, "cache_mib", self.cache_mib)
        _positive_int(owner, "seed", self.seed, zero=True)
        if self.num_samples is not None:
            _positive_int(owner, "num_samples", self.num_samples)
        if (isinstance(self.warm_start, bool) or not isinstance(self.warm_start, (int, float))
                or not 0 <= self.warm_start < 1):
            raise ValueError(f"{owner}.warm_start must be a number from 0 to below 1 (the "
                             f"share of iterations without the regulariser), got "
                             f"{self.warm_start!r}.")
        beta = self.beta_range
        if (not isinstance(beta, (tuple, list)) or len(beta) != 2
                or any(isinstance(b, bool) or not isinstance(b, (int, float)) or not b > 0
                       for b in beta)):
            raise ValueError(f"{owner}.beta_range must be (start, end), two positive numbers "
                             f"such as the paper's (20, 2), got {beta!r}.")
        if beta[0] < beta[1]:
            raise ValueError(f"{owner}.beta_range={tuple(beta)!r} would sharpen the rounding "
                             f"regulariser backwards: beta anneals from start down to end, so "
                             f"give the larger first, e.g. {tuple(beta)[::-1]!r}.")
        object.__setattr__(self, "beta_range", (float(beta[0]), float(beta[1])))


def _adaround_config(value) -> "AdaRoundConfig | None":
    """`QuantizationConfig.adaround` normalised: True -> the defaults, a dict (from
    JSON) -> its fields; None/False -> off."""
    if value is None or value is False:
        return None
    if value is True:
        return AdaRoundConfig()
    if isinstance(value, AdaRoundConfig):
        return value
    if isinstance(value, dict):
        known = {f.name for f in dataclasses.fields(AdaRoundConfig)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"QuantizationConfig.adaround: unknown AdaRoundConfig field(s) "
                             f"{unknown}; known: {sorted(known)}.")
        return AdaRoundConfig(**value)
    raise TypeError(
        "QuantizationConfig.adaround must be an AdaRoundConfig, True (the paper's "
        f"defaults) or None (nearest rounding), got {type(value).__name__} {value!r}.")

# The "format" and "version" of a QuantizationConfig JSON file.
JSON_FORMAT = "mct_logger.QuantizationConfig"
JSON_VERSION = 1

_BOOL_FIELDS = (
    "weight_per_channel", "weight_symmetric", "activation_symmetric",
    "activation_per_channel",
)


def _observer_names():
    from mct_logger.quantization.observers import OBSERVERS

    return sorted(OBSERVERS)


def _check_fields(owner: str, values: dict) -> None:
    for field in ("weight_bits", "activation_bits"):
        if values.get(field) is not None:
            try:
                check_bitwidth(values[field])
            except ValueError as exc:
                raise ValueError(f"{owner}.{field}: {exc}") from None
    for field in _BOOL_FIELDS + ("keep_float", "quantize_inputs"):
        value = values.get(field)
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{owner}.{field} must be True or False, got {value!r}.")
    for field in ("weight_observer", "activation_observer"):
        value = values.get(field)
        if value is not None and (not isinstance(value, str) or value not in _observer_names()):
            raise ValueError(
                f"{owner}.{field}={value!r} is not an observer; use one of {_observer_names()}."
            )


@dataclasses.dataclass
class LayerOverride:
    """Settings for the nodes an override pattern matches; None keeps the global value.

    Attributes:
        weight_bits, activation_bits: bitwidths (2 to 16).
        weight_per_channel, weight_symmetric, activation_symmetric,
        activation_per_channel: grid shapes.
        weight_observer, activation_observer: "min_max", "tf_enhanced" or "mse".
        keep_float: leave the node entirely in float (no quantizers).
    """

    weight_bits: int | None = None
    activation_bits: int | None = None
    weight_per_channel: bool | None = None
    weight_symmetric: bool | None = None
    activation_symmetric: bool | None = None
    activation_per_channel: bool | None = None
    weight_observer: str | None = None
    activation_observer: str | None = None
    keep_float: bool = False

    def __post_init__(self):
        if self.keep_float is None:
            raise TypeError("LayerOverride.keep_float must be True or False, got None.")
        _check_fields("LayerOverride", dataclasses.asdict(self))


@dataclasses.dataclass
class QuantizationConfig:
    """Defaults: W8A8; weights symmetric per-channel by min/max; activations
    asymmetric per-tensor by MSE search (MCT's activation method).

    Attributes:
        weight_bits: bitwidth of Conv/Dense kernels (2 to 16). Biases stay float32.
        activation_bits: bitwidth of layer outputs and model inputs (2 to 16).
        weight_per_channel: one grid per output channel instead of per tensor.
        weight_symmetric, activation_symmetric: symmetric grids.
        activation_per_channel: one grid per channel of each output (last axis).
        weight_observer, activation_observer: "min_max", "tf_enhanced" (AIMET's
            SQNR histogram search) or "mse".
        quantize_inputs: put activation quantizers on the model inputs too.
        batch_size: how a bare NumPy array of representative data is batched.
        num_calibration_samples: how many representative samples are read at
            most (default 1000, in the 500-1000 range AIMET and MCT recommend);
            reading stops there, so an endless generator or a `.repeat()`ed
            dataset ends. None reads everything (a dataset that `.repeat()`s
            without count, even behind a `.filter()`, is then refused; an
            endless generator would never end).
        overrides: `{pattern: LayerOverride}`; a pattern matches a node by its
            full name, its layer name (every call of a shared layer), or as a
            regular expression over the full name. Later patterns win.
        encodings_file: an encodings JSON (`QuantizationInfo.export_encodings`)
            to use instead of calibrating. The file's grids win: their
            bit-widths, symmetry and per-channel counts replace this config's
            (one warning names the file, each setting that differs, e.g.
            `weight_per_channel=True` or an override's, and the first
            tensors; a one-channel tensor is one grid either way), and
            entries for nodes the model lacks are ignored with a warning
            naming them.
        analyze_similarity: compare float and quantized outputs along the
            network after quantizing (cosine per sample, SQNR per node,
            quantized-output histograms); None: only when someone listens
            (e.g. a log folder is set).
        similarity_samples: how many representative samples the per-sample
            similarity plots use (MCT uses 20).
        cross_layer_equalization: before calibration, replace the ReLU6s that link
            equalizable layers with ReLU, rescale conv -> conv and conv ->
            depthwise -> conv sets to equal per-channel weight ranges and fold
            high biases (as `equalize_model`). The weight-range tables for the
            CLE dashboard are recorded either way.
        bias_correction: after the grids are set, subtract each Conv/Depthwise/
            Dense layer's quantization-induced mean output shift from its bias:
            "empirical" (measured on the representative data), "analytical"
            (from the preceding folded batch norm, no data), "hybrid"
            (analytical where a batch norm precedes, empirical elsewhere) or
            None (off).
        adaround: learn each quantized kernel's rounding (up or down per weight)
            layer by layer on the representative data instead of rounding to
            nearest (`AdaRoundConfig`; True for the paper's defaults; None: off).
            Runs after the grids are set and before bias correction; the grids
            stay the observers'.
    """

    weight_bits: int = 8
    activation_bits: int = 8
    weight_per_channel: bool = True
    weight_symmetric: bool = True
    activation_symmetric: bool = False
    activation_per_channel: bool = False
    weight_observer: str = "min_max"
    activation_observer: str = "mse"
    quantize_inputs: bool = True
    batch_size: int = 32
    num_calibration_samples: int | None = 1000
    overrides: dict = dataclasses.field(default_factory=dict)
    encodings_file: str | None = None
    analyze_similarity: bool | None = None
    similarity_samples: int = 20
    cross_layer_equalization: bool = False
    bias_correction: str | None = None
    adaround: AdaRoundConfig | bool | None = None
    target: str | None = None

    def __post_init__(self):
        self.adaround = _adaround_config(self.adaround)
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for field in ("weight_bits", "activation_bits") + _BOOL_FIELDS + ("quantize_inputs",):
            if values[field] is None:
                raise TypeError(f"QuantizationConfig.{field} cannot be None.")
        for field in ("weight_observer", "activation_observer"):
            if values[field] is None:  # None means "the global value" only in a LayerOverride
                raise ValueError(f"QuantizationConfig.{field} cannot be None; use one of "
                                 f"{_observer_names()}.")
        _check_fields("QuantizationConfig", values)
        if not isinstance(self.cross_layer_equalization, bool):
            raise TypeError(
                "QuantizationConfig.cross_layer_equalization must be True or False, "
                f"got {self.cross_layer_equalization!r}."
            )
        if not (self.bias_correction is None or isinstance(self.bias_correction, str)) \
                or self.bias_correction not in BIAS_CORRECTION_MODES:
            raise ValueError(
                f"QuantizationConfig.bias_correction={self.bias_correction!r} is not "
                f"supported; use one of {BIAS_CORRECTION_MODES}."
            )
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(
                f"QuantizationConfig.batch_size must be a positive integer, got {self.batch_size!r}."
            )
        if self.num_calibration_samples is not None and (
            isinstance(self.num_calibration_samples, bool)
            or not isinstance(self.num_calibration_samples, int)
            or self.num_calibration_samples < 1
        ):
            raise ValueError(
                "QuantizationConfig.num_calibration_samples must be a positive integer or "
                f"None, got {self.num_calibration_samples!r}."
            )
        if self.analyze_similarity is not None and not isinstance(self.analyze_similarity, bool):
            raise TypeError("QuantizationConfig.analyze_similarity must be True, False or None.")
        if isinstance(self.similarity_samples, bool) \
                or not isinstance(self.similarity_samples, int) or self.similarity_samples < 1:
            raise ValueError(
                "QuantizationConfig.similarity_samples must be a positive integer, "
                f"got {self.similarity_samples!r}."
            )
        if self.target not in litert_target.TARGETS:
            raise ValueError(f"QuantizationConfig.target={self.target!r} is not supported; use "
                             f"one of {litert_target.TARGETS}.")
        litert_target.check_config("QuantizationConfig", values, self.target)
        if not isinstance(self.overrides, dict):
            raise TypeError(
                "QuantizationConfig.overrides must be a dict {layer name or regex: LayerOverride}."
            )
        if self.encodings_file is not None:
            self.encodings_file = check_path("QuantizationConfig.encodings_file",
                                             self.encodings_file)
        for pattern, override in self.overrides.items():
            if not isinstance(pattern, str):
                raise TypeError(
                    f"QuantizationConfig.overrides keys must be layer names or regular "
                    f"expressions (str); got {described(pattern)} for {override!r:.60}."
                )
            if not isinstance(override, LayerOverride):
                raise TypeError(
                    f"QuantizationConfig.overrides[{pattern!r}] must be a LayerOverride, "
                    f"got {type(override).__name__}."
                )
            if self.target is not None:
                litert_target.check_config(f"QuantizationConfig.overrides[{pattern!r}]",
                                           dataclasses.asdict(override), self.target)
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"QuantizationConfig.overrides key {pattern!r} is not a valid regular "
                    f"expression ({exc}); escape special characters or use the exact layer name."
                ) from None

    def to_json(self, path: str | os.PathLike) -> str:
        """Writes the config as JSON (see the module docstring); returns the path.

        Raises:
            OSError: the file cannot be written.
        """
        path = check_path("path", path)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config_to_dict(self), f, indent=2)
            f.write("\n")
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "QuantizationConfig":
        """Reads a config written by `to_json`, validated as the constructor does.

        Raises:
            FileNotFoundError: no such file.
            ValueError / TypeError: not UTF-8 JSON, another format or a newer
                version, an unknown field, or a value the constructor refuses;
                the message names the file and the field.
        """
        path = check_path("path", path)
        try:
            with open(path, encoding="utf-8") as f:
                content = load_strict(f, path)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a UTF-8 JSON file ({exc}); write it with "
                             "QuantizationConfig.to_json.") from None
        try:
            return config_from_dict(content)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{path}: {exc}") from None

    def for_node(self, node_name: str) -> tuple[dict, list[str]]:
        """The effective settings of a node and the override patterns that matched it."""
        settings = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(LayerOverride)
            if f.name != "keep_float"
        }
        settings["keep_float"] = False
        matched = []
        layer_name = layer_name_of(node_name)
        for pattern, override in self.overrides.items():
            if pattern in (node_name, layer_name) or re.fullmatch(pattern, node_name):
                matched.append(pattern)
                for key, value in dataclasses.asdict(override).items():
                    if value is not None and (key != "keep_float" or value):
                        settings[key] = value
        return settings, matched

    def for_inner(self, node_name: str, point: str) -> tuple[dict, list[str]]:
        """The effective settings of a composite layer's sublayer group (its
        kernels and its output, `node/point`: "block_0/self_attention/query"):
        the node's settings, then the overrides whose pattern is that full name
        or fully matches it (a bare sublayer name such as "query" does not)."""
        settings, matched = self.for_node(node_name)
        inner = f"{node_name}/{point}"
        for pattern, override in self.overrides.items():
            if pattern == inner or re.fullmatch(pattern, inner):
                matched.append(pattern)
                for key, value in dataclasses.asdict(override).items():
                    if value is not None and (key != "keep_float" or value):
                        settings[key] = value
        return settings, matched


def config_to_dict(config: QuantizationConfig) -> dict:
    """The JSON-ready form `to_json` writes."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
              if f.name != "overrides"}
    if config.adaround is not None:
        fields["adaround"] = {**dataclasses.asdict(config.adaround),
                              "beta_range": list(config.adaround.beta_range)}
    fields["overrides"] = [
        {"pattern": pattern,
         **{k: v for k, v in dataclasses.asdict(o).items()
            if v is not None and (k != "keep_float" or v)}}
        for pattern, o in config.overrides.items()
    ]
    return {"format": JSON_FORMAT, "version": JSON_VERSION, "config": fields}


def config_from_dict(content) -> QuantizationConfig:
    """A QuantizationConfig from `config_to_dict`'s form; errors name the field."""
    if not isinstance(content, dict) or content.get("format") != JSON_FORMAT:
        raise ValueError(f'not a QuantizationConfig file (expected "format": "{JSON_FORMAT}").')
    version = content.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}.")
    if version > JSON_VERSION:
        raise ValueError(f"version {version} is newer than this mct-logger reads "
                         f"({JSON_VERSION}); upgrade mct-logger.")
    values = content.get("config")
    if not isinstance(values, dict):
        raise ValueError('"config" must be an object of QuantizationConfig fields.')
    known = {f.name for f in dataclasses.fields(QuantizationConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown QuantizationConfig field(s) {unknown}; known: {sorted(known)}.")
    values = dict(values)
    overrides = values.pop("overrides", [])
    if not isinstance(overrides, list):
        raise TypeError('"overrides" must be a list of {"pattern": ..., field: value}.')
    override_fields = {f.name for f in dataclasses.fields(LayerOverride)}
    parsed = {}
    for index, entry in enumerate(overrides):
        if not isinstance(entry, dict) or not isinstance(entry.get("pattern"), str):
            raise TypeError(f'overrides[{index}] must be an object with a string "pattern".')
        entry = dict(entry)
        pattern = entry.pop("pattern")
        unknown = sorted(set(entry) - override_fields)
        if unknown:
            raise ValueError(f"overrides[{index}] ({pattern!r}): unknown LayerOverride "
                             f"field(s) {unknown}; known: {sorted(override_fields)}.")
        if pattern in parsed:
            raise ValueError(f"overrides[{index}]: pattern {pattern!r} appears twice.")
        parsed[pattern] = LayerOverride(**entry)
    return QuantizationConfig(**values, overrides=parsed)
