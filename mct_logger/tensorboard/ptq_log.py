"""The TensorBoard stage listener: PTQ stage results in, TensorBoard runs out.

Stage k becomes the TensorBoard run `NN_<stage>` under the run folder, with the
graph at that stage (every node's bits, encodings and memory as attributes),
per-node memory under the "Resources" tag and a text summary
(`stage_summary`); results of some types add their own data, chosen by the
result's type: calibration statistics (histograms, per-channel scalars), the
CLE dashboard's tables, and the similarity analysis (SQNR scalars, cosine
plots, the QuantAnalyzer tab's layer table). The similarity analysis compares
the quantized model, so it joins that run (`NN_quantized_model`, its summary
under "similarity_summary"): a stage turned off writes nothing, and one PTQ
call writes at most 8 runs with every optional stage on.

Registered per run by `mct_logger.set_log_folder` (`listeners.set_run_listener_factory`);
the engine never names it.

Example:

```python
listener = TensorBoardListener("logs/run")
set_run_listener_factory("mine", lambda run: listener)   # logs the next PTQ run into logs/run
```
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re

import numpy as np

from mct_logger import listeners

from mct_logger.tensorboard import custom_scalars, events, run_labels
from mct_logger.utils import address_space
from mct_logger.tensorboard.events import EventWriter
from mct_logger.tensorboard.run_log import LogGuard, RunLog
from mct_logger.tensorboard.stage_summary import db, stage_summary
from mct_logger.tb_plugin import metadata
from mct_logger.tb_plugin.summary import payload_summary

__all__ = ["TensorBoardListener", "rebin"]

logger = logging.getLogger("mct_logger")


SCALAR_CHUNK = 1000  # loaders keep 1000 scalar steps per tag
HISTOGRAM_CHUNK = 100  # and 100 histogram steps per tag (the Rust loader; Python keeps 500)
RESOURCES_TAG = "Resources"
# custom-scalars categories that overlay the min/max/mean and accumulated/isolated tags
CHANNEL_STATS_CATEGORY = "channel_stats: min, max and mean per channel (step = channel)"
SQNR_CATEGORY = "sqnr_db: accumulated and isolated per node (step = node index)"
ADAROUND_CATEGORY = "adaround: reconstruction MSE per learned layer (step = layer index)"
# Per-channel histograms are redrawn with this many bins over each channel's own
# range: enough to see a channel's shape in the offset view, and it keeps a
# MobileNet's ~10k channel histograms to a few MB.
PER_CHANNEL_BINS = 16


def rebin(edges: np.ndarray, counts: np.ndarray, lo, hi, bins: int):
    """Histograms (C, B) on even per-row grids, redrawn on `bins` even bins over [lo, hi].

    Counts are split by interpolating each row's cumulative counts, so totals are kept.
    A row whose range or grid is NaN gets NaN edges.
    """
    edges = np.asarray(edges, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    rows, old_bins = counts.shape
    lo = np.asarray(lo, dtype=np.float64).reshape(rows, 1)
    hi = np.maximum(np.asarray(hi, dtype=np.float64).reshape(rows, 1), lo + 1e-12)
    new_edges = lo + (hi - lo) * np.linspace(0.0, 1.0, bins + 1)
    start, width = edges[:, :1], np.maximum(edges[:, -1:] - edges[:, :1], 1e-300)
    # A NaN range (a sample holding NaN its range missed) keeps its NaN edges, and
    # so is left out by the writer; its positions are only kept indexable here.
    position = np.nan_to_num(np.clip((new_edges - start) / width * old_bins, 0.0, old_bins),
                             nan=0.0)
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


# The TensorBoard run, in a search's or recommendation's recommended PTQ run folder,
# of its tables ("mixed_precision_search", "recommendation" payloads).
TABLES_RUN = "mixed_precision"


class TensorBoardListener:
    """Turns PTQ stage results into TensorBoard runs under one run folder.

    Stage k becomes the TensorBoard run `NN_<stage>` (zero-padded, so runs sort
    in stage order) with the graph at that stage, its per-node memory under the
    "Resources" tag and a text summary; stages add their own data (histograms,
    per-channel scalars, similarity images, plugin payloads).

    Logging never fails the PTQ run: the first failure (disk full, permission
    denied, a plot that cannot be drawn...) is one warning naming the path and
    the cause; logging then stops for this run and PTQ returns the model.
    """

    RETURNED = "PTQ goes on and returns the quantized model"
    # The stages a comparison run (a search's or recommendation's baseline or
    # recommended run) writes: its graph (bits per node) and its layer table.
    COMPARISON_STAGES = frozenset({"quantized_model", "similarity_analysis"})
    # Extra work this listener asks of the engine (see `mct_logger.listeners`).
    needs = frozenset({listeners.STATISTICS, listeners.SIMILARITY})

    def __init__(self, folder: str, logdir: str | None = None, origin: str | None = None,
                 stages=None):
        """Args:
            folder: the run folder; stage k is written to `folder/NN_<stage>`.
            logdir: the `tensorboard --logdir` folder named when the run ends, if any.
            origin: what logged this run, in its label (`run_labels`): e.g.
                "search: baseline"; None for a plain PTQ call.
            stages: the stages written (their runs keep their numbers); None for
                every stage.
        """
        self.logdir = logdir
        self.origin = origin
        self.stages = None if stages is None else frozenset(stages)
        self.guard = LogGuard(folder, self.RETURNED)
        self.log = RunLog(folder)
        self.folder = folder
        self.graph_run = None
        self.similarity_run = None  # where the tables go (TABLES_RUN without it)
        self.stage_index = 0
        # Writing runs in one worker thread, in stage order, while the engine
        # goes on with the next stage; close() waits for it.
        # (inline instead under an address-space limit with no room for a thread)
        self._worker = address_space.worker("mct_logger_tensorboard")
        self._pending: list[concurrent.futures.Future] = []

    def __call__(self, event) -> None:
        """Writes a stage (`event.name`, `event.data`, `event.graph`) as run
        `NN_<stage>`, or a search's or recommendation's tables (`listeners.TABLES`)
        as "quant_analyzer" payloads in the run `TABLES_RUN`."""
        if event.name == listeners.TABLES:
            if self.guard.failure is None:
                self._pending.append(self._worker.submit(
                    self.guard.call, self._write_tables, event.data,
                    path=os.path.join(self.folder, TABLES_RUN)))
            return
        stage, graph, result = event.name, event.graph, event.data
        run = f"{self.stage_index:02d}_{stage}"
        self.stage_index += 1  # a stage left out keeps its number: runs line up across configs
        if self.stages is not None and stage not in self.stages:
            return
        if getattr(result, "off", False):
            return  # an optional stage the config turned off: nothing to show
        if stage == "similarity_analysis" and self.graph_run is not None:
            # the comparison of the quantized model joins its run (the same graph):
            # one PTQ call writes at most 8 runs, even with every optional stage on
            run = self.graph_run
        if stage == "similarity_analysis":
            self.similarity_run = run
        if stage == "quantized_model":
            # where the layer table's rows link to in the Graphs tab (None when this
            # listener wrote no quantized model run: the rows then link nowhere)
            self.graph_run = run
        if self.guard.failure is None:
            self._pending.append(
                self._worker.submit(self._write, run, stage, graph, result, self.graph_run)
            )

    def _write(self, run, stage, graph, result, graph_run) -> None:
        self.guard.call(self._write_stage, run, stage, graph, result, graph_run,
                        path=os.path.join(self.folder, run))

    def _write_stage(self, run, stage, graph, result, graph_run) -> None:
        # Results from "quantization_parameters" on carry the plan and encodings
        # (`stage_results`): each result is written from itself alone.
        plan = getattr(result, "plan", None)
        encodings = getattr(result, "encodings", None)
        writer = self.log.writer(run)
        if stage == "similarity_analysis" and run == graph_run:
            # in the quantized model's run, which holds the graph and its summary
            from mct_logger.quantization.memory import graph_memory

            writer.text("similarity_summary",
                        stage_summary(stage, graph, result, graph_memory(graph, plan), plan))
        else:
            memory = self._write_graph(writer, graph, plan, encodings)
            writer.text("summary", stage_summary(stage, graph, result, memory, plan))
        handler = self._handler(result, graph_run)
        if handler is not None:
            handler(run, graph, result)
        self.log.flush()  # what is logged so far stays readable if a later stage fails

    def _handler(self, result, graph_run):
        """The extra writer for a result of this type, if any (dispatch on the type)."""
        from mct_logger.diagnostics.similarity import SimilarityResult
        from mct_logger.ptq.results import StatisticsResult
        from mct_logger.techniques.adaround_results import AdaRoundResult
        from mct_logger.techniques.cle_results import CrossLayerEqualizationResult

        handlers = {
            AdaRoundResult: self._on_adaround,
            StatisticsResult: self._on_statistics_collection,
            CrossLayerEqualizationResult: self._on_cross_layer_equalization,
            SimilarityResult: lambda run, graph, result: self._on_similarity_analysis(
                run, graph, result, graph_run),
        }
        for kind in type(result).__mro__:
            if kind in handlers:
                return handlers[kind]
        return None

    def _write_tables(self, tables: dict) -> None:
        from mct_logger.tb_plugin import metadata
        from mct_logger.tb_plugin.summary import payload_summary

        # in the layer table's run when it was written: no TensorBoard run of its own
        writer = self.log.writer(self.similarity_run or TABLES_RUN)
        for kind, table in tables.items():
            writer.add_summary(payload_summary(metadata.QUANT_ANALYZER, kind, kind, table))
        self.log.flush()

    def close(self, error: BaseException | None = None) -> None:
        """Waits for every pending write, records a PTQ failure, closes the files.

        Never raises: a failed write was already reported as the one warning.
        """
        self._worker.shutdown(wait=True)
        if error is not None and self.stage_index:
            run = f"{self.stage_index:02d}_failed"
            self.guard.call(
                lambda: self.log.writer(run).text(
                    "summary", f"**Quantization failed** after {self.stage_index} "
                               f"stage(s):\n\n`{type(error).__name__}: {error}`"),
                path=os.path.join(self.folder, run),
            )
        try:
            self.log.close()
        except OSError as exc:
            self.guard.fail(exc)
        if error is None and self.logdir is not None:
            logger.info("To see the logs run: tensorboard --logdir %s", self.logdir)

    # ------------------------------------------------------------ graph + memory

    def _write_graph(self, writer: EventWriter, graph, plan, encodings) -> dict:
        from mct_logger.quantization.memory import graph_memory

        memory = graph_memory(graph, plan)
        graph_def = events.graph_pb2.GraphDef()
        for node in graph:
            attrs = _node_attrs(node, plan.get(node.name) if plan else None, memory[node.name])
            if encodings is not None:
                _attach_encodings(attrs, encodings.get(node.name))
            if plan and node.name in plan:
                attrs["quantization"] = _quantization_sentence(
                    plan[node.name], encodings.get(node.name) if encodings else None)
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
        # step = channel index: one event per step holds every layer's value at it;
        # min, max and mean are tags of this stage run (`channel_stats/<node>/min`),
        # overlaid in one chart per layer by the custom-scalars layout
        histograms, scalars = {}, {}
        nodes_of = {}  # tag -> node, to name what the writers leave out
        left_out = set()  # nodes with values not finite in float32 (never logged)
        charts = []
        for node, stats in statistics.items():
            edges, counts = stats.histogram(per_channel=False)
            if writer.histogram(f"activations/{node}", edges[0], counts[0],
                                total=stats.elements) is False:
                left_out.add(node)
            tables = events.histogram_table(*rebin(
                *stats.histogram(per_channel=True), stats.min, stats.max, PER_CHANNEL_BINS))
            channels = len(tables)
            for start, stop in _chunks(channels, HISTOGRAM_CHUNK):
                tag = _chunk_tag(f"activations_per_channel/{node}", start, stop, channels,
                                 HISTOGRAM_CHUNK)
                nodes_of[tag] = node
                for c in range(start, stop):
                    histograms.setdefault(c, []).append((tag, tables[c]))
            values = {"min": stats.min, "max": stats.max, "mean": stats.mean}
            for start, stop in _chunks(channels, SCALAR_CHUNK):
                base = _chunk_tag(f"channel_stats/{node}", start, stop, channels, SCALAR_CHUNK)
                charts.append(base)
                for key, array in values.items():
                    tag = f"{base}/{key}"
                    nodes_of[tag] = node
                    for c, value in enumerate(array[start:stop].tolist(), start):
                        scalars.setdefault(c, []).append((tag, value))
        for c, entries in sorted(histograms.items()):
            left_out.update(nodes_of[tag] for tag in writer.compact_histograms(c, entries) or ())
        for c, entries in sorted(scalars.items()):
            left_out.update(nodes_of[tag] for tag in writer.scalars(c, entries) or ())
        writer.add_summary(custom_scalars.layout_summary([
            (CHANNEL_STATS_CATEGORY, [(chart, [f"^{re.escape(chart)}/(min|max|mean)$"])
                                      for chart in charts])]))
        if left_out:
            logger.warning(
                "Activation statistics of %s hold NaN, Inf or values beyond float32's range "
                "(what TensorBoard stores): those histograms and channel statistics are left "
                "out of %s (never logged as NaN or Inf).",
                ", ".join(sorted(left_out)), os.path.join(self.log.folder, run))

    def _on_cross_layer_equalization(self, run, graph, result):
        """The CLE dashboard's data: weight ranges (with CLE off too), scale factors, folds."""
        tables = result.to_tables()
        writer = self.log.writer(run)
        for kind, table in tables.items():
            writer.add_summary(payload_summary(metadata.CLE, kind, kind, table))

    def _on_adaround(self, run, graph, result):
        """Per learned layer (step = its index in the Text table): the reconstruction
        MSE with nearest and learned rounding as two tags of the stage's run,
        overlaid in one Custom Scalars chart (no run of their own), and the share
        of weights rounded away from nearest."""
        writer = self.log.writer(run)
        for step, layer in enumerate(result.layers.values()):
            for key, value in (("nearest", layer.loss_nearest), ("adaround", layer.loss_adaround)):
                if events.float32_finite(value):
                    writer.scalar(f"adaround/reconstruction_mse/{key}", value, step=step,
                                  description=f"Reconstruction MSE per learned layer with "
                                  f"{key} rounding (step = layer index in the Text table)")
            writer.scalar("adaround/rounded_away_from_nearest", layer.flipped_fraction,
                          step=step, description="Share of the kernel's weights rounded "
                          "away from nearest (step = layer index in the Text table)")
        writer.add_summary(custom_scalars.layout_summary([
            (ADAROUND_CATEGORY, [("adaround/reconstruction_mse: nearest and learned rounding",
                                  [r"^adaround/reconstruction_mse/(nearest|adaround)$"])])]))

    def _on_similarity_analysis(self, run, graph, result, graph_run):
        from mct_logger.tensorboard.layer_table import layer_table
        from mct_logger.quantization.memory import elements_per_sample
        from mct_logger.tensorboard.similarity_plots import SamplePlot, summary_figure

        writer = self.log.writer(run)
        writer.add_summary(payload_summary(
            metadata.QUANT_ANALYZER, "layer_table", "layer_table",
            {**layer_table(graph, result.plan, result.encodings, result, graph_run),
             "run_info": run_labels.run_info(result.config, self.origin)}))
        writer.add_summary(payload_summary(
            metadata.CLE, "weight_quantization", "weight_quantization", {"rows": result.weights}))
        for node, (edges, counts) in result.quantized_histograms.items():
            writer.histogram(f"activations/{node}", edges, counts, total=counts.sum())
        if not result.nodes:
            writer.text("nodes", "No node is quantized (every layer stays in float): "
                                 "nothing to compare.")
            return
        # An SQNR that is not a number (a float output holding Inf or NaN) is left
        # out of the charts and named in the table; never logged as NaN.
        # (finite in float32, as TensorBoard stores scalars: the writer refuses others)
        undefined = sorted({n for values in (result.sqnr_accumulated_db, result.sqnr_isolated_db)
                            for n, v in values.items() if not events.float32_finite(v)})
        for path, values in (("accumulated", result.sqnr_accumulated_db),
                             ("isolated", result.sqnr_isolated_db)):
            described = False
            for index, node in enumerate(result.nodes):
                if node not in undefined:
                    writer.scalar(
                        f"sqnr_db/{path}", values[node], step=index,
                        description=None if described else
                        f"SQNR in dB ({path}) per quantized node (step = node index, see the "
                        f"Text tab), over the first {result.num_samples} representative samples.")
                    described = True
        writer.add_summary(custom_scalars.layout_summary([
            (SQNR_CATEGORY, [("sqnr_db: accumulated and isolated",
                              [r"^sqnr_db/(accumulated|isolated)$"])])]))
        plot = SamplePlot(result)
        for sample in range(result.num_samples):
            png, width, height = plot.png(sample)
            writer.image(f"cosine_similarity/sample_{sample:02d}", png, width, height)
        if result.num_samples:
            png, width, height = events.figure_png(summary_figure(result))
            writer.image("cosine_similarity/summary", png, width, height)
        single = {n for n in result.nodes if elements_per_sample(graph.nodes[n]) == 1}
        rows = "\n".join(
            f"| {i} | `{n}` | {db(result.sqnr_accumulated_db[n])} | "
            f"{db(result.sqnr_isolated_db[n])} | {np.nanmean(result.cosine[:, i]):.5f} |"
            if result.num_samples and n not in single else
            f"| {i} | `{n}` | {db(result.sqnr_accumulated_db[n])} | "
            f"{db(result.sqnr_isolated_db[n])} | n/a |"
            for i, n in enumerate(result.nodes)
        )
        note = (f"SQNR n/a: the float output of {', '.join(f'`{n}`' for n in undefined)} holds "
                "Inf or NaN, so its SQNR is undefined and left out of the charts.\n\n"
                if undefined else "")
        writer.text(
            "nodes",
            "Step = node index in the SQNR charts and similarity plots. SQNR and cosine "
            f"over the first {result.num_samples} representative samples (the "
            "QuantAnalyzer tab's layer table shows the same numbers; a QuantAnalyzer run "
            "measures on its own data and says on how many samples). The cosine of a "
            "single-element output is always 1 and is not reported.\n\n" + note +
            "| index | node | SQNR accumulated (dB) | SQNR isolated (dB) | mean cosine |\n"
            "|---:|---|---:|---:|---:|\n" + rows,
        )



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
    for point, spec in plan.inner_activations.items():  # a composite's sublayer outputs
        attrs[f"{point}/output_bits"] = spec.bitwidth
    if plan.note:
        attrs["quantization_note"] = plan.note
    return attrs


def _quantization_sentence(plan, encodings) -> str:
    """The node's quantizers as one sentence ("kernel: 8-bit symmetric per-channel
    (16 channels) in [-0.31, 0.42]; output: 8-bit asymmetric in [0, 6]"): TensorBoard's
    node card prints every attribute as its raw AttrValue JSON (`{"s": "..."}`), so
    the readable form is one string attribute that reads as text inside it."""
    def grid(bits, symmetric, low=None, high=None, channels=None):
        words = f"{bits}-bit {'symmetric' if symmetric else 'asymmetric'}"
        if channels:
            words += f" per-channel ({channels} channels)"
        if low is not None:
            words += f" in [{low:.4g}, {high:.4g}]"
        return words

    parts = []
    for name, spec in plan.weights.items():
        e = (encodings.weights.get(name) if encodings is not None else None)
        parts.append(f"{name}: " + grid(spec.bitwidth, spec.is_symmetric,
                                        *((float(e.min.min()), float(e.max.max())) if e else ()),
                                        channels=spec.num_channels))
    if plan.activation is not None:
        e = encodings.activation if encodings is not None else None
        parts.append("output: " + grid(plan.activation.bitwidth, plan.activation.is_symmetric,
                                       *((float(e.min), float(e.max)) if e is not None else ())))
    for point, spec in plan.inner_activations.items():
        e = encodings.inner_activations.get(point) if encodings is not None else None
        parts.append(f"{point} output: " + grid(spec.bitwidth, spec.is_symmetric,
                                                *((float(e.min), float(e.max)) if e else ())))
    return "; ".join(parts) if parts else f"float ({plan.note or 'not quantized'})"


def _attach_encodings(attrs: dict, encodings) -> dict:
    if encodings is None:
        return attrs
    if encodings.activation is not None:
        attrs["activation_min_max"] = (
            f"[{float(encodings.activation.min):.6g}, {float(encodings.activation.max):.6g}]"
        )
    for point, enc in encodings.inner_activations.items():
        attrs[f"{point}/output_min_max"] = f"[{float(enc.min):.6g}, {float(enc.max):.6g}]"
    for name, enc in encodings.weights.items():
        attrs[f"{name}_min_max"] = (
            f"[{float(enc.min.min()):.6g}, {float(enc.max.max()):.6g}]"
            + (f" over {enc.num_channels} channels" if enc.per_channel else "")
        )
    return attrs
