"""Write path of mct-logger's plugin payloads: one whole JSON table per summary value.

Needs no TensorFlow: the result is a `Summary` proto for any event writer.

Example:

```python
summary = payload_summary("quant_analyzer", "per_layer_sqnr", "per_layer_sqnr", table)
writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
```
"""

from __future__ import annotations

import json

from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

from mct_logger.utils.json_safe import json_ready  # noqa: F401  (re-exported)

from . import metadata


def encode_table(table) -> bytes:
    """JSON bytes of a table of plain or NumPy values."""
    return json.dumps(json_ready(table), allow_nan=False).encode()


def payload_summary(plugin_name: str, kind: str, tag: str, table, description: str = ""):
    """A Summary holding `table` as JSON, as a TENSOR or, if large, a BLOB_SEQUENCE."""
    body = encode_table(table)
    if len(body) <= metadata.TENSOR_LIMIT_BYTES:
        data_class = summary_pb2.DATA_CLASS_TENSOR
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
            string_val=[body],
        )
    else:
        data_class = summary_pb2.DATA_CLASS_BLOB_SEQUENCE
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]
            ),
            string_val=[body],
        )
    meta = metadata.create_summary_metadata(plugin_name, kind, data_class, description)
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=tensor)])
