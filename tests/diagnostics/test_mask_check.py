"""Keras masks reach every quantized layer as they reach the float one, and a lost
mask is a RebuildMismatchError naming the node (`quantization.mask_check`)."""

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.graph.ir import read_model
from mct_logger.quantization.layers import ActivationQuantizer
from mct_logger.diagnostics.mask_check import mask_pad_values, padded_batch
from mct_logger.diagnostics.rebuild_check import RebuildMismatchError

L = keras.layers
SEQ = 12


def _padded_tokens(n, vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab, (n, SEQ)).astype("int32")
    for row, length in enumerate(rng.integers(2, SEQ + 1, n)):
        tokens[row, length:] = 0
    return tokens


def _attention_model():
    """Embedding(mask_zero=True) -> MultiHeadAttention(x, x): the mask is implicit."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((SEQ,), dtype="int32", name="tokens")
    x = L.Embedding(50, 8, mask_zero=True, name="embedding")(tokens)
    x = L.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, L.Dense(3, name="head")(x))


def _masking_lstm_model():
    keras.utils.set_random_seed(1)
    x_in = keras.Input((SEQ, 4), name="frames")
    x = L.Masking(mask_value=0.0, name="masking")(x_in)
    x = L.LSTM(6, name="lstm")(x)
    return keras.Model(x_in, L.Dense(2, name="head")(x))


def _padded_frames(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, SEQ, 4)).astype("float32")
    for row, length in enumerate(rng.integers(2, SEQ + 1, n)):
        x[row, length:] = 0.0
    return x


def _quantizers_off_error(model, x):
    model_q, _ = mct_logger.keras_post_training_quantization(model, x)
    mct_logger.set_quantizers_enabled(model_q, weights=False, activations=False)
    return float(np.max(np.abs(model_q.predict(x, verbose=0) - model.predict(x, verbose=0))))


def test_attention_keeps_the_implicit_padding_mask():
    model, x = _attention_model(), _padded_tokens(64)
    assert _quantizers_off_error(model, x) <= 1e-5


def test_masking_then_lstm_keeps_the_mask():
    model, x = _masking_lstm_model(), _padded_frames(64)
    assert _quantizers_off_error(model, x) <= 1e-5


def test_padded_batch_pads_inputs_that_feed_a_mask():
    graph = read_model(_attention_model())
    assert mask_pad_values(graph) == {"tokens": 0}
    batch = padded_batch(graph, [np.ones((4, SEQ), "int32")])[0]
    assert (batch[:, -1] == 0).all() and (batch[:, 0] == 1).all()
    plain = keras.Sequential([keras.Input((SEQ,)), L.Dense(2)])
    assert padded_batch(read_model(plain), [np.ones((4, SEQ), "float32")]) is None


# Keras warns too, as expected here, that the patched quantizer destroys the mask
@pytest.mark.filterwarnings("ignore:.*does not support masking:UserWarning")
def test_a_lost_mask_is_a_rebuild_mismatch_naming_the_node(monkeypatch):
    # the quantizer layers before this fix: an activation quantizer drops the mask
    monkeypatch.setattr(ActivationQuantizer, "supports_masking",
                        property(lambda self: False, lambda self, value: None))
    # calibration data without any padding: the check pads rows itself
    x = np.random.default_rng(2).integers(1, 50, (16, SEQ)).astype("int32")
    with pytest.raises(RebuildMismatchError, match="padded") as info:
        mct_logger.keras_post_training_quantization(_attention_model(), x)
    assert info.value.node == "mha"
