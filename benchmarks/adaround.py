"""AdaRound benchmark: learned vs nearest rounding (Nagel et al., ICML 2020).

Prints one table:

(a) held-out accuracy on scikit-learn's digits of the demo MobileNet-style CNN
    (BN + ReLU6, depthwise) and of the BN-free CNN of `benchmarks/dfq.py`, both
    trained here: W8A8 and W4A8 with per-channel weights, W4A8 with per-tensor
    weights, nearest rounding vs AdaRound, and CLE (+ nearest / + AdaRound) for
    per-tensor; activations 8-bit asymmetric per-tensor (MSE search), weights
    symmetric min/max grids; 512 training digits to calibrate and learn from;
(b) output SQNR (dB, logits vs the float model, 128 held-out random inputs) of
    MobileNetV2 (alpha 0.35, 96x96, weights=None, seeded) at W4A8 per-channel,
    nearest vs AdaRound, 256 random calibration inputs;
(c) AdaRound's cost: seconds per 1,000 iterations per layer, against the whole
    PTQ without AdaRound on the same model, in the same process.

The paper's figure for reference (ResNet18 on ImageNet, W4A8): nearest 23.99%,
AdaRound 68.60%, FP32 69.68%.

Run: `PYTHONPATH=. .venv/bin/python benchmarks/adaround.py [--iterations 1000]
[--mobilenet-iterations 100]` (the paper and AIMET run 10,000 iterations per
layer; on 2 CPU cores that is about 80 s per digits layer, so the defaults are
lower, with a learning rate raised to match: `--learning-rate`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import mct_logger  # noqa: E402
from mct_logger.demo import accuracy, load_digits_split, train_digits_cnn  # noqa: E402
from mct_logger.diagnostics.metrics import sqnr_db  # noqa: E402

logging.getLogger("mct_logger").setLevel(logging.ERROR)
logging.getLogger("tensorflow").setLevel(logging.ERROR)

PAPER = "ResNet18 ImageNet W4A8 (paper): nearest 23.99%, AdaRound 68.60%, FP32 69.68%"


def quantize(model, x, adaround=None, **options):
    config = mct_logger.QuantizationConfig(analyze_similarity=False, adaround=adaround,
                                           **options)
    start = time.perf_counter()
    quantized, info = mct_logger.keras_post_training_quantization(model, x, config)
    return quantized, info, time.perf_counter() - start


def digits_rows(args, data, rows, costs):
    from dfq import train_plain_cnn

    ada = mct_logger.AdaRoundConfig(iterations=args.iterations, learning_rate=args.learning_rate)
    models = {
        "MobileNet-style CNN": train_digits_cnn(data, epochs=30, seed=0),
        "BN-free CNN": train_plain_cnn(data, epochs=30, seed=0),
    }
    x = data.x_train[:512]
    settings = (("W8A8", "per-channel", dict(weight_bits=8)),
                ("W4A8", "per-channel", dict(weight_bits=4)),
                ("W4A8", "per-tensor", dict(weight_bits=4, weight_per_channel=False)))
    for name, model in models.items():
        float_acc = accuracy(model, data.x_test, data.y_test)
        for bits, weights, options in settings:
            variants = [("nearest", None, False), ("AdaRound", ada, False)]
            if weights == "per-tensor":
                variants += [("CLE + nearest", None, True), ("CLE + AdaRound", ada, True)]
            for label, adaround, cle in variants:
                quantized, info, seconds = quantize(model, x, adaround,
                                                    cross_layer_equalization=cle, **options)
                acc = accuracy(quantized, data.x_test, data.y_test)
                rows.append((name, bits, weights, label, f"{float_acc:.2%}", f"{acc:.2%}"))
                print(f"  {name:<20} {bits} {weights:<11} {label:<15} {acc:7.2%}", flush=True)
                if bits == "W4A8" and weights == "per-channel" and label == "AdaRound":
                    costs.append(_cost(name, info, seconds, quantize(model, x, **options)[2]))


def _cost(name, info, seconds_with, seconds_without):
    """Steady seconds per 1,000 steps of one layer (mean over layers, steps after the
    first traced one) and the fixed seconds per layer (cache fill, tracing, losses)."""
    result = info.stage_results["adaround"]
    layers = list(result.layers.values())
    iterations = result.config.iterations
    steps = [l.step_seconds for l in layers if l.step_seconds is not None]
    per_1000 = 1000.0 * float(np.mean(steps)) if steps else float("nan")
    fixed = float(np.mean([l.seconds - (l.step_seconds or 0.0) * l.iterations for l in layers]))
    return (name, len(layers), iterations, per_1000, fixed, seconds_without, seconds_with)


def mobilenet_rows(args, rows, costs):
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None,
                                           classifier_activation=None)
    rng = np.random.default_rng(0)
    data = rng.uniform(-1, 1, (384, 96, 96, 3)).astype("float32")
    x, x_eval = data[:256], data[256:]
    reference = model.predict(x_eval, batch_size=64, verbose=0)
    ada = mct_logger.AdaRoundConfig(iterations=args.mobilenet_iterations,
                                    learning_rate=args.learning_rate)
    name = "MobileNetV2 0.35 96px"
    nearest, _, seconds_without = quantize(model, x, weight_bits=4)
    rounded, info, seconds_with = quantize(model, x, ada, weight_bits=4)
    for label, quantized in (("nearest", nearest), ("AdaRound", rounded)):
        sqnr = sqnr_db(reference, quantized.predict(x_eval, batch_size=64, verbose=0))
        rows.append((name, "W4A8", "per-channel", label, "-", f"SQNR {sqnr:.2f} dB"))
        print(f"  {name} W4A8 per-channel {label:<10} output SQNR {sqnr:.2f} dB", flush=True)
    result = info.stage_results["adaround"]
    layers = result.layers.values()
    improved = sum(l.loss_adaround < l.loss_nearest for l in layers)
    flipped = float(np.mean([l.flipped_fraction for l in layers]))
    print(f"  {improved} of {len(result.layers)} layers lowered their reconstruction loss "
          f"(mean share flipped {flipped:.2%}; {sum(l.kept_nearest for l in layers)} kept "
          f"nearest); {len(result.skipped)} not learned: {sorted(set(result.skipped.values()))}")
    costs.append(_cost(name, info, seconds_with, seconds_without))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--mobilenet-iterations", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--skip-mobilenet", action="store_true")
    parser.add_argument("--skip-digits", action="store_true")
    args = parser.parse_args()
    start = time.time()
    data = load_digits_split()
    rows, costs = [], []
    if not args.skip_digits:
        print(f"(a) digits models, AdaRound {args.iterations} iterations per layer, "
              f"Adam {args.learning_rate:g}...", flush=True)
        digits_rows(args, data, rows, costs)
    if not args.skip_mobilenet:
        print(f"(b) MobileNetV2, AdaRound {args.mobilenet_iterations} iterations per layer...",
              flush=True)
        mobilenet_rows(args, rows, costs)
    print()
    print("| model | bits | weights | rounding | float | quantized |")
    print("|---|---|---|---|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"| {PAPER} | | | | | |")
    print()
    print("| model (W4A8 per-channel) | layers learned | iterations | s per 1000 iterations "
          "per layer | fixed s per layer | PTQ without AdaRound (s) | PTQ with AdaRound (s) "
          "| ratio | 1000 iterations per layer / PTQ without |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, layers, iterations, per_1000, fixed, without, with_ in costs:
        print(f"| {name} | {layers} | {iterations} | {per_1000:.2f} | {fixed:.2f} | "
              f"{without:.2f} | {with_:.2f} | {with_ / without:.1f}x | "
              f"{per_1000 / without:.1f}x |")
    print(f"\nTest set: {len(data.y_test)} held-out digits; {keras.config.backend()} backend; "
          f"{time.time() - start:.0f} s in all.")


if __name__ == "__main__":
    main()
