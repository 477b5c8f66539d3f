"""QuantAnalyzer's per-layer error analysis: one pass per batch vs one sub-model per layer.

MobileNetV2 (alpha 0.35, 96x96, weights=None), W8A8 by PTQ on 128 random
samples; the per-layer errors on the same 64 random samples (4 batches of 16),
two ways:

- one pass: `PairedActivations` (float, accumulated and isolated outputs of
  every layer from one forward pass per batch), what QuantAnalyzer runs;
- reference, AIMET's approach: for every layer, a sub-model of the FP32 model
  and one of the quantized model ending at that layer's output, run on every
  batch (`predict_on_batch`), and the MSE taken between the two. AIMET's Keras
  version even rebuilds both sub-models for every batch; building them once per
  layer, as here, favours the reference.

Both times include building the models. Prints the speed ratio (aim >= 10x)
and how closely the accumulated MSE values agree.

Run: python benchmarks/quant_analyzer.py [--samples 64] [--batch-size 16]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import mct_logger  # noqa: E402
from mct_logger.diagnostics.activations import PairedActivations  # noqa: E402
from mct_logger.analyzer.analyses import error_nodes  # noqa: E402
from mct_logger.quantization.quantsim import quantizers  # noqa: E402


def one_pass(info, nodes, batches):
    paired = PairedActivations(info.float_graph, info.plan, info.encodings, nodes=nodes)
    errors = paired.errors(batches)
    return {n: errors[n].mse_accumulated for n in nodes}


def quantized_output(model_q, found, node):
    """The symbolic output of `node` in the quantized model (after its quantizers)."""
    q = found.get(node, {})
    if "activation" in q:
        return q["activation"].output
    if "weights" in q:
        return q["weights"].output
    return model_q.get_layer(node).output


def float_output(model_f, info, node):
    if info.float_graph.nodes[node].is_input:
        return model_f.inputs[info.float_graph.input_names.index(node)]
    return model_f.get_layer(node).output


def per_layer_sub_models(info, model_q, nodes, batches):
    """AIMET's per-layer MSE: a sub-model per layer on both models, MSE per element."""
    model_f = info.float_graph.to_keras(name="fp32")
    found = quantizers(model_q)
    result = {}
    for node in nodes:
        sub_f = keras.Model(model_f.inputs, float_output(model_f, info, node))
        sub_q = keras.Model(model_q.inputs, quantized_output(model_q, found, node))
        total, count = 0.0, 0
        for batch in batches:
            f = np.asarray(sub_f.predict_on_batch(batch[0]), dtype=np.float64)
            q = np.asarray(sub_q.predict_on_batch(batch[0]), dtype=np.float64)
            total += float(np.sum((f - q) ** 2))
            count += f.size
        result[node] = total / count
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None)
    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, (128, 96, 96, 3)).astype("float32")
    data = rng.uniform(-1, 1, (args.samples, 96, 96, 3)).astype("float32")
    batches = [[data[i:i + args.batch_size]] for i in range(0, len(data), args.batch_size)]
    model_q, info = mct_logger.keras_post_training_quantization(model, calibration)
    nodes = error_nodes(info.float_graph, info.plan)

    start = time.perf_counter()
    fast = one_pass(info, nodes, batches)
    fast_seconds = time.perf_counter() - start

    start = time.perf_counter()
    reference = per_layer_sub_models(info, model_q, nodes, batches)
    reference_seconds = time.perf_counter() - start

    a = np.array([fast[n] for n in nodes])
    b = np.array([reference[n] for n in nodes])
    relative = np.abs(a - b) / np.maximum(np.abs(b), 1e-30)
    worst = nodes[int(np.argmax(relative))]
    print(f"\nMobileNetV2 0.35 96x96: {len(nodes)} layers, {len(data)} samples "
          f"in {len(batches)} batches of {args.batch_size}")
    print(f"{'method':<34}{'seconds':>10}")
    print(f"{'one pass (PairedActivations)':<34}{fast_seconds:>10.2f}")
    print(f"{'sub-model per layer (reference)':<34}{reference_seconds:>10.2f}")
    print(f"speed ratio: {reference_seconds / fast_seconds:.1f}x (aim >= 10x)")
    print("accumulated MSE agreement, |one pass - reference| / reference over layers: "
          f"median {np.median(relative):.2e}, max {relative.max():.2e} ({worst}); "
          f"layers within 1e-3: {int(np.sum(relative <= 1e-3))}/{len(nodes)}")


if __name__ == "__main__":
    main()
