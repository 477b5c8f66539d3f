"""The rebuilt float graph is the user's model: state outside the weights survives,
and a layer whose state does not is caught before any stage, by name."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mct_logger
from mct_logger.graph.ir import read_model
from mct_logger.diagnostics.rebuild_check import RebuildMismatchError, check_rebuilt_graph

L = keras.layers
WORDS = np.array(["red", "green", "blue", "cyan", "pink"], dtype=object)


def _preprocessing_model(kind, rng):
    """A Functional model with one stateful Keras preprocessing layer, and its data."""
    if kind == "Normalization":  # adapted far from mean 0 / variance 1
        x = (rng.random((48, 4)) * 10 + 5).astype("float32")
        layer = L.Normalization()
        layer.adapt(x)
        inputs = keras.Input((4,))
        return keras.Model(inputs, L.Dense(3)(layer(inputs))), x
    if kind == "Discretization":
        x = rng.random((48, 4)).astype("float32")
        layer = L.Discretization(num_bins=4)
        layer.adapt(x)
        inputs = keras.Input((4,))
        hot = L.CategoryEncoding(4, output_mode="multi_hot")(layer(inputs))
        return keras.Model(inputs, L.Dense(3)(hot)), x
    if kind == "IntegerLookup":
        x = rng.integers(0, 20, (48, 4))
        layer = L.IntegerLookup()
        layer.adapt(x)
        inputs = keras.Input((4,), dtype="int64")
        h = L.Flatten()(L.Embedding(32, 3)(layer(inputs)))
        return keras.Model(inputs, L.Dense(3)(h)), x
    if kind == "StringLookup":
        x = rng.choice(WORDS, (48, 4))
        layer = L.StringLookup()
        layer.adapt(x)
        inputs = keras.Input((4,), dtype="string")
        h = L.Flatten()(L.Embedding(8, 3)(layer(inputs)))
        return keras.Model(inputs, L.Dense(3)(h)), x
    if kind == "TextVectorization":
        x = np.array([[" ".join(rng.choice(WORDS, 3))] for _ in range(48)], dtype=object)
        layer = L.TextVectorization(output_sequence_length=3)
        layer.adapt(x)
        inputs = keras.Input((1,), dtype="string")
        h = L.GlobalAveragePooling1D()(L.Embedding(8, 3)(layer(inputs)))
        return keras.Model(inputs, L.Dense(3)(h)), x
    if kind == "Rescaling":
        x = (rng.random((48, 4)) * 255).astype("float32")
        inputs = keras.Input((4,))
        return keras.Model(inputs, L.Dense(3)(L.Rescaling(1 / 127.5, offset=-1)(inputs))), x
    if kind == "CategoryEncoding":
        x = rng.integers(0, 6, (48, 4))
        inputs = keras.Input((4,), dtype="int64")
        return keras.Model(inputs, L.Dense(3)(L.CategoryEncoding(6, output_mode="count")(inputs))), x
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "Normalization", "Discretization", "IntegerLookup", "StringLookup", "TextVectorization",
    "Rescaling", "CategoryEncoding",
])
def test_stateful_preprocessing_layer_with_quantizers_off_equals_the_float_model(kind):
    keras.utils.set_random_seed(0)
    model, x = _preprocessing_model(kind, np.random.default_rng(0))
    model_q, _ = mct_logger.keras_post_training_quantization(model, x)
    mct_logger.set_quantizers_enabled(model_q, activations=False, weights=False)
    feed = tf.constant(x)  # Keras' predict does not take NumPy text arrays
    expected = keras.ops.convert_to_numpy(model(feed))
    got = keras.ops.convert_to_numpy(model_q(feed))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_adapted_normalization_inside_a_nested_backbone():
    """EfficientNet-style: the adapted Normalization sits in a nested model."""
    x = (np.random.default_rng(1).random((32, 6, 6, 3)) * 50 + 100).astype("float32")
    norm = L.Normalization()
    norm.adapt(x)
    inner_in = keras.Input((6, 6, 3))
    backbone = keras.Model(inner_in, L.Conv2D(4, 3)(norm(inner_in)), name="backbone")
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(backbone(inputs))))
    model_q, info = mct_logger.keras_post_training_quantization(model, x)
    mct_logger.set_quantizers_enabled(model_q, activations=False, weights=False)
    np.testing.assert_allclose(model_q.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-4)
    float_model = info.float_graph.to_keras()
    np.testing.assert_allclose(float_model.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-4)


class _HiddenShift(L.Layer):
    """A custom layer whose state (`shift`) is set after construction and is in
    neither its config nor its variables: a clone silently loses it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.shift = 0.0

    def call(self, x):
        return x + self.shift


def _hidden_state_model():
    inputs = keras.Input((5,), name="features")
    h = L.Dense(4, name="fc1")(inputs)
    shift = _HiddenShift(name="calibrated_shift")
    shift.shift = 3.0
    return keras.Model(inputs, L.Dense(2, name="fc2")(shift(h)))


def test_state_lost_in_the_rebuild_names_the_first_diverging_node_before_any_stage():
    model = _hidden_state_model()
    x = np.random.default_rng(2).random((16, 5)).astype("float32")
    stages = []
    listener = lambda stage, graph, result: stages.append(stage)  # noqa: E731
    mct_logger.add_stage_listener(listener)
    try:
        with pytest.raises(RebuildMismatchError) as error:
            mct_logger.keras_post_training_quantization(model, x)
    finally:
        mct_logger.remove_stage_listener(listener)
    assert stages == []
    message = str(error.value)
    assert "'calibrated_shift' (_HiddenShift)" in message  # the culprit, not fc2 after it
    assert "keep_float=True" in message and "first calibration batch" in message


def test_keep_float_override_uses_the_users_layer_and_passes_the_check():
    model = _hidden_state_model()
    x = np.random.default_rng(2).random((16, 5)).astype("float32")
    config = mct_logger.QuantizationConfig(
        overrides={"calibrated_shift": mct_logger.LayerOverride(keep_float=True)})
    model_q, _ = mct_logger.keras_post_training_quantization(model, x, config)
    mct_logger.set_quantizers_enabled(model_q, activations=False, weights=False)
    np.testing.assert_allclose(model_q.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_kept_float_layer_that_clones_faithfully_is_not_shared_with_the_users_model():
    inputs = keras.Input((5,))
    h = L.Dense(4, name="kept")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="fc2")(h))
    x = np.random.default_rng(6).random((16, 5)).astype("float32")
    config = mct_logger.QuantizationConfig(overrides={"kept": mct_logger.LayerOverride(keep_float=True)})
    model_q, _ = mct_logger.keras_post_training_quantization(model, x, config)
    assert model.get_layer("kept") not in model_q.layers
    before = model.get_layer("kept").get_weights()[0].copy()
    for layer in model_q.layers:
        for w in layer.trainable_weights:
            w.assign(w * 0.5)
    np.testing.assert_array_equal(model.get_layer("kept").get_weights()[0], before)


def test_check_passes_on_a_faithful_rebuild_and_returns_the_error():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, L.Dense(2)(L.BatchNormalization()(inputs)))
    x = np.random.default_rng(3).random((8, 3)).astype("float32")
    assert check_rebuilt_graph(model, read_model(model), [x]) <= 1e-5


class _ScaleWithBrokenSaving(L.Layer):
    """A custom layer with a weight whose own saving code fails."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale

    def save_own_variables(self, store):
        raise RuntimeError("saving is not implemented")


def test_layer_whose_saving_code_fails_gets_its_weights_and_a_warning(caplog):
    inputs = keras.Input((3,))
    scale = _ScaleWithBrokenSaving(name="broken_saving")
    model = keras.Model(inputs, L.Dense(2)(scale(inputs)))
    scale.scale.assign(np.array([2.0, -1.0, 0.5], "float32"))
    x = np.random.default_rng(4).random((16, 3)).astype("float32")
    with caplog.at_level("WARNING", logger="mct_logger"):
        model_q, _ = mct_logger.keras_post_training_quantization(model, x)
    assert any("'broken_saving'" in r.getMessage() and "weights only" in r.getMessage()
               for r in caplog.records)
    mct_logger.set_quantizers_enabled(model_q, activations=False, weights=False)
    np.testing.assert_allclose(model_q.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_quant_analyzer_refuses_a_rebuild_that_loses_state(tmp_path):
    model = _hidden_state_model()
    x = np.random.default_rng(5).random((16, 5)).astype("float32")
    analyzer = mct_logger.QuantAnalyzer(model, lambda m: m.predict(x, verbose=0), lambda m: 0.0)
    with pytest.raises(RebuildMismatchError, match="'calibrated_shift'"):
        analyzer.analyze(results_dir=str(tmp_path / "results"))


class _FunctionalWithOwnCall(keras.Model):
    """A Functional model whose `call` adds to what its graph computes."""

    def call(self, inputs, training=False):
        return super().call(inputs, training=training) + 1.0


def test_only_keras_own_layers_in_plain_models_skip_the_numerical_check():
    from mct_logger.diagnostics.rebuild_check import rebuilt_exactly

    inputs = keras.Input((8, 8, 3))
    x = L.BatchNormalization()(L.Conv2D(4, 3)(inputs))
    plain = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(L.ReLU()(x))))
    assert rebuilt_exactly(plain, read_model(plain))
    nested = keras.Sequential([keras.Input((8, 8, 3)), plain, L.Softmax()])
    assert rebuilt_exactly(nested, read_model(nested))
    # a custom layer, even a subclass of a Keras layer, needs the data
    hidden = _hidden_state_model()
    assert not rebuilt_exactly(hidden, read_model(hidden))

    class MyDense(L.Dense):
        pass

    inputs = keras.Input((5,))
    custom = keras.Model(inputs, MyDense(2)(inputs))
    assert not rebuilt_exactly(custom, read_model(custom))


def test_a_functional_model_with_its_own_call_is_checked_on_data():
    inputs = keras.Input((5,), name="features")
    model = _FunctionalWithOwnCall(inputs, L.Dense(2, name="fc")(inputs))
    x = np.random.default_rng(7).random((8, 5)).astype("float32")
    with pytest.raises(RebuildMismatchError):
        check_rebuilt_graph(model, read_model(model), [x])


def test_models_sharing_a_clone_cache_share_the_clone_of_each_prototype():
    from mct_logger.graph.clone import REUSE_LAYER, CloneCache

    inputs = keras.Input((5,))
    model = keras.Model(inputs, L.Dense(2, name="fc2")(L.Dense(4, name="fc1")(inputs)))
    graph = read_model(model)
    clones = CloneCache()
    first, second = graph.to_keras(clones=clones), graph.to_keras(clones=clones)
    assert first.get_layer("fc1") is second.get_layer("fc1")
    assert first.get_layer("fc1") is not model.get_layer("fc1")
    assert graph.to_keras().get_layer("fc1") is not first.get_layer("fc1")  # no cache: fresh
    graph.nodes["fc1"].info[REUSE_LAYER] = True  # the user's own layer, never a cached clone
    assert graph.to_keras(clones=clones).get_layer("fc1") is model.get_layer("fc1")


def test_clones_and_folded_layers_keep_their_own_initializers_in_their_config():
    """Their variables are built as zeros (then assigned): the values and the
    configs are the user's, not zeros."""
    from mct_logger.techniques.batch_norm_folding import fold_batch_norms

    keras.utils.set_random_seed(4)
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, kernel_initializer="he_normal", use_bias=False, name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, L.Dense(2, bias_initializer="ones", name="fc")(x))
    graph = read_model(model)
    clone = graph.to_keras().get_layer("fc")
    assert clone.get_config() == model.get_layer("fc").get_config()
    np.testing.assert_array_equal(clone.kernel.numpy(), model.get_layer("fc").kernel.numpy())
    np.testing.assert_array_equal(clone.bias.numpy(), np.ones(2))
    folded = fold_batch_norms(graph)[0].nodes["conv"].layer
    assert folded.get_config()["kernel_initializer"]["class_name"] == "HeNormal"
    assert np.all(folded.kernel.numpy() != 0)


@pytest.mark.parametrize("make", [
    lambda: L.Conv2D(4, 3), lambda: L.DepthwiseConv2D(3, depth_multiplier=2),
    lambda: L.SeparableConv2D(4, 3), lambda: L.Conv2DTranspose(4, 3), lambda: L.Dense(4),
], ids=["conv", "depthwise", "separable", "transpose", "dense"])
def test_a_linear_layer_built_from_given_values_starts_at_them(make):
    from mct_logger.graph.ir import variable_name
    from mct_logger.graph.clone import preset_initializers

    shape = (None, 4) if isinstance(make(), L.Dense) else (None, 6, 6, 3)
    reference = make()
    reference.build(shape)
    values = {variable_name(v): v.numpy() + 1.0 for v in reference.weights}
    layer = make()
    with preset_initializers(layer, values) as started:
        layer.build(shape)
    assert started == set(values)  # every weight started at its value: none left to assign
    for v in layer.weights:
        np.testing.assert_array_equal(v.numpy(), values[variable_name(v)])
    wrong = make()
    with pytest.raises(ValueError, match="has shape"):
        with preset_initializers(wrong, {k: v[..., :1] for k, v in values.items()}):
            wrong.build(shape)
