"""mct-logger: Keras 3 post-training quantization, every stage visible in TensorBoard.

The public API is loaded on first use, so the TensorBoard writer
(`mct_logger.tensorboard.log_folder`, `mct_logger.tensorboard.events`) imports without TensorFlow or Keras.

Example:

```python
import mct_logger

mct_logger.set_log_folder("logs")
model_q, info = mct_logger.keras_post_training_quantization(model, data)
```
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "keras_post_training_quantization": "mct_logger.ptq.pipeline",
    "QuantizationInfo": "mct_logger.ptq.pipeline",
    "add_stage_listener": "mct_logger.listeners",
    "remove_stage_listener": "mct_logger.listeners",
    "set_log_folder": "mct_logger.tensorboard.log_folder",
    "get_log_folder": "mct_logger.tensorboard.log_folder",
    "read_model": "mct_logger.graph.ir",
    "GraphError": "mct_logger.graph.ir",
    "RebuildMismatchError": "mct_logger.diagnostics.rebuild_check",
    "RepresentativeDataError": "mct_logger.data.sources",
    "QuantizationConfig": "mct_logger.quantization.config",
    "LayerOverride": "mct_logger.quantization.config",
    "AdaRoundConfig": "mct_logger.quantization.config",
    "Encoding": "mct_logger.quantization.encodings",
    "set_quantizers_enabled": "mct_logger.quantization.quantsim",
    "QuantAnalyzer": "mct_logger.analyzer.driver",
    "search_mixed_precision": "mct_logger.mixed_precision.search",
    "equalize_model": "mct_logger.techniques.cross_layer_equalization",
    "correct_bias": "mct_logger.techniques.bias_correction",
    "compress_model": "mct_logger.compression.compress",
    # result types, each named for what it is
    "AnalysisResult": "mct_logger.analyzer.analyses",
    "Recommendation": "mct_logger.analyzer.recommend",
    "MixedPrecisionResult": "mct_logger.mixed_precision.search",
    "CrossLayerEqualizationResult": "mct_logger.techniques.cle_results",
    "BiasCorrectionResult": "mct_logger.techniques.bias_correction",
    "CompressionStats": "mct_logger.compression.results",
    # the listener protocol
    "Event": "mct_logger.listeners",
    "RunInfo": "mct_logger.listeners",
    "set_run_listener_factory": "mct_logger.listeners",
}

__all__ = sorted(_API)

# The concept folders (subpackages), importable as attributes: mct_logger.quantization, ...
_CONCEPTS = ("analyzer", "compression", "data", "diagnostics", "graph", "mixed_precision", "ptq",
             "quantization", "techniques", "tensorboard", "utils")


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    if name in _CONCEPTS:
        return importlib.import_module(f"mct_logger.{name}")
    raise AttributeError(f"module 'mct_logger' has no attribute {name!r}")


class _OldPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """The two pre-0.2 import paths that scripts in the project's shared cases still use
    (`tb_plugin.*`, the repository folder's name, and `mct_logger.events`), each
    resolved to its module (the same object, not a copy) with a DeprecationWarning.
    Nothing else is aliased: every other module is imported by its concept path.
    """

    _OLD = {"tb_plugin": "mct_logger.tb_plugin", "mct_logger.events": "mct_logger.tensorboard.events"}

    def _target(self, fullname):
        for old, new in self._OLD.items():
            if fullname == old or fullname.startswith(old + "."):
                return new + fullname[len(old):]
        return None

    def find_spec(self, fullname, path=None, target=None):
        new = self._target(fullname)
        if new is None:
            return None
        if fullname == "tb_plugin":
            # a real top-level `tb_plugin` of another project is never shadowed
            other = importlib.machinery.PathFinder.find_spec("tb_plugin")
            if other is not None and other.origin != importlib.util.find_spec(new).origin:
                return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = self._target(spec.name)
        warnings.warn(f"import {new} (the path {spec.name} is deprecated and will go)",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass


if not any(isinstance(f, _OldPathFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _OldPathFinder())


def __dir__():
    return __all__ + ["__version__"]
