"""LiteRT int8 export: real TFLite conversion and the real LiteRT interpreter, no mocks."""

import os

import keras
import numpy as np
import pytest
from keras import layers

from mct_logger import QuantizationConfig, keras_post_training_quantization
from mct_logger.data.sources import RepresentativeDataError
from mct_logger.export import predict_litert
from mct_logger.export.litert import LiteRTConversionError, convert

INT8_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "CONCATENATION"}


def _conv_net():
    inputs = keras.Input((16, 16, 3), name="img")
    x = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    y = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = layers.ReLU(6.0, name="dw_relu6")(y)
    y = layers.Conv2D(8, 1, name="project")(y)
    x = layers.Add(name="residual")([x, y])
    z = layers.Conv2D(4, 1, name="branch")(x)
    x = layers.Concatenate(name="concat")([x, z])
    x = layers.AveragePooling2D(2, name="avg_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(10, name="logits")(x)
    outputs = layers.Softmax(name="softmax")(x)
    return keras.Model(inputs, outputs, name="conv_net")


@pytest.fixture(scope="module")
def conv_export(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = _conv_net()
    x = np.random.default_rng(0).normal(size=(64, 16, 16, 3)).astype("float32")
    _, info = keras_post_training_quantization(
        model, x, QuantizationConfig(target="litert", analyze_similarity=False))
    path = str(tmp_path_factory.mktemp("litert") / "conv_net.tflite")
    return info, info.export_litert(path, data=x[:32]), x


def test_conv_net_runs_int8_and_matches_the_simulation(conv_export):
    _, result, _ = conv_export
    ops = result.parity.ops
    assert not result.op_counts.float_ops, result.op_counts.float_ops
    assert INT8_OPS <= set(result.op_counts.int8), result.op_counts.int8
    for op in ops:
        if op.op_name in INT8_OPS:
            assert op.dtype == "int8", (op.op_name, op.dtype)
    output = result.parity.outputs[0]
    assert output.within_one_step >= 0.99, output
    assert not result.parity.unmatched, result.parity.unmatched
    assert len(result.parity.nodes) >= 10
    for row in result.parity.nodes:
        assert row.sqnr_sim_litert_db >= 30.0, (row.node, row.sqnr_sim_litert_db, row.cause)
    # The residual, the convolutions and the concatenation are bit-exact on LiteRT's grids.
    exact = {r.node: r for r in result.parity.nodes}
    for name in ("stem_relu6", "dw_relu6", "project", "residual", "branch", "concat"):
        assert exact[name].beyond_one_step == 0.0, exact[name]
        assert exact[name].scale == pytest.approx(exact[name].sim_scale, rel=1e-5)


def test_export_writes_the_file_and_model_explorer_node_data(conv_export):
    _, result, x = conv_export
    assert os.path.getsize(result.path) == result.size_bytes
    assert not os.path.exists(result.path + ".tmp")
    import json

    with open(result.node_data_path, encoding="utf-8") as f:
        data = json.load(f)
    ops = {str(op.index) for op in result.parity.ops}
    assert data["main"]["results"] and set(data["main"]["results"]) <= ops
    out = predict_litert(result.path, x[:4])[0]
    assert out.shape == (4, 10) and np.allclose(out.sum(1), 1.0, atol=0.05)
    assert "top-1 agreement" in result.summary().splitlines()[0]


def test_int8_io(conv_export, tmp_path):
    info, _, x = conv_export
    result = info.export_litert(str(tmp_path / "io.tflite"), data=x[:8], io_dtype="int8")
    from mct_logger.export.parity import interpreter

    with open(result.path, "rb") as f:
        it = interpreter(f.read(), preserve=False)
    assert it.get_input_details()[0]["dtype"] == np.int8
    assert it.get_output_details()[0]["dtype"] == np.int8
    assert result.parity.outputs[0].within_one_step >= 0.99


def test_refusals_happen_before_any_work(conv_export, tmp_path):
    info, _, x = conv_export
    kept = tmp_path / "kept.tflite"
    kept.write_bytes(b"earlier export")
    with pytest.raises(ValueError, match="io_dtype"):
        info.export_litert(str(kept), data=x[:4], io_dtype="float16")
    with pytest.raises(IsADirectoryError, match="export_litert"):
        info.export_litert(str(tmp_path), data=x[:4])
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NotADirectoryError, match="export_litert"):
        info.export_litert(str(tmp_path / "a_file" / "m.tflite"), data=x[:4])
    with pytest.raises(RepresentativeDataError, match="data"):
        info.export_litert(str(kept), data=np.zeros((4, 8, 8, 3), "float32"))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        with pytest.raises(PermissionError, match="cannot be written"):
            info.export_litert(str(locked / "m.tflite"), data=x[:4])
    assert kept.read_bytes() == b"earlier export"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".tmp", ".json")) == []


def test_converter_rejection_names_the_layer():
    import tensorflow as tf

    class PerChannelDense(layers.Layer):  # a per-channel FakeQuant on a Dense kernel
        def build(self, shape):
            self.kernel = self.add_weight(shape=(shape[-1], 4), name="kernel")

        def call(self, x):
            top = np.full(4, 1.0, "float32")
            k = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                self.kernel, -top, top, narrow_range=True)
            x = tf.quantization.fake_quant_with_min_max_args(x, -1.0, 1.0)
            return tf.quantization.fake_quant_with_min_max_args(tf.matmul(x, k), -4.0, 4.0)

    inputs = keras.Input((3,), name="features")
    model = keras.Model(inputs, PerChannelDense(name="odd_dense")(inputs), name="bad")
    from mct_logger.graph.ir import read_model

    with pytest.raises(LiteRTConversionError, match=r"odd_dense.*mismatched quantized axes"):
        convert(model, read_model(model), "float32")


@keras.saving.register_keras_serializable(package="mct_logger_tests")
class Squash(layers.Layer):
    """A custom layer the engine does not know."""

    def call(self, x):
        return x / (1.0 + keras.ops.abs(x))


def test_custom_layer_is_exported_in_float_and_listed(tmp_path):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = Squash(name="squash")(x)
    x = layers.Conv2D(4, 1, name="after")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, layers.Dense(3, name="head")(x))
    data = np.random.default_rng(1).normal(size=(32, 8, 8, 3)).astype("float32")
    _, info = keras_post_training_quantization(model, data,
                                               QuantizationConfig(analyze_similarity=False))
    result = info.export_litert(str(tmp_path / "custom.tflite"), data=data[:8])
    reasons = [reason for _, reason in result.op_counts.float_ops]
    assert any(r.startswith("squash:") and "Squash" in r for r in reasons), reasons
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(result.op_counts.int8)
    assert "float" in result.summary() and "squash" in result.summary()


def test_digits_litert_accuracy_matches_the_simulation(tmp_path):
    from mct_logger.demo import accuracy, load_digits_split, train_digits_cnn

    data = load_digits_split()
    model = train_digits_cnn(data, epochs=30, seed=0)
    model_q, info = keras_post_training_quantization(
        model, data.x_train[:256], QuantizationConfig(target="litert", analyze_similarity=False))
    result = info.export_litert(str(tmp_path / "digits.tflite"))
    simulated = accuracy(model_q, data.x_test, data.y_test)
    probabilities = predict_litert(result.path, data.x_test)[0]
    litert = float(np.mean(np.argmax(probabilities, -1) == data.y_test))
    assert abs(litert - simulated) <= 0.005, (litert, simulated)
    assert not result.parity.unmatched, result.parity.unmatched  # auto-named re_lu_k layers
    assert result.size_bytes < 0.6 * result.float_size_bytes


def test_4_bit_weights_are_carried_exactly_in_int8_and_the_report_says_no_memory_is_saved():
    from mct_logger.export.grids import weight_grid
    from mct_logger.quantization.encodings import Encoding, quantize_dequantize

    kernel = np.random.default_rng(2).normal(size=(3, 3, 4, 6)).astype("float32")
    magnitude = np.abs(kernel).reshape(-1, 6).max(0)
    encoding = Encoding.from_range(-magnitude, magnitude, 4, symmetric=True)
    grid, note = weight_grid(kernel, encoding, (-1,), per_channel_allowed=True)
    np.testing.assert_allclose(grid.scale, encoding.scale)  # the 4-bit scale, as int8
    q = grid.values.reshape(-1, 6) / grid.scale
    assert np.allclose(q, np.round(q), atol=1e-4) and np.abs(q).max() <= 8
    np.testing.assert_allclose(grid.values, quantize_dequantize(
        kernel, encoding, (1, 1, 1, 6)), rtol=1e-6)
    assert "4-bit" in note and "no memory saved" in note
