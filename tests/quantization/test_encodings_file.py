"""Encodings export in AIMET's file shape, and PTQ from a loaded file."""

import json
import re

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.quantization.encodings_file import encodings_to_json, load_encodings, split_param_key
from mct_logger.graph.ir import read_model


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


def test_export_to_a_path_that_cannot_be_written_names_the_path_and_the_fix(
        model_and_data, tmp_path):
    model, x = model_and_data
    _, info = mct_logger.keras_post_training_quantization(model, x)
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(NotADirectoryError, match=r"export_encodings path .*afile/enc.json.* "
                                                 r"cannot be written: .*afile.* is a file"):
        info.export_encodings(str(tmp_path / "afile" / "enc.json"))
    with pytest.raises(IsADirectoryError, match="is a folder; pass a file path"):
        info.export_encodings(tmp_path)
    assert (tmp_path / "afile").read_text() == "mine"
    assert info.export_encodings(str(tmp_path / "new" / "enc.json")).endswith("enc.json")


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


# ------------------------------------------------ validated before any stage


@pytest.fixture
def exported(model_and_data, tmp_path):
    """The model, its data, and the JSON content of its exported encodings file."""
    model, x = model_and_data
    _, info = mct_logger.keras_post_training_quantization(model, x)
    path = info.export_encodings(str(tmp_path / "good.json"))
    return model, x, json.loads(open(path).read())


def _ptq_stages(model, x, config):
    """Runs PTQ expecting an error; returns (error, stages that ran)."""
    stages = []
    listener = lambda stage, graph, result: stages.append(stage)  # noqa: E731
    mct_logger.add_stage_listener(listener)
    try:
        with pytest.raises((ValueError, FileNotFoundError)) as error:
            mct_logger.keras_post_training_quantization(model, x, config)
    finally:
        mct_logger.remove_stage_listener(listener)
    return str(error.value), stages


def _edit(content, section, key, field, value, entry=0):
    content = json.loads(json.dumps(content))
    content[section][key][entry][field] = value
    return content


@pytest.mark.parametrize("section,key,field,value,match", [
    ("activation_encodings", "conv", "offset", 1e9, r"offset 1000000000\.0 is not an integer in \[-255, 0\]"),
    ("activation_encodings", "conv", "offset", 3, r"offset 3 is not an integer"),
    ("activation_encodings", "conv", "offset", -2.5, r"offset -2\.5 is not an integer"),
    ("activation_encodings", "conv", "scale", -0.1, "scale is -0.1; it must be positive"),
    ("activation_encodings", "conv", "scale", "big", "scale is 'big', not a number"),
    ("param_encodings", "conv/kernel", "bitwidth", 40, "bitwidth=40 is not supported"),
    ("param_encodings", "conv/kernel", "min", 5.0, "min 5.0 disagrees with scale and offset"),
    ("param_encodings", "conv/kernel", "max", 1e6, "max 1000000.0 disagrees"),
    ("param_encodings", "conv/kernel", "is_symmetric", "maybe", "is_symmetric is 'maybe'"),
    ("param_encodings", "conv/kernel", "dtype", "float", "dtype 'float' is not supported"),
], ids=["offset-1e9", "offset-positive", "offset-fraction", "scale-negative", "scale-text",
        "bitwidth-40", "min-disagrees", "max-disagrees", "symmetric-flag", "float-dtype"])
def test_inconsistent_entry_is_refused_before_any_stage_naming_file_and_key(
        exported, tmp_path, section, key, field, value, match):
    model, x, content = exported
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(_edit(content, section, key, field, value)))
    message, stages = _ptq_stages(model, x, mct_logger.QuantizationConfig(encodings_file=str(path)))
    assert stages == []
    assert str(path) in message and f"{section}[{key!r}]" in message
    assert re.search(match, message), message


def test_not_utf8_file_is_refused_naming_the_file(model_and_data, tmp_path):
    model, x = model_and_data
    path = tmp_path / "latin1.json"
    path.write_bytes('{"activation_encodings": {"caf\u00e9": []}}'.encode("latin-1"))
    message, stages = _ptq_stages(model, x, mct_logger.QuantizationConfig(encodings_file=str(path)))
    assert stages == [] and "not UTF-8" in message and str(path) in message


@pytest.mark.parametrize("key,section", [("conv/kernel", "param_encodings"),
                                         ("dw/kernel", "param_encodings"),
                                         ("conv", "activation_encodings")])
def test_per_channel_count_that_does_not_fit_names_node_and_both_counts(
        exported, tmp_path, key, section):
    model, x, content = exported
    content = json.loads(json.dumps(content))
    entries = content[section][key]
    content[section][key] = (entries * 3)[:3] if len(entries) == 4 else entries * 3
    path = tmp_path / "channels.json"
    path.write_text(json.dumps(content))
    message, stages = _ptq_stages(model, x, mct_logger.QuantizationConfig(encodings_file=str(path)))
    node = key.split("/")[0]
    assert stages == []
    assert f"node {node!r}" in message and re.search(r"\b3 per-channel\b", message)
    assert re.search(r"\b4\b.*channels", message), message


def test_override_matching_nothing_fails_before_any_stage(model_and_data):
    model, x = model_and_data
    config = mct_logger.QuantizationConfig(overrides={"conv_typo": mct_logger.LayerOverride(weight_bits=4)})
    message, stages = _ptq_stages(model, x, config)
    assert stages == [] and "conv_typo" in message and "match no node" in message


def test_file_missing_a_grid_is_refused_before_any_stage(exported, tmp_path):
    model, x, content = exported
    del content["param_encodings"]["dw/kernel"]
    path = tmp_path / "missing_grid.json"
    path.write_text(json.dumps(content))
    message, stages = _ptq_stages(model, x, mct_logger.QuantizationConfig(encodings_file=str(path)))
    assert stages == [] and "no grid for node 'dw' (kernel)" in message and str(path) in message


# ------------------------------------------------ composite layers and '/' in names


def _mha_model():
    inputs = keras.Input((5, 6))
    h = keras.layers.MultiHeadAttention(2, 4, name="attention")(inputs, inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)), name="mha")


def _rnn_model(rnn):
    inputs = keras.Input((5, 6))
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Bidirectional(rnn, name="bi")(inputs)))


def _time_distributed_model():
    inputs = keras.Input((3, 6, 6, 2))
    h = keras.layers.TimeDistributed(keras.layers.Conv2D(4, 3), name="td")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))


def _einsum_model():
    inputs = keras.Input((5, 6))
    h = keras.layers.EinsumDense("abc,cd->abd", (5, 3), bias_axes="d", name="einsum")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))


def _embedding_model():
    inputs = keras.Input((4,), dtype="int32")
    h = keras.layers.Flatten()(keras.layers.Embedding(12, 3, name="emb")(inputs))
    return keras.Model(inputs, keras.layers.Dense(2)(h))


def _nested_model():
    """'/' in node names (a nested model, a shared layer's calls) and in
    weight names (attention inside the nested model): 'outer/attention/query/kernel'."""
    sub_in = keras.Input((5, 6))
    shared = keras.layers.Dense(6, name="shared")
    h = shared(keras.layers.MultiHeadAttention(2, 4, name="attention")(sub_in, sub_in))
    outer = keras.Model(sub_in, shared(h), name="outer")
    inputs = keras.Input((5, 6))
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(outer(inputs))))


COMPOSITE_MODELS = {
    "MultiHeadAttention": (_mha_model, (5, 6), "attention/query/kernel"),
    "Bidirectional(GRU)": (lambda: _rnn_model(keras.layers.GRU(3, name="gru")), (5, 6),
                           "bi/forward_gru/gru_cell/kernel"),
    "Bidirectional(LSTM)": (lambda: _rnn_model(keras.layers.LSTM(3, name="lstm")), (5, 6),
                            "bi/backward_lstm/lstm_cell/recurrent_kernel"),
    "TimeDistributed(Conv2D)": (_time_distributed_model, (3, 6, 6, 2), "td/kernel"),
    "EinsumDense": (_einsum_model, (5, 6), "einsum/kernel"),
    "Embedding": (_embedding_model, None, "emb/embeddings"),
    "nested model": (_nested_model, (5, 6), "outer/attention/query/kernel"),
}


def _encoding_warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "mct_logger" and r.levelname == "WARNING" and "encodings file" in r.getMessage()]


@pytest.mark.parametrize("kind", list(COMPOSITE_MODELS))
def test_file_written_for_a_model_loads_back_with_identical_grids_and_outputs(kind, tmp_path, caplog):
    make, shape, key = COMPOSITE_MODELS[kind]
    keras.utils.set_random_seed(3)
    model = make()
    rng = np.random.default_rng(3)
    x = rng.integers(0, 12, (24, 4)).astype("int32") if shape is None else rng.normal(
        size=(24, *shape)).astype("float32")
    model_q, info = mct_logger.keras_post_training_quantization(model, x)
    path = info.export_encodings(str(tmp_path / "enc.json"))
    assert key in json.loads(open(path).read())["param_encodings"]
    with caplog.at_level("WARNING", logger="mct_logger"):
        reloaded, info2 = mct_logger.keras_post_training_quantization(
            model, None, mct_logger.QuantizationConfig(encodings_file=path))
    assert _encoding_warnings(caplog) == []
    assert encodings_to_json(info2.encodings) == encodings_to_json(info.encodings)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model_q.predict(x, verbose=0))


def test_param_keys_split_at_the_longest_node_name_that_holds_the_weight():
    graph = read_model(_nested_model())
    assert split_param_key("outer/attention/query/kernel", graph) == ("outer/attention", "query/kernel")
    assert split_param_key("outer/shared/call_0/kernel", graph) == ("outer/shared/call_0", "kernel")
    assert split_param_key("outer/shared/call_1/kernel", graph) == ("outer/shared/call_1", "kernel")
    assert split_param_key("outer/shared/kernel", graph) is None  # no node 'outer/shared'
    assert split_param_key("ghost/query/kernel", graph) is None
    assert split_param_key("outer/attention/query/kernel") == ("outer/attention/query", "kernel")


def test_directory_as_encodings_file_is_refused_naming_it(model_and_data, tmp_path):
    model, x = model_and_data
    folder = tmp_path / "enc.json"
    folder.mkdir()
    message, stages = _ptq_stages(model, x, mct_logger.QuantizationConfig(encodings_file=str(folder)))
    assert stages == [] and "encodings_file" in message and str(folder) in message
    assert "export_encodings" in message


def test_bitwidths_that_differ_from_the_config_warn_naming_file_and_setting(exported, tmp_path, caplog):
    model, x, content = exported  # exported at the default W8A8
    path = tmp_path / "w8a8.json"
    path.write_text(json.dumps(content))
    with caplog.at_level("WARNING", logger="mct_logger"):
        mct_logger.keras_post_training_quantization(
            model, x, mct_logger.QuantizationConfig(encodings_file=str(path)))
    assert _encoding_warnings(caplog) == []  # same bit-widths: nothing to say
    config = mct_logger.QuantizationConfig(
        weight_bits=4, encodings_file=str(path),
        overrides={"head": mct_logger.LayerOverride(activation_bits=6)})
    with caplog.at_level("WARNING", logger="mct_logger"):
        _, info = mct_logger.keras_post_training_quantization(model, x, config)
    (warning,) = _encoding_warnings(caplog)
    assert str(path) in warning
    assert "8-bit weight grids where the config sets weight_bits=4" in warning
    assert "'conv/kernel'" in warning and "'dw/kernel'" in warning and "'head/kernel'" in warning
    assert "8-bit activation grids where the config sets overrides['head'].activation_bits=6" in warning
    assert info.plan["conv"].weights["kernel"].bitwidth == 8  # the file's grids win
    assert info.plan["head"].activation.bitwidth == 8


def test_grid_shapes_that_differ_from_the_config_warn_naming_file_setting_and_tensors(
        model_and_data, tmp_path, caplog):
    model, x = model_and_data
    QC, files, outputs = mct_logger.QuantizationConfig, {}, {}
    for name, config in (("per_channel", QC()), ("per_tensor", QC(weight_per_channel=False))):
        q, info = mct_logger.keras_post_training_quantization(model, x, config)
        files[name] = info.export_encodings(str(tmp_path / f"{name}.json"))
        outputs[name] = q.predict(x, verbose=0)

    def warnings_of(name, **settings):
        caplog.clear()
        with caplog.at_level("WARNING", logger="mct_logger"):
            q, _ = mct_logger.keras_post_training_quantization(
                model, x, QC(encodings_file=files[name], **settings))
        np.testing.assert_array_equal(q.predict(x, verbose=0), outputs[name])  # the file wins
        return _encoding_warnings(caplog)

    assert warnings_of("per_tensor", weight_per_channel=False) == []
    (warning,) = warnings_of("per_tensor")
    assert files["per_tensor"] in warning
    assert ("per-tensor weight grids where the config sets weight_per_channel=True "
            "(3: 'conv/kernel', 'dw/kernel', 'head/kernel')") in warning
    (warning,) = warnings_of("per_channel", weight_per_channel=False)
    assert ("per-channel weight grids where the config sets weight_per_channel=False "
            "(3: 'conv/kernel', 'dw/kernel', 'head/kernel')") in warning
    (warning,) = warnings_of("per_channel", activation_symmetric=True,
                             overrides={"head": mct_logger.LayerOverride(weight_symmetric=False)})
    assert "asymmetric activation grids where the config sets activation_symmetric=True" in warning
    assert ("symmetric weight grids where the config sets overrides['head'].weight_symmetric=False "
            "(1: 'head/kernel')") in warning
    assert "per-tensor" not in warning and "-bit" not in warning


def test_a_one_channel_tensor_has_one_grid_either_way_and_does_not_warn(tmp_path, caplog):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(keras.layers.Dense(4, name="hidden")(inputs)))
    x = np.random.default_rng(4).normal(size=(32, 5)).astype("float32")
    _, info = mct_logger.keras_post_training_quantization(model, x)
    path = info.export_encodings(str(tmp_path / "enc.json"))
    assert len(json.loads(open(path).read())["param_encodings"]["out/kernel"]) == 1
    with caplog.at_level("WARNING", logger="mct_logger"):
        mct_logger.keras_post_training_quantization(
            model, x, mct_logger.QuantizationConfig(encodings_file=path))
    assert _encoding_warnings(caplog) == []
    with caplog.at_level("WARNING", logger="mct_logger"):
        mct_logger.keras_post_training_quantization(model, x, mct_logger.QuantizationConfig(
            encodings_file=path, weight_per_channel=False))
    (warning,) = _encoding_warnings(caplog)  # the 4-unit layer's grids differ; 'out' does not
    assert "(1: 'hidden/kernel')" in warning and "out/kernel" not in warning


def test_entries_for_nodes_the_model_lacks_warn_naming_them(exported, tmp_path, caplog):
    model, x, content = exported
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps(content))
    content["activation_encodings"]["ghost_layer"] = content["activation_encodings"]["conv"]
    content["param_encodings"]["ghost_mha/query/kernel"] = content["param_encodings"]["conv/kernel"]
    path = tmp_path / "extra.json"
    path.write_text(json.dumps(content))
    with caplog.at_level("WARNING", logger="mct_logger"):
        extra_q, _ = mct_logger.keras_post_training_quantization(
            model, x, mct_logger.QuantizationConfig(encodings_file=str(path)))
    (warning,) = _encoding_warnings(caplog)
    assert str(path) in warning and "'ghost_layer'" in warning and "'ghost_mha/query/kernel'" in warning
    clean_q, _ = mct_logger.keras_post_training_quantization(
        model, x, mct_logger.QuantizationConfig(encodings_file=str(clean)))
    np.testing.assert_array_equal(extra_q.predict(x, verbose=0), clean_q.predict(x, verbose=0))
