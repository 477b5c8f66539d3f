"""KerasHub backbones, built from config with small dimensions and random weights
(never a preset download): the composite transformer blocks' sublayer kernels,
the token and position embeddings are quantized, padded batches keep their
padding mask, and the quantized model survives `.keras` saving."""

import os

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.quantization.encodings_file import load_encodings
from tests.helpers import padded_token_batches

keras_hub = pytest.importorskip("keras_hub")

VOCAB, SEQ, HIDDEN, N = 1000, 16, 32, 48


def _quantized_parameter_share(model, info) -> float:
    quantized = 0
    for name, plan in info.plan.items():
        sizes = info.float_graph.nodes[name].weight_sizes()
        quantized += sum(sizes[k] for k in plan.weights)
    return quantized / model.count_params()


def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _padded_inputs(segments: bool, seed=0) -> dict:
    return padded_token_batches(VOCAB, SEQ, N, segments, seed)


def _bert():
    keras.utils.set_random_seed(0)
    return keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=HIDDEN,
        intermediate_dim=2 * HIDDEN, max_sequence_length=SEQ)


def _gpt2():
    keras.utils.set_random_seed(0)
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=HIDDEN,
        intermediate_dim=2 * HIDDEN, max_sequence_length=SEQ)


def test_cle_and_bias_correction_skip_the_blocks_with_a_note():
    config = mct_logger.QuantizationConfig(cross_layer_equalization=True,
                                           bias_correction="empirical")
    _, info = mct_logger.keras_post_training_quantization(_bert(), _padded_inputs(True), config)
    skipped = info.stage_results["bias_correction"].skipped
    assert "is not a Conv, DepthwiseConv or Dense layer" in skipped["transformer_layer_0"]
    assert "pooled_dense" in info.stage_results["bias_correction"].corrections


@pytest.mark.parametrize("build,segments", [(_bert, True), (_gpt2, False)], ids=["bert", "gpt2"])
def test_backbone_is_quantized_inside_its_blocks(build, segments, tmp_path):
    model, x = build(), _padded_inputs(segments)
    model_q, info = mct_logger.keras_post_training_quantization(model, x)
    assert _quantized_parameter_share(model, info) >= 0.95
    block = info.plan["transformer_layer_0"]
    # named by their path below the block: "self_attention_layer/query/kernel" (BERT),
    # "self_attention/query/kernel" (GPT-2)
    for kernel in ("query/kernel", "key/kernel", "value/kernel", "attention_output/kernel",
                   "feedforward_intermediate_dense/kernel", "feedforward_output_dense/kernel"):
        assert any(name.endswith(kernel) for name in block.weights), (kernel, block.weights)
    assert block.activation is not None
    # activation quantizers where the block's sublayers return, calibrated
    points = set(block.inner_activations)
    assert any(p.endswith("query") for p in points), points
    assert "feedforward_output_dense" in points
    assert set(info.encodings["transformer_layer_0"].inner_activations) == points
    # the encodings file carries them as <node>/<sublayer> activation encodings
    saved = info.export_encodings(os.path.join(tmp_path, "model.encodings"))
    loaded_encodings = load_encodings(saved, info.float_graph)
    assert set(loaded_encodings["transformer_layer_0"].inner_activations) == points
    assert list(info.plan["position_embedding"].weights) == ["embeddings"]
    want = model.predict(x, verbose=0)
    got = model_q.predict(x, verbose=0)
    want = want if isinstance(want, dict) else {"out": want}
    got = got if isinstance(got, dict) else {"out": got}
    for key in want:
        assert _cosine(got[key], want[key]) >= 0.99, key
    path = os.path.join(tmp_path, "q.keras")
    model_q.save(path)
    loaded = keras.models.load_model(path)
    reloaded = loaded.predict(x, verbose=0)
    reloaded = reloaded if isinstance(reloaded, dict) else {"out": reloaded}
    for key in got:
        np.testing.assert_array_equal(reloaded[key], got[key])
    mct_logger.set_quantizers_enabled(model_q, weights=False, activations=False)
    off = model_q.predict(x, verbose=0)
    off = off if isinstance(off, dict) else {"out": off}
    for key in want:
        assert np.max(np.abs(off[key] - want[key])) <= 1e-5, key


def _llama():
    keras.utils.set_random_seed(0)
    return keras_hub.models.LlamaBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=HIDDEN, intermediate_dim=2 * HIDDEN)


def _gemma():
    keras.utils.set_random_seed(0)
    return keras_hub.models.GemmaBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=HIDDEN, intermediate_dim=2 * HIDDEN, head_dim=16)


@pytest.mark.parametrize("build", [_llama, _gemma], ids=["llama", "gemma"])
def test_decoder_blocks_with_grouped_attention(build):
    """Llama (untied reverse embeddings, grouped-query attention, gated feed-forward)
    and Gemma (an embedding scaled by a keras.ops product, RMS norms) decoder blocks."""
    model, x = build(), _padded_inputs(False)
    model_q, info = mct_logger.keras_post_training_quantization(model, x)
    assert _quantized_parameter_share(model, info) >= 0.95
    want = model.predict(x, verbose=0)
    assert _cosine(model_q.predict(x, verbose=0), want) >= 0.99
    mct_logger.set_quantizers_enabled(model_q, weights=False, activations=False)
    assert np.max(np.abs(model_q.predict(x, verbose=0) - want)) <= 1e-5
