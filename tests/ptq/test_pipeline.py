"""keras_post_training_quantization end to end: stages, info, accuracy, inputs untouched."""

import logging

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.demo import accuracy, load_digits_split, train_digits_cnn
from mct_logger.graph.ir import GraphError
from mct_logger.ptq.pipeline import STAGES
from mct_logger.quantization.memory import graph_memory
from mct_logger.quantization import set_quantizers_enabled
from tests.helpers import conv_dense_model


@pytest.fixture(scope="module")
def digits():
    data = load_digits_split()
    return data, train_digits_cnn(data, epochs=30, seed=0)


def test_default_w8a8_is_within_one_point_of_float_on_held_out_digits(digits):
    data, model = digits
    float_acc = accuracy(model, data.x_test, data.y_test)
    quantized, info = mct_logger.keras_post_training_quantization(model, data.x_train[:512])
    quant_acc = accuracy(quantized, data.x_test, data.y_test)
    assert float_acc > 0.95
    assert quant_acc >= float_acc - 0.01, (float_acc, quant_acc)
    # the quantizers really act: switched off, the model is the float one again
    set_quantizers_enabled(quantized, weights=False, activations=False)
    np.testing.assert_allclose(
        quantized.predict(data.x_test, verbose=0), model.predict(data.x_test, verbose=0), atol=1e-4
    )


def test_stages_run_in_order_and_tell_listeners(digits):
    data, model = digits
    seen = []
    listener = lambda stage, graph, result: seen.append((stage, graph, result))  # noqa: E731
    mct_logger.add_stage_listener(listener)
    try:
        _, info = mct_logger.keras_post_training_quantization(model, data.x_train[:64])
    finally:
        mct_logger.remove_stage_listener(listener)
    assert tuple(s for s, _, _ in seen) == STAGES
    assert list(info.stage_seconds) == list(STAGES)
    assert all(t >= 0 for t in info.stage_seconds.values())
    results = {s: r for s, _, r in seen}
    assert set(results["batch_norm_folding"].folded.values()) == {"stem", "dw1", "pw1", "dw2", "pw2"}
    assert results["cross_layer_equalization"].applied is False
    assert results["statistics_collection"].num_samples == 64
    assert results["statistics_collection"].num_batches == 2
    graphs = {s: g for s, g, _ in seen}
    assert any("batch_normalization" in n for n in graphs["initial_graph"].nodes)
    assert not any("batch_normalization" in n for n in graphs["quantized_model"].nodes)
    assert info.encodings["stem"].weights["kernel"].num_channels == 32
    assert info.encodings["digits"].activation is not None  # the model input
    assert not info.encodings["classifier"].activation.is_symmetric
    # a removed listener hears nothing more
    mct_logger.keras_post_training_quantization(model, data.x_train[:32])
    assert len(seen) == len(STAGES)


def test_input_model_is_never_modified(digits):
    data, model = digits
    before = [w.copy() for w in model.get_weights()]
    names = [layer.name for layer in model.layers]
    prediction = model.predict(data.x_test[:20], verbose=0)
    quantized, _ = mct_logger.keras_post_training_quantization(model, data.x_train[:64])
    for layer in quantized.layers:  # training the quantized model must not leak back
        for w in layer.trainable_weights:
            w.assign(w * 0.5)
    assert [layer.name for layer in model.layers] == names
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(data.x_test[:20], verbose=0), prediction)


def _tiny():
    # conv: 18 + 2 params, output 2x2x2; dense: 24 + 3 params
    return conv_dense_model(filters=2, head_name="dense")


def test_memory_matches_a_hand_computed_example():
    model = _tiny()
    x = np.random.default_rng(0).random((16, 4, 4, 1)).astype("float32")
    _, info = mct_logger.keras_post_training_quantization(model, x)
    # float32: input 16*4; conv (20 + 8)*4; flatten 8*4; dense (27 + 3)*4
    assert info.node_memory_before["x"] == {"weights": 0, "activations": 64, "total": 64}
    assert info.node_memory_before["conv"] == {"weights": 80, "activations": 32, "total": 112}
    assert info.memory_before == 64 + 112 + 32 + 120
    # W8A8: kernels 1 byte, biases 4 bytes, outputs 1 byte; flatten keeps conv's grid
    assert info.node_memory_after["x"]["total"] == 16
    assert info.node_memory_after["conv"] == {"weights": 18 + 8, "activations": 8, "total": 34}
    assert info.node_memory_after["flat"]["total"] == 8
    assert info.node_memory_after["dense"] == {"weights": 24 + 12, "activations": 3, "total": 39}
    assert info.memory_after == 16 + 34 + 8 + 39


def test_fused_outputs_are_stored_at_the_activation_precision(digits):
    data, model = digits
    _, info = mct_logger.keras_post_training_quantization(
        model, data.x_train[:32], mct_logger.QuantizationConfig(activation_bits=4)
    )
    assert "fused" in info.plan["stem"].note
    memory = graph_memory(info.float_graph, info.plan)
    assert memory["stem"]["activations"] == 8 * 8 * 32 * 4 // 8


def test_unquantizable_layers_stay_float_and_are_reported_once(caplog):
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, name="d1")(inputs)
    h = keras.layers.Normalization(mean=0.5, variance=2.0, name="norm")(h)
    outputs = keras.layers.Dense(2, name="d2")(h)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    with caplog.at_level(logging.WARNING, logger="mct_logger"):
        quantized, info = mct_logger.keras_post_training_quantization(model, x)
    reports = [r for r in caplog.records if "cannot quantize" in r.getMessage()]
    assert len(reports) == 1 and "norm (Normalization)" in reports[0].getMessage()
    assert info.float_nodes == ["norm"]
    assert "norm" not in info.encodings
    y, yq = model.predict(x, verbose=0), quantized.predict(x, verbose=0)
    assert np.linalg.norm(yq - y) / np.linalg.norm(y) < 0.05


def test_multi_input_model_with_shared_layer_and_nested_backbone():
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
         keras.layers.GlobalAveragePooling2D()], name="backbone",
    )
    image, vector = keras.Input((8, 8, 3), name="image"), keras.Input((5,), name="vector")
    shared = keras.layers.Dense(4, name="shared")
    a = shared(vector)
    b = shared(keras.layers.Dense(5, name="pre")(vector))
    joined = keras.layers.Concatenate(name="cat")([backbone(image), a])
    model = keras.Model([image, vector], [keras.layers.Dense(2, name="head")(joined), b])
    rng = np.random.default_rng(0)
    xs = [rng.random((40, 8, 8, 3)).astype("float32"), rng.random((40, 5)).astype("float32")]
    quantized, info = mct_logger.keras_post_training_quantization(model, xs)
    assert {"backbone/conv", "shared/call_0", "shared/call_1"} <= set(info.plan)
    assert "kernel" in info.encodings["shared/call_0"].weights
    assert not info.encodings["shared/call_1"].weights  # same weights: one quantizer
    assert info.encodings["shared/call_1"].activation is not None  # its own output grid
    for y, yq in zip(model.predict(xs, verbose=0), quantized.predict(xs, verbose=0)):
        assert np.linalg.norm(yq - y) / np.linalg.norm(y) < 0.05


def test_subclassed_model_and_bad_config_get_actionable_errors():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(GraphError, match="Functional"):
        mct_logger.keras_post_training_quantization(net, np.zeros((4, 3), "float32"))
    with pytest.raises(TypeError, match="QuantizationConfig"):
        mct_logger.keras_post_training_quantization(_tiny(), np.zeros((4, 4, 4, 1)), {"bits": 8})


def test_overrides_change_only_the_matched_nodes(digits):
    data, model = digits
    config = mct_logger.QuantizationConfig(
        overrides={
            "pw1": mct_logger.LayerOverride(weight_bits=4),
            r"dw\d": mct_logger.LayerOverride(activation_observer="min_max"),
            "classifier": mct_logger.LayerOverride(keep_float=True),
        }
    )
    quantized, info = mct_logger.keras_post_training_quantization(model, data.x_train[:64], config)
    assert info.plan["pw1"].weights["kernel"].bitwidth == 4
    assert info.encodings["pw1"].weights["kernel"].bitwidth == 4
    assert info.plan["pw2"].weights["kernel"].bitwidth == 8
    assert info.plan["stem"].weights["kernel"].bitwidth == 8
    assert "classifier" not in info.encodings
    assert not info.plan["classifier"].quantized and "override" in info.plan["classifier"].note
    assert "classifier" not in mct_logger.quantization.quantizers(quantized)
    # dw1 is fused (its output feeds a ReLU), so the override reaches its weights only
    assert info.plan["dw1"].weights["kernel"].observer == "min_max"


def test_override_matching_nothing_is_an_error(digits):
    data, model = digits
    config = mct_logger.QuantizationConfig(overrides={"conv_9": mct_logger.LayerOverride(weight_bits=4)})
    with pytest.raises(ValueError, match="match no node"):
        mct_logger.keras_post_training_quantization(model, data.x_train[:32], config)
    with pytest.raises(ValueError, match="observer"):
        mct_logger.LayerOverride(activation_observer="percentile")
    with pytest.raises(ValueError, match="regular"):
        mct_logger.QuantizationConfig(overrides={"conv[": mct_logger.LayerOverride()})


def test_headline_memory_compares_the_folded_float_model_and_counts_a_fused_output_once():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 1), name="x")
    h = keras.layers.Conv2D(2, 3, name="conv")(inputs)  # 18 + 2 params, output 2x2x2 (8)
    h = keras.layers.BatchNormalization(name="bn")(h)  # folded into conv: 0 bytes after
    h = keras.layers.ReLU(name="relu")(h)  # conv's output is fused into it
    h = keras.layers.Flatten(name="flat")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(h))  # 24 + 3 params
    x = np.random.default_rng(0).random((16, 4, 4, 1)).astype("float32")
    _, info = mct_logger.keras_post_training_quantization(model, x)
    assert "bn" not in info.node_memory_before and "fused" in info.plan["conv"].note
    # float32, batch-norm folded: x 16*4; conv 20*4 weights (its output is relu's);
    # relu 8*4; flat 8*4; dense (27 + 3)*4
    assert info.memory_before == 64 + 80 + 32 + 32 + 120
    # W8A8: x 16; conv 18 + 2*4; relu 8; flat 8 (relu's grid); dense 24 + 3*4 + 3
    assert info.memory_after == 16 + 26 + 8 + 8 + 39
    assert info.stage_results["quantized_model"].memory_before == info.memory_before


def test_every_node_kept_in_float_returns_the_float_model_even_when_analyzing():
    model = _tiny()
    x = np.random.default_rng(0).random((16, 4, 4, 1)).astype("float32")
    config = mct_logger.QuantizationConfig(
        overrides={".*": mct_logger.LayerOverride(keep_float=True)}, analyze_similarity=True)
    quantized, info = mct_logger.keras_post_training_quantization(model, x, config)
    assert info.encodings == {} and "similarity_analysis" not in info.stage_results
    np.testing.assert_allclose(quantized.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_a_failed_build_leaves_no_similarity_analysis_running(digits, monkeypatch):
    """The similarity analysis runs on a thread beside the quantized model's build;
    when the build fails, the run waits for it, so nothing outlives the call."""
    import threading

    from mct_logger.ptq import pipeline as ptq

    def failing_build(*args, **kwargs):
        raise RuntimeError("the build broke")

    data, model = digits
    seen = []
    listener = lambda stage, graph, result: seen.append(stage)  # noqa: E731
    monkeypatch.setattr(ptq, "_build", failing_build)
    mct_logger.add_stage_listener(listener)
    try:
        with pytest.raises(RuntimeError, match="the build broke"):
            mct_logger.keras_post_training_quantization(
                model, data.x_train[:64], mct_logger.QuantizationConfig(analyze_similarity=True))
    finally:
        mct_logger.remove_stage_listener(listener)
    assert not [t for t in threading.enumerate() if t.name.startswith("mct_logger-")]
    assert "similarity_analysis" not in seen and seen[-1] == "bias_correction"
