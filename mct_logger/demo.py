"""The built-in example: a small CNN with batch norms and ReLU6, trained on
scikit-learn's bundled 8x8 digits (no download), then quantized.

Example:

```python
data = load_digits_split()
model = train_digits_cnn(data)
run_demo("logs")
```
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np


@dataclasses.dataclass
class DigitsSplit:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split(test_fraction: float = 0.25, seed: int = 0) -> DigitsSplit:
    """The 1,797 digits as (N, 8, 8, 1) floats in [0, 1], split with a fixed seed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "The demo trains on scikit-learn's bundled digits; install it with "
            "pip install 'mct-logger[demo]' (or pip install scikit-learn)."
        ) from None
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    order = np.random.RandomState(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return DigitsSplit(x[train], y[train], x[test], y[test])


def build_digits_cnn():
    """A MobileNet-style CNN: conv, depthwise and pointwise blocks with BN + ReLU6."""
    import keras
    from keras import layers

    def block(x, conv):
        x = conv(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU(6.0)(x)

    inputs = keras.Input((8, 8, 1), name="digits")
    x = block(inputs, layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem"))
    x = block(x, layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw1"))
    x = block(x, layers.Conv2D(64, 1, use_bias=False, name="pw1"))
    x = block(x, layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw2"))
    x = block(x, layers.Conv2D(64, 1, use_bias=False, name="pw2"))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(10, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def train_digits_cnn(data: DigitsSplit, epochs: int = 30, seed: int = 0):
    """Trains `build_digits_cnn` with everything seeded (about 20 s on 2 cores)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_digits_cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


def accuracy(model, x, y) -> float:
    # One eager call: `predict` would trace a function for each of the several
    # models the demo scores, which TensorFlow reports as excessive retracing.
    import keras

    probabilities = keras.ops.convert_to_numpy(model(x, training=False))
    return float(np.mean(np.argmax(probabilities, axis=-1) == y))


def run_demo(logdir: str, epochs: int = 30) -> dict:
    """Trains, quantizes (W8A8) with TensorBoard logging, runs QuantAnalyzer,
    compresses by channel pruning, and prints float vs quantized accuracy, the
    compression result and the tensorboard command."""
    import mct_logger

    os.makedirs(logdir, exist_ok=True)
    data = load_digits_split()
    print(f"Training a small CNN on {len(data.x_train)} digits ({epochs} epochs)...")
    model = train_digits_cnn(data, epochs=epochs)
    float_accuracy = accuracy(model, data.x_test, data.y_test)

    # named runs, so the TensorBoard tabs' run pickers say what each one is
    mct_logger.set_log_folder(logdir, run_name="digits_cnn_w8a8")
    try:
        quantized, info = mct_logger.keras_post_training_quantization(model, data.x_train[:512])
        quantized_accuracy = accuracy(quantized, data.x_test, data.y_test)
        path = os.path.join(logdir, "digits_cnn_quantized.keras")
        quantized.save(path)
        info.export_encodings(os.path.join(logdir, "digits_cnn.encodings.json"))

        print("Quantizing again with cross-layer equalization, to compare the two runs...")
        mct_logger.set_log_folder(logdir, run_name="digits_cnn_w8a8_cle")
        cle_model, _ = mct_logger.keras_post_training_quantization(
            model, data.x_train[:512], mct_logger.QuantizationConfig(cross_layer_equalization=True))
        cle_accuracy = accuracy(cle_model, data.x_test, data.y_test)

        print("Running QuantAnalyzer (4 evaluations, then 2 per quantized layer)...")
        mct_logger.set_log_folder(logdir, run_name="digits_cnn_quant_analyzer")
        analyzer = mct_logger.QuantAnalyzer(
            model,
            forward_pass_callback=lambda m: m.predict(data.x_train[:512], batch_size=64, verbose=0),
            eval_callback=lambda m: accuracy(m, data.x_test, data.y_test),
        )
        analyzer.enable_per_layer_mse_loss(data.x_train[:256], num_batches=4)
        analysis = analyzer.analyze(results_dir=os.path.join(logdir, "quant_analyzer_results"))

        print("Compressing by channel pruning to 60% of the MACs (greedy per-layer ratios)...")
        mct_logger.set_log_folder(logdir, run_name="digits_cnn_channel_pruning")
        _, compression = mct_logger.compress_model(
            model, lambda m: accuracy(m, data.x_test, data.y_test), target_comp_ratio=0.6,
            scheme="channel_pruning", num_comp_ratio_candidates=5,
            forward_pass_callback=lambda m: m.predict(data.x_train[:128], batch_size=64, verbose=0),
            eval_scores_file=os.path.join(logdir, "compression_eval_scores.json"))
    finally:
        mct_logger.set_log_folder(None)

    print(f"Float accuracy:      {float_accuracy:.2%}")
    print(f"Quantized (W8A8):    {quantized_accuracy:.2%}")
    print(f"Quantized with CLE:  {cle_accuracy:.2%}")
    print(f"Memory: {info.memory_before:,} -> {info.memory_after:,} bytes "
          "(weights + activations at batch 1)")
    for line in analysis.headlines():  # as the tab's headline findings say it
        print(f"QuantAnalyzer: {line}")
    print(f"QuantAnalyzer report: {analysis.report_path}")
    print(f"Channel pruning:     {compression.cost_ratio:.0%} of the MACs kept, accuracy "
          f"{compression.score_before:.2%} -> {compression.score_after:.2%}")
    print(f"Quantized model saved to {path}")
    print(f"\nSee every stage in TensorBoard (tabs QuantAnalyzer, CLE and Compression too):\n"
          f"  tensorboard --logdir {logdir}")
    return {
        "float_accuracy": float_accuracy,
        "quantized_accuracy": quantized_accuracy,
        "cle_accuracy": cle_accuracy,
        "model_path": path,
        "report_path": analysis.report_path,
        "compression": compression,
    }
