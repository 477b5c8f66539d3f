"""Non-finite values and overflow: a range that is not finite names the node and
its cause, and error measures accumulate in float64 (never NaN for finite data)."""

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.analyzer.driver import QuantAnalyzer
from mct_logger.graph.ir import read_model
from mct_logger.quantization.config import QuantizationConfig
from mct_logger.quantization.histogram import HistogramCollector
from mct_logger.quantization.plan import plan_quantization
from mct_logger.quantization.quantsim import CalibrationModel

L = keras.layers


def _overflowing_model():
    """x -> big (Dense, x 1e20, fused into relu) -> relu -> out: inputs ~1e20 make
    big's output ~1e40, beyond float32."""
    inputs = keras.Input((4,), name="x")
    big = L.Dense(4, name="big")
    h = L.ReLU(name="relu")(big(inputs))
    model = keras.Model(inputs, L.Dense(2, name="out")(h), name="overflowing")
    big.set_weights([np.full((4, 4), 1e20, "float32"), np.zeros(4, "float32")])
    return model


def _small_model():
    inputs = keras.Input((4,), name="x")
    h = L.Dense(4, activation="relu", name="fc1")(inputs)
    return keras.Model(inputs, L.Dense(2, name="fc2")(h), name="small")


def test_overflow_inside_the_model_names_the_node_and_says_overflow():
    x = (np.random.default_rng(0).random((16, 4)) * 1e20).astype("float32")
    with pytest.raises(ValueError) as error:
        mct_logger.keras_post_training_quantization(_overflowing_model(), x)
    message = str(error.value)
    assert "node 'relu'" in message and "not finite" in message
    assert "float overflow inside the model" in message and "from the data" not in message


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_data_from_a_forward_pass_names_the_input_and_the_callback(bad):
    model = _small_model()
    graph = read_model(model)
    plan = plan_quantization(graph, QuantizationConfig())
    calibration = CalibrationModel(graph, plan)
    x = np.random.default_rng(1).random((8, 4)).astype("float32")
    x[2, 1] = bad
    calibration.predict(x, verbose=0)  # what a forward_pass_callback does
    with pytest.raises(ValueError, match=r"node 'x'.*comes from the data.*\['x'\].*forward_pass_callback"):
        calibration.activation_encodings(plan)


def test_quant_analyzer_with_nan_in_the_callbacks_data_points_at_it(tmp_path):
    model = _small_model()
    x = np.random.default_rng(2).random((32, 4)).astype("float32")
    x[5, 0] = np.nan
    analyzer = QuantAnalyzer(model, lambda m: m.predict(x, verbose=0), lambda m: 0.0)
    with pytest.raises(ValueError, match="forward_pass_callback"):
        analyzer.analyze(results_dir=str(tmp_path / "results"))


def test_error_measures_of_huge_finite_values_are_finite():
    """1e30-scale activations: their squares overflow float32 but not float64."""
    model = _small_model()
    x = (np.random.default_rng(3).random((24, 4)) * 1e30).astype("float32")
    config = mct_logger.QuantizationConfig(analyze_similarity=True)
    _, info = mct_logger.keras_post_training_quantization(model, x, config)
    similarity = info.stage_results["similarity_analysis"]
    values = list(similarity.sqnr_accumulated_db.values()) + list(similarity.sqnr_isolated_db.values())
    assert values and all(np.isfinite(v) for v in values)
    assert all(v > 20 for v in similarity.sqnr_isolated_db.values())  # 8 bits: far from 0 dB
    assert np.all(np.isfinite(similarity.cosine)) and np.all(similarity.cosine > 0.9)


def _flatten_dense_model():
    inputs = keras.Input((4, 4, 1), name="img")
    h = L.Dense(6, activation="relu", name="fc1")(L.Flatten(name="flat")(inputs))
    return keras.Model(inputs, L.Dense(3, name="fc2")(h), name="flatten_dense")


@pytest.mark.parametrize("logged", [False, True], ids=["no_log", "log_folder"])
@pytest.mark.parametrize("observer", ["min_max", "mse", "tf_enhanced"])
def test_finite_inputs_near_float32_max_overflowing_in_a_layer_name_that_layer(
        observer, logged, tmp_path):
    """Inputs of 3e38 are finite but overflow to Inf inside fc1: every activation
    observer, with and without logs, ends in the error naming fc1, not in a raw
    NumPy error from binning the (finite) huge inputs."""
    model = _flatten_dense_model()
    model.get_layer("fc1").set_weights([np.full((16, 6), 0.5, "float32"), np.zeros(6, "float32")])
    x = (np.random.default_rng(4).random((32, 4, 4, 1)) * 3e38).astype("float32")
    config = mct_logger.QuantizationConfig(activation_observer=observer)
    if logged:
        mct_logger.set_log_folder(str(tmp_path / "logs"))
    try:
        with pytest.raises(ValueError) as error:
            mct_logger.keras_post_training_quantization(model, x, config)
    finally:
        mct_logger.set_log_folder(None)
    message = str(error.value)
    assert "node 'fc1'" in message and "not finite" in message
    assert "float overflow inside the model" in message


@pytest.mark.parametrize("observer", ["min_max", "mse", "tf_enhanced"])
def test_finite_inputs_near_float32_max_that_stay_finite_are_quantized(observer):
    """3e38 inputs scaled down by 1e-38 first: no overflow anywhere, so PTQ works,
    binning the huge input values in float64."""
    inputs = keras.Input((4, 4, 1), name="img")
    h = L.Rescaling(1e-38, name="scale")(inputs)
    h = L.Dense(6, activation="relu", name="fc1")(L.Flatten(name="flat")(h))
    model = keras.Model(inputs, L.Dense(3, name="fc2")(h))
    x = (np.random.default_rng(5).random((32, 4, 4, 1)) * 3e38).astype("float32")
    config = mct_logger.QuantizationConfig(activation_observer=observer)
    quantized, _ = mct_logger.keras_post_training_quantization(model, x, config)
    expected = model.predict(x, verbose=0)
    got = quantized.predict(x, verbose=0)
    assert np.all(np.isfinite(expected)) and np.all(np.isfinite(got))
    assert np.max(np.abs(got - expected)) <= 0.05 * np.max(np.abs(expected))


def test_a_histogram_of_values_near_float32_max_counts_every_value():
    x = (np.random.default_rng(6).random((1000, 3)) * 3e38).astype("float32")
    collector = HistogramCollector()
    collector.update(x[:500])
    collector.update(x[500:] - np.float32(3e38))  # widens the grid to [-3e38, 3e38]
    edges, counts = collector.histogram()
    assert np.all(np.isfinite(edges)) and np.allclose(counts.sum(axis=1), 1000)


def test_a_sample_with_nan_its_range_missed_is_not_binned_and_the_range_says_so():
    """A reduction that skipped a NaN hands over a finite range with a NaN sample:
    the sample is not binned and the channel's range turns NaN, so the range check
    before the encodings names the node."""
    collector = HistogramCollector()
    sample = np.random.default_rng(7).random((64, 3)).astype("float32")
    assert collector.observe_range(sample.min(axis=0), sample.max(axis=0))
    sample[5, 1] = np.nan
    collector.add_sample(sample)
    assert not collector.finite and np.isnan(collector.max[1]) and np.isfinite(collector.max[0])
    assert collector.count == 0
