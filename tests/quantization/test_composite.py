"""A user's own composite layer (weights in tracked Dense sublayers): weight
quantizers on its sublayers' kernels, activation quantizers where they return,
the layer's own call unchanged; switched, saved and reloaded like any other."""

import os

import keras
import numpy as np

import mct_logger
from mct_logger.quantization.quantsim import quantizers, read_encodings


@keras.saving.register_keras_serializable(package="mct_logger_tests")
class Block(keras.layers.Layer):
    """x + out(gelu(inner(norm(x)))): a residual feed-forward block."""

    def __init__(self, width=16, hidden=32, **kwargs):
        super().__init__(**kwargs)
        self.width, self.hidden = width, hidden
        self.norm = keras.layers.LayerNormalization(name="norm")
        self.inner = keras.layers.Dense(hidden, name="inner")
        self.out = keras.layers.Dense(width, name="out")

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.inner.build(input_shape)
        self.out.build((*input_shape[:-1], self.hidden))

    def call(self, x):
        return x + self.out(keras.activations.gelu(self.inner(self.norm(x))))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "hidden": self.hidden}


def _model():
    keras.utils.set_random_seed(0)
    x_in = keras.Input((8, 16))
    x = Block(name="block_0")(x_in)
    x = Block(name="block_1")(x)
    return keras.Model(x_in, keras.layers.Dense(4, name="head")(keras.layers.Flatten()(x)))


def test_user_composite_layer_is_quantized_inside(tmp_path):
    model = _model()
    x = np.random.default_rng(0).normal(size=(64, 8, 16)).astype("float32")
    model_q, info = mct_logger.keras_post_training_quantization(model, x)
    plan = info.plan["block_0"]
    assert set(plan.weights) == {"inner/kernel", "out/kernel"}
    assert set(plan.inner_activations) == {"inner", "out"}
    inner = info.encodings["block_0"].inner_activations["inner"]
    assert float(inner.max) > 0.5  # calibrated on the sublayer's real outputs
    want = model.predict(x, verbose=0)
    got = model_q.predict(x, verbose=0)
    assert 0 < np.max(np.abs(got - want)) < 0.1 * np.max(np.abs(want))
    # the sublayer-output quantizers switch with the node's activations
    mct_logger.set_quantizers_enabled(model_q, weights=False, activations=True)
    partly = model_q.predict(x, verbose=0)
    mct_logger.set_quantizers_enabled(model_q, activations=False)
    np.testing.assert_allclose(model_q.predict(x, verbose=0), want, atol=1e-5)
    assert np.max(np.abs(partly - want)) > 0
    mct_logger.set_quantizers_enabled(model_q, weights=True, activations=True)
    # .keras round trip: same outputs, same grids
    path = os.path.join(tmp_path, "q.keras")
    model_q.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), got)
    assert set(quantizers(loaded)) == set(quantizers(model_q))
    assert read_encodings(loaded)["block_1"].inner_activations["out"].as_dict() == \
        read_encodings(model_q)["block_1"].inner_activations["out"].as_dict()
    # the encodings file gives the same model back without calibration
    saved = info.export_encodings(os.path.join(tmp_path, "block.encodings"))
    again, _ = mct_logger.keras_post_training_quantization(
        model, None, mct_logger.QuantizationConfig(encodings_file=saved))
    np.testing.assert_allclose(again.predict(x, verbose=0), got, atol=1e-6)
