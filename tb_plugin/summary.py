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

import numpy as np
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

from tb_plugin import metadata


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_table(table) -> bytes:
    """JSON bytes of a table; NumPy values become plain numbers, NaN becomes null."""
    text = json.dumps(table, default=_json_default, allow_nan=True)
    # JSON has no NaN/Infinity; browsers' JSON.parse rejects them.
    text = text.replace("NaN", "null").replace("-Infinity", "null").replace("Infinity", "null")
    return text.encode()


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
