"""`export_litert`: a fully integer LiteRT (`.tflite`) model from our encodings,
checked layer by layer against the simulation.

The steps:
1. refuse what cannot work, before any work: the path, `io_dtype`, the data;
2. build the quantized graph with TensorFlow FakeQuant ops at our grids
   (`export.model`), calibrating on the data only the few tensors LiteRT needs
   a grid for and the plan leaves without one;
3. the model traced once (batch 1) and converted with
   `tf.lite.TFLiteConverter.from_concrete_functions` (the graph a Keras
   `model.export(..., format="tf_saved_model")` would save), with
   `optimizations=[tf.lite.Optimize.DEFAULT]` and no representative dataset:
   the FakeQuant ops put the converter on its quantization-aware path, so the
   `.tflite` carries our scales and zero points, not the converter's own
   calibration (TensorFlow's converter; the runtime is `ai-edge-litert`);
4. write the file atomically, then compare float, simulation and LiteRT node
   by node (`export.parity`).

Example:

```python
model_q, info = keras_post_training_quantization(model, x_train[:512])
result = info.export_litert("model_int8.tflite")
print(result.summary())          # output agreement, op counts, flagged nodes
```
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
import time

import numpy as np

from mct_logger.data import sources as data_lib
from mct_logger.diagnostics.similarity import first_samples
from mct_logger.export import parity as parity_lib
from mct_logger.export.grids import range_grid
from mct_logger.export.model import ExportModelBuilder
from mct_logger.export.results import LiteRTExport, OpCounts
from mct_logger.utils.atomic_files import write_atomically
from mct_logger.utils.output_paths import check_file

logger = logging.getLogger("mct_logger")

IO_DTYPES = ("float32", "int8", "uint8")
BATCH = 1  # the exported signature's batch: a static shape, as deployed on devices
DEFAULT_PARITY_SAMPLES = 256  # of user data: the interpreter runs one sample at a time


class LiteRTConversionError(RuntimeError):
    """The TFLite converter rejected the model; names the layer(s) and its message."""


def export_litert(info, path, data=None, io_dtype: str = "float32",
                  parity_samples: int | None = None) -> LiteRTExport:
    """Writes `info`'s quantized model as an int8 `.tflite` and checks it.

    Args:
        info: the `QuantizationInfo` of a PTQ run.
        path: the `.tflite` file to write (its folder is created if needed).
        data: inputs to check parity on (any representative-data form); default
            the run's similarity samples.
        io_dtype: "float32" (quantize/dequantize at the edges), "int8" or "uint8".
        parity_samples: at most this many samples are compared (default: the
            first DEFAULT_PARITY_SAMPLES of `data`, or all the similarity samples).

    Returns:
        `LiteRTExport` (path, op counts, sizes, parity table). Model Explorer node
        data is written next to the `.tflite` (`<name>.node_data.json`), and with a
        log folder set (`set_log_folder`) the export is logged as the run
        `NN_litert_export` beside its PTQ run (`mct_logger.tensorboard.export_log`).

    Raises (before anything is written):
        ValueError: `io_dtype` is not one of IO_DTYPES, `parity_samples` is not an
            integer >= 1, or there is no data.
        IsADirectoryError / NotADirectoryError / PermissionError: `path` cannot be written.
        RepresentativeDataError: `data` does not fit the model.
        LiteRTConversionError: the converter rejects the model (the message names
            the layer and the converter's own message).
    """
    start = time.perf_counter()
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"export_litert(io_dtype={io_dtype!r}): use one of {IO_DTYPES}.")
    if parity_samples is not None and (isinstance(parity_samples, bool) or not isinstance(
            parity_samples, (int, np.integer)) or parity_samples < 1):
        raise ValueError(f"export_litert(parity_samples={parity_samples!r}): give a whole "
                         f"number of samples >= 1, or None for the default.")
    path = _check_path(path)
    graph = info.quantized_graph or info.float_graph
    specs = data_lib.input_specs(graph)
    if data is None:
        batches = getattr(info, "parity_samples", None)
        if not batches:
            raise ValueError(
                "export_litert(data=None): this run kept no samples to check parity on "
                "(its grids came from an encodings file without data); pass data=, e.g. a "
                "few hundred inputs as a NumPy array.")
    else:
        batches = data_lib.load_batches(data, specs, batch_size=32,
                                        max_samples=parity_samples or DEFAULT_PARITY_SAMPLES,
                                        name="data")
    if parity_samples is not None:
        batches = first_samples(batches, parity_samples)
    builder = ExportModelBuilder(graph, info.plan, info.encodings)
    probe = builder.build(probe=True) if builder.needs_probe() else None
    if probe is not None:
        builder.export_grids = _calibrate(probe, builder.probe_keys(), batches)
    model = builder.build()
    flatbuffer = convert(model, graph, io_dtype)
    reference = parity_lib.float_model(info, graph)  # its first outputs: the model's
    float_flatbuffer = convert(reference, info.float_graph, None, len(graph.outputs))
    _write_bytes(path, flatbuffer)
    export_seconds = time.perf_counter() - start
    table = parity_lib.compare(info, graph, builder, flatbuffer, batches, reference)
    result = LiteRTExport(
        path=path,
        io_dtype=io_dtype,
        size_bytes=len(flatbuffer),
        float_size_bytes=len(float_flatbuffer),
        op_counts=OpCounts.of(table.ops),
        parity=table,
        adaptations=dict(builder.adaptations),
        float_weights=dict(builder.float_weights),
        export_grids={k: (g.minimum, g.maximum) for k, g in builder.export_grids.items()},
        export_seconds=export_seconds,
        parity_seconds=time.perf_counter() - start - export_seconds,
    )
    result.node_data_path = _write_node_data(path, result)
    _tell_listeners(info, graph, result)
    return result


def _tell_listeners(info, graph, result) -> None:
    """The export's run listeners (`listeners.EXPORT`; the TensorBoard one when a
    log folder is set), told about the finished export."""
    from mct_logger import listeners

    run = listeners.ListenerSet(listeners.RunInfo(
        listeners.EXPORT, graph.name, run_id=getattr(info, "run_id", None)))
    try:
        run.emit("litert_export", result, graph=graph)
    except BaseException as exc:
        run.close(exc)
        raise
    run.close()


def _check_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"export_litert(path={path!r}): pass a file path, e.g. 'model.tflite'.")
    path = check_file(path, "export_litert(path)")
    folder = os.path.dirname(path)
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"export_litert(path={path!r}): the folder {existing!r} cannot be written; pass "
            "a path in a folder you can write.")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise PermissionError(
            f"export_litert(path={path!r}): the file exists and cannot be replaced; pass "
            "another path or make it writable.")
    return path


def _calibrate(probe, keys: list[str], batches) -> dict:
    """Min/max grids of the probe model's outputs over `batches`."""
    low = [np.inf] * len(keys)
    high = [-np.inf] * len(keys)
    for batch in batches:
        outputs = probe(list(batch), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for i, out in enumerate(outputs):
            out = np.asarray(out, dtype=np.float64)
            low[i] = min(low[i], float(np.min(out)))
            high[i] = max(high[i], float(np.max(out)))
    return {k: range_grid(lo, hi) for k, lo, hi in zip(keys, low, high)}


def convert(model, graph, io_dtype: str | None, num_outputs: int | None = None) -> bytes:
    """The `.tflite` flatbuffer of a Keras model (int8 when it holds FakeQuant ops
    and `io_dtype` is given; plain float when `io_dtype` is None), traced once at
    batch BATCH and converted from that concrete function, frozen in memory (the
    graph `model.export(..., format="tf_saved_model")` and `from_saved_model`
    would convert, without writing and reading a SavedModel). `num_outputs`: keep only the first
    outputs.

    Raises:
        LiteRTConversionError: naming the graph layer(s) in the converter's message.
    """
    import tensorflow as tf

    signature = [tf.TensorSpec((BATCH,) + tuple(s.shape[1:]), s.dtype or tf.float32)
                 for s in model.inputs]

    def call(*inputs):
        outputs = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        if num_outputs is not None:
            outputs = list(outputs)[:num_outputs]
        return outputs

    with _quiet():
        function = tf.function(call, input_signature=signature).get_concrete_function()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
        # Freeze the function in memory instead of saving the whole Keras model as a
        # SavedModel first (the same ops and names; most of the conversion's time).
        converter.experimental_lower_to_saved_model = False
        if io_dtype is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if io_dtype != "float32":
                converter.inference_input_type = getattr(tf, io_dtype)
                converter.inference_output_type = getattr(tf, io_dtype)
        try:
            return converter.convert()
        except Exception as exc:  # the converter's own error types vary by version
            raise LiteRTConversionError(_conversion_message(exc, model, graph)) from exc


def _conversion_message(exc, model, graph) -> str:
    errors = list(getattr(exc, "errors", None) or [])
    text = str(exc) + "\n" + "\n".join(str(e) for e in errors)  # locations name the scopes
    names = {layer.name for layer in model.layers}
    scopes = dict.fromkeys(re.findall(r"/([A-Za-z0-9_.\-]+?)_\d+/", text))
    found = [n for n in scopes if n in names]
    nodes = [n for n in graph.nodes
             if any(f in (n.split("/")[-1], f"{n.split('/')[-1]}_litert") for f in found)]
    first = next((e.error_message for e in errors if getattr(e, "error_message", "")), "")
    if not first:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = next((line for line in lines if "error" in line.lower()),
                     lines[0] if lines else type(exc).__name__)
    where = f"layer(s) {nodes or found}" if (nodes or found) else "a layer it does not name"
    return (f"The TFLite converter rejected model {graph.name!r} at {where}: {first[:600]}. "
            "Keep that layer in float (QuantizationConfig overrides={name: "
            "LayerOverride(keep_float=True)}) or use QuantizationConfig(target='litert').")


@contextlib.contextmanager
def _quiet():
    """Keeps TensorFlow's converter chatter at error level (its warning that a
    quantized input has no statistics does not apply: the FakeQuant op carries them),
    and takes back the root handler the converter installs (`logging.basicConfig`
    style), which would print every later log line of the process a second time."""
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    root = logging.getLogger()
    handlers = list(root.handlers)
    tf_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            yield
    finally:
        tf_logger.setLevel(level)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)


def _write_bytes(path: str, content: bytes) -> None:
    """Writes `content` to `path` through `path.tmp` and a rename (never half a file)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomically(path, lambda f: f.write(content), binary=True)


def _write_node_data(path: str, result: LiteRTExport) -> str | None:
    """The Model Explorer node-data JSON next to the `.tflite` (None if it cannot be written)."""
    target = os.path.splitext(path)[0] + ".node_data.json"
    content = result.model_explorer_node_data()
    try:
        write_atomically(target, lambda f: json.dump(content, f, indent=1, allow_nan=False))
    except OSError as exc:
        logger.warning("The Model Explorer node data %s could not be written (%s); the "
                       ".tflite is written.", target, exc)
        return None
    return target
