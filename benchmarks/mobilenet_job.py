"""The benchmark job the issues name: MobileNetV2 (alpha 0.35, 96x96, weights=None)
with 256 random representative samples, seeded."""

import keras
import numpy as np


def mobilenet_job(samples: int = 256):
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None)
    data = np.random.default_rng(0).uniform(-1, 1, (samples, 96, 96, 3)).astype("float32")
    return model, data
