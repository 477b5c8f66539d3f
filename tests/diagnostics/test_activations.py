"""Paired activations: float reference, accumulated and isolated outputs in one pass."""

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.diagnostics.activations import PairedActivations
from mct_logger.diagnostics.metrics import cosine_similarity, mse, sqnr_db
from mct_logger.quantization import set_quantizers_enabled


@pytest.fixture(scope="module")
def quantized():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 3), name="x")
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    b = keras.layers.Conv2D(8, 1, name="conv2")(a)
    b = keras.layers.BatchNormalization(name="bn")(b)
    b = keras.layers.ReLU(name="relu2")(b)
    c = keras.layers.Add(name="add")([a, b])
    c = keras.layers.GlobalAveragePooling2D(name="gap")(c)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(c))
    x = np.random.default_rng(0).normal(size=(48, 8, 8, 3)).astype("float32")
    config = mct_logger.QuantizationConfig(weight_bits=4, activation_bits=4)
    model_q, info = mct_logger.keras_post_training_quantization(model, x, config)
    return model, model_q, info, [[x[:24]], [x[24:]]]


def test_float_path_is_the_folded_float_model_and_accumulated_is_the_quantized_model(quantized):
    model, model_q, info, batches = quantized
    paired = PairedActivations(info.float_graph, info.plan, info.encodings)
    pairs = paired.run(batches[0])
    x = batches[0][0]
    np.testing.assert_allclose(pairs["head"].float, model.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_allclose(pairs["head"].accumulated, model_q.predict(x, verbose=0), atol=1e-5)
    probe = keras.Model(model.inputs, model.get_layer("relu2").output)
    np.testing.assert_allclose(pairs["relu2"].float, probe.predict(x, verbose=0), atol=1e-5)


def test_all_quantizers_off_pairs_equal_the_float_outputs(quantized):
    model, _, info, batches = quantized
    paired = PairedActivations(info.float_graph, info.plan, info.encodings)
    set_quantizers_enabled(paired.model, weights=False, activations=False)
    for node, pair in paired.run(batches[1]).items():
        np.testing.assert_allclose(pair.accumulated, pair.float, atol=1e-6, err_msg=node)
        np.testing.assert_allclose(pair.isolated, pair.float, atol=1e-6, err_msg=node)
    errors = paired.errors(batches)
    assert all(e.mse_accumulated < 1e-12 and e.sqnr_isolated_db > 100 for e in errors.values())


def test_isolated_error_does_not_depend_on_other_nodes_quantizers(quantized):
    _, _, info, batches = quantized
    paired = PairedActivations(info.float_graph, info.plan, info.encodings)
    before = paired.errors(batches)
    set_quantizers_enabled(paired.model, nodes=["conv1", "x"], weights=False, activations=False)
    after = paired.errors(batches)
    for node in ("conv2", "relu2", "add", "head"):
        assert after[node].mse_isolated == pytest.approx(before[node].mse_isolated, rel=1e-6)
    # ...whereas the accumulated error downstream does change
    assert after["head"].mse_accumulated != pytest.approx(before["head"].mse_accumulated, rel=1e-3)
    # the first node's isolated error is the one that vanished
    assert after["conv1"].mse_isolated < 1e-12 < before["conv1"].mse_isolated


def test_in_graph_error_sums_match_numpy_metrics(quantized):
    _, _, info, batches = quantized
    paired = PairedActivations(info.float_graph, info.plan, info.encodings, nodes=["add", "head"])
    errors = paired.errors(batches)
    pairs = [paired.run(b) for b in batches]
    for node in ("add", "head"):
        f = np.concatenate([p[node].float for p in pairs])
        q = np.concatenate([p[node].accumulated for p in pairs])
        i = np.concatenate([p[node].isolated for p in pairs])
        assert errors[node].mse_accumulated == pytest.approx(mse(f, q), rel=1e-4)
        assert errors[node].mse_isolated == pytest.approx(mse(f, i), rel=1e-4)
        assert errors[node].sqnr_accumulated_db == pytest.approx(sqnr_db(f, q), abs=1e-3)
        cosines = errors[node].cosine_per_sample()
        assert errors[node].samples == 48
        assert cosines[3] == pytest.approx(cosine_similarity(f[3], q[3]), abs=1e-5)


def test_unknown_node_is_rejected(quantized):
    _, _, info, _ = quantized
    with pytest.raises(KeyError, match="not in graph"):
        PairedActivations(info.float_graph, info.plan, info.encodings, nodes=["nope"])


def test_similarity_stage_matches_the_paired_model(quantized):
    """The similarity stage's fast eager comparison agrees with PairedActivations."""
    from mct_logger.diagnostics.similarity import analyze_similarity

    _, _, info, batches = quantized
    result = analyze_similarity(info.float_graph, info.plan, info.encodings, batches, samples=20)
    paired = PairedActivations(info.float_graph, info.plan, info.encodings)
    errors = paired.errors([[batches[0][0][:20]]])
    assert result.nodes == paired.nodes and result.num_samples == 20
    for i, node in enumerate(result.nodes):
        assert result.sqnr_accumulated_db[node] == pytest.approx(errors[node].sqnr_accumulated_db, abs=0.05)
        assert result.sqnr_isolated_db[node] == pytest.approx(errors[node].sqnr_isolated_db, abs=0.05)
        np.testing.assert_allclose(result.cosine[:, i], errors[node].cosine_per_sample(), atol=1e-5)


@pytest.mark.parametrize("layer, policy", [
    (keras.layers.Conv2D(6, 3, strides=2, padding="valid", activation="relu"), "float32"),
    (keras.layers.Conv2D(6, 1, use_bias=False), "float32"),
    (keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2), "float32"),
    (keras.layers.Conv2D(6, 3, padding="same"), "mixed_float16"),
])
def test_eager_conv_is_the_layer_bit_for_bit(layer, policy):
    """The similarity stage's direct kernel call computes what the Keras layer does,
    with its own or with replaced (quantized) kernels."""
    from mct_logger.quantization.layers import linear_forward
    from mct_logger.diagnostics.similarity import _EagerConv

    layer = layer.__class__.from_config({**layer.get_config(), "dtype": policy})
    x = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(size=(2, 9, 9, 4)), "float32")
    want = keras.ops.convert_to_numpy(layer(x))
    conv = _EagerConv.of(layer)
    got = keras.ops.convert_to_numpy(conv(x, conv.cast(layer.kernel)))
    assert got.dtype == want.dtype and np.array_equal(got, want)
    other = {"kernel": keras.ops.convert_to_tensor(np.ones(layer.kernel.shape), "float32")}
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(conv(x, other["kernel"])),
        keras.ops.convert_to_numpy(linear_forward(layer, x, other)))


@pytest.mark.parametrize("layer", [
    keras.layers.Conv2D(6, 3, dilation_rate=2), keras.layers.Conv2D(6, 3, groups=2),
    keras.layers.Conv1D(6, 3), keras.layers.Dense(6), keras.layers.SeparableConv2D(6, 3),
    type("MyConv", (keras.layers.Conv2D,), {})(6, 3),
])
def test_eager_conv_leaves_other_layers_to_keras(layer):
    from mct_logger.diagnostics.similarity import _EagerConv

    layer.build((None, 9, 9, 4) if not isinstance(layer, keras.layers.Conv1D) else (None, 9, 4))
    assert _EagerConv.of(layer) is None


@pytest.mark.parametrize("magnitude", [1.0, 1e18, 1e30])
def test_pair_sums_of_concrete_tensors_match_the_traced_ones(magnitude):
    """The eager (BLAS dot) path and the in-graph path give the same sums, scaled
    where squares would overflow float32 (1e30), unscaled just below (1e18: the
    sums near float32's largest value)."""
    import tensorflow as tf

    from mct_logger.diagnostics.activations import pair_sums

    rng = np.random.default_rng(0)
    f = (rng.normal(size=(3, 6, 6, 4)) * magnitude).astype("float32")
    q = (f + rng.normal(size=f.shape) * 0.01 * magnitude).astype("float32")
    i = (f - rng.normal(size=f.shape) * 0.02 * magnitude).astype("float32")
    eager = pair_sums(tf.constant(f), tf.constant(q), tf.constant(i))
    traced = tf.function(pair_sums, autograph=False)(f, q, i).numpy()
    assert isinstance(eager, np.ndarray) and eager.shape == (3, 7)
    assert np.all(np.isfinite(eager))
    np.testing.assert_allclose(eager, traced, rtol=1e-4)
    ff = (f.astype(np.float64).reshape(3, -1) ** 2).sum(axis=1)
    np.testing.assert_allclose(eager[:, 0], ff, rtol=1e-5)


@pytest.mark.parametrize("bitwidth, symmetric, channels, dtype", [
    (8, False, None, "float32"), (8, True, None, "float32"), (16, False, None, "float32"),
    (4, True, 6, "float32"), (8, False, None, "float16"),
])
def test_similarity_fake_quantization_is_the_quantizer_layers_grid(bitwidth, symmetric, channels,
                                                                  dtype):
    """The similarity stage's fused kernel puts values on the quantizer layers' grid:
    the same output but for ties, rounded up instead of to even (one step)."""
    from mct_logger.quantization.encodings import Encoding, fake_quantize
    from mct_logger.diagnostics.similarity import _fixed_fake_quantize

    rng = np.random.default_rng(bitwidth)
    x = (rng.normal(size=(4, 16, 16, channels or 5)) * 3).astype(dtype)
    lo = rng.uniform(-4, -1, channels) if channels else -2.5
    hi = rng.uniform(1, 4, channels) if channels else 3.0
    grid = Encoding.from_range(lo, hi, bitwidth, symmetric)
    got = keras.ops.convert_to_numpy(_fixed_fake_quantize(keras.ops.convert_to_tensor(x), grid))
    scale = np.asarray(grid.scale, np.float32)
    want = fake_quantize(x.astype(np.float32), scale, np.asarray(grid.offset, np.float32),
                         grid.levels).astype(dtype)
    assert got.dtype == np.dtype(dtype)
    # whole steps apart (a float16 result is rounded after dequantizing)
    steps = np.round(np.abs(got.astype(np.float64) - want) / scale)
    assert np.max(steps) <= 1
    assert np.mean(steps) < 1e-3  # ties only
