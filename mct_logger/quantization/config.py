"""`QuantizationConfig`: what the user chooses about a PTQ run.

Example:

```python
config = QuantizationConfig(weight_bits=4, activation_bits=8)
model_q, info = keras_post_training_quantization(model, data, config)
```
"""

from __future__ import annotations

import dataclasses

from mct_logger.quantization.encodings import check_bitwidth


@dataclasses.dataclass
class QuantizationConfig:
    """Defaults: W8A8, weights symmetric per-channel, activations asymmetric per-tensor.

    Attributes:
        weight_bits: bitwidth of Conv/Dense kernels (2 to 16). Biases stay float32.
        activation_bits: bitwidth of layer outputs and model inputs (2 to 16).
        weight_per_channel: one grid per output channel instead of per tensor.
        weight_symmetric: symmetric weight grids.
        activation_symmetric: symmetric activation grids.
        activation_per_channel: one grid per channel of each output (last axis).
        quantize_inputs: put activation quantizers on the model inputs too.
        batch_size: how a bare NumPy array of representative data is batched.
    """

    weight_bits: int = 8
    activation_bits: int = 8
    weight_per_channel: bool = True
    weight_symmetric: bool = True
    activation_symmetric: bool = False
    activation_per_channel: bool = False
    quantize_inputs: bool = True
    batch_size: int = 32

    def __post_init__(self):
        for field in ("weight_bits", "activation_bits"):
            try:
                check_bitwidth(getattr(self, field))
            except ValueError as exc:
                raise ValueError(f"QuantizationConfig.{field}: {exc}") from None
        for field in (
            "weight_per_channel", "weight_symmetric", "activation_symmetric",
            "activation_per_channel", "quantize_inputs",
        ):
            if not isinstance(getattr(self, field), bool):
                raise TypeError(
                    f"QuantizationConfig.{field} must be True or False, "
                    f"got {getattr(self, field)!r}."
                )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(
                f"QuantizationConfig.batch_size must be a positive integer, got {self.batch_size!r}."
            )
