"""Transformer benchmark: what mct-logger's W8A8 PTQ quantizes in KerasHub
backbones and in a plain-Keras ViT, what it costs, and how close it stays to
float; beside Keras' own `model.quantize("int8")` (weights only).

Models, built from config with small dimensions and random weights (never a
preset download): KerasHub `BertBackbone`, `GPT2Backbone`, `DistilBertBackbone`
and `LlamaBackbone` (grouped-query attention, 2 key/value heads; untied
reverse embeddings) (2 blocks, hidden 64, 4 heads, feed-forward 128,
vocabulary 2000, 32 tokens)
and a plain-Keras ViT (Conv2D patch embedding, 2 MultiHeadAttention blocks on
32x32x3 images, 16 patches).

Per model, one row:
- coverage: the share of the model's parameters that sit in a quantized kernel
  (ours: the plan's kernels; Keras: the kernels of the layers `quantize("int8")`
  gave a `quantization_mode`);
- PTQ seconds, and their ratio to the `predict` floor: one float `predict` over
  the same calibration samples, timed in the same run just before (A then B);
- cosine of the flattened outputs against float on held-out padded batches
  (token models: rows padded to 4-32 tokens with their `padding_mask`), for
  ours (W8A8) and Keras int8 (W8, float activations), and ours against Keras'.

Run: `PYTHONPATH=. .venv/bin/python benchmarks/transformers.py` (a few minutes on 2 cores).
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

logging.getLogger("mct_logger").setLevel(logging.ERROR)
logging.getLogger("tensorflow").setLevel(logging.ERROR)

VOCAB, SEQ, HIDDEN, HEADS, FFN, BLOCKS = 2000, 32, 64, 4, 128, 2
CALIBRATION, HELD_OUT = 128, 64
L = keras.layers


def token_inputs(n: int, seed: int, segments: bool) -> dict:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, (n, SEQ)).astype("int32")
    mask = np.ones((n, SEQ), "int32")
    for row, length in enumerate(rng.integers(4, SEQ + 1, n)):
        tokens[row, length:] = 0
        mask[row, length:] = 0
    x = {"token_ids": tokens, "padding_mask": mask}
    if segments:
        x["segment_ids"] = np.zeros((n, SEQ), "int32")
    return x


def keras_hub_models():
    import keras_hub

    common = dict(vocabulary_size=VOCAB, num_layers=BLOCKS, num_heads=HEADS,
                  hidden_dim=HIDDEN, intermediate_dim=FFN, max_sequence_length=SEQ)
    yield "KerasHub BertBackbone", keras_hub.models.BertBackbone(**common), True
    yield "KerasHub GPT2Backbone", keras_hub.models.GPT2Backbone(**common), False
    yield "KerasHub DistilBertBackbone", keras_hub.models.DistilBertBackbone(**common), False
    common = {**common, "num_query_heads": HEADS, "num_key_value_heads": HEADS // 2}
    del common["num_heads"], common["max_sequence_length"]
    yield "KerasHub LlamaBackbone", keras_hub.models.LlamaBackbone(**common), False


def vit():
    """A plain-Keras ViT: 8x8 patches by a Conv2D, position embeddings, pre-norm blocks."""
    images = keras.Input((32, 32, 3), name="images")
    x = L.Conv2D(HIDDEN, 8, strides=8, name="patch_embedding")(images)
    x = L.Reshape((16, HIDDEN), name="patches")(x)
    positions = keras.ops.arange(16)[None, :]
    x = x + L.Embedding(16, HIDDEN, name="position_embedding")(positions)
    for b in range(BLOCKS):
        h = L.LayerNormalization(name=f"ln_1_{b}")(x)
        x = x + L.MultiHeadAttention(HEADS, HIDDEN // HEADS, name=f"mha_{b}")(h, h)
        h = L.LayerNormalization(name=f"ln_2_{b}")(x)
        h = L.Dense(FFN, activation="gelu", name=f"mlp_1_{b}")(h)
        x = x + L.Dense(HIDDEN, name=f"mlp_2_{b}")(h)
    x = L.LayerNormalization(name="ln")(x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(images, L.Dense(10, name="head")(x), name="vit")


def flat(outputs) -> np.ndarray:
    if isinstance(outputs, dict):
        outputs = [outputs[k] for k in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return np.concatenate([np.ravel(o) for o in outputs]).astype(np.float64)
    return np.ravel(outputs).astype(np.float64)


def cosine(a, b) -> float:
    a, b = flat(a), flat(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def our_coverage(model, info) -> float:
    quantized = 0
    for name, plan in info.plan.items():
        sizes = info.float_graph.nodes[name].weight_sizes()
        quantized += sum(sizes[k] for k in plan.weights)
    return quantized / model.count_params()


def copy_of(model):
    """An independent copy (Keras' quantize changes the model in place)."""
    if type(model).__name__ in ("Functional", "Model"):
        copy = keras.models.clone_model(model)
    else:
        copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def keras_int8(model):
    """`(quantized copy, coverage)` of Keras' own int8 weight quantization."""
    copy = copy_of(model)
    total = copy.count_params()
    sizes = {}
    for layer in copy._flatten_layers(include_self=False, recursive=True):
        own = [v for v in layer._trainable_variables + layer._non_trainable_variables]
        sizes[id(layer)] = sum(int(np.prod(v.shape)) for v in own
                               if v.path.split("/")[-1] in ("kernel", "embeddings"))
    copy.quantize("int8")
    quantized = sum(sizes.get(id(layer), 0)
                    for layer in copy._flatten_layers(include_self=False, recursive=True)
                    if getattr(layer, "quantization_mode", None))
    return copy, quantized / total


def measure(name, model, calibration, held_out) -> dict:
    model.predict(calibration, verbose=0, batch_size=32)  # traced once: the floor is warm
    start = time.perf_counter()
    model.predict(calibration, verbose=0, batch_size=32)
    floor = time.perf_counter() - start
    start = time.perf_counter()
    model_q, info = mct_logger.keras_post_training_quantization(model, calibration)
    ptq = time.perf_counter() - start
    want = model.predict(held_out, verbose=0)
    ours = model_q.predict(held_out, verbose=0)
    row = {"model": name, "params": model.count_params(), "coverage": our_coverage(model, info),
           "ptq_s": ptq, "floor_s": floor, "cosine": cosine(ours, want)}
    try:
        int8, row["keras_coverage"] = keras_int8(model)
        theirs = int8.predict(held_out, verbose=0)
        row["keras_cosine"], row["ours_vs_keras"] = cosine(theirs, want), cosine(ours, theirs)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        row["keras_error"] = f"{type(exc).__name__}: {exc}"[:80]
    return row


def main() -> None:
    rows = []
    keras.utils.set_random_seed(0)
    for name, model, segments in keras_hub_models():
        rows.append(measure(name, model, token_inputs(CALIBRATION, 0, segments),
                            token_inputs(HELD_OUT, 1, segments)))
        print(rows[-1], flush=True)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(CALIBRATION + HELD_OUT, 32, 32, 3)).astype("float32")
    rows.append(measure("plain-Keras ViT", vit(), images[:CALIBRATION], images[CALIBRATION:]))
    print(rows[-1], flush=True)
    print()
    print("| model | params | ours: coverage | PTQ s (x predict floor) | ours W8A8 cosine "
          "| Keras int8: coverage | Keras int8 cosine | ours vs Keras cosine |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        keras_cells = (f"{r['keras_coverage']:.1%} | {r['keras_cosine']:.5f} | "
                       f"{r['ours_vs_keras']:.5f}" if "keras_coverage" in r
                       else f"failed: {r['keras_error']} | - | -")
        print(f"| {r['model']} | {r['params']:,} | {r['coverage']:.1%} | {r['ptq_s']:.1f} "
              f"(x{r['ptq_s'] / r['floor_s']:.0f}) | {r['cosine']:.5f} | {keras_cells} |")


if __name__ == "__main__":
    main()
