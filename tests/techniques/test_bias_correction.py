"""Bias correction: each mode removes most of the per-channel mean output shift that
weight quantization causes (measured on held-out data through PairedActivations,
whose quantized paths run the corrected graph while the float reference keeps the
original biases)."""

import json

import keras
import numpy as np
import pytest
from keras import layers

import mct_logger
from mct_logger.diagnostics.activations import PairedActivations
from mct_logger.quantization import set_quantizers_enabled
from mct_logger.techniques.bias_correction import correct_bias, correct_bias_graph
from mct_logger.techniques.expected_shift import expected_activation



def build_model():
    """conv -> BN -> ReLU6 -> dw -> BN -> ReLU -> pw -> ReLU -> GAP -> dense."""
    inputs = keras.Input((8, 8, 3), name="x")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(momentum=0.0, name="bn1")(x)
    x = layers.ReLU(6.0, name="relu6")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = layers.BatchNormalization(momentum=0.0, name="bn2")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.Conv2D(16, 1, name="pw")(x)
    x = layers.ReLU(name="relu_pw")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(6, name="head")(x), name="bc_model")


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(11)
    model = build_model()
    rng = np.random.default_rng(0)
    for name, channels in (("bn1", 16), ("bn2", 16)):
        bn = model.get_layer(name)
        gamma = rng.uniform(1.0, 3.0, channels).astype("float32")
        beta = rng.uniform(-1.0, 3.0, channels).astype("float32")
        bn.gamma.assign(gamma)
        bn.beta.assign(beta)
    population = rng.uniform(0.0, 1.0, (512, 8, 8, 3)).astype("float32")  # image-like
    model(population, training=True)  # momentum 0: moving statistics = the data's
    calibration = rng.uniform(0.0, 1.0, (128, 8, 8, 3)).astype("float32")
    held_out = rng.uniform(0.0, 1.0, (128, 8, 8, 3)).astype("float32")
    config = mct_logger.QuantizationConfig(
        weight_bits=4, weight_per_channel=False, bias_correction="hybrid",
        analyze_similarity=False)
    model_q, info = mct_logger.keras_post_training_quantization(model, calibration, config)
    return model, model_q, info, calibration, held_out


def channel_shifts(info, quantized_graph, x, nodes):
    """Per-channel means of (weight-quantized - float) pre-activation outputs, on the
    accumulated path (every layer quantized) and the isolated one (this layer only)."""
    paired = PairedActivations(info.float_graph, info.plan, info.encodings, nodes=nodes,
                               quantized_graph=quantized_graph)
    set_quantizers_enabled(paired.model, activations=False)
    pairs = paired.run([x])

    def mean(a):
        return a.reshape(-1, a.shape[-1]).mean(0)

    return {n: {"accumulated": mean(p.accumulated - p.float),
                "isolated": mean(p.isolated - p.float)} for n, p in pairs.items()}


def residuals(info, corrected_graph, x, nodes):
    """node -> path -> ||shift after|| / ||shift before||."""
    before = channel_shifts(info, None, x, nodes)
    after = channel_shifts(info, corrected_graph, x, nodes)
    return {n: {path: float(np.linalg.norm(after[n][path]) / np.linalg.norm(before[n][path]))
                for path in ("accumulated", "isolated")} for n in nodes}


def test_expected_activation_matches_monte_carlo():
    rng = np.random.default_rng(1)
    beta = np.array([-2.0, 0.0, 1.5, 5.0, 8.0])
    gamma = np.array([1.0, 2.0, 0.5, 3.0, 1.0])
    z = beta + gamma * rng.standard_normal((400_000, 5))
    np.testing.assert_allclose(expected_activation(beta, gamma, "none"), beta)
    np.testing.assert_allclose(expected_activation(beta, gamma, "relu"),
                               np.maximum(z, 0).mean(0), atol=0.01)
    np.testing.assert_allclose(expected_activation(beta, gamma, "relu6"),
                               np.clip(z, 0, 6).mean(0), atol=0.01)
    # zero spread: the activation of beta itself
    np.testing.assert_allclose(expected_activation(beta, 0 * gamma, "relu6"),
                               np.clip(beta, 0, 6))


@pytest.mark.parametrize("layer", [
    layers.Conv2D(4, 3, strides=2, padding="same"),
    layers.DepthwiseConv2D((3, 2), padding="same", dilation_rate=(2, 1)),
    layers.Conv2D(4, 3, padding="valid"),
])
def test_analytical_shift_counts_same_padding_borders_exactly(layer):
    """A constant input per channel: the analytical mean shift equals the measured one."""
    from mct_logger.graph.ir import read_model
    from mct_logger.quantization.encodings import Encoding
    from mct_logger.quantization.plan import WeightSpec
    from mct_logger.techniques.expected_shift import analytical_shift

    inputs = keras.Input((7, 6, 3))
    model = keras.Model(inputs, layer(inputs))
    node = read_model(model).nodes[layer.name]
    kernel = layer.kernel.numpy()
    spec = WeightSpec(channel_axes=(-1,), num_channels=None, bitwidth=3, is_symmetric=True)
    encoding = Encoding.from_range(-np.abs(kernel).max(), np.abs(kernel).max(), 3, True)
    means = np.array([0.5, -1.0, 2.0])
    shift = analytical_shift(node, spec, encoding, means, (None, 7, 6, 3))
    x = np.broadcast_to(means, (1, 7, 6, 3)).astype("float32")
    from mct_logger.quantization.encodings import quantize_dequantize
    y = model.predict(x, verbose=0)
    layer.kernel.assign(quantize_dequantize(kernel, encoding))
    y_q = model.predict(x, verbose=0)
    measured = (y_q - y).reshape(-1, y.shape[-1]).mean(0)
    np.testing.assert_allclose(shift, measured, rtol=1e-4, atol=1e-5)


def test_ptq_builds_the_quantized_model_from_the_corrected_graph(setup):
    model, model_q, info, _, held_out = setup
    result = info.stage_results["bias_correction"]
    assert result.mode == "hybrid" and result.version == 1
    methods = {n: c.method for n, c in result.corrections.items()}
    assert methods == {"conv1": "empirical", "dw": "analytical", "pw": "analytical",
                       "head": "empirical"}
    assert (result.corrections["dw"].preceding, result.corrections["dw"].activation) == (
        "conv1", "relu6")
    assert result.corrections["pw"].activation == "relu"
    tables = json.loads(json.dumps(result.to_tables(), allow_nan=False))
    assert [row["node"] for row in tables["bias_correction"]["layers"]] == list(methods)
    # the reference keeps the original biases; the quantized graph has them corrected
    for name, correction in result.corrections.items():
        reference = info.float_graph.nodes[name].layer
        original = (reference.bias.numpy() if reference.bias is not None
                    else np.zeros(correction.correction.shape))
        np.testing.assert_allclose(info.quantized_graph.nodes[name].layer.bias.numpy(),
                                   original - correction.correction, rtol=1e-5, atol=1e-6)
    # the quantized model is the accumulated path of PairedActivations over the corrected graph
    paired = PairedActivations(info.float_graph, info.plan, info.encodings, nodes=["head"],
                               quantized_graph=info.quantized_graph)
    pair = paired.run([held_out[:32]])["head"]
    np.testing.assert_allclose(pair.accumulated, model_q.predict(held_out[:32], verbose=0),
                               atol=1e-5)
    np.testing.assert_allclose(pair.float, model.predict(held_out[:32], verbose=0), atol=1e-4)


# Empirical and hybrid correct the whole shift a layer sees with every layer before it
# quantized (and corrected): judged on the accumulated path. Analytical estimates a
# layer's own shift, E[(W_q - W) x], and leaves layers without a batch norm before
# them alone: judged on the isolated path (only that layer quantized).
@pytest.mark.parametrize("mode, nodes, path, limit", [
    ("empirical", ["conv1", "dw", "pw", "head"], "accumulated", 0.1),
    ("analytical", ["dw", "pw"], "isolated", 0.15),
    ("hybrid", ["conv1", "dw", "pw", "head"], "accumulated", 0.15),
])
def test_each_mode_removes_most_of_the_mean_output_shift(setup, mode, nodes, path, limit):
    _, _, info, calibration, held_out = setup
    batches = [[calibration[:64]], [calibration[64:]]]
    corrected, result = correct_bias_graph(info.float_graph, info.plan, info.encodings,
                                           batches, mode)
    assert sorted(result.corrections) == sorted(nodes)
    if mode == "analytical":
        assert result.num_samples == 0 and result.passes == 0
        assert "model input" in result.skipped["conv1"]
    ratios = residuals(info, corrected, held_out, nodes)
    assert max(r[path] for r in ratios.values()) <= limit, ratios


def test_standalone_correct_bias_uses_the_batch_norms_equalize_model_recorded(setup):
    model, _, _, calibration, _ = setup
    config = mct_logger.QuantizationConfig(weight_bits=4, weight_per_channel=False)
    equalized, equalization = mct_logger.equalize_model(model)
    corrected, result = correct_bias(equalized, None, config, mode="analytical",
                                     equalization=equalization)
    assert set(result.corrections) == {"dw", "pw"}
    assert result.corrections["dw"].activation == "relu"  # the ReLU6 became a ReLU
    # only the biases changed, by the corrections
    for name, correction in result.corrections.items():
        np.testing.assert_array_equal(corrected.get_layer(name).kernel.numpy(),
                                      equalized.get_layer(name).kernel.numpy())
        bias = equalized.get_layer(name).bias
        original = bias.numpy() if bias is not None else 0.0
        np.testing.assert_allclose(corrected.get_layer(name).bias.numpy(),
                                   original - correction.correction, atol=1e-6)
    with pytest.raises(ValueError, match="representative_data"):
        correct_bias(model, None, config, mode="empirical")
    with pytest.raises(ValueError, match="bias_correction"):
        mct_logger.QuantizationConfig(bias_correction="exact")
