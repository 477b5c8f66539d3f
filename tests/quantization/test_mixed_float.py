"""Mixed-precision models: quantizers and observers compute in float32, nothing
overflows at any bit width up to 16, and every output keeps its float dtype."""

import keras
import numpy as np
import pytest

import mct_logger
from tests.helpers import norm_relative_error

L = keras.layers


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _model():
    """Conv -> BN -> ReLU -> Dense (compute float16/bfloat16), two outputs: the
    mixed-precision features and a float32 head, as the Keras guide advises."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    h = L.Conv2D(8, 3, name="conv")(inputs)
    h = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(h))
    features = L.Dense(5, name="features")(L.Flatten(name="flat")(h))
    head = L.Dense(3, dtype="float32", name="head")(features)
    return keras.Model(inputs, [features, head])


def _data():
    x = np.random.default_rng(0).normal(size=(48, 6, 6, 2)).astype("float32") * 20
    x[:, 0, 0, 0] = np.linspace(-60.0, 60.0, 48)  # values up to the top of the range
    return x


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("weight_bits,activation_bits", [(8, 8), (8, 16), (16, 16), (4, 2)])
def test_quantized_mixed_precision_model_is_finite_and_keeps_output_dtypes(
        policy, weight_bits, activation_bits, tmp_path):
    model, x = _model(), _data()
    expected = model.predict(x, verbose=0)
    config = mct_logger.QuantizationConfig(weight_bits=weight_bits, activation_bits=activation_bits,
                                           analyze_similarity=True)
    model_q, info = mct_logger.keras_post_training_quantization(model, x, config)
    got = model_q.predict(x, verbose=0)
    for y, ref in zip(got, expected):
        assert y.dtype == ref.dtype  # float16/bfloat16 features, float32 head
        assert np.all(np.isfinite(y.astype("float32")))
    for node, enc in info.encodings.items():
        grids = list(enc.weights.values()) + ([enc.activation] if enc.activation else [])
        for grid in grids:
            assert np.all(np.isfinite(grid.scale)) and np.all(grid.scale > 0), node
    if activation_bits == 16:  # a fine grid: close to the float model
        assert norm_relative_error(got[1], expected[1]) < 0.05
    mct_logger.set_quantizers_enabled(model_q, weights=False, activations=False)
    off = model_q.predict(x, verbose=0)
    for y, ref in zip(off, expected):
        assert norm_relative_error(y, ref) < 1e-2  # float16/bfloat16 rounding only
    path = str(tmp_path / "q.keras")
    model_q.save(path)
    reloaded = keras.models.load_model(path)
    for y, ref in zip(reloaded.predict(x, verbose=0), off):
        assert y.dtype == ref.dtype
        np.testing.assert_array_equal(y, ref)
    similarity = info.stage_results["similarity_analysis"]
    for values in (similarity.sqnr_accumulated_db, similarity.sqnr_isolated_db):
        assert values and all(np.isfinite(v) for v in values.values())
    assert np.all(np.isfinite(similarity.cosine))
