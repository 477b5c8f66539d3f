"""Histogram observers (tf_enhanced, mse), their histograms and the observer registry."""

import numpy as np
import pytest

from mct_logger.quantization.encodings import quantize_dequantize
from mct_logger.quantization.observers import (
    OBSERVERS,
    MinMaxObserver,
    MseObserver,
    SqnrObserver,
    make_observer,
)

HISTOGRAM_OBSERVERS = [SqnrObserver, MseObserver]


def sqnr(x, encoding, channel_shape=None) -> float:
    """10·log10(Σx² / Σ(x - qdq(x))²) in dB."""
    x = np.asarray(x, dtype=np.float64)
    error = x - quantize_dequantize(x, encoding, channel_shape)
    return float(10 * np.log10(np.sum(x**2) / max(np.sum(error**2), 1e-300)))


def observed(cls, x, channel_axes=(), batches=1):
    obs = cls(channel_axes=channel_axes)
    for part in np.array_split(x, batches):
        obs.update(part)
    return obs


@pytest.fixture(scope="module")
def outliers():
    """1M standard normal samples plus three values at ±50 sigma."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=1_000_000), [50.0, -50.0, 50.0]]).astype(np.float32)
    rng.shuffle(x)
    return x


@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("bitwidth", [8, 4])
def test_outliers_beat_min_max(outliers, bitwidth, symmetric):
    baseline = sqnr(outliers, observed(MinMaxObserver, outliers).encoding(bitwidth, symmetric))
    tf_enhanced = sqnr(outliers, observed(SqnrObserver, outliers).encoding(bitwidth, symmetric))
    mse = sqnr(outliers, observed(MseObserver, outliers).encoding(bitwidth, symmetric))
    assert tf_enhanced > baseline + 1.0, (tf_enhanced, baseline)
    assert mse > baseline + 1.0, (mse, baseline)
    # The MSE observer minimises exactly the error SQNR measures.
    assert mse > tf_enhanced - 0.2, (mse, tf_enhanced)


@pytest.mark.parametrize("cls", HISTOGRAM_OBSERVERS)
def test_aimet_midpoint_cost_model(cls, outliers, monkeypatch):
    """AIMET's bin-midpoint cost (`bin_model = "midpoint"`) still clips the outliers at 4 bits."""
    monkeypatch.setattr(cls, "bin_model", "midpoint")
    for symmetric in (False, True):
        baseline = sqnr(outliers, observed(MinMaxObserver, outliers).encoding(4, symmetric))
        assert sqnr(outliers, observed(cls, outliers).encoding(4, symmetric)) > baseline + 10


@pytest.mark.parametrize("cls", HISTOGRAM_OBSERVERS)
@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("bitwidth", [8, 4])
def test_uniform_matches_min_max(cls, bitwidth, symmetric):
    x = np.random.default_rng(1).uniform(-1.0, 3.0, size=200_000).astype(np.float32)
    baseline = sqnr(x, observed(MinMaxObserver, x).encoding(bitwidth, symmetric))
    result = sqnr(x, observed(cls, x).encoding(bitwidth, symmetric))
    assert result > baseline - 0.5, (result, baseline)


@pytest.mark.parametrize("cls", HISTOGRAM_OBSERVERS)
@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
def test_asymmetric_grids_represent_zero(cls, outliers, symmetric):
    for bitwidth in (4, 8):
        enc = observed(cls, np.maximum(outliers, -0.5)).encoding(bitwidth, symmetric)
        offset = float(enc.offset)
        assert offset == round(offset) and -enc.levels <= offset <= 0
        assert float(enc.scale) > 0
        assert quantize_dequantize(np.zeros(1), enc)[0] == 0.0


@pytest.mark.parametrize("cls", HISTOGRAM_OBSERVERS)
def test_per_channel_matches_each_channel_alone(cls):
    rng = np.random.default_rng(2)
    scales = np.array([0.01, 1.0, 100.0, 5.0])
    x = (rng.normal(size=(100_000, 4)) * scales).astype(np.float32)
    x[:3, 2] = 5000.0  # outliers in one channel only
    obs = observed(cls, x, channel_axes=(-1,), batches=3)
    for symmetric in (False, True):
        enc = obs.encoding(8, symmetric, per_channel=True)
        assert enc.scale.shape == enc.offset.shape == (4,)
        # Separate grids that follow each channel's scale.
        ratios = enc.scale / scales
        assert ratios[[0, 1, 3]].max() / ratios[[0, 1, 3]].min() < 1.5, ratios
        for c in range(4):
            alone = observed(cls, x[:, c], batches=3).encoding(8, symmetric)
            np.testing.assert_allclose(enc.scale[c], alone.scale, rtol=1e-9)
            assert enc.offset[c] == alone.offset
        # Per-channel beats one grid for all channels (merged from the channel histograms).
        per_tensor = obs.encoding(8, symmetric)
        assert per_tensor.scale.shape == ()
        per_channel_error = np.sum((x - quantize_dequantize(x, enc)) ** 2, axis=0)
        per_tensor_error = np.sum((x - quantize_dequantize(x, per_tensor)) ** 2, axis=0)
        # > 20 dB better on the tiny channel
        assert per_channel_error[0] * 100 < per_tensor_error[0]
        assert per_channel_error.sum() <= per_tensor_error.sum() * 1.01


@pytest.mark.parametrize("cls", HISTOGRAM_OBSERVERS)
@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
def test_ten_batches_match_one(cls, symmetric):
    x = np.random.default_rng(3).laplace(size=300_000).astype(np.float32)
    for bitwidth in (8, 4):
        one = observed(cls, x).encoding(bitwidth, symmetric)
        ten = observed(cls, x, batches=10).encoding(bitwidth, symmetric)
        np.testing.assert_allclose(ten.scale, one.scale, rtol=0.05)
        assert abs(sqnr(x, ten) - sqnr(x, one)) < 0.2


@pytest.mark.parametrize("cls", HISTOGRAM_OBSERVERS)
def test_later_batch_outside_the_grid_widens_it(cls):
    rng = np.random.default_rng(4)
    first = rng.normal(size=20_000).astype(np.float32)
    later = rng.uniform(-100.0, 100.0, size=100_000).astype(np.float32)
    obs = cls(channel_axes=())
    obs.update(first)
    (first_edges,), _ = obs.histogram()
    assert first_edges[-1] < 20
    obs.update(later)
    (edges,), (counts,) = obs.histogram()
    assert edges[0] <= later.min() and edges[-1] >= later.max()
    assert counts.sum() == pytest.approx(first.size + later.size)
    # The first batch's mass was re-binned, not lost: [-4, 4] holds it plus ~4% of the later one.
    centre = (edges[:-1] >= -4) & (edges[1:] <= 4)
    assert counts[centre].sum() == pytest.approx(first.size + later.size * 8 / 200, rel=0.05)
    enc = obs.encoding(8, symmetric=False)
    assert enc.max >= 0.98 * later.max() and enc.min <= 0.98 * later.min()
    data = np.concatenate([first, later])
    assert sqnr(data, enc) > sqnr(data, observed(MinMaxObserver, data).encoding(8, False)) - 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", HISTOGRAM_OBSERVERS)
def test_histogram_bins_every_channel_exactly(cls, dtype):
    rng = np.random.default_rng(5)
    scales = np.array([1e-3, 1, 10, 1e3, 7, 0.5])
    x = rng.normal(size=(8, 16, 16, 6)) * scales + np.array([0, 5, -50, 0, 1e3, 0])
    x = x.astype(dtype)
    obs = cls()
    obs.update(x)
    edges, counts = obs.histogram()
    assert edges.shape == (6, 513) and counts.shape == (6, 512)
    for c in range(6):
        reference, _ = np.histogram(x[..., c], bins=edges[c])
        # Only values within rounding of a bin edge may land in the neighbouring bin.
        assert np.abs(counts[c] - reference).sum() <= 2
        assert counts[c].sum() == x[..., c].size
    merged_edges, merged_counts = obs.histogram(per_channel=False)
    assert merged_edges.shape == (1, 513) and merged_counts.shape == (1, 512)
    assert merged_edges[0, 0] == pytest.approx(x.min())
    assert merged_edges[0, -1] == pytest.approx(x.max())
    assert merged_counts.sum() == pytest.approx(x.size)
    np.testing.assert_allclose(obs.min, x.reshape(-1, 6).min(axis=0))
    np.testing.assert_allclose(obs.max, x.reshape(-1, 6).max(axis=0))


@pytest.mark.parametrize("cls", HISTOGRAM_OBSERVERS)
def test_all_zero_and_constant_channels(cls):
    zeros = np.zeros((4, 5, 3), dtype=np.float32)
    obs = cls()
    obs.update(zeros)
    for per_channel in (False, True):
        for symmetric in (False, True):
            enc = obs.encoding(8, symmetric, per_channel=per_channel)
            assert np.all(np.isfinite(enc.scale)) and np.all(enc.scale > 0)
            assert np.all(np.isfinite(enc.offset))
            np.testing.assert_array_equal(quantize_dequantize(zeros, enc), zeros)
    edges, counts = obs.histogram()
    assert np.all(np.isfinite(edges)) and counts.sum() == zeros.size

    # A dead channel next to live ones keeps a valid grid; its earlier zeros stay counted.
    later = np.random.default_rng(6).normal(size=(50, 3)).astype(np.float32)
    later[:, 1] = 0.0
    obs.update(later)
    enc = obs.encoding(8, False, per_channel=True)
    assert np.all(np.isfinite(enc.scale)) and np.all(enc.scale > 0)
    _, counts = obs.histogram()
    np.testing.assert_allclose(counts.sum(axis=1), 20 + 50)


def test_nan_input_raises_like_min_max():
    obs = SqnrObserver()
    obs.update(np.array([[0.0, 1.0], [np.nan, 2.0]]))
    with pytest.raises(ValueError, match="non-finite"):
        obs.encoding(8, False)


def test_registry():
    assert OBSERVERS == {"min_max": MinMaxObserver, "tf_enhanced": SqnrObserver, "mse": MseObserver}
    for name, cls in OBSERVERS.items():
        obs = make_observer(name, channel_axes=(0,))
        assert isinstance(obs, cls) and obs.name == name and obs.channel_axes == (0,)
        assert obs.is_empty
        obs.update(np.arange(12.0).reshape(3, 4))
        assert obs.encoding(8, True, per_channel=True).scale.shape == (3,)
    with pytest.raises(ValueError) as error:
        make_observer("percentile")
    for name in OBSERVERS:
        assert name in str(error.value)
    with pytest.raises(ValueError, match="no data"):
        make_observer("mse").encoding(8, False)
