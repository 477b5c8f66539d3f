"""LiteRT (TFLite) int8 export from our encodings, and its parity against the
LiteRT interpreter (`export_litert`, `LiteRTExport`)."""

from mct_logger.export.results import LiteRTExport, NodeParity, OpCounts, ParityTable

__all__ = ["LiteRTExport", "NodeParity", "OpCounts", "ParityTable", "export_litert",
           "predict_litert"]


def predict_litert(path, inputs, threads=None):
    """The `.tflite` model's outputs on `inputs` through the LiteRT interpreter
    (`mct_logger.export.parity.predict`): a list of float arrays, one per output."""
    from mct_logger.export.parity import predict

    return predict(path, inputs, threads)


def export_litert(info, path, data=None, io_dtype="float32", parity_samples=None):
    """See `mct_logger.export.litert.export_litert` (imported on call: TensorFlow's
    converter loads only when exporting)."""
    from mct_logger.export.litert import export_litert as run

    return run(info, path, data=data, io_dtype=io_dtype, parity_samples=parity_samples)
