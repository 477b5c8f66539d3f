"""Encodings math, observers, fake-quant layers, switches, saving and calibration."""

import os

import keras
import numpy as np
import pytest

from mct_logger.graph.ir import read_model
from mct_logger.quantization import (
    ActivationQuantizer,
    CalibrationModel,
    Encoding,
    MinMaxObserver,
    QuantizationConfig,
    QuantizedWeightsLayer,
    quantize_dequantize,
    quantizers,
    read_encodings,
    set_quantizers_enabled,
)
from mct_logger.quantization.layers import broadcast_shape, quantizable_weights
from mct_logger.quantization.histogram import channels_last_2d
from mct_logger.quantization.plan import plan_quantization
from mct_logger.quantization.quantsim import NodeEncodings, build_quantized_model, weight_encodings


# ------------------------------------------------------------------ encodings


def test_symmetric_8bit_grid_matches_aimet_convention():
    enc = Encoding.from_range(-0.5, 2.54, bitwidth=8, symmetric=True)
    assert enc.scale == pytest.approx(2.54 / 127)
    assert enc.offset == -128
    assert enc.min == pytest.approx(-128 * 2.54 / 127)
    assert enc.max == pytest.approx(2.54)


def test_asymmetric_grid_represents_zero_exactly():
    enc = Encoding.from_range(-1.3, 3.7, bitwidth=8, symmetric=False)
    assert enc.offset <= 0 and float(enc.offset).is_integer()
    assert quantize_dequantize(np.array([0.0]), enc)[0] == 0.0
    assert enc.max - enc.min == pytest.approx(5.0)


def test_asymmetric_range_always_includes_zero():
    enc = Encoding.from_range(2.0, 6.0, bitwidth=8, symmetric=False)
    assert enc.min == 0.0
    assert enc.max == pytest.approx(6.0)


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 12, 16])
@pytest.mark.parametrize("symmetric", [True, False])
def test_rounding_error_is_at_most_half_a_step_inside_the_range(bits, symmetric):
    rng = np.random.default_rng(bits)
    x = rng.uniform(-1.0, 3.0, size=10_000)
    enc = Encoding.from_range(x.min(), x.max(), bits, symmetric)
    inside = (x >= enc.min) & (x <= enc.max)
    error = np.abs(quantize_dequantize(x, enc) - x)
    assert np.all(error[inside] <= enc.scale / 2 + 1e-12)
    levels = np.unique(np.round(quantize_dequantize(x, enc) / enc.scale))
    assert len(levels) <= 2**bits


def test_per_channel_grids_have_one_scale_per_channel():
    enc = Encoding.from_range(np.array([-1.0, -0.01]), np.array([1.0, 0.01]), 8, True)
    assert enc.per_channel and enc.num_channels == 2
    assert enc.scale[0] / enc.scale[1] == pytest.approx(100.0)


def test_dead_channel_gets_a_finite_grid():
    enc = Encoding.from_range(np.zeros(3), np.zeros(3), 8, True)
    assert np.all(np.isfinite(enc.scale)) and np.all(enc.scale > 0)


@pytest.mark.parametrize("bits", [1, 17, 8.0, True, "8"])
def test_unsupported_bitwidths_are_rejected(bits):
    with pytest.raises(ValueError, match="bitwidth"):
        Encoding.from_range(-1, 1, bits, True)


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="weight_bits"):
        QuantizationConfig(weight_bits=1)
    with pytest.raises(TypeError, match="weight_per_channel"):
        QuantizationConfig(weight_per_channel="yes")
    with pytest.raises(ValueError, match="batch_size"):
        QuantizationConfig(batch_size=0)


# ------------------------------------------------------------------ observers


def test_min_max_observer_tracks_running_per_channel_range():
    obs = MinMaxObserver()
    obs.update(np.array([[1.0, -2.0], [3.0, 0.5]]))
    obs.update(np.array([[-4.0, 1.0]]))
    np.testing.assert_array_equal(obs.min, [-4.0, -2.0])
    np.testing.assert_array_equal(obs.max, [3.0, 1.0])
    per_tensor = obs.encoding(8, symmetric=False)
    assert per_tensor.min == pytest.approx(-4.0, abs=per_tensor.scale)
    assert obs.encoding(8, symmetric=True, per_channel=True).num_channels == 2


def test_depthwise_channels_follow_the_output_channel_order():
    kernel = np.arange(3 * 3 * 2 * 3, dtype=float).reshape(3, 3, 2, 3)  # (h, w, in, mult)
    flat = channels_last_2d(kernel, (-2, -1))
    assert flat.shape == (9, 6)
    # output channel c = in_channel * multiplier + m
    np.testing.assert_array_equal(flat[:, 4], kernel[:, :, 1, 1].ravel())


def test_empty_observer_refuses_to_make_an_encoding():
    with pytest.raises(ValueError, match="calibration"):
        MinMaxObserver().encoding(8, True)


# ------------------------------------------------------------------ layers


def _weight_layers():
    L = keras.layers
    return [
        ("conv2d", L.Conv2D(6, 3, padding="same", activation="relu6"), (2, 7, 7, 3)),
        ("conv1d_causal", L.Conv1D(4, 3, padding="causal", dilation_rate=2), (2, 9, 3)),
        ("depthwise", L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (2, 6, 6, 3)),
        ("separable", L.SeparableConv2D(5, 3, depth_multiplier=2), (2, 6, 6, 3)),
        ("transpose", L.Conv2DTranspose(4, 3, strides=2, padding="same"), (2, 4, 4, 3)),
        ("dense", L.Dense(7, use_bias=False), (2, 5)),
        ("grouped", L.Conv2D(4, 1, groups=2), (2, 3, 3, 4)),
    ]


@pytest.mark.parametrize("case", _weight_layers(), ids=lambda c: c[0])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("bits,symmetric", [(8, True), (4, False), (2, True), (16, False)])
def test_weight_quantizer_equals_layer_run_on_numpy_quantized_kernels(case, per_channel, bits, symmetric):
    _, layer, shape = case
    keras.utils.set_random_seed(1)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    layer(x)  # build
    specs, encodings, quantized = {}, {}, {}
    for name, axes in quantizable_weights(layer).items():
        kernel = keras.ops.convert_to_numpy(getattr(layer, name))
        obs = MinMaxObserver(axes)
        obs.update(kernel)
        enc = obs.encoding(bits, symmetric, per_channel)
        specs[name] = {"num_channels": enc.num_channels, "bitwidth": bits, "is_symmetric": symmetric}
        encodings[name] = enc
        quantized[name] = quantize_dequantize(kernel, enc, broadcast_shape(kernel.shape, axes))
    clone = type(layer).from_config(layer.get_config())
    wrapper = QuantizedWeightsLayer(clone, node_name="n", weight_specs=specs)
    wrapper(x)
    clone.set_weights(layer.get_weights())
    for name, enc in encodings.items():
        wrapper.set_encoding(name, enc)
    # reference: the original layer holding the NumPy-quantized kernels
    reference = type(layer).from_config(layer.get_config())
    reference(x)
    reference.set_weights(layer.get_weights())
    for name, value in quantized.items():
        getattr(reference, name).assign(value)
    expected = keras.ops.convert_to_numpy(reference(x))
    got = keras.ops.convert_to_numpy(wrapper(x))
    # At 12+ bits a float32-vs-float64 tie can flip one weight by one tiny step.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 if bits < 12 else 1e-4)
    # created holding its grids: the same as set after
    born = QuantizedWeightsLayer(clone, node_name="n", weight_specs=specs, encodings=encodings)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(born(x)), got)
    assert born.get_encoding(name).as_dict() == wrapper.get_encoding(name).as_dict()
    wrapper.enabled = False
    np.testing.assert_allclose(keras.ops.convert_to_numpy(wrapper(x)),
                               keras.ops.convert_to_numpy(layer(x)), rtol=1e-5, atol=1e-6)


def test_activation_quantizer_matches_numpy_and_switches_off():
    x = np.linspace(-3, 5, 101, dtype="float32").reshape(1, 101)
    quantizer = ActivationQuantizer(node_name="n", bitwidth=4)
    quantizer(x)
    enc = Encoding.from_range(-1.0, 2.0, 4, symmetric=False)
    quantizer.set_encoding(enc)
    got = keras.ops.convert_to_numpy(quantizer(x))
    np.testing.assert_allclose(got, quantize_dequantize(x, enc), atol=1e-6)
    assert len(np.unique(got)) == 16
    born = ActivationQuantizer(node_name="n", bitwidth=8, is_symmetric=True, encoding=enc)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(born(x)), got)
    assert (born.bitwidth, born.is_symmetric) == (4, False)  # the encoding's, as set_encoding
    quantizer.enabled = False
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(quantizer(x)), x)
    per_channel = Encoding.from_range(np.zeros(3), np.ones(3), 8, symmetric=False)
    with pytest.raises(ValueError, match="does not fit a quantizer built for shape"):
        ActivationQuantizer(node_name="n", encoding=per_channel)(x)


# ------------------------------------------------------------------ quantized models


@pytest.fixture(scope="module")
def small_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten(name="flat")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs, name="small")
    model.compile(loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 2)).astype("float32")
    return model, x


def _quantize(model, x, bits=4):
    graph = read_model(model)
    config = QuantizationConfig(weight_bits=bits, activation_bits=bits)
    plan = plan_quantization(graph, config)
    calibration = CalibrationModel(graph, plan)
    calibration.collect([x])
    activations = calibration.activation_encodings(plan)
    weights = weight_encodings(graph, plan)
    encodings = {
        n: NodeEncodings(weights.get(n, {}), activations.get(n)) for n, p in plan.items() if p.quantized
    }
    return build_quantized_model(graph, plan, encodings), plan


def test_quantizers_switch_after_predict_and_after_evaluate(small_model):
    model, x = small_model
    quantized, _ = _quantize(model, x)
    quantized.compile(loss="mse")
    y = model.predict(x, verbose=0)
    on = quantized.predict(x, verbose=0)  # traces and compiles the predict function
    assert not np.allclose(on, y, atol=1e-4)

    set_quantizers_enabled(quantized, weights=False, activations=False)
    off = quantized.predict(x, verbose=0)
    np.testing.assert_allclose(off, y, atol=1e-5)

    loss_off = quantized.evaluate(x, y, verbose=0)  # compiles the test function
    assert loss_off == pytest.approx(0.0, abs=1e-9)
    set_quantizers_enabled(quantized, weights=True)
    loss_weights = quantized.evaluate(x, y, verbose=0)
    assert loss_weights > 1e-6
    set_quantizers_enabled(quantized, activations=True)
    assert quantized.evaluate(x, y, verbose=0) != pytest.approx(loss_weights)
    np.testing.assert_allclose(quantized.predict(x, verbose=0), on, atol=1e-6)


def test_each_node_switches_independently(small_model):
    model, x = small_model
    quantized, plan = _quantize(model, x)
    set_quantizers_enabled(quantized, weights=False, activations=False)
    baseline = quantized.predict(x, verbose=0)
    found = quantizers(quantized)
    assert set(found) == {n for n, p in plan.items() if p.quantized}
    for node, parts in found.items():
        for kind in parts:
            kwargs = {kind if kind == "weights" else "activations": True}
            set_quantizers_enabled(quantized, nodes=[node], **kwargs)
            changed = quantized.predict(x, verbose=0)
            assert not np.allclose(changed, baseline, atol=1e-6), (node, kind)
            set_quantizers_enabled(quantized, weights=False, activations=False)
    with pytest.raises(KeyError, match="no quantizer"):
        set_quantizers_enabled(quantized, nodes=["flat"], weights=True)


def test_plan_fuses_relu_and_skips_passthrough_layers(small_model):
    model, x = small_model
    _, plan = _quantize(model, x)
    assert plan["conv_a"].activation is not None  # fused activation="relu": output is post-ReLU
    assert plan["dw"].activation is None and "fused" in plan["dw"].note
    assert plan["relu"].activation is not None
    assert plan["flat"].activation is None and "passes values" in plan["flat"].note
    assert plan["head"].weights["kernel"].num_channels == 3


def test_quantized_model_saves_and_loads_with_identical_outputs(small_model, tmp_path):
    model, x = small_model
    quantized, _ = _quantize(model, x, bits=3)
    set_quantizers_enabled(quantized, nodes=["dw"], weights=False)
    expected = quantized.predict(x, verbose=0)
    path = os.path.join(tmp_path, "q.keras")
    quantized.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    before, after = read_encodings(quantized), read_encodings(loaded)
    assert set(before) == set(after)
    for node in before:
        for name, enc in before[node].weights.items():
            np.testing.assert_array_equal(after[node].weights[name].scale, enc.scale)
    assert not quantizers(loaded)["dw"]["weights"].enabled


def test_calibration_model_forward_pass_feeds_observers(small_model):
    model, x = small_model
    graph = read_model(model)
    plan = plan_quantization(graph, QuantizationConfig())
    calibration = CalibrationModel(graph, plan)
    calibration.compile(loss="mse", run_eagerly=False)  # observers still need eager: forced
    out = calibration.predict(x, batch_size=16, verbose=0)
    np.testing.assert_allclose(out, model.predict(x, verbose=0), atol=1e-5)
    assert calibration.batches_seen == 4
    probe = keras.Model(model.inputs, model.get_layer("relu").output)
    relu_out = probe.predict(x, verbose=0)
    assert calibration.observers["relu"].max.max() == pytest.approx(relu_out.max(), rel=1e-5)
    calibration.evaluate(x, out, batch_size=32, verbose=0)
    assert calibration.batches_seen == 6
    calibration(x[:3])
    assert calibration.batches_seen == 7


def test_weight_rows_count_float_and_quantized_kernels_on_the_same_even_bins(small_model):
    from mct_logger.diagnostics.weight_error import HISTOGRAM_BINS, weight_quantization_rows

    model, _ = small_model
    graph = read_model(model)
    plan = plan_quantization(graph, QuantizationConfig(weight_bits=4))
    encodings = {n: NodeEncodings(w) for n, w in weight_encodings(graph, plan).items()}
    rows = weight_quantization_rows(graph, plan, encodings)
    assert [r["layer"] for r in rows] == ["conv_a", "dw", "head"]
    for row in rows:
        kernel = model.get_layer(row["layer"]).kernel.numpy()
        grid = encodings[row["layer"]].weights["kernel"]
        axes = plan[row["layer"]].weights["kernel"].channel_axes
        quantized = quantize_dequantize(kernel, grid, broadcast_shape(kernel.shape, axes))
        histogram = row["histogram"]
        top = histogram["lo"] + HISTOGRAM_BINS * histogram["width"]
        assert top >= max(kernel.max(), quantized.max())
        for values, counts in ((kernel, histogram["float"]), (quantized, histogram["quantized"])):
            expected, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(histogram["lo"], top))
            np.testing.assert_array_equal(counts, expected)
