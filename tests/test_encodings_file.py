"""Encodings export in AIMET's file shape, and PTQ from a loaded file."""

import json

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.export import load_encodings


@pytest.fixture(scope="module")
def model_and_data():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6, 6, 2), name="x")
    h = keras.layers.Conv2D(4, 3, activation="relu6", name="conv")(inputs)
    h = keras.layers.DepthwiseConv2D(3, name="dw")(h)
    h = keras.layers.Flatten(name="flat")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    x = np.random.default_rng(1).normal(size=(40, 6, 6, 2)).astype("float32")
    return model, x


def test_file_has_aimet_shape(model_and_data, tmp_path):
    model, x = model_and_data
    config = mct_logger.QuantizationConfig(weight_bits=6)
    _, info = mct_logger.keras_post_training_quantization(model, x, config)
    path = info.export_encodings(str(tmp_path / "model.encodings.json"))
    content = json.loads(open(path).read())
    assert set(content) >= {"version", "activation_encodings", "param_encodings"}
    conv = content["param_encodings"]["conv/kernel"]
    assert len(conv) == 4  # per output channel
    assert conv[0]["bitwidth"] == 6 and conv[0]["is_symmetric"] == "True"
    assert set(conv[0]) == {"bitwidth", "dtype", "is_symmetric", "max", "min", "offset", "scale"}
    assert len(content["param_encodings"]["dw/kernel"]) == 4
    act = content["activation_encodings"]["conv"]
    assert len(act) == 1 and act[0]["is_symmetric"] == "False" and act[0]["offset"] <= 0
    assert "x" in content["activation_encodings"] and "flat" not in content["activation_encodings"]


def test_encodings_round_trip_with_identical_outputs(model_and_data, tmp_path):
    model, x = model_and_data
    config = mct_logger.QuantizationConfig(
        weight_bits=5, activation_bits=7, weight_per_channel=False,
        overrides={"dw": mct_logger.LayerOverride(weight_per_channel=True, weight_bits=3)},
    )
    model_q, info = mct_logger.keras_post_training_quantization(model, x, config)
    path = info.export_encodings(str(tmp_path / "enc.json"))
    loaded_config = mct_logger.QuantizationConfig(encodings_file=path)  # defaults differ: file wins
    reloaded, info2 = mct_logger.keras_post_training_quantization(model, None, loaded_config)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model_q.predict(x, verbose=0))
    assert "loaded from" in info2.stage_results["statistics_collection"].reason
    assert info2.plan["dw"].weights["kernel"].bitwidth == 3
    assert info2.plan["conv"].weights["kernel"].num_channels is None
    assert set(load_encodings(path)) == set(info.encodings)


def test_file_for_another_model_is_rejected(model_and_data, tmp_path):
    model, x = model_and_data
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"activation_encodings": {}, "param_encodings": {}}))
    with pytest.raises(ValueError, match="no grid for node"):
        mct_logger.keras_post_training_quantization(
            model, x, mct_logger.QuantizationConfig(encodings_file=str(path))
        )
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_encodings(str(bad))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encodings(str(tmp_path / "missing.json"))
