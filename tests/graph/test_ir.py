"""The model IR: reading Keras models into a Graph and rebuilding them."""

import keras
import numpy as np
import pytest
from tests.helpers import norm_relative_error
from keras import layers, tree

from mct_logger.graph.ir import GraphError, TensorRef, read_model

TOLERANCE = 1e-6


# ------------------------------------------------------------------ helpers


def random_inputs(model, seed=0, batch=2, scale=1.0):
    """Seeded normal inputs, one array per model input, in `model.inputs` order."""
    rng = np.random.default_rng(seed)
    return [
        (scale * rng.standard_normal((batch, *t.shape[1:]))).astype("float32")
        for t in model.inputs
    ]


def predict(model, xs):
    """The model's outputs (inference mode) as a flat list of NumPy arrays."""
    x = xs[0] if len(xs) == 1 else xs
    return [keras.ops.convert_to_numpy(y) for y in tree.flatten(model(x, training=False))]


def assert_same_outputs(rebuilt, model, xs, tolerance=TOLERANCE):
    expected = predict(model, xs)
    actual = predict(rebuilt, xs)
    assert len(actual) == len(expected)
    for i, (a, b) in enumerate(zip(actual, expected)):
        assert a.shape == b.shape, f"output {i}"
        assert np.linalg.norm(b) > 0, f"output {i} is all zeros: a weak comparison"
        error = norm_relative_error(a, b)
        assert error <= tolerance, f"output {i}: norm-relative error {error:.3g}"


def round_trip(model, seed=0, scale=1.0):
    """Reads the model, rebuilds it, checks the outputs match; returns both."""
    graph = read_model(model)
    rebuilt = graph.to_keras()
    assert rebuilt is not model
    assert_same_outputs(rebuilt, model, random_inputs(model, seed, scale=scale))
    for node in graph:
        if node.owns_weights:
            size = sum(w.size for w in node.weights().values())
            assert size == node.parameter_count(), f"{node.name}: weights() lost variables"
    return graph, rebuilt


def randomize_batch_norms(model, seed=0):
    """Non-trivial BN statistics, so BN weights that were not copied show up."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            values = {
                "gamma": rng.uniform(0.5, 1.5, c),
                "beta": rng.normal(0.0, 0.2, c),
                "moving_mean": rng.normal(0.0, 0.2, c),
                "moving_variance": rng.uniform(0.5, 2.0, c),
            }
            layer.set_weights(
                [values[v.path.split("/")[-1]].astype("float32") for v in layer.weights]
            )


def randomize_biases(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        bias = getattr(layer, "bias", None)
        if bias is not None and not isinstance(layer, layers.BatchNormalization):
            bias.assign(rng.normal(0.0, 0.1, bias.shape).astype("float32"))


def operation_names(model):
    """Names of the ops of a (non-nested) Functional or Sequential model."""
    functional = model._functional if isinstance(model, keras.Sequential) else model
    return [op.name for op in functional.operations]


def node_names(graph):
    return [n.name for n in graph]


def assert_topological(graph):
    seen = set()
    for node in graph:
        for ref in node.inputs:
            assert ref.node in seen, f"{node.name} reads {ref.node} before it is computed"
        seen.add(node.name)


def model_weights(model):
    return [np.array(w) for w in model.get_weights()]


# ------------------------------------------------------------------ models


@pytest.fixture(scope="module")
def mobilenet():
    keras.utils.set_random_seed(1)
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None)
    randomize_batch_norms(model, seed=1)
    return model


def conv_bn_relu(x, filters, name, strides=1):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


@pytest.fixture(scope="module")
def resnet():
    keras.utils.set_random_seed(2)
    inp = keras.Input((8, 8, 3), name="image")
    x = conv_bn_relu(inp, 8, "stem")
    # Identity block.
    y = conv_bn_relu(x, 8, "b1a")
    y = layers.Conv2D(8, 3, padding="same", use_bias=False, name="b1b_conv")(y)
    y = layers.BatchNormalization(name="b1b_bn")(y)
    x = layers.Add(name="b1_add")([x, y])
    x = layers.ReLU(name="b1_out")(x)
    # Downsampling block with a projection shortcut.
    y = conv_bn_relu(x, 16, "b2a", strides=2)
    y = layers.Conv2D(16, 3, padding="same", use_bias=False, name="b2b_conv")(y)
    y = layers.BatchNormalization(name="b2b_bn")(y)
    s = layers.Conv2D(16, 1, strides=2, use_bias=False, name="b2_proj_conv")(x)
    s = layers.BatchNormalization(name="b2_proj_bn")(s)
    x = layers.Add(name="b2_add")([s, y])
    x = layers.ReLU(name="b2_out")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    out = layers.Dense(5, name="logits")(x)
    model = keras.Model(inp, out, name="tiny_resnet")
    randomize_batch_norms(model, seed=2)
    randomize_biases(model, seed=2)
    return model


@pytest.fixture(scope="module")
def concat_model():
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 3), name="image")
    a = layers.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, name="sep")(inp)
    b = layers.Conv2D(4, 1, name="pointwise")(inp)
    c = layers.DepthwiseConv2D(3, padding="same", name="dw")(inp)
    x = layers.Concatenate(name="concat")([a, b, c])
    x = layers.Conv2DTranspose(6, 3, strides=2, padding="same", name="up")(x)
    out = layers.Conv2DTranspose(2, 2, strides=1, padding="valid", use_bias=False,
                                 name="up_valid")(x)
    model = keras.Model(inp, out, name="concat_model")
    randomize_biases(model, seed=3)
    return model


@pytest.fixture(scope="module")
def shared_model():
    keras.utils.set_random_seed(4)
    a = keras.Input((6,), name="a")
    b = keras.Input((6,), name="b")
    shared = layers.Dense(4, activation="tanh", name="shared")
    ha = shared(a)
    hb = shared(b)
    x = layers.Concatenate(name="concat")([ha, hb])
    out1 = layers.Dense(3, name="out1")(x)
    out2 = layers.Dense(2, name="out2")(layers.Subtract(name="diff")([ha, hb]))
    model = keras.Model([a, b], [out1, out2], name="two_in_two_out")
    randomize_biases(model, seed=4)
    return model


@pytest.fixture(scope="module")
def nested_mobilenet():
    keras.utils.set_random_seed(5)
    backbone = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, input_shape=(32, 32, 3), weights=None
    )
    randomize_batch_norms(backbone, seed=5)
    inp = keras.Input((32, 32, 3), name="image")
    x = backbone(inp)
    x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    out = layers.Dense(10, name="head")(x)
    model = keras.Model(inp, out, name="classifier")
    randomize_biases(model, seed=5)
    return model, backbone


# ------------------------------------------------------------------ round trips


def test_mobilenet_v2_round_trips(mobilenet):
    graph, rebuilt = round_trip(mobilenet)
    names = node_names(graph)
    assert sorted(names) == sorted(operation_names(mobilenet))
    assert len(set(names)) == len(names)
    assert graph.input_names == [mobilenet.inputs[0]._keras_history[0].name]
    assert graph.outputs == [TensorRef("predictions", 0)]
    assert_topological(graph)
    assert graph.nodes["Conv1"].output_shapes == [(None, 16, 16, 16)]
    assert graph.nodes["predictions"].output_shapes == [(None, 1000)]
    assert graph.parameter_count() == mobilenet.count_params()
    assert rebuilt.count_params() == mobilenet.count_params()
    assert all(n.owns_weights for n in graph)


def test_resnet_round_trips_with_skip_connections(resnet):
    graph, rebuilt = round_trip(resnet)
    assert sorted(node_names(graph)) == sorted(operation_names(resnet))
    assert_topological(graph)
    inputs_of = lambda name: {r.node for r in graph.nodes[name].inputs}  # noqa: E731
    assert inputs_of("b1_add") == {"stem_relu", "b1b_bn"}
    assert inputs_of("b2_add") == {"b2_proj_bn", "b2b_bn"}
    assert inputs_of("b2_proj_conv") == {"b1_out"}
    assert [n.name for n in graph.consumers("b1_out")] == sorted(
        ["b2a_conv", "b2_proj_conv"], key=node_names(graph).index
    )
    assert graph.nodes["b2_add"].output_shapes == [(None, 4, 4, 16)]
    assert set(graph.nodes["logits"].weights()) == {"kernel", "bias"}
    assert set(graph.nodes["stem_bn"].weights()) == {
        "gamma", "beta", "moving_mean", "moving_variance"
    }
    np.testing.assert_array_equal(
        graph.nodes["stem_bn"].weights()["moving_variance"],
        resnet.get_layer("stem_bn").moving_variance.numpy(),
    )
    assert sorted(layer.name for layer in rebuilt.layers) == sorted(operation_names(resnet))


def test_concatenate_separable_and_transpose_round_trip(concat_model):
    graph, _ = round_trip(concat_model)
    assert sorted(node_names(graph)) == sorted(operation_names(concat_model))
    assert graph.nodes["sep"].layer_class == "SeparableConv2D"
    assert graph.nodes["up"].layer_class == "Conv2DTranspose"
    assert [r.node for r in graph.nodes["concat"].inputs] == ["sep", "pointwise", "dw"]
    assert graph.nodes["concat"].output_shapes == [(None, 8, 8, 15)]
    assert graph.nodes["up"].output_shapes == [(None, 16, 16, 6)]
    assert graph.nodes["up_valid"].output_shapes == [(None, 17, 17, 2)]


def test_multi_input_multi_output_with_shared_layer(shared_model):
    graph, rebuilt = round_trip(shared_model)
    names = node_names(graph)
    assert "shared" not in graph.nodes
    shared_nodes = [n for n in graph if n.name.startswith("shared")]
    assert sorted(n.name for n in shared_nodes) == ["shared/call_0", "shared/call_1"]
    # k counts calls: the first call read input "a", the second "b".
    assert graph.nodes["shared/call_0"].inputs == [TensorRef("a", 0)]
    assert graph.nodes["shared/call_1"].inputs == [TensorRef("b", 0)]
    assert graph.nodes["shared/call_0"].layer is graph.nodes["shared/call_1"].layer
    # Only the first call in graph order carries the weights.
    assert [n.owns_weights for n in shared_nodes] == [True, False]
    assert shared_nodes[1].parameter_count() == 0
    assert graph.parameter_count() == shared_model.count_params()
    assert graph.input_names == ["a", "b"]
    assert [r.node for r in graph.outputs] == ["out1", "out2"]
    assert len(set(names)) == len(names)
    # The rebuilt model shares one layer between both calls as well.
    assert rebuilt.count_params() == shared_model.count_params()
    assert [t.name for t in rebuilt.inputs] == ["a", "b"]


def test_dict_inputs_and_outputs_keep_their_structure():
    keras.utils.set_random_seed(6)
    x = keras.Input((5,), name="x")
    y = keras.Input((3,), name="y")
    h = layers.Concatenate(name="cat")([layers.Dense(4, name="dx")(x), y])
    model = keras.Model(
        {"x": x, "y": y},
        {"score": layers.Dense(1, name="score")(h), "emb": layers.Dense(2, name="emb")(h)},
    )
    rebuilt = read_model(model).to_keras()
    rng = np.random.default_rng(6)
    feed = {"x": rng.standard_normal((2, 5)).astype("float32"),
            "y": rng.standard_normal((2, 3)).astype("float32")}
    expected = model(feed)
    actual = rebuilt(feed)
    assert set(actual) == {"score", "emb"}
    for key in expected:
        assert norm_relative_error(actual[key], expected[key]) <= TOLERANCE


def test_keras_ops_and_multi_output_ops_round_trip():
    keras.utils.set_random_seed(7)
    inp = keras.Input((6,), name="x")
    h = layers.Dense(4, name="d1")(inp)
    y = keras.ops.tanh(h) + keras.ops.square(h)
    first, second = keras.ops.split(y, 2, axis=-1)
    y = layers.Concatenate(name="swap")([second, first])
    model = keras.Model(inp, layers.Dense(2, name="d2")(y))
    graph, _ = round_trip(model)
    assert_topological(graph)
    assert len(set(node_names(graph))) == len(graph.nodes)
    split = next(n for n in graph if n.layer_class == "Split")
    assert graph.nodes["swap"].inputs == [TensorRef(split.name, 1), TensorRef(split.name, 0)]


def test_shared_layer_called_on_its_own_output():
    keras.utils.set_random_seed(15)
    inp = keras.Input((4,), name="x")
    shared = layers.Dense(4, name="s")
    model = keras.Model(inp, shared(layers.ReLU(name="act")(shared(inp))))
    randomize_biases(model, seed=15)
    graph, _ = round_trip(model)
    assert node_names(graph) == ["x", "s/call_0", "act", "s/call_1"]
    assert [n.owns_weights for n in graph] == [True, True, True, False]
    assert graph.nodes["s/call_1"].inputs == [TensorRef("act", 0)]


def test_tensor_keyword_arguments_round_trip():
    keras.utils.set_random_seed(16)
    q = keras.Input((3, 8), name="q")
    v = keras.Input((5, 8), name="v")
    attention = layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    model = keras.Model([q, v], attention(q, v, key=v))
    graph, _ = round_trip(model)
    node = graph.nodes["mha"]
    assert node.args == (TensorRef("q", 0), TensorRef("v", 0))
    assert node.kwargs == {"key": TensorRef("v", 0)}
    # Four sublayers, each with a "kernel" and a "bias": none may be dropped.
    weights = node.weights()
    assert len(weights) == 8
    assert {"query/kernel", "attention_output/bias"} <= set(weights)
    assert sum(w.size for w in weights.values()) == node.parameter_count()
    assert set(graph.nodes["q"].weights()) == set()


def test_integer_inputs_keep_their_dtype():
    keras.utils.set_random_seed(17)
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    x = layers.Embedding(10, 4, name="embed")(tokens)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    model = keras.Model(tokens, layers.Dense(2, name="out")(x))
    graph = read_model(model)
    assert graph.nodes["tokens"].output_dtypes == ["int32"]
    rebuilt = graph.to_keras()
    assert rebuilt.inputs[0].dtype == "int32"
    feed = np.random.default_rng(17).integers(0, 10, (2, 5)).astype("int32")
    assert norm_relative_error(rebuilt(feed), model(feed)) <= TOLERANCE


def test_flattened_op_names_do_not_clash_with_layer_names():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.ops.add(inner_in, 1.0), name="inner")
    op_name = inner.operations[-1].name
    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, layers.Activation("tanh", name=op_name)(inner(inp)))
    graph, rebuilt = round_trip(model)
    assert node_names(graph) == ["x", f"inner/{op_name}", op_name]
    assert len({op.name for op in rebuilt.operations}) == len(rebuilt.operations)


# ------------------------------------------------------------------ Sequential


def test_sequential_with_input_round_trips():
    keras.utils.set_random_seed(8)
    model = keras.Sequential(
        [
            keras.Input((10,)),
            layers.Dense(16, activation="relu", name="fc1"),
            layers.Dense(8, activation="tanh", name="fc2"),
            layers.Dense(4, name="fc3"),
        ],
        name="mlp",
    )
    randomize_biases(model, seed=8)
    graph, _ = round_trip(model)
    assert node_names(graph) == operation_names(model)
    assert node_names(graph)[1:] == ["fc1", "fc2", "fc3"]
    assert graph.nodes[graph.input_names[0]].is_input
    assert graph.nodes["fc3"].output_shapes == [(None, 4)]


def test_sequential_built_with_build_round_trips():
    keras.utils.set_random_seed(9)
    model = keras.Sequential(
        [layers.Dense(6, activation="relu", name="h"), layers.Dense(3, name="o")]
    )
    model.build((None, 7))
    randomize_biases(model, seed=9)
    graph, _ = round_trip(model)
    assert node_names(graph)[1:] == ["h", "o"]
    assert graph.nodes[graph.input_names[0]].output_shapes == [(None, 7)]


def test_unbuilt_sequential_raises_a_helpful_error():
    model = keras.Sequential([layers.Dense(3, name="d")], name="unbuilt")
    with pytest.raises(GraphError) as err:
        read_model(model)
    message = str(err.value)
    assert "unbuilt" in message
    assert "keras.Input" in message and "build" in message


# ------------------------------------------------------------------ nesting


def test_nested_backbone_is_flattened(nested_mobilenet):
    model, backbone = nested_mobilenet
    graph, rebuilt = round_trip(model)
    prefix = backbone.name + "/"
    inner = [op.name for op in backbone.operations if not isinstance(op, layers.InputLayer)]
    names = node_names(graph)
    assert names[0] == "image" and names[-2:] == ["head_pool", "head"]
    assert sorted(names[1:-2]) == sorted(prefix + n for n in inner)
    assert f"{prefix}Conv1" in graph.nodes
    assert graph.nodes[f"{prefix}Conv1"].inputs == [TensorRef("image", 0)]
    assert graph.nodes["head_pool"].inputs == [TensorRef(f"{prefix}out_relu", 0)]
    assert len(set(names)) == len(names)
    assert_topological(graph)
    assert graph.parameter_count() == model.count_params()
    # The rebuilt model is flat: no nested models left.
    assert not any(isinstance(layer, keras.Model) for layer in rebuilt.layers)
    assert rebuilt.count_params() == model.count_params()


def make_block():
    inner_in = keras.Input((4,), name="inner_in")
    h = layers.Dense(5, activation="relu", name="dense_x")(inner_in)
    return keras.Model(inner_in, layers.Dense(4, name="proj")(h), name="block")


def test_nested_model_called_twice():
    keras.utils.set_random_seed(10)
    block = make_block()
    # A call made while building another model must not shift `k`.
    other_in = keras.Input((4,))
    keras.Model(other_in, block(other_in))

    a = keras.Input((4,), name="a")
    b = keras.Input((4,), name="b")
    merged = layers.Add(name="add")([block(a), block(b)])
    model = keras.Model([a, b], layers.Dense(2, name="out")(merged), name="outer")
    randomize_biases(model, seed=10)

    graph, rebuilt = round_trip(model)
    names = node_names(graph)
    assert sorted(names) == sorted(
        ["a", "b", "add", "out", "block/call_0/dense_x", "block/call_0/proj", "block/call_1/dense_x",
         "block/call_1/proj"]
    )
    assert graph.nodes["block/call_0/dense_x"].inputs == [TensorRef("a", 0)]
    assert graph.nodes["block/call_1/dense_x"].inputs == [TensorRef("b", 0)]
    # The two calls of `block` share its layers: only one of them owns the weights.
    for inner in ("dense_x", "proj"):
        pair = [n for n in graph if n.name in (f"block/call_0/{inner}", f"block/call_1/{inner}")]
        assert pair[0].layer is pair[1].layer
        assert [n.owns_weights for n in pair] == [True, False]
    assert graph.parameter_count() == model.count_params()
    assert rebuilt.count_params() == model.count_params()


def test_nested_sequential_and_clashing_layer_names():
    keras.utils.set_random_seed(14)
    block = make_block()
    inp = keras.Input((4,), name="x")
    h = layers.Dense(4, name="dense_x")(block(inp))  # same name as a layer inside `block`
    seq = keras.Sequential([layers.Dense(3, name="seq_dense")], name="seq")
    model = keras.Model(inp, seq(h), name="outer")
    randomize_biases(model, seed=14)

    graph, rebuilt = round_trip(model)
    assert node_names(graph) == [
        "x", "block/dense_x", "block/proj", "dense_x", "seq/seq_dense"
    ]
    assert all(n.owns_weights for n in graph)
    assert len({layer.name for layer in rebuilt.layers}) == len(rebuilt.layers)
    assert rebuilt.count_params() == model.count_params()


def test_subclassed_model_nested_in_functional_raises():
    class Inner(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    inp = keras.Input((4,))
    model = keras.Model(inp, Inner(name="custom")(inp))
    with pytest.raises(GraphError, match="Functional"):
        read_model(model)


# ------------------------------------------------------------------ layers and errors


def test_fused_activation_stays_one_node():
    keras.utils.set_random_seed(11)
    inp = keras.Input((6, 6, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu6", name="conv_relu6")(inp)
    model = keras.Model(inp, layers.Conv2D(2, 1, name="out")(x))
    randomize_biases(model, seed=11)
    # Large inputs so that both ends of relu6 are exercised.
    graph, rebuilt = round_trip(model, scale=5.0)
    assert node_names(graph) == ["image", "conv_relu6", "out"]
    node = graph.nodes["conv_relu6"]
    assert node.layer_class == "Conv2D"
    assert node.layer.get_config()["activation"] == "relu6"
    assert rebuilt.get_layer("conv_relu6").get_config()["activation"] == "relu6"
    hidden = keras.Model(model.inputs[0], model.get_layer("conv_relu6").output)
    values = keras.ops.convert_to_numpy(hidden(random_inputs(model, scale=5.0)[0]))
    assert values.max() == pytest.approx(6.0) and values.min() == 0.0


def test_subclassed_model_raises_with_advice():
    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.dense = layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    model = Net()
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(GraphError) as err:
        read_model(model)
    message = str(err.value)
    assert "Functional" in message and "Sequential" in message
    assert "subclass" in message


def test_non_model_raises_type_error():
    with pytest.raises(TypeError):
        read_model(layers.Dense(3))


# ------------------------------------------------------------------ independence and naming


def test_original_model_is_never_modified(resnet):
    xs = random_inputs(resnet, seed=12)
    weights_before = model_weights(resnet)
    outputs_before = predict(resnet, xs)
    inbound_before = {layer.name: len(layer._inbound_nodes) for layer in resnet.layers}

    rebuilt = read_model(resnet).to_keras()
    again = read_model(rebuilt).to_keras()

    original_variables = {id(v) for v in resnet.weights}
    assert not original_variables & {id(v) for v in rebuilt.weights}
    assert not original_variables & {id(v) for v in again.weights}
    assert not {id(layer) for layer in resnet.layers} & {id(layer) for layer in rebuilt.layers}

    rng = np.random.default_rng(12)
    for model in (rebuilt, again):
        # Positive values: BN moving variances must stay valid.
        model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype)
                           for w in model.get_weights()])
    assert norm_relative_error(predict(rebuilt, xs)[0], outputs_before[0]) > 1e-2

    for after, before in zip(model_weights(resnet), weights_before):
        np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(predict(resnet, xs)[0], outputs_before[0])
    assert {layer.name: len(layer._inbound_nodes) for layer in resnet.layers} == inbound_before


def test_graph_keeps_no_tie_to_the_rebuilt_model(concat_model):
    graph = read_model(concat_model)
    first = graph.to_keras()
    first.set_weights([np.zeros_like(w) for w in first.get_weights()])
    second = graph.to_keras()
    assert_same_outputs(second, concat_model, random_inputs(concat_model, seed=13))


def test_names_are_unique_and_stable(resnet, shared_model, nested_mobilenet):
    for model in (resnet, shared_model, nested_mobilenet[0]):
        first = node_names(read_model(model))
        second = node_names(read_model(model))
        assert first == second
        assert len(set(first)) == len(first)


def test_node_inputs_follow_replaced_arguments_and_remove_node_rewires_every_consumer():
    inputs = keras.Input((4,))
    a = layers.Dense(3, name="a")(inputs)
    b = layers.ReLU(name="b")(a)
    c = layers.Dense(3, name="c")(b)
    d = layers.Add(name="d")([b, c])
    graph = read_model(keras.Model(inputs, d))
    assert graph.nodes["c"].inputs == [TensorRef("b")]
    assert {n.name for n in graph.consumers("b")} == {"c", "d"}
    graph.remove_node("b", TensorRef("a"))  # a ReLU that is not needed, say
    assert graph.nodes["c"].inputs == [TensorRef("a")]
    assert graph.nodes["d"].inputs == [TensorRef("a"), TensorRef("c")]
    assert {n.name for n in graph.consumers("a")} == {"c", "d"}
    node = graph.nodes["c"]
    node.args = (TensorRef(graph.input_names[0]),)  # a stage replacing the arguments
    assert node.inputs == [TensorRef(graph.input_names[0])]
    node.inputs.append(TensorRef("x"))  # a caller's list: the node is not changed
    assert node.inputs == [TensorRef(graph.input_names[0])]
