"""TensorBoard event files without TensorFlow: a record writer and the protos for
graphs, per-node memory, histograms, scalars, images and text.

The record writer frames events as TFRecords with a C crc32c (google-crc32c);
TensorBoard's own writer checksums in pure Python (about 0.2 s per MiB).

TensorBoard keeps scalars and histogram tables in float32, so a value that is
not finite there (NaN, Inf, or a finite float64 beyond float32's range such as
1e39, which would read back as Inf) is never written: the writer leaves it out
and says so in its return value, and the caller names what was left out.

Example:

```python
with EventWriter("logs/run/00_initial_graph") as writer:
    writer.scalar("loss", 0.5, step=3)
```
"""

from __future__ import annotations

import functools
import io
import os
import socket
import struct
import time

import numpy as np
from tensorboard.compat.proto import (
    attr_value_pb2,
    config_pb2,
    event_pb2,
    graph_pb2,
    node_def_pb2,
    step_stats_pb2,
    summary_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.text import metadata as text_metadata

try:
    import google_crc32c

    def _crc32c(data: bytes) -> int:
        return google_crc32c.value(data)

except ImportError:  # pragma: no cover - the dependency is declared; this is a safety net
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as _crc32c


FLOAT32_MAX = float(np.finfo(np.float32).max)


def float32_finite(value) -> bool:
    """Whether `value` is finite as the float32 TensorBoard stores it in: False
    for NaN, infinities and finite floats beyond float32's range (1e39)."""
    value = float(value)
    return -FLOAT32_MAX <= value <= FLOAT32_MAX  # False for NaN too


def _masked_crc(data: bytes) -> bytes:
    crc = _crc32c(data)
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    return struct.pack("<I", masked)


def graph_node_name(node_name: str) -> str:
    """The GraphDef name of a graph node: the node's own name (`name/call_k` for the
    k-th call of a shared layer, a form a GraphDef accepts); a ":" a GraphDef
    cannot hold is replaced."""
    return node_name.replace(":", "_")


class EventWriter:
    """Appends events to one new event file in `logdir` (one TensorBoard run).

    Call `flush()` to make what was written readable while the file stays open
    (closing flushes too).
    """

    _counter = 0

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        EventWriter._counter += 1
        name = "events.out.tfevents.%010d.%s.%d.%d" % (
            time.time(), socket.gethostname(), os.getpid(), EventWriter._counter
        )
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "wb")
        self._described: set[str] = set()
        self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add_event(self, event: event_pb2.Event) -> None:
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._file.write(header + _masked_crc(header) + data + _masked_crc(data))

    def add_summary(self, summary: summary_pb2.Summary, step: int = 0, timed: bool = True) -> None:
        """`timed=False` leaves the wall time out: for series whose step is not time
        (a channel index), where it would only cost bytes."""
        event = event_pb2.Event(step=int(step), summary=summary)
        if timed:
            event.wall_time = time.time()
        self.add_event(event)

    def flush(self) -> None:
        """Makes everything written so far readable (the listener flushes per stage)."""
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ summaries

    def scalar(self, tag: str, value: float, step: int, timed: bool = True,
               description: str | None = None) -> bool:
        """`description` (markdown) shows in the chart's info card; both loaders keep
        the first metadata of a tag, so pass it with the first value.

        Returns False, writing nothing, when `value` is not finite in float32
        (`float32_finite`): the caller names what was left out."""
        if not float32_finite(value):
            return False
        value = summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
        if description:
            value.metadata.summary_description = description
            value.metadata.plugin_data.plugin_name = "scalars"
        self.add_summary(summary_pb2.Summary(value=[value]), step, timed)
        return True

    def scalars(self, step: int, values) -> list[str]:
        """`(tag, value)` scalars at one step in one event, without wall time: for
        many series sharing steps (per-channel statistics of every layer), where
        an event per value would cost most of the writing.

        Returns the tags left out, their value not finite in float32."""
        summary = summary_pb2.Summary()
        add = summary.value.add
        left_out = []
        for tag, value in values:
            value = float(value)
            if -FLOAT32_MAX <= value <= FLOAT32_MAX:  # float32_finite, inlined
                add(tag=tag, simple_value=value)
            else:
                left_out.append(tag)
        if summary.value:
            self.add_summary(summary, step, timed=False)
        return left_out

    def compact_histogram(self, tag: str, edges: np.ndarray, counts: np.ndarray, step: int) -> bool:
        """A histogram as the histogram plugin's (k, 3) tensor in float32, without wall
        time: about half the bytes of a HistogramProto, for the many per-channel ones.
        Returns False, writing nothing, when an edge or count is not finite in float32."""
        return not self.compact_histograms(step, [(tag, histogram_table(edges, counts))])

    def compact_histograms(self, step: int, histograms) -> list[str]:
        """`(tag, table)` compact histograms at one step in one event (see
        `compact_histogram` and `scalars`); each table is a (k, 3) float32 array
        from `histogram_table`. Returns the tags left out: a table holding NaN or
        Inf (an edge beyond float32's range turns Inf in `histogram_table`)."""
        summary = summary_pb2.Summary()
        add = summary.value.add
        left_out = []
        for tag, table in histograms:
            if not np.isfinite(table).all():
                left_out.append(tag)
                continue
            value = add(tag=tag)
            tensor = value.tensor
            tensor.dtype = types_pb2.DT_FLOAT
            tensor.tensor_content = table.tobytes()
            tensor.tensor_shape.CopyFrom(_table_shape(len(table)))
            if tag not in self._described:  # loaders keep the first metadata of each tag
                self._described.add(tag)
                value.metadata.CopyFrom(histogram_metadata.create_summary_metadata(tag, ""))
                value.metadata.data_class = summary_pb2.DATA_CLASS_TENSOR
        if summary.value:
            self.add_summary(summary, step, timed=False)
        return left_out

    def histogram(self, tag: str, edges: np.ndarray, counts: np.ndarray, step: int = 0,
                  total: float | None = None, sum_: float = 0.0, sum_squares: float = 0.0
                  ) -> bool:
        """A histogram with right-edge bucket limits; `num` is the element count.

        Returns False, writing nothing, when an edge or count of its non-empty
        span is not finite in float32 (TensorBoard reads it as a float32 table);
        an empty histogram is not written either, but nothing is left out."""
        counts = np.asarray(counts, dtype=np.float64)
        edges = np.asarray(edges, dtype=np.float64)
        nonzero = np.nonzero(counts)[0]
        if len(nonzero) == 0:
            return True  # (a NaN count is nonzero: it is in the span below)
        lo, hi = nonzero[0], nonzero[-1]
        span = np.concatenate([edges[lo: hi + 2], counts[lo: hi + 1]])
        if not (np.abs(span) <= FLOAT32_MAX).all():  # NaN compares False
            return False
        histo = summary_pb2.HistogramProto(
            min=float(edges[lo]),
            max=float(edges[hi + 1]),
            num=float(counts.sum() if total is None else total),
            sum=float(sum_),
            sum_squares=float(sum_squares),
            bucket_limit=edges[lo + 1: hi + 2].tolist(),
            bucket=counts[lo: hi + 1].tolist(),
        )
        self.add_summary(
            summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, histo=histo)]), step
        )
        return True

    def image(self, tag: str, png: bytes, width: int, height: int, step: int = 0) -> None:
        image = summary_pb2.Summary.Image(
            height=height, width=width, colorspace=4, encoded_image_string=png
        )
        self.add_summary(
            summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)]), step
        )

    def text(self, tag: str, markdown: str, step: int = 0) -> None:
        meta = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(
                plugin_name=text_metadata.PLUGIN_NAME,
                content=text_metadata.create_summary_metadata(display_name=tag, description="")
                .plugin_data.content,
            ),
            data_class=summary_pb2.DATA_CLASS_TENSOR,
        )
        summary = summary_pb2.Summary()
        value = summary.value.add(tag=tag, metadata=meta)
        # A scalar string tensor, built here: TensorBoard's `tensor_util` imports its
        # TensorFlow stub (and, where installed, boto3: 50 ms on the first log).
        value.tensor.dtype = types_pb2.DT_STRING
        value.tensor.tensor_shape.SetInParent()
        value.tensor.string_val.append(markdown.encode("utf-8"))
        self.add_summary(summary, step)

    def graph(self, graph_def: graph_pb2.GraphDef, memory: dict[str, int], tag: str) -> None:
        """The run's graph, then per-node memory as the `tag` run metadata ("Resources")."""
        self.add_event(event_pb2.Event(wall_time=time.time(), graph_def=graph_def.SerializeToString()))
        stats = step_stats_pb2.StepStats(dev_stats=[step_stats_pb2.DeviceStepStats(
            device="/device:CPU:0",
            node_stats=[
                step_stats_pb2.NodeExecStats(
                    node_name=name,
                    memory=[step_stats_pb2.AllocatorMemoryUsed(
                        allocator_name="cpu", total_bytes=int(total))],
                )
                for name, total in memory.items()
                if total > 0
            ],
        )])
        metadata = config_pb2.RunMetadata(step_stats=stats)
        self.add_event(event_pb2.Event(
            wall_time=time.time(),
            tagged_run_metadata=event_pb2.TaggedRunMetadata(
                tag=tag, run_metadata=metadata.SerializeToString()),
        ))


def node_def(name: str, op: str, inputs: list[str], attrs: dict[str, str],
             output_shapes: list[tuple]) -> node_def_pb2.NodeDef:
    """A GraphDef node with readable string attributes and edge-labelling output shapes."""
    node = node_def_pb2.NodeDef(name=name, op=op, input=inputs)
    for key, value in attrs.items():
        node.attr[key].CopyFrom(attr_value_pb2.AttrValue(s=str(value).encode()))
    shapes = [
        tensor_shape_pb2.TensorShapeProto(dim=[
            tensor_shape_pb2.TensorShapeProto.Dim(size=-1 if d is None else int(d)) for d in shape
        ])
        for shape in output_shapes
    ]
    node.attr["_output_shapes"].CopyFrom(
        attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(shape=shapes))
    )
    return node


def histogram_table(edges, counts) -> np.ndarray:
    """The histogram plugin's rows `[left edge, right edge, count]` as float32:
    (..., k, 3) for edges (..., k + 1) and counts (..., k), so a stack of
    per-channel histograms converts in one step."""
    edges = np.asarray(edges, np.float32)
    return np.stack([edges[..., :-1], edges[..., 1:], np.asarray(counts, np.float32)], axis=-1)


@functools.lru_cache(maxsize=None)
def _table_shape(rows: int):
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=rows),
             tensor_shape_pb2.TensorShapeProto.Dim(size=3)])


def figure_png(figure) -> tuple[bytes, int, int]:
    """PNG bytes, width and height of a matplotlib `Figure`.

    Figures are made with `matplotlib.figure.Figure` and an Agg canvas, never
    through pyplot, so nothing global is opened and nothing is left to close.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return rgba_png(canvas)


def rgba_png(canvas) -> tuple[bytes, int, int]:
    """PNG bytes, width and height of what an Agg canvas holds now."""
    from PIL import Image

    width, height = canvas.get_width_height()
    # Line plots need few colours: a 64-colour palette PNG is about half the size
    # (the fast octree palette: a quarter of median cut's time, as small).
    image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    buffer = io.BytesIO()
    image.convert("RGB").quantize(colors=64, method=Image.Quantize.FASTOCTREE).save(
        buffer, format="PNG")
    return buffer.getvalue(), width, height
