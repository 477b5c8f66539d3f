"""QuantizationConfig(target="litert"): refusals at config build, and the plan and grids
the simulation takes from LiteRT's int8 rules."""

import keras
import numpy as np
import pytest
from keras import layers

from mct_logger import QuantizationConfig
from mct_logger.quantization.config import LayerOverride
from mct_logger.graph.ir import read_model
from mct_logger.quantization import litert_target
from mct_logger.quantization.encodings import Encoding
from mct_logger.quantization.plan import PlanReason, plan_quantization
from mct_logger.quantization.quantsim import NodeEncodings


@pytest.mark.parametrize("setting, value", [
    ("activation_bits", 16), ("activation_bits", 4), ("weight_bits", 16),
    ("weight_symmetric", False), ("activation_per_channel", True),
    ("activation_symmetric", True), ("quantize_inputs", False),
])
def test_contradicting_settings_are_refused_naming_setting_and_fix(setting, value):
    with pytest.raises(ValueError, match=rf"QuantizationConfig\.{setting}=.*target='litert'.*use"):
        QuantizationConfig(target="litert", **{setting: value})
    QuantizationConfig(**{setting: value})  # target=None keeps accepting it


def test_override_contradicting_the_target_is_refused():
    with pytest.raises(ValueError, match=r"overrides\['head'\]\.activation_bits=16"):
        QuantizationConfig(target="litert", overrides={"head": LayerOverride(activation_bits=16)})
    with pytest.raises(ValueError, match="target='tensorrt' is not supported"):
        QuantizationConfig(target="tensorrt")
    QuantizationConfig(target="litert", weight_bits=4)  # stored as int8 on its own grid


def _model():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="conv")(inputs)
    x = layers.LeakyReLU(name="leaky")(x)
    x = layers.Conv2D(4, 1, name="conv2")(x)
    x = layers.ReLU(6.0, name="relu6")(x)
    x = layers.Conv2DTranspose(4, 2, name="up")(x)
    a = layers.Conv2D(2, 1, name="a")(x)
    b = layers.MaxPooling2D(1, name="b_pool")(layers.Conv2D(2, 1, name="b")(x))
    x = layers.Concatenate(name="cat")([a, b])
    x = layers.AveragePooling2D(2, name="avg")(x)
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(5, name="dense")(x)
    return keras.Model(inputs, layers.Activation("tanh", name="tanh")(x))


def test_plan_follows_litert():
    graph = read_model(_model())
    generic = plan_quantization(graph, QuantizationConfig(), report=False)
    plan = plan_quantization(graph, QuantizationConfig(target="litert"), report=False)
    assert generic["conv"].reason is PlanReason.FUSED  # fused into LeakyReLU generically
    assert plan["conv"].activation is not None  # LiteRT runs LEAKY_RELU as its own op
    assert plan["conv2"].reason is PlanReason.FUSED  # ReLU6 is fused by the converter
    assert plan["up"].reason is PlanReason.TARGET_UNSUPPORTED and "litert" in plan["up"].note
    assert not plan["up"].weights and plan["up"].activation is None
    assert plan["dense"].weights["kernel"].num_channels is None  # FULLY_CONNECTED: per tensor
    assert generic["dense"].weights["kernel"].num_channels == 5


def test_fixed_and_shared_grids():
    graph = read_model(_model())
    plan = plan_quantization(graph, QuantizationConfig(target="litert"), report=False)
    encodings = {
        name: NodeEncodings(activation=Encoding.from_range(-1.0 - k, 2.0 + k, 8, False))
        for k, name in enumerate(graph.nodes) if plan[name].activation is not None}
    ruled = litert_target.apply_grid_rules(graph, plan, encodings)
    tanh = ruled["tanh"].activation
    assert float(tanh.scale) == 1 / 128 and float(tanh.offset) == -128
    cat = ruled["cat"].activation
    assert ruled["a"].activation == cat and ruled["b"].activation == cat  # b through max pool
    assert ruled["avg"].activation == cat
    assert encodings["a"].activation != cat  # the input dict is not changed
    np.testing.assert_allclose(float(ruled["conv"].activation.scale),
                               float(encodings["conv"].activation.scale))
