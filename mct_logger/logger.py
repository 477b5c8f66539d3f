"""`set_log_folder`: from then on every PTQ run (and QuantAnalyzer run) logs to
TensorBoard under `<folder>/<run name>/`, one TensorBoard run per stage.

The listener here only writes: every number it logs comes from a stage result.

Example:

```python
mct_logger.set_log_folder("logs")
model_q, info = mct_logger.keras_post_training_quantization(model, data)
# tensorboard --logdir logs
mct_logger.set_log_folder(None)   # logging off
```
"""

from __future__ import annotations

import concurrent.futures
import datetime
import logging
import os
import re

import numpy as np

from mct_logger.events import EventWriter

logger = logging.getLogger("mct_logger")

LOG_FILE = "mct_logger.log"

_folder: str | None = None
_run_name: str | None = None
_file_handler: logging.FileHandler | None = None


def set_log_folder(path: str | os.PathLike | None, run_name: str | None = None) -> None:
    """Logs every following PTQ and QuantAnalyzer run into `path`; None turns logging off.

    Args:
        path: the TensorBoard log folder (`tensorboard --logdir path`).
        run_name: the folder of the next runs inside `path`; default the model
            name plus a timestamp. An existing folder is never reused: a suffix
            `_2`, `_3`... keeps every run apart.

    The library's Python log goes to `path/mct_logger.log` as well.
    """
    global _folder, _run_name, _file_handler
    if _file_handler is not None:
        logger.removeHandler(_file_handler)
        _file_handler.close()
        _file_handler = None
    if path is None:
        _folder, _run_name = None, None
        return
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(
            f"set_log_folder({path!r}): that path is a file; pass a folder for the logs."
        )
    os.makedirs(path, exist_ok=True)
    _folder, _run_name = os.path.abspath(path), run_name
    _file_handler = logging.FileHandler(os.path.join(_folder, LOG_FILE), encoding="utf-8")
    _file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(_file_handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.info("Logging to %s (tensorboard --logdir %s)", _folder, _folder)


def get_log_folder() -> str | None:
    """The folder set by `set_log_folder`, or None when logging is off."""
    return _folder


def new_run_folder(model_name: str) -> str | None:
    """A fresh folder for one run under the log folder (None when logging is off)."""
    if _folder is None:
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = _run_name or f"{_safe(model_name)}_{stamp}"
    candidate, k = os.path.join(_folder, base), 1
    while os.path.exists(candidate):
        k += 1
        candidate = os.path.join(_folder, f"{base}_{k}")
    os.makedirs(candidate)
    return candidate


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"


class RunLog:
    """The event writers of one run folder, one per TensorBoard run, all closed together."""

    def __init__(self, folder: str):
        self.folder = folder
        self._writers: dict[str, EventWriter] = {}

    def writer(self, run: str) -> EventWriter:
        """The writer of TensorBoard run `<folder>/<run>` (created on first use)."""
        if run not in self._writers:
            self._writers[run] = EventWriter(os.path.join(self.folder, run))
        return self._writers[run]

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- the PTQ listener

SCALAR_CHUNK = 1000  # loaders keep 1000 scalar steps per tag
HISTOGRAM_CHUNK = 100  # and 100 histogram steps per tag (the Rust loader; Python keeps 500)
RESOURCES_TAG = "Resources"
# Per-channel histograms are redrawn with this many bins over each channel's own
# range: enough to see a channel's shape in the offset view, and it keeps a
# MobileNet's ~10k channel histograms to a few MB.
PER_CHANNEL_BINS = 16


def rebin(edges: np.ndarray, counts: np.ndarray, lo, hi, bins: int):
    """Histograms (C, B) on even per-row grids, redrawn on `bins` even bins over [lo, hi].

    Counts are split by interpolating each row's cumulative counts, so totals are kept.
    """
    edges = np.asarray(edges, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    rows, old_bins = counts.shape
    lo = np.asarray(lo, dtype=np.float64).reshape(rows, 1)
    hi = np.maximum(np.asarray(hi, dtype=np.float64).reshape(rows, 1), lo + 1e-12)
    new_edges = lo + (hi - lo) * np.linspace(0.0, 1.0, bins + 1)
    start, width = edges[:, :1], np.maximum(edges[:, -1:] - edges[:, :1], 1e-300)
    position = np.clip((new_edges - start) / width * old_bins, 0.0, old_bins)
    index = np.minimum(position.astype(np.int64), old_bins - 1)
    cumulative = np.concatenate([np.zeros((rows, 1)), np.cumsum(counts, axis=1)], axis=1)
    at = (np.take_along_axis(cumulative, index, axis=1)
          + (position - index) * np.take_along_axis(counts, index, axis=1))
    at[:, 0], at[:, -1] = 0.0, cumulative[:, -1]  # every count lies within [min, max]
    return new_edges, np.diff(at, axis=1)


def _chunks(count: int, size: int):
    for start in range(0, count, size):
        yield start, min(start + size, count)


def _chunk_tag(base: str, start: int, stop: int, count: int, size: int) -> str:
    return base if count <= size and start == 0 else f"{base} [{start}-{stop - 1}]"


class TensorBoardListener:
    """Turns PTQ stage results into TensorBoard runs under one run folder.

    Stage k becomes the TensorBoard run `NN_<stage>` (zero-padded, so runs sort
    in stage order) with the graph at that stage, its per-node memory under the
    "Resources" tag and a text summary; stages add their own data (histograms,
    per-channel scalars, similarity images, plugin payloads).
    """

    def __init__(self, folder: str):
        self.log = RunLog(folder)
        self.folder = folder
        self.plan = None
        self.encodings = None
        self.graph_run = None
        self.stage_index = 0
        # Writing runs in one worker thread, in stage order, while the engine
        # goes on with the next stage; close() waits for it.
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="mct_logger_tensorboard"
        )
        self._pending: list[concurrent.futures.Future] = []

    def __call__(self, stage: str, graph, result) -> None:
        run = f"{self.stage_index:02d}_{stage}"
        self.stage_index += 1
        if stage == "quantized_model":
            self.graph_run = run  # where the layer table's rows link to in the Graphs tab
        if getattr(result, "plan", None) is not None:
            self.plan = result.plan
        if getattr(result, "encodings", None) is not None:
            self.encodings = result.encodings
        self._pending.append(
            self._worker.submit(self._write, run, stage, graph, result, self.plan, self.encodings)
        )

    def _write(self, run, stage, graph, result, plan, encodings) -> None:
        writer = self.log.writer(run)
        memory = self._write_graph(writer, graph, plan, encodings)
        writer.text("summary", _stage_summary(stage, graph, result, memory))
        handler = getattr(self, f"_on_{stage}", None)
        if handler is not None:
            handler(run, graph, result)
        self.log.flush()  # what is logged so far stays readable if a later stage fails

    def close(self, error: BaseException | None = None) -> None:
        """Waits for every pending write, records a failure, closes the files.

        A write that failed raises here, after everything else was written.
        """
        self._worker.shutdown(wait=True)
        failures = [f.exception() for f in self._pending if f.exception() is not None]
        try:
            if error is not None and self.stage_index:
                writer = self.log.writer(f"{self.stage_index:02d}_failed")
                writer.text("summary", f"**Quantization failed** after {self.stage_index} "
                                       f"stage(s):\n\n`{type(error).__name__}: {error}`")
        finally:
            self.log.close()
        if failures and error is None:
            raise failures[0]

    # ------------------------------------------------------------ graph + memory

    def _write_graph(self, writer: EventWriter, graph, plan, encodings) -> dict:
        from mct_logger import events, ptq

        memory = ptq.graph_memory(graph, plan)
        graph_def = events.graph_pb2.GraphDef()
        for node in graph:
            attrs = _node_attrs(node, plan.get(node.name) if plan else None, memory[node.name])
            if encodings is not None:
                _attach_encodings(attrs, encodings.get(node.name))
            inputs = [
                events.graph_node_name(r.node) + (f":{r.index}" if r.index else "")
                for r in node.inputs
            ]
            graph_def.node.append(events.node_def(
                events.graph_node_name(node.name), node.layer_class, inputs, attrs,
                node.output_shapes,
            ))
        writer.graph(
            graph_def,
            {events.graph_node_name(n): m["total"] for n, m in memory.items()},
            RESOURCES_TAG,
        )
        return memory

    # ------------------------------------------------------------ stage extras

    def _on_statistics_collection(self, run, graph, result):
        statistics = getattr(result, "statistics", None)
        if not statistics:
            return
        writer = self.log.writer(run)
        per_stat = {k: self.log.writer(f"{run}/{k}") for k in ("min", "max", "mean")}
        for node, stats in statistics.items():
            edges, counts = stats.histogram(per_channel=False)
            writer.histogram(f"activations/{node}", edges[0], counts[0], total=stats.elements)
            channel_edges, channel_counts = rebin(
                *stats.histogram(per_channel=True), stats.min, stats.max, PER_CHANNEL_BINS
            )
            channels = len(channel_counts)
            for start, stop in _chunks(channels, HISTOGRAM_CHUNK):
                tag = _chunk_tag(f"activations_per_channel/{node}", start, stop, channels,
                                 HISTOGRAM_CHUNK)
                for c in range(start, stop):
                    writer.compact_histogram(tag, channel_edges[c], channel_counts[c], step=c)
            values = {"min": stats.min, "max": stats.max, "mean": stats.mean}
            for start, stop in _chunks(channels, SCALAR_CHUNK):
                tag = _chunk_tag(f"channel_stats/{node}", start, stop, channels, SCALAR_CHUNK)
                for key, array in values.items():
                    for c in range(start, stop):
                        per_stat[key].scalar(tag, array[c], step=c, timed=False)

    def _on_cross_layer_equalization(self, run, graph, result):
        """The CLE dashboard's data: weight ranges (with CLE off too), scale factors, folds."""
        from mct_logger.tb_plugin import metadata
        from mct_logger.tb_plugin.summary import payload_summary

        tables = result.to_tables() if hasattr(result, "to_tables") else {}
        writer = self.log.writer(run)
        for kind, table in tables.items():
            writer.add_summary(payload_summary(metadata.CLE, kind, kind, table))

    def _on_similarity_analysis(self, run, graph, result):
        from mct_logger import events
        from mct_logger.tb_plugin import metadata
        from mct_logger.tb_plugin.summary import payload_summary

        writer = self.log.writer(run)
        writer.add_summary(payload_summary(
            metadata.QUANT_ANALYZER, "layer_table", "layer_table",
            layer_table(graph, self.plan, self.encodings, result, self.graph_run)))
        writer.add_summary(payload_summary(
            metadata.CLE, "weight_quantization", "weight_quantization", {"rows": result.weights}))
        for node, (edges, counts) in result.quantized_histograms.items():
            writer.histogram(f"activations/{node}", edges, counts, total=counts.sum())
        for path, values in (("accumulated", result.sqnr_accumulated_db),
                             ("isolated", result.sqnr_isolated_db)):
            sqnr_writer = self.log.writer(f"{run}/{path}")
            for index, node in enumerate(result.nodes):
                sqnr_writer.scalar("sqnr_db", values[node], step=index)
        plot = SamplePlot(result)
        for sample in range(result.num_samples):
            png, width, height = plot.png(sample)
            writer.image(f"cosine_similarity/sample_{sample:02d}", png, width, height)
        if result.num_samples:
            png, width, height = events.figure_png(_summary_figure(result))
            writer.image("cosine_similarity/summary", png, width, height)
        rows = "\n".join(
            f"| {i} | `{n}` | {result.sqnr_accumulated_db[n]:.1f} | "
            f"{result.sqnr_isolated_db[n]:.1f} | {result.cosine[:, i].mean():.5f} |"
            for i, n in enumerate(result.nodes)
        )
        writer.text(
            "nodes",
            "Step = node index in the SQNR charts and similarity plots.\n\n"
            "| index | node | SQNR accumulated (dB) | SQNR isolated (dB) | mean cosine |\n"
            "|---:|---|---:|---:|---:|\n" + rows,
        )


def layer_table(graph, plan: dict, encodings: dict, similarity, graph_run: str | None) -> dict:
    """The QuantAnalyzer tab's per-layer table of one PTQ run ("layer_table" payload).

    One row per node in graph order, from what the stages already computed:
    the plan (bits, per-channel or not, why a node stays in float), the
    encodings (min/max), memory at batch 1 before (float32) and after (planned
    bits), and the similarity stage's SQNR (dB) and mean cosine over its samples.
    """
    from mct_logger import events, ptq

    before, after = ptq.graph_memory(graph), ptq.graph_memory(graph, plan)
    index = {n: i for i, n in enumerate(similarity.nodes)}
    rows = []
    for node in graph:
        p, enc = plan[node.name], encodings.get(node.name)
        kernels = dict(enc.weights) if enc is not None else {}
        kernel = kernels.get("kernel") or next(iter(kernels.values()), None)
        i = index.get(node.name)
        rows.append({
            "layer": node.name,
            "graph_node": events.graph_node_name(node.name),
            "class": node.layer_class,
            "quantized": bool(p.quantized),
            "note": p.note or None,
            "weight_bits": kernel.bitwidth if kernel is not None else None,
            "weight_per_channel": bool(kernel.per_channel) if kernel is not None else None,
            "weight_min": float(np.min(kernel.min)) if kernel is not None else None,
            "weight_max": float(np.max(kernel.max)) if kernel is not None else None,
            "activation_bits": p.activation.bitwidth if p.activation is not None else None,
            "encoding_min": (float(np.min(enc.activation.min))
                             if enc is not None and enc.activation is not None else None),
            "encoding_max": (float(np.max(enc.activation.max))
                             if enc is not None and enc.activation is not None else None),
            "memory_before": before[node.name]["total"],
            "memory_after": after[node.name]["total"],
            "sqnr_accumulated_db": similarity.sqnr_accumulated_db.get(node.name),
            "sqnr_isolated_db": similarity.sqnr_isolated_db.get(node.name),
            "cosine": float(similarity.cosine[:, i].mean()) if i is not None and
            similarity.num_samples else None,
        })
    return {
        "source": "ptq",
        "model": graph.name,
        "samples": int(similarity.num_samples),
        "graph_run": graph_run,
        "memory_before": int(sum(m["total"] for m in before.values())),
        "memory_after": int(sum(m["total"] for m in after.values())),
        "rows": rows,
    }


def _node_attrs(node, plan, memory: dict) -> dict:
    attrs = {
        "layer_class": node.layer_class,
        "output_shape": ", ".join(str(tuple(s)) for s in node.output_shapes),
        "parameters": node.parameter_count(),
        "memory_bytes": f"{memory['total']} (weights {memory['weights']}, "
                        f"activations {memory['activations']} at batch 1)",
    }
    activation = getattr(node.layer, "activation", None)
    if activation is not None and getattr(activation, "__name__", "linear") != "linear":
        attrs["fused_activation"] = activation.__name__
    if plan is None:
        return attrs
    for name, spec in plan.weights.items():
        attrs[f"{name}_bits"] = spec.bitwidth
        attrs[f"{name}_per_channel"] = spec.num_channels is not None
        attrs[f"{name}_symmetric"] = spec.is_symmetric
    if plan.activation is not None:
        attrs["activation_bits"] = plan.activation.bitwidth
        attrs["activation_symmetric"] = plan.activation.is_symmetric
    if plan.note:
        attrs["quantization_note"] = plan.note
    return attrs


def _attach_encodings(attrs: dict, encodings) -> dict:
    if encodings is None:
        return attrs
    if encodings.activation is not None:
        attrs["activation_min_max"] = (
            f"[{float(encodings.activation.min):.6g}, {float(encodings.activation.max):.6g}]"
        )
    for name, enc in encodings.weights.items():
        attrs[f"{name}_min_max"] = (
            f"[{float(enc.min.min()):.6g}, {float(enc.max.max()):.6g}]"
            + (f" over {enc.num_channels} channels" if enc.per_channel else "")
        )
    return attrs


def _stage_summary(stage: str, graph, result, memory: dict) -> str:
    total = sum(m["total"] for m in memory.values())
    weights = sum(m["weights"] for m in memory.values())
    lines = [
        f"## {stage.replace('_', ' ').capitalize()}",
        "",
        f"- nodes: {len(graph.nodes)}",
        f"- parameters: {graph.parameter_count():,}",
        f"- memory: {total:,} bytes ({weights:,} weights + {total - weights:,} activations at batch 1)",
    ]
    reason = getattr(result, "reason", None)
    if reason:
        lines.append(f"- skipped: {reason}")
    folded = getattr(result, "folded", None)
    if folded is not None:
        lines.append(f"- folded {len(folded)} batch norm(s): " +
                     (", ".join(f"`{bn}` into `{layer}`" for bn, layer in folded.items()) or "none"))
        for bn, why in getattr(result, "not_folded", {}).items():
            lines.append(f"- kept `{bn}` as a float affine layer: {why}")
    if hasattr(result, "num_samples") and hasattr(result, "num_batches"):
        lines.append(f"- calibrated on {result.num_samples} samples in {result.num_batches} batches")
    encodings = getattr(result, "encodings", None)
    if encodings is not None:
        lines += ["", "| node | weights | activation range |", "|---|---|---|"]
        for node, enc in encodings.items():
            w = ", ".join(f"{k}: {e.bitwidth} bit{' per-channel' if e.per_channel else ''}"
                          for k, e in enc.weights.items()) or "-"
            a = (f"{enc.activation.bitwidth} bit [{float(enc.activation.min):.4g}, "
                 f"{float(enc.activation.max):.4g}]") if enc.activation is not None else "-"
            lines.append(f"| `{node}` | {w} | {a} |")
    if hasattr(result, "memory_before") and hasattr(result, "memory_after"):
        lines.append(f"- model memory: {result.memory_before:,} -> {result.memory_after:,} bytes "
                     f"({result.memory_after / max(result.memory_before, 1):.1%})")
    return "\n".join(lines)


def _axis_labels(ax, nodes):
    from matplotlib.ticker import FormatStrFormatter

    # Cosines sit near 1: plain numbers, not matplotlib's "1e-5 + 9.999e-1" offset.
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.6f"))
    ax.set_xlabel("Quantized node, in network order")
    if len(nodes) <= 40:
        ax.set_xticks(range(len(nodes)))
        ax.set_xticklabels(nodes, rotation=90, fontsize=7)


class SamplePlot:
    """The per-sample cosine plots, drawn fast: the axes, grid and legend are
    rendered once (all samples share one y-range, which also makes them
    comparable) and only the lines and title are redrawn per sample."""

    def __init__(self, result):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.result = result
        self.figure = Figure(figsize=(7, 3.8), dpi=72)
        self.canvas = FigureCanvasAgg(self.figure)
        self.figure.subplots_adjust(left=0.19, right=0.98, top=0.9,
                                    bottom=0.32 if len(result.nodes) <= 40 else 0.14)
        ax = self.ax = self.figure.add_subplot()
        x = np.arange(len(result.nodes))
        (self.accumulated,) = ax.plot(x, result.cosine[0], marker="o", markersize=3,
                                      label="all nodes quantized", animated=True)
        (self.isolated,) = ax.plot(x, result.cosine_isolated[0], linestyle="--", marker=".",
                                   markersize=3, label="only this node quantized", animated=True)
        low = float(min(result.cosine.min(), result.cosine_isolated.min()))
        pad = max((1.0 - low) * 0.05, 1e-7)
        ax.set_ylim(low - pad, 1.0 + pad)
        ax.set_ylabel("Cosine similarity\n(float vs quantized)")
        _axis_labels(ax, result.nodes)
        ax.grid(True, alpha=0.3)
        self.legend = ax.legend(loc="lower left", fontsize=8)
        self.legend.set_animated(True)  # drawn over the lines
        self.title = ax.set_title(" ", animated=True)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)

    def png(self, sample: int):
        from mct_logger import events

        self.canvas.restore_region(self.background)
        self.accumulated.set_ydata(self.result.cosine[sample])
        self.isolated.set_ydata(self.result.cosine_isolated[sample])
        self.title.set_text(f"Sample {sample}: cosine similarity along the network")
        for artist in (self.accumulated, self.isolated, self.legend):
            self.ax.draw_artist(artist)
        self.figure.draw_artist(self.title)
        return events.rgba_png(self.canvas)


def _summary_figure(result):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.8), dpi=72)
    figure.subplots_adjust(left=0.19, right=0.98, top=0.9,
                           bottom=0.32 if len(result.nodes) <= 40 else 0.14)
    ax = figure.add_subplot()
    x = np.arange(len(result.nodes))
    cosine = result.cosine
    ax.fill_between(x, cosine.min(axis=0), cosine.max(axis=0), alpha=0.25,
                    label=f"min-max over {result.num_samples} samples")
    ax.plot(x, cosine.mean(axis=0), marker="o", markersize=3, label="mean")
    ax.set_ylabel("Cosine similarity\n(float vs quantized)")
    ax.set_title("Cosine similarity along the network, all nodes quantized")
    _axis_labels(ax, result.nodes)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return figure
