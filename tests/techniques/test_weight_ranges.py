"""Per-channel weight ranges for the CLE dashboard: statistics, relative ranges,
Tukey-flagged channels, spread scores, and the tables PTQ records with CLE off."""

import json

import keras
import numpy as np
import pytest
from keras import layers

import mct_logger
from mct_logger.graph.ir import read_model
from mct_logger.utils.json_safe import json_numbers
from mct_logger.techniques.weight_ranges import (
    channel_statistics,
    range_summary,
    rank_by_spread,
    weight_range_tables,
)


def test_channel_statistics_reduce_every_axis_but_the_output_channel():
    kernel = np.arange(2 * 2 * 3 * 4, dtype=np.float64).reshape(2, 2, 3, 4) - 20
    stats = channel_statistics(kernel, (-1,))
    flat = kernel.reshape(-1, 4)
    np.testing.assert_allclose(stats["min"], flat.min(0))
    np.testing.assert_allclose(stats["max"], flat.max(0))
    np.testing.assert_allclose(stats["mean"], flat.mean(0))
    np.testing.assert_allclose(stats["range"], flat.max(0) - flat.min(0))
    # depthwise (kh, kw, channels, multiplier): channels flattened row-major
    depthwise = np.random.default_rng(0).normal(size=(3, 3, 4, 2))
    stats = channel_statistics(depthwise, (-2, -1))
    assert stats["range"].shape == (8,)
    np.testing.assert_allclose(stats["max"][3], depthwise[:, :, 1, 1].max())


def test_relative_ranges_exclude_dead_channels_and_flag_tukey_outliers():
    ranges = np.array([1.0, 1.2, 0.0, 1.1, 0.9, 1.0, 50.0, 1.05])
    summary = range_summary(ranges)
    assert summary["dead_channels"] == [2]
    relative = summary["relative_range"]
    assert np.isnan(relative[2])
    np.testing.assert_allclose(relative[[0, 6]], [1.0 / 0.9, 50.0 / 0.9])
    alive = relative[~np.isnan(relative)]
    q1, q3 = np.percentile(alive, [25, 75])
    assert summary["tukey_fence"] == pytest.approx(q3 + 1.5 * (q3 - q1))
    assert summary["outlier_channels"] == [6]
    assert summary["spread_score"] == pytest.approx(np.log10(50.0 / 0.9))
    # all channels alike: nothing flagged, spread 0; all dead: no fence
    assert range_summary(np.ones(5))["outlier_channels"] == []
    assert range_summary(np.ones(5))["spread_score"] == 0.0
    assert range_summary(np.zeros(3))["tukey_fence"] is None


def test_json_numbers_keep_seven_significant_digits_and_drop_non_finite_values():
    values = np.array([[0.123456789, -98765.4321], [np.nan, np.inf], [1e-30 / 3, 0.0]])
    assert json_numbers(values) == [0.1234568, -98765.43, None, None, 3.333333e-31, 0.0]
    assert json_numbers(np.float32(2.5)) == [2.5]


def test_tables_cover_every_weight_layer_and_are_json():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(6, 3, name="conv")(inputs)
    x = layers.DepthwiseConv2D(3, name="dw")(x)
    x = layers.SeparableConv2D(5, 1, name="sep")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(4, name="head")(x))
    conv = model.get_layer("conv")
    kernel = conv.kernel.numpy()
    kernel[..., 2] = 0.0  # a dead channel
    kernel[..., 4] *= 100.0  # an outlier
    conv.kernel.assign(kernel)

    tables = weight_range_tables(read_model(model))
    assert [(t["node"], t["kernel"]) for t in tables] == [
        ("conv", "kernel"), ("dw", "kernel"), ("sep", "depthwise_kernel"),
        ("sep", "pointwise_kernel"), ("head", "kernel")]
    json.dumps(tables, allow_nan=False)
    first = tables[0]
    assert first["channels"] == 6 and len(first["min"]) == 6
    assert first["dead_channels"] == [2] and first["relative_range"][2] is None
    assert first["outlier_channels"] == [4]
    assert first["spread_score"] > 1.5
    assert rank_by_spread(tables)[0][:2] == ("conv", "kernel")


def test_ptq_records_weight_ranges_with_cle_off():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(3, 1, name="conv2")(x)
    model = keras.Model(inputs, x)
    data = np.random.default_rng(0).normal(size=(16, 6, 6, 2)).astype("float32")
    _, info = mct_logger.keras_post_training_quantization(
        model, data, mct_logger.QuantizationConfig(analyze_similarity=False))
    result = info.stage_results["cross_layer_equalization"]
    assert result.applied is False and "off" in result.reason
    tables = result.to_tables()
    json.dumps(tables, allow_nan=False)
    layers_ = tables["weight_ranges"]["layers"]
    assert [t["node"] for t in layers_] == [n for n in info.float_graph.nodes
                                            if n.startswith("conv")]
    assert all(t["after"] is None for t in layers_)
    assert tables["scale_factors"]["sets"] == [] and tables["high_bias_fold"]["folds"] == []
    # the ranges are those of the folded kernels the quantizers see
    folded = info.float_graph.nodes[layers_[0]["node"]].layer.kernel.numpy()
    np.testing.assert_allclose(layers_[0]["before"]["max"],
                               folded.reshape(-1, 4).max(0), rtol=1e-6)
