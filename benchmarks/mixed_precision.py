"""Mixed-precision search under a weights budget of 75% of all-8-bit.

Two models:

- the digits CNN of `mct_logger.demo`, trained 20 epochs (fewer leave its batch
  norms' moving statistics unsettled and the float model near chance), 512
  training images to calibrate, the 449 test images to score;
- MobileNetV2 (alpha 0.35, 96x96, weights=None, seeded), logits out
  (`classifier_activation=None`: the softmax of a random-weight network is
  nearly uniform and its cosine saturates at 1), 256 random samples to
  calibrate and 128 others to score.

Score: cosine similarity of the model's output with the float model's (all
outputs flattened, `mct_logger.diagnostics.metrics.cosine_similarity`). Every score comes
from `keras_post_training_quantization` with the configuration (W8A8 default
otherwise): uniform 8-bit, uniform 4-bit where it fits, and the config the
search returns (searched over 4/8/16 bits, eval_callback = the score).

Time: the search's one-pass sensitivity (every layer at every candidate width)
vs evaluating every single-layer change from scratch (for each layer and
width, a model with only that layer's kernel quantized, run on the scoring
data): interleaved ours, scratch, ours; ratio = scratch / mean(ours). The
Spearman rank correlation of the two sensitivities at 4 bits (ours: isolated
SQNR at the layer; scratch: output SQNR of the model) says how well the cheap
measure orders the layers.

Run: python benchmarks/mixed_precision.py [--models digits,mobilenet]
"""

import argparse
import collections
import dataclasses
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import mct_logger  # noqa: E402
from mct_logger.data import sources as data_lib  # noqa: E402
from mct_logger.diagnostics import metrics  # noqa: E402
from mct_logger.graph.ir import read_model  # noqa: E402
from mct_logger.mixed_precision.search import (  # noqa: E402
    prepared_graph,
    measure_sensitivity,
    plan_weights_memory,
)
from mct_logger.quantization.config import QuantizationConfig  # noqa: E402
from mct_logger.quantization.plan import plan_quantization  # noqa: E402
from mct_logger.quantization.quantsim import (  # noqa: E402
    NodeEncodings,
    build_quantized_model,
    weight_encodings,
)

CANDIDATES = (4, 8, 16)


def digits_job():
    from mct_logger.demo import load_digits_split, train_digits_cnn

    keras.utils.set_random_seed(0)
    data = load_digits_split()
    return train_digits_cnn(data, epochs=20), data.x_train[:512], data.x_test


def mobilenet_job():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None,
                                           classifier_activation=None)
    rng = np.random.default_rng(0)
    data = rng.uniform(-1, 1, (384, 96, 96, 3)).astype("float32")
    return model, data[:256], data[256:]


def scorer(model, x_eval):
    reference = model.predict(x_eval, batch_size=64, verbose=0)
    return lambda m: metrics.cosine_similarity(reference, m.predict(x_eval, batch_size=64,
                                                                   verbose=0))


def from_scratch(graph, plan, layers, x_eval, reference):
    """Output SQNR (dB) of a model with only one layer's kernel at b bits, for every
    layer and width: one model built and run per (layer, width)."""
    result = {}
    for name in layers:
        result[name] = []
        for b in CANDIDATES:
            single = {n: dataclasses.replace(p, weights={}, activation=None)
                      for n, p in plan.items()}
            single[name] = dataclasses.replace(single[name], weights={
                k: dataclasses.replace(s, bitwidth=b) for k, s in plan[name].weights.items()})
            grids = weight_encodings(graph, single)
            model = build_quantized_model(graph, single, {name: NodeEncodings(weights=grids[name])})
            result[name].append(metrics.sqnr_db(reference, model.predict(x_eval, batch_size=64,
                                                                         verbose=0)))
    return result


def spearman(a, b):
    ranks = [np.argsort(np.argsort(v)) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def run(name, job):
    model, x_cal, x_eval = job()
    score = scorer(model, x_eval)
    graph = prepared_graph(read_model(model), QuantizationConfig())
    plan = plan_quantization(graph, QuantizationConfig(), report=False)
    all8 = plan_weights_memory(graph, plan)
    all4 = plan_weights_memory(graph, plan_quantization(graph, QuantizationConfig(weight_bits=4),
                                                        report=False))
    budget = int(0.75 * all8)
    uniform = {}
    for b in (8, 4):
        model_q, _ = mct_logger.keras_post_training_quantization(
            model, x_cal, QuantizationConfig(weight_bits=b))
        uniform[b] = score(model_q)
    start = time.perf_counter()
    config, result = mct_logger.search_mixed_precision(
        model, x_cal, eval_callback=score, weights_memory=budget, bit_candidates=CANDIDATES)
    search_seconds = time.perf_counter() - start
    model_q, _ = mct_logger.keras_post_training_quantization(model, x_cal, config)
    mixed = score(model_q)

    layers = [r["layer"] for r in result.layers]
    batches = data_lib.load_batches(x_cal, data_lib.input_specs(graph))
    reference = model.predict(x_eval, batch_size=64, verbose=0)
    ours, scratch = [], []
    for turn in ("ours", "scratch", "ours"):
        start = time.perf_counter()
        if turn == "ours":
            sensitivity = measure_sensitivity(graph, plan, layers, batches, CANDIDATES)
            ours.append(time.perf_counter() - start)
        else:
            output_sqnr = from_scratch(graph, plan, layers, x_eval, reference)
            scratch.append(time.perf_counter() - start)
    rho = spearman([sensitivity[n][0] for n in layers], [output_sqnr[n][0] for n in layers])
    bits = collections.Counter(r["bits"] for r in result.layers)
    return {
        "model": name, "layers": len(layers), "all8": all8, "all4": all4, "budget": budget,
        "uniform8": uniform[8], "uniform4": uniform[4] if all4 <= budget else None,
        "mixed": mixed, "mixed_memory": result.weights_memory,
        "mixed_bits": " ".join(f"{bits[b]}x{b}" for b in sorted(bits)),
        "search_seconds": search_seconds, "ours": float(np.mean(ours)), "scratch": scratch[0],
        "rho": rho, "evaluations": result.evaluations,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="digits,mobilenet")
    args = parser.parse_args()
    jobs = {"digits CNN": digits_job, "MobileNetV2 0.35 96px": mobilenet_job}
    chosen = [k for k in jobs if k.split()[0].lower().startswith(tuple(args.models.split(",")))]
    rows = [run(name, jobs[name]) for name in chosen]
    print("\nScore: output cosine vs float (higher is better). Budget: 75% of the all-8-bit "
          "weights memory.\n")
    print("| model | weight layers | all-8-bit weights | budget | uniform 8-bit | "
          "uniform 4-bit | mixed (ours) | mixed weights | mixed widths |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        u4 = f"{r['uniform4']:.5f} ({r['all4']} B)" if r["uniform4"] is not None else "does not fit"
        print(f"| {r['model']} | {r['layers']} | {r['all8']} B | {r['budget']} B | "
              f"{r['uniform8']:.5f} (over budget) | {u4} | {r['mixed']:.5f} | "
              f"{r['mixed_memory']} B | {r['mixed_bits']} |")
    print("\n| model | sensitivity, one pass (s) | every single-layer change from scratch (s) "
          "| ratio | Spearman (4-bit ranks) | whole search (s, with evaluations) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['ours']:.2f} | {r['scratch']:.2f} | "
              f"{r['scratch'] / r['ours']:.1f}x | {r['rho']:.2f} | "
              f"{r['search_seconds']:.1f} ({r['evaluations']} evaluations) |")


if __name__ == "__main__":
    main()
