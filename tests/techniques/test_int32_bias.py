"""target="litert": biases on LiteRT's int32 grid (s_in * s_w per output channel)."""

import keras
import numpy as np

import mct_logger
from mct_logger.quantization.litert_target import input_grid


def test_litert_biases_lie_on_the_int32_grid_and_the_float_reference_keeps_its_own():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, bias_initializer="random_normal", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, bias_initializer="random_normal", name="dw")(x)
    x = keras.layers.Flatten(name="flat")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, bias_initializer="random_normal",
                                                   name="dense")(x))
    data = np.random.default_rng(3).normal(size=(16, 6, 6, 3)).astype("float32")
    _, info = mct_logger.keras_post_training_quantization(
        model, data, mct_logger.QuantizationConfig(target="litert", analyze_similarity=False))
    graph = info.quantized_graph
    for name in ("conv", "dw", "dense"):
        node = graph.nodes[name]
        s_in = float(input_grid(graph, info.plan, info.encodings, node.inputs[0].node).scale)
        s_w = np.asarray(info.encodings[name].weights["kernel"].scale, np.float64)
        q = node.weights()["bias"] / (s_in * s_w)
        np.testing.assert_allclose(q, np.round(q), atol=1e-3)
        original = info.float_graph.nodes[name].weights()["bias"]
        assert not np.array_equal(original, node.weights()["bias"])
        assert np.max(np.abs(original - node.weights()["bias"])) <= np.max(s_in * s_w) / 2 * 1.001
