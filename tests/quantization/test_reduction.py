"""In-graph calibration statistics (`quantization.reduction`) against the NumPy
observers on the same batches: the same ranges, means and (every row binned)
encodings, histograms within sampling error."""

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.graph.ir import read_model
from mct_logger.quantization import reduction
from mct_logger.quantization.plan import plan_quantization
from mct_logger.quantization.quantsim import CalibrationModel


def _graph():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3)(x)
    x = keras.layers.Conv2D(8, 1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return read_model(keras.Model(inputs, keras.layers.Dense(4)(x)))


def _cdf_distance(counts_a, counts_b) -> float:
    """Largest gap between the two normalised cumulative histograms (Kolmogorov)."""
    a, b = np.cumsum(counts_a) / counts_a.sum(), np.cumsum(counts_b) / counts_b.sum()
    return float(np.max(np.abs(a - b)))


@pytest.mark.parametrize("observer,sample", [
    ("mse", 1 << 20), ("tf_enhanced", 1 << 20), ("min_max", 1 << 20), ("mse", 1 << 14)])
def test_in_graph_statistics_match_the_numpy_observers(monkeypatch, observer, sample):
    graph = _graph()
    plan = plan_quantization(graph, mct_logger.QuantizationConfig(activation_observer=observer))
    rng = np.random.default_rng(0)
    # growing ranges: grids start on the first batch and widen on later ones
    batches = [[rng.normal(size=(16, 24, 24, 3)).astype("float32") * (1 + i)] for i in range(4)]
    whole = CalibrationModel(graph, plan, statistics=True)
    for batch in batches:
        whole.collect(batch)  # whole outputs through the NumPy observers
    assert whole._reduced is None
    monkeypatch.setattr(reduction, "SAMPLE_ELEMENTS", sample)  # 1 << 14: every 9th row
    reduced = CalibrationModel(graph, plan, statistics=True)
    reduced.collect_all(batches)
    assert reduced._reduced is not None and reduced._reduced.passes == 4
    expected, got = whole.activation_encodings(plan), reduced.activation_encodings(plan)
    for name in expected:
        if sample == 1 << 20:  # every value binned on the same grids: float32 rounding only
            np.testing.assert_allclose(got[name].scale, expected[name].scale, rtol=1e-3)
        a, b = reduced.statistics[name], whole.statistics[name]
        np.testing.assert_allclose(a.min, b.min, rtol=1e-6)
        np.testing.assert_allclose(a.max, b.max, rtol=1e-6)
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-4, atol=1e-5)
        (edges_a, counts_a), (edges_b, counts_b) = a.histogram(), b.histogram()
        np.testing.assert_allclose(edges_a, edges_b)
        assert counts_a.sum() == pytest.approx(counts_b.sum(), rel=0.02)
        assert _cdf_distance(counts_a[0], counts_b[0]) < 0.02, name
        # the per-channel histograms the logs draw, channel by channel
        (edges_a, counts_a), (edges_b, counts_b) = (
            a.histogram(per_channel=True), b.histogram(per_channel=True))
        np.testing.assert_allclose(edges_a, edges_b)
        assert counts_a.shape == counts_b.shape == (len(a.min), a.CHANNEL_BINS)
        for channel in range(len(a.min)):
            assert _cdf_distance(counts_a[channel], counts_b[channel]) < 0.05, (name, channel)


def test_a_per_tensor_observer_keeps_one_histogram_for_the_whole_tensor():
    """A per-tensor grid needs one histogram of all values, not one per channel."""
    graph = _graph()
    plan = plan_quantization(graph, mct_logger.QuantizationConfig())
    calibration = CalibrationModel(graph, plan)
    rng = np.random.default_rng(0)
    calibration.collect_all([[rng.normal(size=(8, 24, 24, 3)).astype("float32")]])
    for name, observer in calibration.observers.items():
        assert observer.channel_axes == () and observer.num_channels == 1, name
        expected = 8 * int(np.prod(graph.nodes[name].output_shapes[0][1:]))
        assert observer.count == expected, name
