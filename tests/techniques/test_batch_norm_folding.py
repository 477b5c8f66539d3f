"""Batch-norm folding into the preceding Conv / Depthwise / Transpose / Dense layer."""

import keras
import numpy as np
import pytest
from tests.helpers import norm_relative_error
from keras import layers, tree

from mct_logger.graph.ir import read_model
from mct_logger.techniques.batch_norm_folding import fold_batch_norms

TOLERANCE = 1e-5


# ------------------------------------------------------------------ helpers


def randomize_batch_norm(bn, rng):
    """Non-trivial gamma (both signs), beta, moving mean and variance in [0.5, 2]."""
    c = bn.moving_mean.shape[0]
    values = {
        "gamma": rng.uniform(0.5, 1.5, c) * rng.choice([-1.0, 1.0], c),
        "beta": rng.normal(0.0, 0.5, c),
        "moving_mean": rng.normal(0.0, 0.5, c),
        "moving_variance": rng.uniform(0.5, 2.0, c),
    }
    bn.set_weights([values[v.path.split("/")[-1]].astype("float32") for v in bn.weights])


def randomize_model(model, seed):
    """Random BN statistics and non-zero biases everywhere."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.BatchNormalization):
            randomize_batch_norm(layer, rng)
        elif getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0.0, 0.3, layer.bias.shape).astype("float32"))


def random_inputs(model, seed=0, batch=2):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((batch, *t.shape[1:])).astype("float32") for t in model.inputs]
    return xs[0] if len(xs) == 1 else xs


def predict(model, x):
    return [keras.ops.convert_to_numpy(y) for y in tree.flatten(model(x, training=False))]


def assert_same_outputs(actual_model, expected_model, x):
    expected = predict(expected_model, x)
    actual = predict(actual_model, x)
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        assert np.linalg.norm(b) > 0
        error = norm_relative_error(a, b)
        assert error <= TOLERANCE, f"norm-relative error {error:.3g}"


def snapshot(model):
    return [np.array(w) for w in model.get_weights()]


def assert_weights_equal(model, before):
    after = model.get_weights()
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


def bn_layers(model):
    return [
        layer for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, layers.BatchNormalization)
    ]


def fold_and_check(model, seed=0):
    """Folds the model's graph; checks outputs, BN invariants and that nothing
    given in was touched. Returns (graph, folded graph, result, rebuilt model)."""
    weights_before = snapshot(model)
    graph = read_model(model)
    names_before = list(graph.nodes)
    bn_names = [n.name for n in graph if isinstance(n.layer, layers.BatchNormalization)]
    args_before = {n.name: (n.args, dict(n.kwargs)) for n in graph}

    folded, result = fold_batch_norms(graph)

    # Every BN is either folded or explained; folded ones are gone.
    assert sorted([*result.folded, *result.not_folded]) == sorted(bn_names)
    assert not set(result.folded) & set(result.not_folded)
    for bn in result.folded:
        assert bn not in folded.nodes
    for bn, reason in result.not_folded.items():
        assert bn in folded.nodes
        assert isinstance(reason, str) and reason

    # The graph passed in and the model are unchanged.
    assert list(graph.nodes) == names_before
    assert {n.name: (n.args, n.kwargs) for n in graph} == args_before
    assert all("folded_batch_norm" not in n.info for n in graph)
    assert_weights_equal(model, weights_before)

    rebuilt = folded.to_keras()
    assert_same_outputs(rebuilt, model, random_inputs(model, seed))
    assert_weights_equal(model, weights_before)
    return graph, folded, result, rebuilt


# ------------------------------------------------------------------ foldable layers


LINEAR_LAYERS = {
    "conv_bias": ((6, 6, 3), lambda: layers.Conv2D(5, 3, padding="same", name="lin")),
    "conv_no_bias": (
        (6, 6, 3), lambda: layers.Conv2D(5, 3, strides=2, use_bias=False, name="lin")
    ),
    "conv_grouped": ((6, 6, 4), lambda: layers.Conv2D(6, 3, groups=2, name="lin")),
    "depthwise": (
        (6, 6, 3),
        lambda: layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="lin"),
    ),
    "depthwise_no_bias": (
        (6, 6, 3), lambda: layers.DepthwiseConv2D(3, use_bias=False, name="lin")
    ),
    "transpose": (
        (5, 5, 3), lambda: layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="lin")
    ),
    "transpose_no_bias": (
        (5, 5, 3), lambda: layers.Conv2DTranspose(4, 2, use_bias=False, name="lin")
    ),
    "dense": ((7,), lambda: layers.Dense(6, name="lin")),
    "dense_no_bias": ((7,), lambda: layers.Dense(6, use_bias=False, name="lin")),
    "dense_sequence": ((3, 7), lambda: layers.Dense(6, name="lin")),
    "separable": (
        (6, 6, 3),
        lambda: layers.SeparableConv2D(5, 3, depth_multiplier=2, padding="same", name="lin"),
    ),
    "separable_no_bias": (
        (6, 6, 3), lambda: layers.SeparableConv2D(5, 3, use_bias=False, name="lin")
    ),
}


def linear_bn_model(input_shape, make_layer, seed, **bn_kwargs):
    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_shape, name="x")
    x = make_layer()(inp)
    x = layers.BatchNormalization(name="bn", **bn_kwargs)(x)
    out = layers.Activation("tanh", name="post")(x)
    model = keras.Model(inp, out)
    randomize_model(model, seed)
    return model


@pytest.mark.parametrize("kind", sorted(LINEAR_LAYERS))
def test_batch_norm_folds_into_linear_layer(kind):
    input_shape, make_layer = LINEAR_LAYERS[kind]
    seed = sorted(LINEAR_LAYERS).index(kind)
    model = linear_bn_model(input_shape, make_layer, seed, epsilon=0.01)
    bn = model.get_layer("bn")
    gamma, beta, mean, variance = (np.array(w) for w in bn.get_weights())
    original_layer = model.get_layer("lin")

    graph, folded, result, rebuilt = fold_and_check(model, seed)

    assert result.folded == {"bn": "lin"}
    assert result.not_folded == {}
    assert "bn" in graph.nodes and graph.nodes["post"].inputs[0].node == "bn"
    assert list(folded.nodes) == ["x", "lin", "post"]
    assert folded.nodes["post"].inputs[0].node == "lin"
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in rebuilt.layers)

    node = folded.nodes["lin"]
    assert node.layer is not original_layer
    assert node.layer_class == type(original_layer).__name__
    assert node.layer.use_bias
    assert node.output_shapes == graph.nodes["lin"].output_shapes
    record = node.info["folded_batch_norm"]
    assert record["name"] == "bn"
    np.testing.assert_allclose(record["gamma"], gamma, rtol=1e-6)
    np.testing.assert_allclose(record["beta"], beta, rtol=1e-6)
    np.testing.assert_allclose(record["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(record["variance"], variance, rtol=1e-6)
    assert record["epsilon"] == pytest.approx(0.01)
    # The original layer keeps its own weights and bias setting.
    assert original_layer.use_bias == ("no_bias" not in kind)


@pytest.mark.parametrize("center,scale", [(False, False), (True, False), (False, True)])
def test_batch_norm_without_gamma_or_beta_folds(center, scale):
    model = linear_bn_model(
        (6, 6, 3), lambda: layers.Conv2D(4, 3, name="lin"), seed=20, center=center, scale=scale
    )
    _, folded, result, _ = fold_and_check(model, seed=20)
    assert result.folded == {"bn": "lin"}
    record = folded.nodes["lin"].info["folded_batch_norm"]
    if not scale:
        np.testing.assert_array_equal(record["gamma"], np.ones(4))
    if not center:
        np.testing.assert_array_equal(record["beta"], np.zeros(4))


def _channels_last_twin(conv_weights, bn_weights=None):
    """Conv2D(5, 3) [+ BN] in channels_last with the given weights: the same maths
    as the channels_first layers, on transposed tensors, runnable on any CPU
    (TensorFlow runs NCHW Conv2D only on some CPUs)."""
    inp = keras.Input((7, 6, 3))
    conv_layer = layers.Conv2D(5, 3)
    x = conv_layer(inp)
    conv_layer.set_weights(conv_weights)
    if bn_weights is not None:
        bn = layers.BatchNormalization()
        x = bn(x)
        bn.set_weights(bn_weights)
    return keras.Model(inp, x)


def test_channels_first_conv_folds():
    # Filters (5) differ from the output width (4): with equal sizes Keras' TF
    # `ops.add` adds a channels-first bias along the last axis (a Keras bug).
    keras.utils.set_random_seed(22)
    inp = keras.Input((3, 7, 6), name="x")
    x = layers.Conv2D(5, 3, data_format="channels_first", name="lin")(inp)
    model = keras.Model(inp, layers.BatchNormalization(axis=1, name="bn")(x))
    randomize_model(model, 22)
    weights_before = snapshot(model)
    folded, result = fold_batch_norms(read_model(model))
    assert result.folded == {"bn": "lin"}
    assert folded.nodes["lin"].output_shapes == [(None, 5, 5, 4)]
    assert_weights_equal(model, weights_before)
    # Compared without running an NCHW convolution: conv + BN and the folded conv,
    # each as its channels_last twin on the transposed input.
    x = np.random.default_rng(22).standard_normal((2, 3, 7, 6)).astype("float32")
    x_last = np.transpose(x, (0, 2, 3, 1))
    expected = _channels_last_twin(model.get_layer("lin").get_weights(),
                                   model.get_layer("bn").get_weights())
    actual = _channels_last_twin(folded.nodes["lin"].layer.get_weights())
    assert_same_outputs(actual, expected, x_last)


def test_batch_norm_as_model_output_folds():
    keras.utils.set_random_seed(21)
    inp = keras.Input((5,), name="x")
    x = layers.Dense(3, name="lin")(inp)
    model = keras.Model(inp, layers.BatchNormalization(name="bn")(x))
    randomize_model(model, 21)
    _, folded, result, _ = fold_and_check(model, seed=21)
    assert result.folded == {"bn": "lin"}
    assert [r.node for r in folded.outputs] == ["lin"]


# ------------------------------------------------------------------ not foldable


def conv(name, **kwargs):
    return layers.Conv2D(4, 3, padding="same", name=name, **kwargs)


def bn_after_relu(inp):
    return layers.BatchNormalization(name="bn")(layers.ReLU(name="relu")(conv("conv")(inp)))


def bn_after_add(inp):
    x = layers.Add(name="add")([conv("conv_a")(inp), conv("conv_b")(inp)])
    return layers.BatchNormalization(name="bn")(x)


def bn_after_fused_relu(inp):
    return layers.BatchNormalization(name="bn")(conv("conv", activation="relu")(inp))


def bn_after_activation_layer_object(inp):
    # A layer instance as activation has no `__name__`; it is still not linear.
    x = conv("conv", activation=layers.LeakyReLU(negative_slope=0.1))(inp)
    return layers.BatchNormalization(name="bn")(x)


def bn_after_lora_conv(inp):
    layer = conv("conv")
    x = layer(inp)
    layer.enable_lora(2)
    rng = np.random.default_rng(0)
    layer.lora_kernel_b.assign(rng.normal(0.0, 0.5, layer.lora_kernel_b.shape).astype("float32"))
    return layers.BatchNormalization(name="bn")(x)


def conv_feeds_two_layers(inp):
    x = conv("conv")(inp)
    y = layers.BatchNormalization(name="bn")(x)
    return layers.Add(name="add")([y, layers.ReLU(name="relu")(x)])


def conv_is_also_an_output(inp):
    x = conv("conv")(inp)
    return [layers.BatchNormalization(name="bn")(x), x]


def shared_conv(inp):
    shared = conv("conv")
    y1 = layers.BatchNormalization(name="bn")(shared(inp))
    y2 = shared(layers.ReLU(name="relu")(inp))
    return layers.Add(name="add")([y1, y2])


def shared_batch_norm(inp):
    bn = layers.BatchNormalization(name="bn")
    return layers.Add(name="add")([bn(conv("conv_a")(inp)), bn(conv("conv_b")(inp))])


def bn_on_wrong_axis(inp):
    x = layers.Reshape((9, 3), name="flat")(inp[:, :3, :3, :])
    return layers.BatchNormalization(axis=1, name="bn")(layers.Dense(4, name="dense")(x))


NOT_FOLDABLE = {
    "after_relu": (bn_after_relu, {"bn": "ReLU"}),
    "after_add": (bn_after_add, {"bn": "Add"}),
    "after_fused_relu": (bn_after_fused_relu, {"bn": "relu"}),
    "after_activation_layer_object": (bn_after_activation_layer_object, {"bn": "LeakyReLU"}),
    "after_lora_conv": (bn_after_lora_conv, {"bn": "LoRA"}),
    "conv_feeds_two_layers": (conv_feeds_two_layers, {"bn": "other layers"}),
    "conv_is_also_an_output": (conv_is_also_an_output, {"bn": "other layers"}),
    "shared_conv": (shared_conv, {"bn": "shared"}),
    "shared_batch_norm": (shared_batch_norm, {"bn/call_0": "shared", "bn/call_1": "shared"}),
    "wrong_axis": (bn_on_wrong_axis, {"bn": "axis"}),
}


@pytest.mark.parametrize("case", sorted(NOT_FOLDABLE))
def test_batch_norm_that_cannot_fold_stays(case):
    build, expected = NOT_FOLDABLE[case]
    seed = 30 + sorted(NOT_FOLDABLE).index(case)
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 3), name="x")
    model = keras.Model(inp, build(inp))
    randomize_model(model, seed)

    graph, folded, result, rebuilt = fold_and_check(model, seed)

    assert result.folded == {}
    assert set(result.not_folded) == set(expected)
    for bn, word in expected.items():
        assert word in result.not_folded[bn], result.not_folded[bn]
        assert isinstance(folded.nodes[bn].layer, layers.BatchNormalization)
    assert list(folded.nodes) == list(graph.nodes)
    assert all("folded_batch_norm" not in n.info for n in folded)
    assert sum(isinstance(layer, layers.BatchNormalization) for layer in rebuilt.layers) == 1


# ------------------------------------------------------------------ whole models


def test_mixed_model_folds_what_it_can():
    keras.utils.set_random_seed(40)
    inp = keras.Input((6, 6, 3), name="x")
    a = layers.BatchNormalization(name="bn_a")(conv("conv_a", use_bias=False)(inp))
    a = layers.ReLU(name="relu_a")(a)
    b = layers.BatchNormalization(name="bn_b")(layers.DepthwiseConv2D(3, padding="same",
                                                                       name="dw")(a))
    c = layers.BatchNormalization(name="bn_c")(layers.Add(name="add")([a, b]))
    model = keras.Model(inp, c)
    randomize_model(model, 40)
    _, folded, result, _ = fold_and_check(model, seed=40)
    assert result.folded == {"bn_a": "conv_a", "bn_b": "dw"}
    assert set(result.not_folded) == {"bn_c"}
    assert folded.nodes["conv_a"].info["folded_batch_norm"]["name"] == "bn_a"
    assert folded.nodes["dw"].info["folded_batch_norm"]["name"] == "bn_b"
    assert {r.node for r in folded.nodes["add"].inputs} == {"relu_a", "dw"}


def test_two_batch_norms_in_a_row_keep_outputs():
    keras.utils.set_random_seed(41)
    inp = keras.Input((6, 6, 3), name="x")
    x = layers.BatchNormalization(name="bn1")(conv("conv")(inp))
    model = keras.Model(inp, layers.BatchNormalization(name="bn2")(x))
    randomize_model(model, 41)
    fold_and_check(model, seed=41)


def test_nested_mobilenet_backbone_folds_every_batch_norm():
    keras.utils.set_random_seed(42)
    backbone = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, input_shape=(32, 32, 3), weights=None
    )
    inp = keras.Input((32, 32, 3), name="image")
    out = layers.Dense(4, name="head")(layers.GlobalAveragePooling2D(name="pool")(backbone(inp)))
    model = keras.Model(inp, out)
    randomize_model(model, 42)

    _, folded, result, rebuilt = fold_and_check(model, seed=42)

    prefix = backbone.name + "/"
    assert len(result.folded) == len(bn_layers(backbone))
    assert result.not_folded == {}
    assert result.folded[prefix + "bn_Conv1"] == prefix + "Conv1"
    assert result.folded[prefix + "expanded_conv_depthwise_BN"] == (
        prefix + "expanded_conv_depthwise"
    )
    assert bn_layers(rebuilt) == []
    assert rebuilt.count_params() < model.count_params()
