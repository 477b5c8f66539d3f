"""Custom-scalars layouts: several scalar tags of one TensorBoard run in one chart.

TensorBoard's Scalars tab draws one chart per tag and overlays runs, so series
that belong together (a layer's per-channel min, max and mean; the accumulated
and isolated SQNR) would need a run each to share a chart. They are tags of
one run instead (`channel_stats/<node>/min`...), and a layout read by
TensorBoard's *Custom Scalars* tab (`tensorboard.plugins.custom_scalar`)
overlays them: each chart is a multiline chart of the tags matching its
regular expressions. TensorBoard merges the layouts of every run, joining
categories of the same title and skipping identical charts, so every PTQ run
writes the same charts for the same nodes without duplicating them.

The layout is a `layout_pb2.Layout` serialized into a string tensor under the
tag `custom_scalars__config__` (what `custom_scalar.summary.pb` writes), built
here without TensorFlow.

Example:

```python
writer.add_summary(layout_summary([
    ("sqnr_db", [("accumulated and isolated", [r"^sqnr_db/(accumulated|isolated)$"])])]))
```
"""

from __future__ import annotations

from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata

__all__ = ["layout_summary"]


def layout_summary(categories) -> summary_pb2.Summary:
    """The summary holding a custom-scalars layout.

    Args:
        categories: `[(category title, [(chart title, [tag regex, ...]), ...]), ...]`;
            each chart overlays every scalar tag matching one of its regexes
            (Python `re` syntax, matched by TensorBoard's server).

    Returns:
        A `Summary` with one tensor value under `custom_scalars__config__`.
    """
    layout = layout_pb2.Layout()
    for title, charts in categories:
        category = layout.category.add(title=title, closed=True)
        for chart_title, regexes in charts:
            chart = category.chart.add(title=chart_title)
            chart.multiline.tag.extend(regexes)
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        string_val=[layout.SerializeToString()])
    metadata = summary_pb2.SummaryMetadata.FromString(
        custom_scalar_metadata.create_summary_metadata().SerializeToString())
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=custom_scalar_metadata.CONFIG_SUMMARY_TAG, metadata=metadata, tensor=tensor)])
