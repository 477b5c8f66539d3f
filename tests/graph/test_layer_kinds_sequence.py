"""GroupQueryAttention, ConvLSTM and value-moving operations (`x[:, 0]`) in the
layer taxonomy, and through PTQ."""

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.graph import layer_kinds
from mct_logger.graph.ir import read_model

L = keras.layers
SEQ, VOCAB = 16, 200


def _share(model, info) -> float:
    quantized = 0
    for name, plan in info.plan.items():
        sizes = info.float_graph.nodes[name].weight_sizes()
        quantized += sum(sizes[k] for k in plan.weights)
    return quantized / model.count_params()


def _gqa_decoder():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((SEQ,), dtype="int32", name="tokens")
    x = L.Embedding(VOCAB, 32, mask_zero=True, name="embedding")(tokens)
    a = L.GroupQueryAttention(head_dim=8, num_query_heads=4, num_key_value_heads=2,
                              name="gqa")(x, x, use_causal_mask=True)
    x = L.LayerNormalization(name="norm")(x + a)
    x = L.Dense(64, activation="gelu", name="ffn")(x)
    return keras.Model(tokens, L.Dense(VOCAB, name="logits")(x))


# Keras's GroupedQueryAttention hands its masked inputs to its EinsumDense
# projections, and Keras warns that those drop the mask (its own layers, float too)
@pytest.mark.filterwarnings("ignore:.*does not support masking:UserWarning")
def test_group_query_attention_decoder_is_quantized_and_exact_with_quantizers_off():
    model = _gqa_decoder()
    rng = np.random.default_rng(0)
    x = rng.integers(1, VOCAB, (32, SEQ)).astype("int32")
    for row, length in enumerate(rng.integers(3, SEQ + 1, 32)):
        x[row, length:] = 0
    model_q, info = mct_logger.keras_post_training_quantization(model, x)
    assert set(info.plan["gqa"].weights) == {
        "query/kernel", "key/kernel", "value/kernel", "attention_output/kernel"}
    assert _share(model, info) >= 0.95
    mct_logger.set_quantizers_enabled(model_q, weights=False, activations=False)
    off = model_q.predict(x, verbose=0)
    assert np.max(np.abs(off - model.predict(x, verbose=0))) <= 1e-5


def test_conv_lstm_2d_kernels_are_quantized_per_output_channel():
    keras.utils.set_random_seed(0)
    frames = keras.Input((4, 8, 8, 3))
    y = L.ConvLSTM2D(16, 3, padding="same", name="conv_lstm")(frames)
    y = L.GlobalAveragePooling2D()(y)
    model = keras.Model(frames, L.Dense(2)(y))
    x = np.random.default_rng(0).normal(size=(16, 4, 8, 8, 3)).astype("float32")
    _, info = mct_logger.keras_post_training_quantization(model, x)
    weights = info.plan["conv_lstm"].weights
    assert set(weights) == {"kernel", "recurrent_kernel"}
    assert weights["kernel"].num_channels == 4 * 16  # the four gates' filters
    assert _share(model, info) >= 0.95


def test_slicing_passes_values_through():
    x_in = keras.Input((SEQ, 8))
    first = x_in[:, 0, :]
    model = keras.Model(x_in, L.Dense(2)(first))
    graph = read_model(model)
    ops = [n for n in graph if type(n.layer).__name__ == "GetItem"]
    assert ops and layer_kinds.kind(ops[0].layer) == "passthrough"


class _DirectWeights(keras.layers.Layer):
    """A layer whose kernel is made with add_weight, no sublayer: unreachable."""

    def build(self, input_shape):
        self.table = self.add_weight(shape=(input_shape[-1], 4), name="table")

    def call(self, x):
        return keras.ops.matmul(x, self.table)


def test_weights_outside_known_sublayers_stay_float_with_the_reason():
    x_in = keras.Input((8,))
    model = keras.Model(x_in, L.Dense(2)(_DirectWeights(name="direct")(x_in)))
    x = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
    _, info = mct_logger.keras_post_training_quantization(model, x)
    assert not info.plan["direct"].weights
    assert "held by sublayers the engine knows" in info.plan["direct"].note
