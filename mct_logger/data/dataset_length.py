"""Whether a `tf.data.Dataset` ends: its cardinality, or else its pipeline.

`cardinality()` is INFINITE for a plain `.repeat()`, but UNKNOWN once a
`.filter()` (or a generator, an interleave...) hides the length, even when a
`.repeat()` without count makes the data endless. Then the dataset's
serialized graph (`dataset._as_serialized_graph()`) is read from its output
back to its sources: a `RepeatDataset` (or `ShuffleAndRepeatDataset`) with
count -1 reached through transformations that keep an endless input endless
(map, filter, batch, prefetch, shuffle...) makes it endless; a `.take(n)`, or
finite sources reached through such transformations, make it end. Anything
else (an interleave, a generator, a zip of unknown inputs) leaves it unknown.

Example:

```python
length(tf.data.Dataset.range(8).repeat().filter(lambda t: t > 2))   # "endless"
length(tf.data.Dataset.range(8).filter(lambda t: t > 2))            # "finite"
```
"""

from __future__ import annotations

import logging

logger = logging.getLogger("mct_logger")

# One dataset input (the first), endless if that input is endless.
_KEEP = {
    "FilterDataset", "MapDataset", "ParallelMapDataset", "ParallelMapDatasetV2",
    "BatchDataset", "BatchDatasetV2", "ParallelBatchDataset", "PaddedBatchDataset",
    "PaddedBatchDatasetV2", "MapAndBatchDataset", "ExperimentalMapAndBatchDataset",
    "PrefetchDataset", "ShuffleDataset", "ShuffleDatasetV2", "ShuffleDatasetV3",
    "CacheDataset", "CacheDatasetV2", "UnbatchDataset", "ExperimentalUnbatchDataset",
    "RebatchDataset", "RebatchDatasetV2", "OptionsDataset", "ModelDataset",
    "MaxIntraOpParallelismDataset", "PrivateThreadPoolDataset",
    "ExperimentalMaxIntraOpParallelismDataset", "ExperimentalPrivateThreadPoolDataset",
    "SkipDataset", "ShardDataset", "IgnoreErrorsDataset", "AssertCardinalityDataset",
    "AssertNextDataset", "AssertPrevDataset", "ScanDataset",
}
_FINITE_SOURCES = {
    "TensorSliceDataset", "TensorDataset", "RangeDataset", "TFRecordDataset",
    "TFRecordDatasetV2", "TextLineDataset", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "SparseTensorSliceDataset",
}
_REPEATS = {"RepeatDataset": 1, "ShuffleAndRepeatDataset": 4}  # op: index of its count input


def length(dataset) -> str:
    """How `dataset` ends: "infinite" (cardinality INFINITE), "endless"
    (cardinality UNKNOWN but its pipeline repeats without end), "finite"
    (a known cardinality, or a pipeline that surely ends) or "unknown" (the
    pipeline could not be read or holds a step whose length cannot be told)."""
    import tensorflow as tf

    cardinality = int(dataset.cardinality())
    if cardinality == int(tf.data.INFINITE_CARDINALITY):
        return "infinite"
    if cardinality != int(tf.data.UNKNOWN_CARDINALITY):
        return "finite"
    try:
        from tensorflow.core.framework import graph_pb2

        graph = graph_pb2.GraphDef()
        serialized = dataset._as_serialized_graph(  # stateful steps (a py_function) are kept
            external_state_policy=tf.data.experimental.ExternalStatePolicy.IGNORE)
        graph.ParseFromString(serialized.numpy())
    except Exception:  # noqa: BLE001 - a private API: when it fails, the length is unknown
        return "unknown"
    nodes = {node.name: node for node in graph.node}
    outputs = [node for node in graph.node if node.op == "_Retval"]
    if len(outputs) != 1 or not outputs[0].input:
        return "unknown"
    return _walk(nodes, _name(outputs[0].input[0]), depth=0)


def refusal(dataset, cap_setting: str) -> str | None:
    """Why `dataset`, read with no cap, would be read forever (the message of the
    error the caller raises), or None; a length that cannot be told is one warning."""
    kind = length(dataset)
    if kind == "unknown":
        logger.warning("representative_data is a tf.data.Dataset of unknown length and no cap "
                       "is set on the samples read: it is read to its end. If it never ends, "
                       f"end it with .take(n) (n batches) or set {cap_setting}.")
    if kind not in ("infinite", "endless"):
        return None
    why = ("INFINITE, e.g. after .repeat()" if kind == "infinite"
           else "UNKNOWN, e.g. after .filter(), but it has a .repeat() with no count")
    return (f"representative_data is an infinite tf.data.Dataset (its cardinality() is {why}), "
            f"which would be read forever. End it with .take(n) (n batches), or set {cap_setting} "
            "(the cap on the samples read; it is None here).")


def _walk(nodes: dict, name: str, depth: int) -> str:
    """The length ("endless", "finite", "unknown") of the dataset made by node `name`."""
    node = nodes.get(name)
    if node is None or depth > 200:
        return "unknown"
    inputs = [_name(i) for i in node.input if not i.startswith("^")]
    if node.op in _REPEATS:
        count = _constant(nodes, inputs, _REPEATS[node.op])
        if count is not None and count < 0:
            return "endless"
        return _walk(nodes, inputs[0], depth + 1) if count is not None else "unknown"
    if node.op == "TakeDataset":
        count = _constant(nodes, inputs, 1)
        if count is not None and count >= 0:
            return "finite"
        return _walk(nodes, inputs[0], depth + 1) if count is not None else "unknown"
    if node.op in _KEEP:
        return _walk(nodes, inputs[0], depth + 1)
    if node.op == "ConcatenateDataset":
        parts = {_walk(nodes, i, depth + 1) for i in inputs[:2]}
        return "endless" if "endless" in parts else "finite" if parts == {"finite"} else "unknown"
    if node.op in _FINITE_SOURCES:
        return "finite"
    return "unknown"


def _constant(nodes: dict, inputs: list, index: int) -> int | None:
    """The integer a Const node feeding input `index` holds, or None."""
    from tensorflow import make_ndarray

    node = nodes.get(inputs[index]) if index < len(inputs) else None
    if node is None or node.op != "Const":
        return None
    value = make_ndarray(node.attr["value"].tensor)
    return int(value) if value.size == 1 else None


def _name(reference: str) -> str:
    """A node name from an input reference (`name`, `name:0`, `name:output:0`)."""
    return reference.split(":")[0]
