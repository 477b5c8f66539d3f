"""Cross-layer equalization: function preservation on several topologies, sets that
must not be equalized, converged ranges, high-bias folding, ReLU6 -> ReLU reporting,
and the CLE stage of PTQ."""

import json

import keras
import numpy as np
import pytest
from tests.helpers import norm_relative_error
from keras import layers

import mct_logger
from mct_logger.graph.ir import read_model
from mct_logger.quantization import set_quantizers_enabled
from mct_logger.techniques.batch_norm_folding import fold_batch_norms
from mct_logger.techniques.cross_layer_equalization import equalize_graph, equalize_model

TOLERANCE = 1e-4


# ------------------------------------------------------------------ helpers


def spoil_ranges(model, seed=0, spread=100.0):
    """Random biases; BNs with random statistics; every conv/dense output channel
    scaled by a log-uniform factor in [1/sqrt(spread), sqrt(spread)], so ranges
    differ a lot between channels (the float function changes: it is a new model)."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            values = {"gamma": rng.uniform(0.5, 1.5, c) * rng.choice([-1.0, 1.0], c),
                      "beta": rng.normal(0.0, 0.3, c), "moving_mean": rng.normal(0.0, 0.3, c),
                      "moving_variance": rng.uniform(0.5, 2.0, c)}
            layer.set_weights([values[v.path.split("/")[-1]].astype("float32")
                               for v in layer.weights])
        elif isinstance(layer, (layers.Conv2D, layers.Conv1D, layers.DepthwiseConv2D,
                                layers.Dense)):
            kernel = layer.kernel.numpy()
            axis_size = kernel.shape[-2] if isinstance(layer, layers.DepthwiseConv2D) \
                else kernel.shape[-1]
            f = np.exp(rng.uniform(-0.5, 0.5, axis_size) * np.log(spread))
            if isinstance(layer, layers.DepthwiseConv2D):
                kernel = kernel * f[:, None]
            else:
                kernel = kernel * f
            layer.kernel.assign(kernel.astype("float32"))
            if layer.bias is not None:
                layer.bias.assign(rng.normal(0.0, 0.1, layer.bias.shape).astype("float32"))


def inputs_for(model, seed=0, batch=4, scale=1.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((batch, *model.inputs[0].shape[1:]))).astype("float32")


def predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def kernel_of(model, name):
    return model.get_layer(name).kernel.numpy()


def out_ranges(kernel, depthwise=False):
    k = np.abs(kernel)
    return k.reshape(-1, k.shape[-2]).max(0) if depthwise else k.reshape(-1, k.shape[-1]).max(0)


def in_ranges(kernel):
    k = np.moveaxis(np.abs(kernel), -2, -1)
    return k.reshape(-1, k.shape[-1]).max(0)


# ------------------------------------------------------------------ topologies


def conv_chain():
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = layers.ZeroPadding2D(1, name="pad")(x)
    x = layers.Conv2D(12, 3, name="c2")(x)
    x = layers.ReLU(name="r2")(x)
    x = layers.Dropout(0.5, name="drop")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Conv2D(6, 1, name="c3")(x)
    x = layers.LeakyReLU(0.1, name="leaky")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(5, name="d1")(x)
    x = layers.PReLU(name="prelu")(x)
    return keras.Model(inputs, layers.Dense(3, name="d2")(x), name="conv_chain")


def mobilenet_blocks():
    """conv -> BN -> ReLU6 -> dw -> BN -> ReLU6 -> pw -> BN -> ReLU -> dw -> ... (sets share pw1)."""
    def block(x, layer, relu6=True):
        x = layer(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU(6.0)(x) if relu6 else layers.Activation("relu")(x)

    inputs = keras.Input((8, 8, 3))
    x = block(inputs, layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem"))
    x = block(x, layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw1"))
    x = block(x, layers.Conv2D(16, 1, use_bias=False, name="pw1"), relu6=False)
    x = block(x, layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw2"))
    x = block(x, layers.Conv2D(16, 1, use_bias=False, name="pw2"))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(4, name="head")(x), name="mobilenet_blocks")


def nested_and_conv1d():
    inner_in = keras.Input((12, 4))
    y = layers.Conv1D(6, 3, padding="same", name="a")(inner_in)
    y = layers.Activation("relu", name="act")(y)
    y = layers.Conv1D(5, 3, name="b")(y)
    inner = keras.Model(inner_in, y, name="backbone")
    inputs = keras.Input((12, 4))
    x = layers.ReLU(name="outer_relu")(inner(inputs))
    x = layers.Conv1D(3, 1, name="c")(x)
    return keras.Model(inputs, layers.Flatten()(x), name="nested")


def with_blockers():
    """c1 feeds c2 and an Add (branch); c3 -> sigmoid -> c4; c4 -> relu -> c5 is a real pair."""
    inputs = keras.Input((8, 8, 3))
    a = layers.Conv2D(6, 3, padding="same", name="c1")(inputs)
    b = layers.ReLU(name="r1")(a)
    b = layers.Conv2D(6, 3, padding="same", name="c2")(b)
    x = layers.Add(name="add")([a, b])
    x = layers.Conv2D(6, 1, name="c3")(x)
    x = layers.Activation("sigmoid", name="sig")(x)
    x = layers.Conv2D(6, 1, name="c4")(x)
    x = layers.ReLU(name="r4")(x)
    x = layers.Conv2D(4, 1, name="c5")(x)
    return keras.Model(inputs, x, name="blockers")


@pytest.mark.parametrize("builder, expected_sets", [
    (conv_chain, [["c1", "c2"], ["c2", "c3"], ["c3", "d1"], ["d1", "d2"]]),
    (mobilenet_blocks, [["stem", "dw1", "pw1"], ["pw1", "dw2", "pw2"], ["pw2", "head"]]),
    (nested_and_conv1d, [["backbone/a", "backbone/b"], ["backbone/b", "c"]]),
])
def test_equalization_preserves_the_float_function(builder, expected_sets):
    keras.utils.set_random_seed(3)
    model = builder()
    spoil_ranges(model, seed=1)
    before = [w.copy() for w in model.get_weights()]
    x = inputs_for(model, scale=0.2)  # small inputs: no ReLU6 clips
    equalized, result = equalize_model(model)
    assert [s.members for s in result.sets] == expected_sets
    error = norm_relative_error(predict(equalized, x), predict(model, x))
    assert error <= TOLERANCE, error
    for a, b in zip(model.get_weights(), before):  # the input model is untouched
        np.testing.assert_array_equal(a, b)
    json.dumps(result.to_tables(), allow_nan=False)
    assert result.converged


def test_branch_and_non_relu_activation_block_equalization():
    keras.utils.set_random_seed(4)
    model = with_blockers()
    spoil_ranges(model, seed=2)
    equalized, result = equalize_model(model)
    assert [s.members for s in result.sets] == [["c4", "c5"]]
    assert "feeds 2 layers" in result.not_equalized["c1"]
    assert "sig" in result.not_equalized["c3"] and "not ReLU-like" in result.not_equalized["c3"]
    for name in ("c1", "c2", "c3"):
        np.testing.assert_array_equal(kernel_of(equalized, name), kernel_of(model, name))
    assert not np.allclose(kernel_of(equalized, "c5"), kernel_of(model, "c5"))
    x = inputs_for(model)
    assert norm_relative_error(predict(equalized, x), predict(model, x)) <= TOLERANCE


def test_after_convergence_linked_ranges_are_equal_per_channel():
    keras.utils.set_random_seed(5)
    model = mobilenet_blocks()
    spoil_ranges(model, seed=3, spread=1000.0)
    equalized, result = equalize_model(model)
    assert result.converged and result.iterations > 2  # pw1 is in two sets: several sweeps
    depthwise = {"dw1", "dw2"}
    for st in result.sets:
        for first, second in zip(st.members, st.members[1:]):
            r1 = out_ranges(kernel_of(equalized, first), first in depthwise)
            r2 = (out_ranges(kernel_of(equalized, second), True) if second in depthwise
                  else in_ranges(kernel_of(equalized, second)))
            live = (r1 > 1e-12) & (r2 > 1e-12)
            np.testing.assert_allclose(r1[live], r2[live], rtol=0.01)
    tables = result.to_tables()
    spread = {t["node"]: (t["before"]["spread_score"], t["after"]["spread_score"])
              for t in tables["weight_ranges"]["layers"]}
    assert spread["dw1"][1] < spread["dw1"][0] - 1.0  # 100x+ narrower spread
    assert len(tables["scale_factors"]["sets"][0]["scale_factors"]) == 2  # triplet: S12, S23


def test_high_bias_folding_preserves_the_function_away_from_padded_borders():
    keras.utils.set_random_seed(6)
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(6, 3, use_bias=False, name="c1")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.Conv2D(5, 3, padding="same", name="c2")(x)
    model = keras.Model(inputs, x)
    x = inputs_for(model, batch=8)
    pre = keras.Model(inputs, model.get_layer("c1").output).predict(x, verbose=0)
    pre = pre.reshape(-1, 6)
    mean = pre.mean(0)
    sigma = np.abs(pre - mean).max(0) / 2.9  # every sample within 2.9 sigma of the mean
    rng = np.random.default_rng(0)
    gamma = rng.uniform(0.5, 1.0, 6) * rng.choice([-1.0, 1.0], 6)
    beta = 3.0 * np.abs(gamma) + rng.uniform(0.5, 2.0, 6)  # high bias: c = beta - 3|gamma| > 0
    bn = model.get_layer("bn")
    bn.set_weights([gamma, beta, mean, sigma**2 - bn.epsilon])

    equalized, result = equalize_model(model)
    [fold] = result.high_bias_folds
    assert (fold.source, fold.target, fold.activation) == ("c1", "c2", "relu")
    assert np.all(fold.amount > 0.1)
    y, y_eq = predict(model, x), predict(equalized, x)
    interior = (slice(None), slice(1, -1), slice(1, -1), slice(None))
    assert norm_relative_error(y_eq[interior], y[interior]) <= TOLERANCE
    assert norm_relative_error(y_eq, y) > 10 * TOLERANCE  # the borders do change
    without, _ = equalize_model(model, high_bias_fold=False)
    assert norm_relative_error(predict(without, x), y) <= TOLERANCE


def test_relu6_replacement_is_reported_with_float_scores():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, activation="relu6", name="c1")(inputs)
    x = layers.Conv2D(4, 1, name="c2")(x)
    x = layers.Activation("relu6", name="act6")(x)
    x = layers.Conv2D(3, 1, name="c3")(x)
    x = layers.ReLU(6.0, name="tail_relu6")(x)  # not between two layers: stays
    model = keras.Model(inputs, x)
    x = inputs_for(model, scale=20.0)  # big inputs: ReLU6 clips
    calls = []

    def score(m):
        calls.append(m.name)
        return float(np.mean(predict(m, x)))

    equalized, result = equalize_model(model, eval_callback=score)
    assert result.relu6_replaced == [
        {"node": "c1", "form": "fused activation='relu6'"},
        {"node": "act6", "form": "Activation('relu6')"},
    ]
    assert equalized.get_layer("c1").activation.__name__ == "relu"
    assert equalized.get_layer("tail_relu6").max_value == 6.0
    assert len(calls) == 2 and result.float_score_after != result.float_score_before
    # apart from the replacement, the function is the same: rebuild with ReLU
    rebuilt_in = keras.Input((6, 6, 2))
    y = layers.Conv2D(4, 3, activation="relu", name="c1")(rebuilt_in)
    y = layers.Conv2D(4, 1, name="c2")(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(3, 1, name="c3")(y)
    reference = keras.Model(rebuilt_in, layers.ReLU(6.0)(y))
    for name in ("c1", "c2", "c3"):
        reference.get_layer(name).set_weights(model.get_layer(name).get_weights())
    assert norm_relative_error(predict(equalized, x), predict(reference, x)) <= TOLERANCE


def rescaled_conv_chain():
    """c1 -> ReLU -> c2 -> ReLU -> c3 with every channel between them rescaled by up
    to 1000x (and back in the next layer): the float function of a plain chain, with
    channel ranges spread 1000x."""
    keras.utils.set_random_seed(8)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inputs)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    model = keras.Model(inputs, layers.Conv2D(8, 1, name="c3")(x))
    rng = np.random.default_rng(0)
    for first, second in (("c1", "c2"), ("c2", "c3")):
        f = np.exp(rng.uniform(-0.5, 0.5, 16) * np.log(1000.0))
        k1, b1 = model.get_layer(first).get_weights()
        k2, b2 = model.get_layer(second).get_weights()
        model.get_layer(first).set_weights([k1 * f, b1 + 0.05 * f])
        model.get_layer(second).set_weights([k2 / f[:, None], b2])
    return model


def test_equalization_rescues_per_tensor_quantization_of_a_rescaled_model():
    """Channels rescaled 1000x between ReLU-linked layers: per-tensor weights lose the
    small channels; after CLE the weight-quantized output is close to float."""
    model = rescaled_conv_chain()
    x = inputs_for(model, batch=16)
    errors = {}
    for cle in (False, True):
        config = mct_logger.QuantizationConfig(
            weight_per_channel=False, cross_layer_equalization=cle, analyze_similarity=False)
        model_q, info = mct_logger.keras_post_training_quantization(model, x, config)
        set_quantizers_enabled(model_q, activations=False)
        errors[cle] = norm_relative_error(predict(model_q, x), predict(model, x))
    assert errors[True] < 0.02 < errors[False] / 3, errors


def test_ptq_stage_records_before_after_scales_and_keeps_the_reference():
    keras.utils.set_random_seed(9)
    model = mobilenet_blocks()
    spoil_ranges(model, seed=4)
    x = inputs_for(model, batch=16, scale=0.2)
    config = mct_logger.QuantizationConfig(cross_layer_equalization=True,
                                           analyze_similarity=False)
    model_q, info = mct_logger.keras_post_training_quantization(model, x, config)
    result = info.stage_results["cross_layer_equalization"]
    assert result.applied and len(result.sets) == 3
    tables = json.loads(json.dumps(result.to_tables(), allow_nan=False))
    assert set(tables) == {"weight_ranges", "scale_factors", "high_bias_fold"}
    entry = tables["weight_ranges"]["layers"][0]
    assert entry["node"] == "stem" and entry["after"] is not None
    sets = tables["scale_factors"]["sets"]
    assert sets[0]["members"] == ["stem", "dw1", "pw1"] and len(sets[0]["scale_factors"][0]) == 8
    assert len(tables["high_bias_fold"]["folds"]) == 5
    assert {r["node"] for r in tables["scale_factors"]["relu6_replaced"]} == {
        n for n in info.float_graph.nodes if n.startswith("re_lu")}
    # the float reference is the equalized graph; quantizers off give it back
    graph, _ = fold_batch_norms(read_model(model))
    equalized, _ = equalize_graph(graph)
    for name in ("stem", "dw1", "pw1"):
        np.testing.assert_allclose(info.float_graph.nodes[name].layer.kernel.numpy(),
                                   equalized.nodes[name].layer.kernel.numpy(), rtol=1e-6)
    set_quantizers_enabled(model_q, weights=False, activations=False)
    assert norm_relative_error(predict(model_q, x), predict(model, x)) <= TOLERANCE
