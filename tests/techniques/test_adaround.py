"""AdaRound (learned up/down rounding, Nagel et al. 2020) as a PTQ stage: it recovers
4-bit accuracy on the trained digits CNN, never ends a layer above nearest rounding's
loss, is nearest rounding exactly at 0 iterations, keeps the observers' grids
(mixed precision, `.keras` round trip) and is shown in the logs.

Iterations stay in the hundreds (the paper runs 10,000), with a larger Adam step.
"""

import json

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.demo import accuracy
from mct_logger.quantization.config import AdaRoundConfig, LayerOverride, QuantizationConfig
from mct_logger.quantization.encodings import fake_quantize
from mct_logger.quantization.layers import broadcast_shape
from mct_logger.techniques.adaround import beta_at, initial_v, rectified_sigmoid
from tests.helpers import conv_dense_model

FAST = dict(iterations=300, learning_rate=1e-2)


def _quantize(model, x, **options):
    config = QuantizationConfig(analyze_similarity=False, **options)
    return mct_logger.keras_post_training_quantization(model, x, config)


@pytest.fixture(scope="module")
def digits_runs(trained_digits):
    """Held-out accuracy of the trained digits CNN at W8A8 and W4A8 (per-channel and
    per-tensor weights), nearest vs AdaRound, and the AdaRound runs' results."""
    data, model = trained_digits
    x = data.x_train[:512]
    score = lambda m: accuracy(m, data.x_test, data.y_test)  # noqa: E731
    runs = {"w8": score(_quantize(model, x)[0])}
    for name, per_channel in (("pc", True), ("pt", False)):
        common = dict(weight_bits=4, weight_per_channel=per_channel)
        runs[f"{name}_nearest"] = score(_quantize(model, x, **common)[0])
        quantized, info = _quantize(model, x, adaround=AdaRoundConfig(**FAST), **common)
        runs[f"{name}_adaround"] = score(quantized)
        runs[f"{name}_result"] = info.stage_results["adaround"]
    print({k: v for k, v in runs.items() if not k.endswith("result")})
    return runs


def test_adaround_recovers_4_bit_weights_on_the_trained_digits_cnn(digits_runs):
    runs = digits_runs
    # per-tensor 4-bit grids lose points with nearest rounding; AdaRound wins them back
    assert runs["pt_nearest"] <= runs["w8"] - 0.03, runs
    assert runs["pt_adaround"] >= runs["pt_nearest"] + 0.03, runs
    assert runs["pt_adaround"] >= runs["w8"] - 0.02, runs
    # per-channel 4-bit nearest is already within about a point of W8A8 on this model:
    # AdaRound does not lose anything and stays within 2 points of W8A8
    assert runs["pc_adaround"] >= runs["pc_nearest"], runs
    assert runs["pc_adaround"] >= runs["w8"] - 0.02, runs


def test_no_layer_ends_above_nearest_rounding_loss(digits_runs):
    for name in ("pc_result", "pt_result"):
        result = digits_runs[name]
        assert set(result.layers) == {"stem", "dw1", "pw1", "dw2", "pw2", "classifier"}
        for layer in result.layers.values():
            assert layer.loss_adaround <= layer.loss_nearest, layer
            assert 0.0 <= layer.flipped_fraction < 0.5, layer
            assert layer.num_samples == 512
        # learned, not a copy of nearest: every layer flips some weights and lowers its loss
        assert all(l.flipped_fraction > 0 and l.loss_adaround < 0.95 * l.loss_nearest
                   for l in result.layers.values()), result.layers
        # the activation the loss includes: the ReLU each conv's output is fused into
        assert result.layers["stem"].activation.startswith("ReLU")
        assert result.layers["classifier"].activation == "softmax"


def test_zero_iterations_is_exactly_nearest_rounding():
    model = conv_dense_model(input_shape=(6, 6, 2), filters=4, hidden=8, relu_layer=True)
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 2)).astype("float32")
    nearest, _ = _quantize(model, x, weight_bits=4)
    zero, info = _quantize(model, x, weight_bits=4, adaround=AdaRoundConfig(iterations=0))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(zero(x)),
                                  keras.ops.convert_to_numpy(nearest(x)))
    layers = info.stage_results["adaround"].layers
    assert set(layers) == {"conv", "wide", "head"}
    assert all(l.flipped_fraction == 0 and l.loss_adaround == l.loss_nearest
               for l in layers.values())


def _on_grid(graph, encodings, name):
    """`(kernel, kernel fake-quantized again)` in float32 as the weight quantizer does."""
    kernel = keras.ops.convert_to_numpy(graph.nodes[name].layer.kernel)
    encoding = encodings[name].weights["kernel"]
    shape = broadcast_shape(kernel.shape, (kernel.ndim - 1,))
    scale = np.reshape(np.float32(encoding.scale), shape)
    offset = np.reshape(np.float32(encoding.offset), shape)
    again = fake_quantize(kernel, scale, offset, np.float32(encoding.levels))
    return kernel, again.astype(np.float32)


def test_learned_kernels_sit_on_the_observers_grids_with_mixed_precision(tmp_path):
    """Mixed precision: the conv at 8 bits, the rest at 4; each learned kernel is on its
    own grid (the encodings are the observers', unchanged), the model saves to .keras
    and loads back computing the same, and an exported encodings file holds the grids."""
    model = conv_dense_model(input_shape=(6, 6, 2), filters=4, hidden=8, relu_layer=True)
    x = np.random.default_rng(1).normal(size=(128, 6, 6, 2)).astype("float32")
    config = dict(weight_bits=4, overrides={"conv": LayerOverride(weight_bits=8)})
    _, reference = _quantize(model, x, **config)
    quantized, info = _quantize(model, x, adaround=AdaRoundConfig(iterations=200,
                                                                  learning_rate=1e-2), **config)
    assert info.encodings["conv"].weights["kernel"].bitwidth == 8
    assert info.encodings["head"].weights["kernel"].bitwidth == 4
    result = info.stage_results["adaround"]
    for name in ("conv", "wide", "head"):
        grid = info.encodings[name].weights["kernel"]
        before = reference.encodings[name].weights["kernel"]
        np.testing.assert_array_equal(grid.scale, before.scale)  # the observers' grids
        kernel, requantized = _on_grid(info.quantized_graph, info.encodings, name)
        np.testing.assert_array_equal(kernel, requantized)  # exactly on the grid
        floats = keras.ops.convert_to_numpy(info.float_graph.nodes[name].layer.kernel)
        assert (not np.array_equal(kernel, floats)) or result.layers[name].kept_nearest
    assert any(layer.flipped_fraction > 0 for layer in result.layers.values())

    path = tmp_path / "adaround.keras"
    quantized.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)),
                                  keras.ops.convert_to_numpy(quantized(x)))

    # the encodings file of the run reloads onto the learned float graph unchanged
    encodings_path = info.export_encodings(str(tmp_path / "adaround.encodings.json"))
    learned_model = info.quantized_graph.to_keras(name="learned")
    again, _ = mct_logger.keras_post_training_quantization(
        learned_model, None, QuantizationConfig(encodings_file=encodings_path,
                                                analyze_similarity=False, **config))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)),
                               keras.ops.convert_to_numpy(quantized(x)), rtol=0, atol=1e-5)


def test_the_cache_is_capped_so_memory_stays_flat_in_the_data():
    model = conv_dense_model(input_shape=(6, 6, 2), filters=4, hidden=8)
    x = np.random.default_rng(2).normal(size=(256, 6, 6, 2)).astype("float32")
    # conv: input 72 + output 64 floats per sample = 544 bytes; 0.05 MiB holds 96 samples
    _, info = _quantize(model, x, weight_bits=4,
                        adaround=AdaRoundConfig(iterations=5, cache_mib=0.05))
    assert info.stage_results["adaround"].layers["conv"].num_samples == 96
    _, info = _quantize(model, x, weight_bits=4,
                        adaround=AdaRoundConfig(iterations=5, num_samples=40))
    assert info.stage_results["adaround"].layers["conv"].num_samples == 40


def test_unsupported_layers_keep_nearest_rounding_with_a_note():
    inputs = keras.Input((4, 4, 2))
    h = keras.layers.Conv2DTranspose(3, 2, name="up")(inputs)
    h = keras.layers.SeparableConv2D(4, 3, name="sep")(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(h))
    x = np.random.default_rng(3).normal(size=(32, 4, 4, 2)).astype("float32")
    _, info = _quantize(model, x, weight_bits=4, adaround=AdaRoundConfig(iterations=5))
    result = info.stage_results["adaround"]
    assert set(result.layers) == {"head"}
    assert "Conv2DTranspose is not" in result.skipped["up"]
    assert "SeparableConv2D is not" in result.skipped["sep"]


def test_bias_correction_after_adaround_measures_against_the_float_graph():
    model = conv_dense_model(input_shape=(6, 6, 2), filters=4, hidden=8, relu_layer=True)
    x = np.random.default_rng(4).normal(size=(128, 6, 6, 2)).astype("float32")
    _, info = _quantize(model, x, weight_bits=4, bias_correction="empirical",
                        adaround=AdaRoundConfig(iterations=50, learning_rate=1e-2))
    corrections = info.stage_results["bias_correction"].corrections
    # the learned kernels differ from the float ones, so a shift is measured
    assert np.any(np.abs(corrections["conv"].correction) > 0)
    kernel, _ = _on_grid(info.quantized_graph, info.encodings, "conv")
    floats = keras.ops.convert_to_numpy(info.float_graph.nodes["conv"].layer.kernel)
    assert not np.array_equal(kernel, floats)


def test_the_rounding_maths():
    rest = np.linspace(0.0, 0.999, 50)
    h = keras.ops.convert_to_numpy(rectified_sigmoid(initial_v(rest)))
    np.testing.assert_allclose(h, rest, atol=1e-5)
    config = AdaRoundConfig(iterations=100, warm_start=0.2, beta_range=(20, 2))
    assert beta_at(0, config) == beta_at(19, config) == 20.0
    assert beta_at(20, config) == pytest.approx(20.0)
    assert beta_at(60, config) == pytest.approx(11.0)
    assert beta_at(100, config) == pytest.approx(2.0)


def test_config_is_validated_at_construction_and_round_trips_json(tmp_path):
    assert QuantizationConfig(adaround=True).adaround == AdaRoundConfig()
    assert AdaRoundConfig().iterations == 10000 and AdaRoundConfig().reg_weight == 0.01
    assert QuantizationConfig(adaround=False).adaround is None
    with pytest.raises(ValueError, match=r"AdaRoundConfig.warm_start .* from 0 to below 1"):
        AdaRoundConfig(warm_start=1.0)
    with pytest.raises(ValueError, match=r"AdaRoundConfig.beta_range .* \(20, 2\)"):
        AdaRoundConfig(beta_range=(20,))
    with pytest.raises(ValueError, match=r"AdaRoundConfig.iterations must be an integer >= 0"):
        AdaRoundConfig(iterations=-5)
    with pytest.raises(TypeError, match=r"QuantizationConfig.adaround must be an AdaRoundConfig, "
                                        r"True .* or None"):
        QuantizationConfig(adaround="yes")
    config = QuantizationConfig(weight_bits=4, adaround=AdaRoundConfig(iterations=7))
    path = config.to_json(tmp_path / "config.json")
    assert json.load(open(path))["config"]["adaround"]["iterations"] == 7
    assert QuantizationConfig.from_json(path) == config


def test_the_stage_is_shown_in_the_logs(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = conv_dense_model(input_shape=(6, 6, 2), filters=4, hidden=8, relu_layer=True)
    x = np.random.default_rng(5).normal(size=(64, 6, 6, 2)).astype("float32")
    mct_logger.set_log_folder(tmp_path, run_name="ada")
    try:
        mct_logger.keras_post_training_quantization(
            model, x, QuantizationConfig(weight_bits=4, adaround=AdaRoundConfig(iterations=20)))
    finally:
        mct_logger.set_log_folder(None)
    runs = sorted(p.name for p in (tmp_path / "ada").iterdir())
    assert runs.index("05_adaround") == runs.index("04_quantization_parameters") + 1
    stage = EventAccumulator(str(tmp_path / "ada" / "05_adaround"),
                             size_guidance={"tensors": 0, "scalars": 0})
    stage.Reload()
    text = stage.Tensors("summary")[0].tensor_proto.string_val[0].decode()
    assert "learned the rounding of 3 kernel(s)" in text and "| `wide` |" in text
    flipped = stage.Scalars("adaround/rounded_away_from_nearest")
    assert [s.step for s in flipped] == [0, 1, 2]
    for rounding in ("nearest", "adaround"):  # tags of the stage's run, not runs
        assert len(stage.Scalars(f"adaround/reconstruction_mse/{rounding}")) == 3
    assert not [p for p in (tmp_path / "ada" / "05_adaround").iterdir() if p.is_dir()]
    # the QuantAnalyzer tab's layer table carries the AdaRound columns
    from tests.helpers import tensorboard_provider
    from mct_logger.tb_plugin import metadata, reader

    with tensorboard_provider(tmp_path, "python") as (provider, ctx, eid):
        tables = [table for _, tag, _, table in
                  reader.read_payloads(provider, ctx, eid, metadata.QUANT_ANALYZER)
                  if tag == "layer_table"]
    (table,) = tables
    assert table["adaround"] is True
    rows = {r["layer"]: r for r in table["rows"]}
    assert rows["wide"]["adaround_loss"] <= rows["wide"]["adaround_loss_nearest"]
    assert rows["flat"]["adaround_flipped"] is None


def test_recommend_proposes_adaround_when_weights_lose_more_than_activations(
        trained_digits, tmp_path):
    """W4A8 per-channel on the digits CNN (no CLE: per-channel grids): the weights-only
    score (W4A32) is below the activations-only one (W32A8); AdaRound is proposed as a
    free fix, verified with the eval callback and kept, and the recommended config
    carries it."""
    data, model = trained_digits
    x = data.x_train[:256]
    analyzer = mct_logger.QuantAnalyzer(
        model, lambda m: m.predict(x, batch_size=64, verbose=0),
        lambda m: accuracy(m, data.x_test, data.y_test))
    analysis = analyzer.analyze({"weight_bits": 4}, results_dir=str(tmp_path / "qa"))
    assert analysis.sensitivity["weights_only"] < analysis.sensitivity["activations_only"]
    ada = AdaRoundConfig(**FAST)
    config, recommendation = analyzer.recommend(max_accuracy_drop=0.002, adaround=ada)
    change = recommendation.changes[0]
    assert change["kind"] == "adaround", recommendation.changes
    assert change["accepted"] and change["score_after"] > change["score_before"], change
    assert change["memory_after"] == change["memory_before"]  # free: same grids, same bits
    assert "Weights-only score" in change["evidence"]
    assert config.adaround == ada and recommendation.meets_target


def test_conv1d_depthwise1d_einsum_dense_and_conv3d_kernels_are_learned():
    keras.utils.set_random_seed(6)
    inputs = keras.Input((12, 3))
    h = keras.layers.Conv1D(8, 3, activation="relu", name="c1")(inputs)
    h = keras.layers.DepthwiseConv1D(3, name="dw")(h)
    h = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 6), bias_axes="d",
                                 name="einsum")(h)
    h = keras.layers.Reshape((8, 6, 1, 1))(h)
    h = keras.layers.Conv3D(2, (3, 3, 1), name="c3")(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    x = np.random.default_rng(6).normal(size=(96, 12, 3)).astype("float32")
    quantized, info = _quantize(model, x, weight_bits=4,
                                adaround=AdaRoundConfig(iterations=60, learning_rate=1e-2))
    result = info.stage_results["adaround"]
    assert set(result.layers) == {"c1", "dw", "einsum", "c3", "head"}, result.skipped
    assert result.layers["c1"].activation == "relu"
    for name, layer in result.layers.items():
        assert layer.loss_adaround <= layer.loss_nearest, layer
        kernel = keras.ops.convert_to_numpy(info.quantized_graph.nodes[name].layer.kernel)
        grid = info.encodings[name].weights["kernel"]
        axes = info.plan[name].weights["kernel"].channel_axes
        shape = broadcast_shape(kernel.shape, axes)
        again = fake_quantize(kernel, np.reshape(np.float32(grid.scale), shape),
                              np.reshape(np.float32(grid.offset), shape), np.float32(grid.levels))
        if layer.kept_nearest:  # no lower loss: the float kernel, rounded to nearest
            floats = keras.ops.convert_to_numpy(info.float_graph.nodes[name].layer.kernel)
            np.testing.assert_array_equal(kernel, floats)
        else:
            np.testing.assert_array_equal(kernel, again.astype(np.float32))
    assert sum(not layer.kept_nearest for layer in result.layers.values()) >= 3, result.layers
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(quantized(x))))
