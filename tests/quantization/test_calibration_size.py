"""Too little calibration data: every calibration from fewer than MIN_CALIBRATION_SAMPLES
samples warns, naming the count, the recommended 500-1000 and what was calibrated;
enough samples, however they are batched, give no such warning."""

import logging

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.quantization.calibration_size import MIN_CALIBRATION_SAMPLES

RNG = np.random.default_rng(0)


def _dense():
    keras.utils.set_random_seed(0)
    inp = keras.Input((16,), name="x")
    h = keras.layers.Dense(32, activation="relu", name="d1")(inp)
    return keras.Model(inp, keras.layers.Dense(4, name="d2")(h), name="tiny_cal")


def _two_inputs():
    keras.utils.set_random_seed(0)
    a, b = keras.Input((8,), name="a"), keras.Input((4,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(8, name="da")(a), b])
    return keras.Model({"a": a, "b": b}, keras.layers.Dense(2, name="out")(h), name="tiny_dict")


def _x(n):
    return RNG.normal(size=(n, 16)).astype("float32")


def _dict(n):
    return {"a": RNG.normal(size=(n, 8)).astype("float32"),
            "b": RNG.normal(size=(n, 4)).astype("float32")}


def _batches(n, size):
    def gen():
        for start in range(0, n, size):
            yield _x(min(size, n - start))
    return gen


def _size_warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "calibrated from only" in r.getMessage()]


@pytest.mark.parametrize("model, data, count", [
    (_dense, lambda: _x(1), 1),
    (_dense, lambda: _x(MIN_CALIBRATION_SAMPLES - 1), MIN_CALIBRATION_SAMPLES - 1),
    (_dense, lambda: _batches(30, 7), 30),                     # a generator of small batches
    (_two_inputs, lambda: _dict(3), 3),                         # a dict of arrays
])
def test_ptq_from_too_few_samples_warns_with_the_count(model, data, count, caplog):
    m = model()
    with caplog.at_level(logging.WARNING, "mct_logger"):
        mct_logger.keras_post_training_quantization(m, data())
    (said,) = _size_warnings(caplog)
    assert f"only {count} sample" in said and "500-1000" in said and repr(m.name) in said
    assert "PTQ" in said and "representative_data" in said


@pytest.mark.parametrize("data", [lambda: _x(MIN_CALIBRATION_SAMPLES),
                                  lambda: _batches(MIN_CALIBRATION_SAMPLES + 5, 9)])
def test_enough_samples_give_no_warning(data, caplog):
    with caplog.at_level(logging.WARNING, "mct_logger"):
        mct_logger.keras_post_training_quantization(_dense(), data())
    assert not _size_warnings(caplog)


def test_an_analysis_calibrated_by_a_callback_on_few_samples_warns(tmp_path, caplog):
    model = _dense()
    with caplog.at_level(logging.WARNING, "mct_logger"):
        mct_logger.QuantAnalyzer(model, lambda m: m.predict(_x(5), verbose=0),
                                 lambda m: 1.0).analyze(results_dir=str(tmp_path / "qa"))
    said = _size_warnings(caplog)
    assert said and "only 5 samples" in said[0] and "QuantAnalyzer" in said[0]
    assert "forward_pass_callback" in said[0]


def test_the_search_trials_warn_once(caplog):
    with caplog.at_level(logging.WARNING, "mct_logger"):
        mct_logger.search_mixed_precision(_dense(), _x(20), eval_callback=lambda m: 1.0,
                                          max_accuracy_drop=0.1, bit_candidates=(4, 8))
    said = _size_warnings(caplog)
    assert len([s for s in said if "trial configurations" in s]) == 1, said
