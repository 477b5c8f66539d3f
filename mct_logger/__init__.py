"""mct-logger: Keras 3 post-training quantization, every stage visible in TensorBoard.

The public API is loaded on first use, so the TensorBoard writer
(`mct_logger.logger`, `mct_logger.events`) imports without TensorFlow or Keras.

Example:

```python
import mct_logger

mct_logger.set_log_folder("logs")
model_q, info = mct_logger.keras_post_training_quantization(model, data)
```
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "keras_post_training_quantization": "mct_logger.ptq",
    "QuantizationInfo": "mct_logger.ptq",
    "add_stage_listener": "mct_logger.ptq",
    "remove_stage_listener": "mct_logger.ptq",
    "set_log_folder": "mct_logger.logger",
    "get_log_folder": "mct_logger.logger",
    "read_model": "mct_logger.graph",
    "GraphError": "mct_logger.graph",
    "RebuildMismatchError": "mct_logger.graph",
    "RepresentativeDataError": "mct_logger.data",
    "QuantizationConfig": "mct_logger.quantization.config",
    "LayerOverride": "mct_logger.quantization.config",
    "Encoding": "mct_logger.quantization.encodings",
    "set_quantizers_enabled": "mct_logger.quantization.quantsim",
    "QuantAnalyzer": "mct_logger.analyzer",
    "search_mixed_precision": "mct_logger.mixed_precision_search",
    "equalize_model": "mct_logger.techniques.cross_layer_equalization",
    "correct_bias": "mct_logger.techniques.bias_correction",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    if name in ("quantization", "techniques"):
        return importlib.import_module(f"mct_logger.{name}")
    raise AttributeError(f"module 'mct_logger' has no attribute {name!r}")


def __dir__():
    return __all__ + ["__version__"]
