"""Quantization simulation: config, encodings, observers and fake-quant layers."""

from mct_logger.quantization.config import AdaRoundConfig, LayerOverride, QuantizationConfig
from mct_logger.quantization.encodings import Encoding, quantize_dequantize
from mct_logger.quantization.layers import ActivationQuantizer, QuantizedWeightsLayer
from mct_logger.quantization.observers import (
    OBSERVERS,
    MinMaxObserver,
    MseObserver,
    SqnrObserver,
    make_observer,
)
from mct_logger.quantization.quantsim import (
    CalibrationModel,
    NodeEncodings,
    build_quantized_model,
    quantizers,
    read_encodings,
    set_quantizers_enabled,
)
