"""mct-logger: Keras 3 post-training quantization, every stage visible in TensorBoard."""

from mct_logger.graph import read_model
from mct_logger.logger import get_log_folder, set_log_folder
from mct_logger.ptq import (
    QuantizationInfo,
    add_stage_listener,
    keras_post_training_quantization,
    remove_stage_listener,
)
from mct_logger import quantization
from mct_logger.quantization import (
    Encoding,
    LayerOverride,
    QuantizationConfig,
    set_quantizers_enabled,
)

__version__ = "0.1.0"
