"""What the driver ships to a worker: Keras models as `.keras` bytes.

A worker rebuilds the quantization simulation once from these bytes (the
quantizer layers are registered Keras serializables, their grids and on/off
switches are variables), then evaluates many masks or candidates on it. The
bytes round-trip exactly: the loaded model holds the same weights and the same
layer names, so graph node names (and score keys) are the same on every worker.

Example:

```python
data = model_to_bytes(sim)            # on the driver
sim2 = model_from_bytes(data)         # on a worker: same outputs
```
"""

from __future__ import annotations

import os
import tempfile


def model_to_bytes(model) -> bytes:
    """`model` saved as a `.keras` archive, in memory."""
    with tempfile.TemporaryDirectory(prefix="mct_logger_ship_") as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def model_from_bytes(data: bytes):
    """The Keras model of `model_to_bytes`'s archive (not compiled)."""
    import keras

    with tempfile.TemporaryDirectory(prefix="mct_logger_ship_") as folder:
        path = os.path.join(folder, "model.keras")
        with open(path, "wb") as f:
            f.write(data)
        return keras.saving.load_model(path, compile=False)
