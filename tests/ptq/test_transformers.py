"""Transformer and sequence layers: EinsumDense, MultiHeadAttention's projections,
Embedding, and layers inside TimeDistributed / Bidirectional get per-channel weight
quantizers and output quantizers, survive `.keras` saving, and are skipped with a
note by CLE and bias correction."""

import os

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.quantization.quantsim import quantizers

L = keras.layers
VOCAB, SEQ, DIM, HEADS = 200, 16, 32, 4


def _encoder(blocks=2):
    """Token + position Embedding, then blocks of MultiHeadAttention + LayerNormalization
    + Dense FFN, mean-pooled into a 4-way classifier."""
    tokens = keras.Input((SEQ,), dtype="int32", name="tokens")
    positions = keras.ops.cumsum(keras.ops.ones_like(tokens), axis=1) - 1
    x = L.Embedding(VOCAB, DIM, name="token_embedding")(tokens)
    x = x + L.Embedding(SEQ, DIM, name="position_embedding")(positions)
    for b in range(blocks):
        attention = L.MultiHeadAttention(HEADS, DIM // HEADS, name=f"attention_{b}")(x, x)
        x = L.LayerNormalization(name=f"attention_norm_{b}")(x + attention)
        f = L.Dense(2 * DIM, activation="relu", name=f"ffn_in_{b}")(x)
        f = L.Dense(DIM, name=f"ffn_out_{b}")(f)
        x = L.LayerNormalization(name=f"ffn_norm_{b}")(x + f)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, L.Dense(4, name="classifier")(x), name="encoder")


def _token_data(n, seed=0):
    """Sequences labelled by which quarter of the vocabulary their first token is in."""
    x = np.random.default_rng(seed).integers(0, VOCAB, (n, SEQ)).astype("int32")
    return x, x[:, 0] * 4 // VOCAB


@pytest.fixture(scope="module")
def trained_encoder():
    keras.utils.set_random_seed(0)
    model = _encoder()
    x, y = _token_data(512)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    return model


def _quantized_parameter_share(model, info) -> float:
    quantized = 0
    for name, plan in info.plan.items():
        node = info.float_graph.nodes[name]
        sizes = node.weight_sizes()
        quantized += sum(sizes[k] for k in plan.weights)
    return quantized / model.count_params()


def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_encoder_is_mostly_quantized_at_w8a8_and_stays_close_to_float(trained_encoder):
    x, _ = _token_data(256, seed=1)
    model_q, info = mct_logger.keras_post_training_quantization(trained_encoder, x)
    share = _quantized_parameter_share(trained_encoder, info)
    assert share >= 0.90, share
    plan = info.plan
    assert set(plan["attention_0"].weights) == {
        "query/kernel", "key/kernel", "value/kernel", "attention_output/kernel"}
    assert list(plan["token_embedding"].weights) == ["embeddings"]
    assert list(plan["position_embedding"].weights) == ["embeddings"]
    for name in ("token_embedding", "attention_0", "attention_norm_0", "ffn_out_1"):
        assert plan[name].activation is not None, name
    # per-channel: one grid per head and key dimension, per token row
    query = info.encodings["attention_0"].weights["query/kernel"]
    assert np.shape(query.scale) == (HEADS * (DIM // HEADS),)
    assert np.shape(info.encodings["token_embedding"].weights["embeddings"].scale) == (VOCAB,)
    assert np.shape(info.encodings["attention_0"].weights["attention_output/kernel"].scale) == (DIM,)
    cosine = _cosine(trained_encoder.predict(x, verbose=0), model_q.predict(x, verbose=0))
    assert cosine >= 0.99, cosine
    # the quantizers do something: weights off changes the output
    found = quantizers(model_q)
    assert {"attention_0", "token_embedding", "ffn_in_0"} <= set(found)


def test_encoder_layers_are_listed_in_the_logs(trained_encoder, tmp_path):
    x, _ = _token_data(64, seed=2)
    mct_logger.set_log_folder(str(tmp_path))
    try:
        _, info = mct_logger.keras_post_training_quantization(trained_encoder, x)
    finally:
        mct_logger.set_log_folder(None)
    similarity = info.stage_results["similarity_analysis"]
    assert "attention_0" in similarity.nodes and "token_embedding" in similarity.nodes
    kernels = {(r["layer"], r["kernel"]) for r in similarity.weights}
    assert ("attention_1", "value/kernel") in kernels
    assert ("position_embedding", "embeddings") in kernels
    ranges = info.stage_results["cross_layer_equalization"].to_tables()
    assert "attention_0" in str(ranges) and "query/kernel" in str(ranges)
    assert os.listdir(tmp_path)


def _sequence_model():
    """EinsumDense, MultiHeadAttention, Embedding, TimeDistributed(Conv2D) and
    Bidirectional(LSTM) with a Dense head, on two inputs."""
    tokens = keras.Input((SEQ,), dtype="int32", name="tokens")
    frames = keras.Input((4, 8, 8, 3), name="frames")
    x = L.Embedding(VOCAB, DIM, name="embedding")(tokens)
    x = L.MultiHeadAttention(2, 8, name="attention")(x, x)
    x = L.EinsumDense("abc,cd->abd", output_shape=(SEQ, 24), bias_axes="d", name="einsum")(x)
    x = L.Bidirectional(L.LSTM(12, name="lstm"), name="bilstm")(x)
    v = L.TimeDistributed(L.Conv2D(6, 3, activation="relu"), name="frame_conv")(frames)
    v = L.GlobalAveragePooling3D()(v)
    x = L.Concatenate()([x, v])
    return keras.Model([tokens, frames], L.Dense(3, name="head")(x), name="sequence_model")


def _sequence_data(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, VOCAB, (n, SEQ)).astype("int32"),
            rng.uniform(-1, 1, (n, 4, 8, 8, 3)).astype("float32")]


def test_quantized_sequence_layers_save_and_load_with_identical_outputs(tmp_path):
    keras.utils.set_random_seed(0)
    model = _sequence_model()
    data = _sequence_data(64)
    model_q, info = mct_logger.keras_post_training_quantization(model, data)
    assert set(info.plan["bilstm"].weights) == {
        "forward_lstm/lstm_cell/kernel", "forward_lstm/lstm_cell/recurrent_kernel",
        "backward_lstm/lstm_cell/kernel", "backward_lstm/lstm_cell/recurrent_kernel"}
    assert list(info.plan["frame_conv"].weights) == ["kernel"]
    assert list(info.plan["einsum"].weights) == ["kernel"]
    assert np.shape(info.encodings["bilstm"].weights["forward_lstm/lstm_cell/kernel"].scale) == (48,)
    for name in ("embedding", "attention", "einsum", "bilstm", "frame_conv", "head"):
        assert info.plan[name].weights and info.plan[name].activation is not None, name
    y = model_q.predict(data, verbose=0)
    assert _cosine(y, model.predict(data, verbose=0)) > 0.98
    mct_logger.set_quantizers_enabled(model_q, weights=False, activations=False)
    assert np.allclose(model_q.predict(data, verbose=0), model.predict(data, verbose=0), atol=1e-5)
    float_y = model.predict(data, verbose=0)
    for name in ("embedding", "attention", "einsum", "bilstm", "frame_conv"):  # each one acts
        mct_logger.set_quantizers_enabled(model_q, weights=True, nodes=[name])
        assert not np.allclose(model_q.predict(data, verbose=0), float_y, atol=1e-6), name
        mct_logger.set_quantizers_enabled(model_q, weights=False, nodes=[name])
    mct_logger.set_quantizers_enabled(model_q, weights=True, activations=True)
    path = str(tmp_path / "sequence_q.keras")
    model_q.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), y)
    assert set(quantizers(loaded)) == set(quantizers(model_q))


def test_cle_and_bias_correction_skip_sequence_layers_with_a_note():
    keras.utils.set_random_seed(0)
    model = _sequence_model()
    data = _sequence_data(32)
    config = mct_logger.QuantizationConfig(cross_layer_equalization=True,
                                           bias_correction="empirical")
    _, info = mct_logger.keras_post_training_quantization(model, data, config)
    skipped = info.stage_results["bias_correction"].skipped
    for name in ("embedding", "attention", "einsum", "bilstm", "frame_conv"):
        assert "is not a Conv, DepthwiseConv or Dense layer" in skipped[name], name
    assert "head" in info.stage_results["bias_correction"].corrections


def test_quant_analyzer_lists_encoder_layers_like_any_other(trained_encoder, tmp_path):
    x, y = _token_data(64, seed=3)

    def calibrate(model):
        model.predict(x, batch_size=32, verbose=0)

    def evaluate(model):
        return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))

    analyzer = mct_logger.QuantAnalyzer(trained_encoder, calibrate, evaluate)
    analyzer.enable_per_layer_mse_loss(x, num_batches=1)
    result = analyzer.analyze(results_dir=str(tmp_path / "qa"))
    for name in ("token_embedding", "attention_0", "ffn_in_1"):
        assert name in result.per_layer_quant_enabled, name
        assert name in result.per_layer_sqnr, name
    assert "attention_1" in str(result.weight_sqnr) and "key/kernel" in str(result.weight_sqnr)
    assert "position_embedding" in str(result.min_max_ranges["weights"])
