"""Data-free quantization benchmark: cross-layer equalization and bias correction.

Prints one table of held-out accuracy on scikit-learn's digits:

(a) the demo's MobileNet-style CNN (batch norms, ReLU6, depthwise layers),
    trained here: per-tensor weights naive, +CLE, +CLE + bias correction (each
    mode), and per-channel weights for reference;
(b) a BN-free CNN whose channels between ReLU-linked layers are rescaled by
    factors spanning 1000x (the float function is unchanged, as after training
    with weight decay on some channels only or after a bad fold): per-tensor
    and per-channel weights, naive vs CLE.

W8A8 and W4A8 rows (activations: 8-bit asymmetric per-tensor, MSE search; weights
symmetric, grid from min/max, and for (a) at 4 bits also from an MSE search).

Run: `PYTHONPATH=. .venv/bin/python benchmarks/dfq.py` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import mct_logger  # noqa: E402
from mct_logger.demo import accuracy, load_digits_split, train_digits_cnn  # noqa: E402

logging.getLogger("mct_logger").setLevel(logging.ERROR)  # ReLU6 -> ReLU, once per run
logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notes of predict()

SPREAD = 1000.0  # largest / smallest channel rescale factor in model (b)


def build_plain_cnn():
    """A BN-free CNN: conv -> ReLU -> conv -> ReLU -> pool -> conv -> ReLU -> GAP -> dense."""
    from keras import layers

    inputs = keras.Input((8, 8, 1), name="digits")
    x = layers.Conv2D(32, 3, padding="same", name="conv1")(inputs)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(64, 3, padding="same", name="conv2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(64, 3, padding="same", name="conv3")(x)
    x = layers.ReLU(name="relu3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(10, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="plain_cnn")


def train_plain_cnn(data, epochs=30, seed=0):
    keras.utils.set_random_seed(seed)
    model = build_plain_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


def rescale_channels(model, spread=SPREAD, seed=1):
    """A copy whose ReLU-linked layer pairs have channel c scaled by f_c / 1/f_c.

    f is log-uniform over [1/sqrt(spread), sqrt(spread)] (both ends included):
    `W1[..., c] *= f_c`, `b1[c] *= f_c`, `W2[..., c, :] /= f_c`. ReLU, max
    pooling and average pooling commute with positive per-channel scales, so
    the float function is the same.
    """
    rng = np.random.default_rng(seed)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    pairs = [("conv1", "conv2"), ("conv2", "conv3"), ("conv3", "classifier")]
    for first, second in pairs:
        a, b = clone.get_layer(first), clone.get_layer(second)
        channels = a.kernel.shape[-1]
        f = np.exp(rng.uniform(-0.5, 0.5, channels) * np.log(spread))
        f[0], f[-1] = spread ** -0.5, spread ** 0.5
        rng.shuffle(f)
        ka, ba = a.get_weights()
        kb, bb = b.get_weights()
        a.set_weights([(ka * f).astype("float32"), (ba * f).astype("float32")])
        b.set_weights([(kb / f[:, None]).astype("float32"), bb])  # input axis is -2
    return clone


def quantized_accuracy(model, data, **options) -> float:
    config = mct_logger.QuantizationConfig(analyze_similarity=False, **options)
    quantized, _ = mct_logger.keras_post_training_quantization(
        model, data.x_train[:512], config)
    return accuracy(quantized, data.x_test, data.y_test)


def main():
    start = time.time()
    data = load_digits_split()
    rows = []

    def row(model_name, float_acc, bits, weights, grid, technique, acc):
        rows.append((model_name, f"W{bits}A8", weights, grid, technique, float_acc, acc))
        print(f"  {model_name:<22} W{bits}A8 {weights:<11} {grid:<7} {technique:<34} "
              f"{acc:7.2%}", flush=True)

    print("(a) training the MobileNet-style CNN (BN + ReLU6)...", flush=True)
    mobile = train_digits_cnn(data, epochs=30, seed=0)
    mobile_float = accuracy(mobile, data.x_test, data.y_test)
    equalized, _ = mct_logger.equalize_model(mobile)
    relu_float = accuracy(equalized, data.x_test, data.y_test)
    print(f"  float {mobile_float:.2%}; after ReLU6 -> ReLU + CLE (float) {relu_float:.2%}")
    name = "(a) MobileNet-style"
    for bits, grid in ((8, "min_max"), (4, "min_max"), (4, "mse")):
        common = dict(weight_bits=bits, activation_bits=8, weight_observer=grid)
        row(name, mobile_float, bits, "per-tensor", grid, "naive",
            quantized_accuracy(mobile, data, weight_per_channel=False, **common))
        row(name, mobile_float, bits, "per-tensor", grid, "+CLE",
            quantized_accuracy(mobile, data, weight_per_channel=False,
                               cross_layer_equalization=True, **common))
        for mode in ("empirical", "analytical", "hybrid"):
            row(name, mobile_float, bits, "per-tensor", grid,
                f"+CLE +bias correction ({mode})",
                quantized_accuracy(mobile, data, weight_per_channel=False,
                                   cross_layer_equalization=True, bias_correction=mode,
                                   **common))
        row(name, mobile_float, bits, "per-channel", grid, "naive (reference)",
            quantized_accuracy(mobile, data, weight_per_channel=True, **common))

    print("(b) training the BN-free CNN and rescaling its channels 1000x...", flush=True)
    plain = train_plain_cnn(data)
    scaled = rescale_channels(plain)
    plain_float = accuracy(plain, data.x_test, data.y_test)
    scaled_float = accuracy(scaled, data.x_test, data.y_test)
    x = data.x_test[:64]
    drift = float(np.linalg.norm(scaled.predict(x, verbose=0) - plain.predict(x, verbose=0))
                  / np.linalg.norm(plain.predict(x, verbose=0)))
    print(f"  float {plain_float:.2%}; rescaled float {scaled_float:.2%} "
          f"(output change {drift:.1e})")
    name = f"(b) BN-free, {SPREAD:.0f}x rescaled"
    for bits in (8, 4):
        common = dict(weight_bits=bits, activation_bits=8)
        for per_channel in (False, True):
            kind = "per-channel" if per_channel else "per-tensor"
            row(name, scaled_float, bits, kind, "min_max", "naive",
                quantized_accuracy(scaled, data, weight_per_channel=per_channel, **common))
            row(name, scaled_float, bits, kind, "min_max", "+CLE",
                quantized_accuracy(scaled, data, weight_per_channel=per_channel,
                                   cross_layer_equalization=True, **common))
            row(name, scaled_float, bits, kind, "min_max", "+CLE +bias correction (empirical)",
                quantized_accuracy(scaled, data, weight_per_channel=per_channel,
                                   cross_layer_equalization=True,
                                   bias_correction="empirical", **common))

    print()
    header = (f"| {'model':<27} | {'bits':<4} | {'weights':<11} | {'grid':<7} "
              f"| {'technique':<34} | {'float':>6} | {'quantized':>9} | {'delta':>6} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for model_name, bits, weights, grid, technique, float_acc, acc in rows:
        print(f"| {model_name:<27} | {bits:<4} | {weights:<11} | {grid:<7} "
              f"| {technique:<34} | {float_acc:6.2%} | {acc:9.2%} "
              f"| {100 * (acc - float_acc):+6.2f} |")
    print(f"\nTest set: {len(data.y_test)} held-out digits; calibration: 512 training "
          f"digits; {time.time() - start:.0f} s.")


if __name__ == "__main__":
    main()
