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
import importlib.abc
import importlib.machinery
import importlib.util
import sys

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "keras_post_training_quantization": "mct_logger.ptq",
    "QuantizationInfo": "mct_logger.ptq",
    "add_stage_listener": "mct_logger.listeners",
    "remove_stage_listener": "mct_logger.listeners",
    "set_log_folder": "mct_logger.logger",
    "get_log_folder": "mct_logger.logger",
    "read_model": "mct_logger.graph",
    "GraphError": "mct_logger.graph",
    "RebuildMismatchError": "mct_logger.rebuild_check",
    "RepresentativeDataError": "mct_logger.data",
    "QuantizationConfig": "mct_logger.quantization.config",
    "LayerOverride": "mct_logger.quantization.config",
    "AdaRoundConfig": "mct_logger.quantization.config",
    "Encoding": "mct_logger.quantization.encodings",
    "set_quantizers_enabled": "mct_logger.quantization.quantsim",
    "QuantAnalyzer": "mct_logger.analyzer",
    "search_mixed_precision": "mct_logger.mixed_precision_search",
    "equalize_model": "mct_logger.techniques.cross_layer_equalization",
    "correct_bias": "mct_logger.techniques.bias_correction",
    "compress_model": "mct_logger.compression.compress",
    "CompressionStats": "mct_logger.compression.results",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    if name in ("quantization", "techniques", "compression"):
        return importlib.import_module(f"mct_logger.{name}")
    raise AttributeError(f"module 'mct_logger' has no attribute {name!r}")


class _RepositoryNameFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Lets `import tb_plugin.reader` (the repository's folder name) give the
    installed `mct_logger.tb_plugin.reader`: the same module object, not a copy.

    A real top-level `tb_plugin` of another project is never shadowed (site-packages
    itself never holds ours); only ours, found under either name, is aliased.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "tb_plugin":
            ours = importlib.util.find_spec("mct_logger.tb_plugin")
            other = importlib.machinery.PathFinder.find_spec("tb_plugin")
            if ours is None or (other is not None and other.origin != ours.origin):
                return None
        elif not fullname.startswith("tb_plugin."):
            return None
        elif sys.modules.get("tb_plugin") is not sys.modules.get("mct_logger.tb_plugin"):
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module("mct_logger." + spec.name)

    def exec_module(self, module):
        pass


if not any(isinstance(f, _RepositoryNameFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _RepositoryNameFinder())


def __dir__():
    return __all__ + ["__version__"]
