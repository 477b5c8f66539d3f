"""Channel pruning with greedy ratio selection at a 50% MAC target, on two models:

- the digits CNN of the demo (trained 15 epochs on scikit-learn's digits),
  scored by test accuracy;
- MobileNetV2 (alpha 0.35, 96x96, weights=None: random weights), scored by
  the cosine similarity of its logits to the original's on 64 random images.

For each: the score before and after, the MACs before and after, the chosen
ratio per layer, the whole `compress_model` time, and the sweep's cost per
candidate against the naive way, interleaved on the same candidates:

- sweep (what `compress_model` does): one working model for every candidate;
  the layer's kernel set to the reconstructed kept channels, pruned ones zero;
- naive: the pruned model built from scratch for each candidate (graph
  rebuilt with the layer and its producer sliced, `to_keras`, so the eval
  callback's predict traces a new model), with the same reconstruction (the
  naive side reuses the sampled activations, which favours it).

Run: python benchmarks/compression.py [--candidates 5] [--naive 12]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import mct_logger  # noqa: E402
from mct_logger.utils.callbacks import as_callback  # noqa: E402
from mct_logger.compression import channel_pruning, sweep  # noqa: E402
from mct_logger.compression.greedy import candidate_ratios  # noqa: E402
from mct_logger.demo import accuracy, load_digits_split, train_digits_cnn  # noqa: E402
from mct_logger.graph.ir import read_model  # noqa: E402


def cosine_score(model, x):
    reference = model.predict(x, batch_size=32, verbose=0).astype(np.float64)

    def score(m):
        out = m.predict(x, batch_size=32, verbose=0).astype(np.float64)
        return float(np.sum(out * reference) / (np.linalg.norm(out) * np.linalg.norm(reference)))
    return score


def naive_vs_sweep(model, evaluate, forward, candidates, count, seed=0):
    """Seconds per candidate, sweep vs naive, interleaved over `count` candidates."""
    graph = read_model(model)
    layers = {n.name: channel_pruning.PruningLayer(n, chain) for n in graph
              if not isinstance(chain := channel_pruning.trace_chain(graph, n), str)}
    sweep.sample_pruning_data(graph, layers, as_callback(forward, "forward"))
    pairs = [(name, r) for name in layers for r in candidates
             if layers[name].keep_for_ratio(r) is not None]
    rng = np.random.default_rng(seed)
    chosen = [pairs[i] for i in sorted(rng.choice(len(pairs), min(count, len(pairs)), replace=False))]
    _, working, clones = sweep._working_model(graph, list(layers))
    evaluate(working)  # the sweep traces its model once, before its first candidate
    times = {"sweep": [], "naive": []}
    differences = []
    for name, ratio in chosen:
        layer = layers[name]
        start = time.perf_counter()
        kept, kernel = layer.reconstruct(layer.keep_for_ratio(ratio))
        original = keras.ops.convert_to_numpy(clones[name].kernel)
        clones[name].kernel.assign(layer.masked_kernel(kept, kernel))
        fast = evaluate(working)
        clones[name].kernel.assign(original)
        times["sweep"].append(time.perf_counter() - start)

        start = time.perf_counter()
        kept, kernel = layer.reconstruct(layer.keep_for_ratio(ratio))
        slow = evaluate(layer.apply(graph, kept, kernel).to_keras())
        times["naive"].append(time.perf_counter() - start)
        differences.append(abs(fast - slow))
    return len(chosen), len(pairs), times, max(differences)


def run(title, model, evaluate, forward, args):
    candidates = candidate_ratios(args.candidates)
    started = time.perf_counter()
    compressed, stats = mct_logger.compress_model(
        model, evaluate, 0.5, scheme="channel_pruning", cost_metric="mac",
        num_comp_ratio_candidates=args.candidates, forward_pass_callback=forward)
    total = time.perf_counter() - started
    count, pairs, times, difference = naive_vs_sweep(model, evaluate, forward, candidates, args.naive)
    sweep_each, naive_each = np.mean(times["sweep"]), np.mean(times["naive"])
    print(f"\n## {title}\n")
    print("| | before | after |\n|---|---:|---:|")
    print(f"| score | {stats.score_before:.4f} | {stats.score_after:.4f} |")
    print(f"| MACs | {stats.cost_before.macs:,} | {stats.cost_after.macs:,} "
          f"({stats.cost_ratio:.3f} of before; target 0.5) |")
    print(f"| parameters | {stats.cost_before.params:,} | {stats.cost_after.params:,} |")
    print(f"\ncompress_model: {total:.1f} s for {stats.evaluations} evaluations "
          f"({len(candidates)} ratios x {len(stats.layers)} prunable layers)")
    chosen = ", ".join(f"{r['layer']} {r['ratio']:g}" for r in stats.layers if r["ratio"] is not None)
    print(f"chosen ratios: {chosen or 'none'}")
    print(f"kept uncompressed: {', '.join(r['layer'] for r in stats.layers if r['ratio'] is None) or 'none'}")
    print(f"\nper candidate, interleaved on {count} of the {pairs} candidates: sweep "
          f"{sweep_each:.3f} s, naive (built from scratch) {naive_each:.3f} s -> "
          f"{naive_each / sweep_each:.1f}x faster; largest score difference "
          f"{difference:.2e}")
    print(f"a whole sweep the naive way: about {naive_each * pairs:.0f} s "
          f"vs {sweep_each * pairs:.0f} s")
    return compressed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=5,
                        help="num_comp_ratio_candidates (ratios k/N, k = 1..N-1)")
    parser.add_argument("--naive", type=int, default=12,
                        help="candidates timed both ways (interleaved)")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    data = load_digits_split()
    digits = train_digits_cnn(data, epochs=15)
    run("digits CNN (accuracy on 449 test digits)", digits,
        lambda m: accuracy(m, data.x_test, data.y_test),
        lambda m: m.predict(data.x_train[:128], batch_size=64, verbose=0), args)

    keras.utils.set_random_seed(0)
    # logits (no softmax): a random network's 1000 softmax outputs are nearly uniform,
    # so their cosine would hardly move
    mobilenet = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                               classifier_activation=None)
    rng = np.random.default_rng(0)
    x_eval = rng.random((64, 96, 96, 3)).astype("float32")
    x_data = rng.random((64, 96, 96, 3)).astype("float32")
    run("MobileNetV2 alpha 0.35, 96x96, random weights (logits cosine vs the original)",
        mobilenet, cosine_score(mobilenet, x_eval),
        lambda m: m.predict(x_data, batch_size=32, verbose=0), args)


if __name__ == "__main__":
    main()
