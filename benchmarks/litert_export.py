"""LiteRT int8 export: ours (PTQ with target="litert" + export_litert) against
TFLite's own post-training int8 quantization (converter + representative_dataset).

Models (random weights, `weights=None`, seeded, logits out: the softmax of a
random network is nearly uniform and its cosine saturates; the batch norms'
moving statistics set from the calibration data by one training-mode pass,
else a random network's activations shrink towards 1e-12 along the depth and
every int8 export, ours and TFLite's, outputs zeros):
MobileNetV2 alpha 0.35 at 96x96, MobileNetV2 1.0 at 224x224, ResNet50 at 224x224.
Data: 128 random calibration samples; 16 other samples score the outputs.

Per model, interleaved A/B (ours, TFLite's, ours, ...), medians of `--repeats`:
- time: ours = PTQ + export (conversion and file write, without the parity
  check, reported apart); TFLite's = its converter run with the representative
  dataset;
- `.tflite` size: our int8 vs the float `.tflite`;
- LiteRT latency per sample, int8 vs float (XNNPACK, 2 threads, 20 runs, median);
- output cosine against the float Keras model on the scoring samples, ours vs TFLite's;
- our parity summary: output agreement sim->LiteRT, int8/float op counts, flagged nodes.

Run: python benchmarks/litert_export.py [--models mnv2_035_96,mnv2_100_224,resnet50_224]
     [--repeats 3]
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import mct_logger  # noqa: E402
from mct_logger.diagnostics.metrics import cosine_similarity  # noqa: E402
from mct_logger.export.parity import interpreter, run_interpreter  # noqa: E402

MODELS = {
    "mnv2_035_96": lambda: keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, weights=None, classifier_activation=None),
    "mnv2_100_224": lambda: keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=1.0, weights=None, classifier_activation=None),
    "resnet50_224": lambda: keras.applications.ResNet50(
        input_shape=(224, 224, 3), weights=None, classifier_activation=None),
}


def _ours(model, x_cal, folder):
    start = time.perf_counter()
    _, info = mct_logger.keras_post_training_quantization(
        model, x_cal, mct_logger.QuantizationConfig(target="litert", analyze_similarity=False))
    result = info.export_litert(os.path.join(folder, "ours.tflite"), data=x_cal[:16])
    seconds = time.perf_counter() - start - result.parity_seconds
    return seconds, result


def _theirs(model, x_cal, folder):
    import tensorflow as tf

    start = time.perf_counter()
    saved = os.path.join(folder, "saved")
    model.export(saved, format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x_cal[i:i + 1]] for i in range(len(x_cal)))
    content = converter.convert()
    seconds = time.perf_counter() - start
    path = os.path.join(folder, "theirs.tflite")
    with open(path, "wb") as f:
        f.write(content)
    return seconds, path


def _latency(path, sample, runs=20):
    with open(path, "rb") as f:
        it = interpreter(f.read(), preserve=False, threads=2)
    run_interpreter(it, [sample])
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run_interpreter(it, [sample])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _outputs(path, x):
    with open(path, "rb") as f:
        return run_interpreter(interpreter(f.read(), preserve=False, threads=2), [x])[0]


def _settle_batch_norms(model, x):
    """Moving statistics = the statistics of `x` (momentum 0, one training-mode pass)."""
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)


def bench(name, repeats):
    keras.utils.set_random_seed(0)
    model = MODELS[name]()
    shape = model.input_shape[1:]
    rng = np.random.default_rng(0)
    x_cal = rng.uniform(-1, 1, size=(128,) + shape).astype("float32")
    _settle_batch_norms(model, x_cal[:32])
    x_eval = rng.uniform(-1, 1, size=(16,) + shape).astype("float32")
    reference = np.asarray(model(x_eval, training=False))
    ours_t, theirs_t = [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            seconds, result = _ours(model, x_cal, folder)
            ours_t.append(seconds)
            seconds, theirs_path = _theirs(model, x_cal, folder)
            theirs_t.append(seconds)
        float_path = os.path.join(folder, "float.tflite")
        from mct_logger.export.litert import convert

        with open(float_path, "wb") as f:
            f.write(convert(model, mct_logger_graph(model), None))
        row = {
            "model": name,
            "ours_s": statistics.median(ours_t), "theirs_s": statistics.median(theirs_t),
            "parity_s": result.parity_seconds,
            "int8_kib": result.size_bytes / 1024, "float_kib": result.float_size_bytes / 1024,
            "theirs_kib": os.path.getsize(theirs_path) / 1024,
            "lat_int8_ms": 1e3 * _latency(result.path, x_eval[:1]),
            "lat_theirs_ms": 1e3 * _latency(theirs_path, x_eval[:1]),
            "lat_float_ms": 1e3 * _latency(float_path, x_eval[:1]),
            "cos_ours": cosine_similarity(reference, _outputs(result.path, x_eval)),
            "cos_theirs": cosine_similarity(reference, _outputs(theirs_path, x_eval)),
        }
    print(f"\n== {name}: parity summary ({result.parity.num_samples} samples)")
    print(result.summary())
    return row


def mct_logger_graph(model):
    from mct_logger.graph.ir import read_model

    return read_model(model)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = [bench(name, args.repeats) for name in args.models.split(",")]
    print(f"\nrepeats={args.repeats} (medians); latency: XNNPACK, 2 threads, batch 1")
    header = ("model", "ours s", "TFLite s", "ratio", "parity s", "int8 KiB", "float KiB",
              "TFLite KiB", "int8 ms", "TFLite ms", "float ms", "cos ours", "cos TFLite")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join([
            r["model"], f"{r['ours_s']:.1f}", f"{r['theirs_s']:.1f}",
            f"{r['ours_s'] / r['theirs_s']:.2f}x", f"{r['parity_s']:.1f}",
            f"{r['int8_kib']:.0f}", f"{r['float_kib']:.0f}", f"{r['theirs_kib']:.0f}",
            f"{r['lat_int8_ms']:.2f}", f"{r['lat_theirs_ms']:.2f}", f"{r['lat_float_ms']:.2f}",
            f"{r['cos_ours']:.5f}", f"{r['cos_theirs']:.5f}"]))


if __name__ == "__main__":
    main()
