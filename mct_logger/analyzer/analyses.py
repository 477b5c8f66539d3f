"""QuantAnalyzer's analyses: each a pure function of the calibrated graph returning its table.

The driver (`mct_logger.analyzer.driver`) calibrates, then calls these in turn; each
returns the table that is written to `results_dir`, shown in TensorBoard and in
the offline report. Shapes of the tables are those of the "quant_analyzer"
payloads (`tb_plugin.metadata`).

- `min_max_ranges`: encoding min/max of every quantizer, AIMET's files and ours;
- `histograms`: statistics histogram of every quantized tensor with its encoding;
- `weight_sqnr_table`: SQNR of every quantized kernel, per layer and per channel;
- `activation_error_rows`: per-layer SQNR (accumulated and isolated, dB), MSE and
  cosine from one paired float/quantized pass per batch (`activations.PairedActivations`);
- `sensitivity_runs`: the four W/A settings the sensitivity analysis evaluates.

Example:

```python
aimet, table = min_max_ranges(graph, layers, encodings, calibration.observers)
rows = activation_error_rows(graph, plan, encodings, batches)
```
"""

from __future__ import annotations

import dataclasses
from typing import Any
import math

import keras
import numpy as np
from keras import tree

from mct_logger.data import sources as data_lib
from mct_logger.diagnostics import metrics
from mct_logger.diagnostics.metrics import MAX_SQNR_DB
from mct_logger.diagnostics.activations import PairedActivations
from mct_logger.analyzer.aimet_layout import aimet_range, range_fields
from mct_logger.graph.ir import Graph
from mct_logger.quantization.memory import elements_per_sample
from mct_logger.quantization.encodings import Encoding
from mct_logger.quantization.layers import weight_variable
from mct_logger.quantization.histogram import HistogramCollector, channels_last_2d
from mct_logger.quantization.quantsim import CalibrationModel
from mct_logger.diagnostics.weight_error import weight_quantization_rows
from mct_logger.analyzer.worst_layers import headline_lines, rank

__all__ = [
    "AnalysisResult", "ObserverWithHistogram", "RecordingCalibrationModel", "activation_error_rows",
    "error_nodes", "histograms", "min_max_ranges", "sensitivity_runs", "summary_header",
    "weight_histograms", "weight_sqnr_table",
]

# Bins of the whole-tensor weight histograms and of the per-channel ones.
WEIGHT_BINS = 512
CHANNEL_BINS = 64


@dataclasses.dataclass
class AnalysisResult:
    """What `QuantAnalyzer.analyze` found; every table is also on disk in `results_dir`.

    Attributes:
        status: "complete", or "interrupted"/"failed" with the tables finished so far.
        sensitivity: {"fp32", "weights_only", "activations_only"} -> eval score.
        per_layer_quant_enabled: layer -> score with only that layer quantized.
        per_layer_quant_disabled: layer -> score with all but that layer quantized.
        per_layer_mse_loss: layer -> accumulated MSE per element (None unless enabled).
        per_layer_sqnr: layer -> row of the SQNR table (accumulated/isolated dB...).
        weight_sqnr: "layer/kernel" -> row of the weight SQNR table.
        min_max_ranges: {"weights": ..., "activations": ...} in AIMET's shape.
        report_path: the offline report `index.html` (None when it was not written).
        files_not_written: result file (relative to `results_dir`) -> why it
            could not be written (disk full...); empty when every file was.
            Those files are missing (or hold an earlier state of their table);
            every result is here all the same, and in `summary.json` too.
        log_folder: the run folder a listener logged the analysis to (None when none did).
        float_model: the FP32 baseline (batch norms folded).
        quantized_model: the quantized model (all quantizers on).
        config: the QuantizationConfig analyzed (AIMET settings resolved,
            `layers_to_ignore` not yet applied).
        tables: every table as published, by kind ("sensitivity",
            "histograms", "min_max_ranges", ...): what `recommend` reads.
    """

    results_dir: str
    status: str = "running"
    layers: list = dataclasses.field(default_factory=list)
    sensitivity: dict = dataclasses.field(default_factory=dict)
    per_layer_quant_enabled: dict = dataclasses.field(default_factory=dict)
    per_layer_quant_disabled: dict = dataclasses.field(default_factory=dict)
    per_layer_mse_loss: dict | None = None
    per_layer_sqnr: dict = dataclasses.field(default_factory=dict)
    weight_sqnr: dict = dataclasses.field(default_factory=dict)
    min_max_ranges: dict = dataclasses.field(default_factory=dict)
    report_path: str | None = None
    files_not_written: dict = dataclasses.field(default_factory=dict)
    log_folder: str | None = None
    float_model: keras.Model | None = None
    quantized_model: keras.Model | None = None
    config: Any = None
    tables: dict = dataclasses.field(default_factory=dict)

    def headlines(self) -> list[str]:
        """The headline findings as the tab and report state them, one line per
        measure whose rule some layer crosses, or one line saying none does
        (`worst_layers.headline_lines`)."""
        return headline_lines(self.tables)

    def ranking(self, measure: str) -> list[str]:
        """Layers worst first by `measure`:

        - "per_layer_quant_enabled": lowest score with only that layer quantized;
        - "per_layer_quant_disabled": highest score with that layer left in float;
        - "sqnr_isolated": lowest isolated SQNR (quantized layers only);
        - "sqnr_accumulated_step": largest drop of the accumulated SQNR at the layer;
        - "sqnr_accumulated": lowest accumulated SQNR;
        - "per_layer_mse_loss": largest accumulated MSE;
        - "weight_sqnr": lowest weight SQNR ("layer/kernel" keys).

        Layers without a finite value are left out (`worst_layers.rank`).
        """
        def ordered(values: dict, worst_is_high: bool):
            return [k for k, _ in rank(values.items(), worst_is_high)]

        rows = self.per_layer_sqnr
        if measure == "per_layer_quant_enabled":
            return ordered(self.per_layer_quant_enabled, False)
        if measure == "per_layer_quant_disabled":
            return ordered(self.per_layer_quant_disabled, True)
        if measure == "sqnr_isolated":
            return ordered({k: r["sqnr_isolated_db"] for k, r in rows.items()}, False)
        if measure == "sqnr_accumulated":
            return ordered({k: r["sqnr_accumulated_db"] for k, r in rows.items()}, False)
        if measure == "sqnr_accumulated_step":
            return ordered({k: r["accumulated_step_db"] for k, r in rows.items()}, True)
        if measure == "per_layer_mse_loss":
            return ordered(self.per_layer_mse_loss or {}, True)
        if measure == "weight_sqnr":
            return ordered({k: r["sqnr_db"] for k, r in self.weight_sqnr.items()}, False)
        raise ValueError(f"Unknown measure {measure!r}; see AnalysisResult.ranking.")


# ----------------------------------------------------------------------------- calibration


class ObserverWithHistogram:
    """An observer plus a histogram of what it saw, for observers without one
    (min/max): the histogram analysis then works for every scheme."""

    def __init__(self, observer):
        self.observer = observer
        self.collector = observer if hasattr(observer, "histogram") else HistogramCollector()

    def update(self, x) -> None:
        self.observer.update(x)
        if self.collector is not self.observer:
            self.collector.update(x)

    @property
    def is_empty(self) -> bool:
        return self.observer.is_empty

    @property
    def min(self):
        return self.observer.min

    @property
    def max(self):
        return self.observer.max

    def encoding(self, *args, **kwargs) -> Encoding:
        return self.observer.encoding(*args, **kwargs)

    def histogram(self, per_channel: bool = True):
        return self.collector.histogram(per_channel)


class RecordingCalibrationModel(CalibrationModel):
    """The calibration model, also keeping the first inputs it sees (up to
    `max_samples`) so the SQNR analysis has data without asking for more."""

    def __init__(self, graph: Graph, plan: dict, max_samples: int, **kwargs):
        super().__init__(graph, plan, **kwargs)
        self.max_samples = max_samples
        self.recorded: list = []
        self.recorded_samples = 0
        for name in list(self.observers):
            self.observers[name] = ObserverWithHistogram(self.observers[name])

    def _record(self, inputs) -> None:
        if self.recorded_samples >= self.max_samples:
            return
        batch = tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), inputs)
        leaves = tree.flatten(batch)
        if not leaves or np.ndim(leaves[0]) == 0:
            return
        keep = min(len(leaves[0]), self.max_samples - self.recorded_samples)
        self.recorded.append(tree.map_structure(lambda a: a[:keep], batch))
        self.recorded_samples += keep

    def call(self, inputs, training=False):
        if not any(isinstance(x, keras.KerasTensor) for x in tree.flatten(inputs)):
            self._record(inputs)
        return super().call(inputs, training=training)

    def collect(self, batch):
        self._record(batch if len(batch) > 1 else batch[0])
        return super().collect(batch)


# ----------------------------------------------------------------------------- analyses


def min_max_ranges(graph: Graph, layers, encodings: dict, observers: dict) -> tuple[dict, dict]:
    """Encoding min/max of every quantizer.

    Returns:
        `(aimet, table)`: AIMET's `{"weights": {key: range}, "activations": {...}}`
        (`aimet_layout.aimet_range`) and our table `{"activations": rows, "weights": rows}`
        with the observed min/max beside each encoding.
    """
    aimet_weights, aimet_activations = {}, {}
    weight_rows, activation_rows = [], []
    for name in layers:
        node, enc = graph.nodes[name], encodings[name]
        if enc.activation is not None:
            key = f"{name}_output_0"
            observer = observers[name]
            aimet_activations[key] = aimet_range(enc.activation, key)
            activation_rows.append({
                "layer": name, "key": key, **range_fields(enc.activation),
                "observed_min": float(np.min(observer.min)),
                "observed_max": float(np.max(observer.max)),
            })
        for point, encoding in enc.inner_activations.items():  # a composite's sublayers
            inner, key = f"{name}/{point}", f"{name}/{point}_output_0"
            aimet_activations[key] = aimet_range(encoding, key)
            activation_rows.append({
                "layer": inner, "key": key, **range_fields(encoding),
                "observed_min": float(np.min(observers[inner].min)),
                "observed_max": float(np.max(observers[inner].max)),
            })
        for kernel_name, encoding in enc.weights.items():
            key = f"{name}_{(node.layer.name + '/' + kernel_name).replace('/', '-')}"
            kernel = keras.ops.convert_to_numpy(weight_variable(node.layer, kernel_name))
            aimet_weights[key] = aimet_range(encoding, key)
            weight_rows.append({
                "layer": name, "kernel": kernel_name, "key": key, **range_fields(encoding),
                "observed_min": float(np.min(kernel)), "observed_max": float(np.max(kernel)),
            })
    return ({"weights": aimet_weights, "activations": aimet_activations},
            {"activations": activation_rows, "weights": weight_rows})


def histograms(graph: Graph, plan: dict, layers, encodings: dict, observers: dict) -> dict:
    """The statistics histogram of every quantized activation (trimmed of empty
    end bins) and of every quantized kernel (whole and per channel), each with
    its encoding min/max: `{"activations": rows, "weights": rows}`."""
    activation_rows, weight_rows = [], []
    for name in layers:
        enc = encodings[name]
        if enc.activation is not None:
            edges, counts = observers[name].histogram(per_channel=False)
            lo, width, counts = _trim(edges[0], counts[0])
            activation_rows.append({
                "layer": name, "lo": lo, "width": width,
                "counts": [round(float(c), 2) for c in counts],
                "encoding_min": float(np.min(enc.activation.min)),
                "encoding_max": float(np.max(enc.activation.max)),
                "per_channel_encoding": enc.activation.per_channel,
            })
        for point, encoding in enc.inner_activations.items():  # a composite's sublayers
            edges, counts = observers[f"{name}/{point}"].histogram(per_channel=False)
            lo, width, counts = _trim(edges[0], counts[0])
            activation_rows.append({
                "layer": f"{name}/{point}", "lo": lo, "width": width,
                "counts": [round(float(c), 2) for c in counts],
                "encoding_min": float(np.min(encoding.min)),
                "encoding_max": float(np.max(encoding.max)),
                "per_channel_encoding": False,
            })
        node = graph.nodes[name]
        for kernel_name, encoding in enc.weights.items():
            spec = plan[name].weights[kernel_name]
            kernel = np.asarray(keras.ops.convert_to_numpy(weight_variable(node.layer, kernel_name)))
            weight_rows.append({
                "layer": name, "kernel": kernel_name,
                **weight_histograms(kernel, spec.channel_axes, encoding),
            })
    return {"activations": activation_rows, "weights": weight_rows}


def weight_sqnr_table(graph: Graph, plan: dict, encodings: dict) -> dict:
    """`{"rows": [...]}`: SQNR (dB) of every quantized kernel against the float
    one, whole and per output channel (`weight_quantization.weight_quantization_rows`)."""
    return {"rows": [
        {"layer": r["layer"], "kernel": r["kernel"], "class": r["class"],
         "bitwidth": r["bitwidth"], "per_channel_encoding": r["per_channel"],
         "sqnr_db": r["sqnr_db"], "channels": r["channels"],
         "channel_sqnr_db": r["channel_sqnr_db"]}
        for r in weight_quantization_rows(graph, plan, encodings)
    ]}


def activation_error_tables(graph: Graph, plan: dict, encodings: dict, mse_batches,
                            calibration_batches):
    """The "per_layer_sqnr" table (`activation_error_rows` over `mse_batches`, the
    data given to `enable_per_layer_mse_loss`, else over `calibration_batches`)
    and, with `mse_batches`, the "per_layer_mse_loss" table (else None)."""
    with_mse = mse_batches is not None
    batches = mse_batches if with_mse else calibration_batches
    source = ("the unlabeled data given for the MSE analysis" if with_mse
              else "calibration data (forward_pass_callback)")
    rows = activation_error_rows(graph, plan, encodings, batches)
    samples = data_lib.num_samples(batches)
    sqnr = {"samples": samples, "batches": len(batches), "data": source,
            "max_sqnr_db": MAX_SQNR_DB, "rows": rows}
    mse = None if not with_mse else {
        "samples": samples, "batches": len(batches),
        "normalization": "mean over every element of the layer output",
        "rows": [{"layer": r["layer"], "mse": r["mse_accumulated"]} for r in rows]}
    return sqnr, mse


def activation_error_rows(graph: Graph, plan: dict, encodings: dict, batches) -> list[dict]:
    """Per-layer SQNR (accumulated and isolated, dB), MSE and mean cosine of
    every `error_nodes` node over `batches`, one paired pass per batch."""
    nodes = error_nodes(graph, plan)
    errors = PairedActivations(graph, plan, encodings, nodes=nodes).errors(batches)
    rows = []
    accumulated = {}
    for name in nodes:
        e, node = errors[name], graph.nodes[name]
        quantized = plan[name].quantized
        producers = [r.node for r in node.inputs]
        upstream = [accumulated[p] for p in producers if p in accumulated]
        acc = e.sqnr_accumulated_db
        accumulated[name] = acc
        rows.append({
            "layer": name,
            "class": node.layer_class,
            "quantized": quantized,
            "inputs": producers,
            "sqnr_accumulated_db": acc,
            "sqnr_isolated_db": e.sqnr_isolated_db if quantized else None,
            "accumulated_step_db": metrics.accumulated_step_db(upstream, acc),
            "mse_accumulated": e.mse_accumulated,
            "mse_isolated": e.mse_isolated if quantized else None,
            # the cosine of one number with another is always +-1: not reported
            "cosine_accumulated": (e.mean_cosine() if elements_per_sample(node) > 1 else None),
        })
    return rows


def summary_header(config, graph: Graph, plan: dict, layers, folding, ignored,
                   evaluations_total: int) -> dict:
    """The run's `summary.json` fields known before any analysis: the model, the
    settings, the layers analyzed and why the others stay in float."""
    return {
        "model": graph.name,
        "status": "running",
        "config": {
            "weight_bits": config.weight_bits,
            "activation_bits": config.activation_bits,
            "weight_observer": config.weight_observer,
            "activation_observer": config.activation_observer,
            "weight_per_channel": config.weight_per_channel,
            "weight_symmetric": config.weight_symmetric,
            "activation_symmetric": config.activation_symmetric,
            "activation_per_channel": config.activation_per_channel,
            "quantize_inputs": config.quantize_inputs,
        },
        "layers": [
            {
                "layer": n,
                "class": graph.nodes[n].layer_class,
                "weights": sorted(plan[n].weights),
                "activation": plan[n].activation is not None,
                "sublayer_outputs": sorted(plan[n].inner_activations),
            }
            for n in layers
        ],
        "float_nodes": [
            {"layer": n, "note": p.note} for n, p in plan.items()
            if not p.quantized and p.note
        ],
        "batch_norms_folded": dict(folding.folded),
        "layers_ignored": list(ignored),
        "evaluations_total": evaluations_total,
        "evaluations_done": 0,
    }


def sensitivity_runs(float_model, sim, weight_bits: int, activation_bits: int):
    """The sensitivity analysis's settings: `(labels, [(key, model, quantizer switches)])`."""
    w, a = weight_bits, activation_bits
    labels = {"fp32": "W32A32", "weights_only": f"W{w}A32",
              "activations_only": f"W32A{a}", "fully_quantized": f"W{w}A{a}"}
    return labels, [
        ("fp32", float_model, None),
        ("weights_only", sim, {"weights": True, "activations": False}),
        ("activations_only", sim, {"weights": False, "activations": True}),
        ("fully_quantized", sim, {"weights": True, "activations": True}),
    ]


# ----------------------------------------------------------------------------- helpers


def error_nodes(graph: Graph, plan: dict) -> list[str]:
    """The nodes the per-layer SQNR/MSE analysis reports: every node with one
    floating-point output, except model inputs that have no quantizer."""
    return [
        n.name for n in graph
        if len(n.output_dtypes) == 1 and "float" in str(n.output_dtypes[0])
        and (not n.is_input or plan[n.name].activation is not None)
    ]


def _trim(edges: np.ndarray, counts: np.ndarray):
    """(lower edge, bin width, counts) without the empty bins at both ends."""
    width = float(edges[1] - edges[0])
    nonzero = np.flatnonzero(counts > 0)
    if nonzero.size == 0:
        return float(edges[0]), width, counts
    first, last = nonzero[0], nonzero[-1] + 1
    return float(edges[first]), width, counts[first:last]


def weight_histograms(kernel: np.ndarray, channel_axes, encoding: Encoding) -> dict:
    """The whole kernel's histogram and one per output channel, with the encodings."""
    values = kernel.astype(np.float64).ravel()
    bins = int(np.clip(values.size // 8, 16, WEIGHT_BINS))
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - (abs(lo) or 1.0), hi + (abs(hi) or 1.0)
    counts, _ = np.histogram(values, bins=bins, range=(lo, hi))
    flat = channels_last_2d(kernel.astype(np.float64), channel_axes)  # (elements, channels)
    elements, channels = flat.shape
    channel_bins = int(np.clip(2 * math.isqrt(max(elements, 1)), 8, CHANNEL_BINS))
    c_lo, c_hi = flat.min(axis=0), flat.max(axis=0)
    flat_channel = c_hi <= c_lo
    c_lo = np.where(flat_channel, c_lo - np.where(c_lo == 0, 1.0, np.abs(c_lo)), c_lo)
    c_hi = np.where(flat_channel, c_hi + np.where(c_hi == 0, 1.0, np.abs(c_hi)), c_hi)
    c_width = (c_hi - c_lo) / channel_bins
    index = np.clip(np.floor((flat - c_lo) / c_width), 0, channel_bins - 1).astype(np.intp)
    index += np.arange(channels) * channel_bins
    channel_counts = np.bincount(index.ravel(), minlength=channels * channel_bins)
    channel_counts = channel_counts.reshape(channels, channel_bins)
    enc_min = np.broadcast_to(np.ravel(encoding.min), (channels,)) if encoding.per_channel \
        else np.full(channels, float(encoding.min))
    enc_max = np.broadcast_to(np.ravel(encoding.max), (channels,)) if encoding.per_channel \
        else np.full(channels, float(encoding.max))
    return {
        "lo": lo, "width": (hi - lo) / bins, "counts": counts.tolist(),
        "encoding_min": float(np.min(encoding.min)),
        "encoding_max": float(np.max(encoding.max)),
        "per_channel_encoding": encoding.per_channel,
        "channels": {
            "lo": [float(v) for v in c_lo],
            "width": [float(v) for v in c_width],
            "counts": channel_counts.tolist(),
            "encoding_min": [float(v) for v in enc_min],
            "encoding_max": [float(v) for v in enc_max],
        },
    }
