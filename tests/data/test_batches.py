"""Streamed calibration: each re-iterable source read once per pass, batch by batch;
a one-shot generator cached once (memory, or past a size a temporary folder)."""

import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import mct_logger
from mct_logger.data.batches import CalibrationBatches
from mct_logger.data.sources import InputSpec, RepresentativeDataError
from tests.helpers import conv_dense_model

ONE = [InputSpec("img", (None, 4, 4, 1), "float32")]


def _images(n, seed=0):
    return np.random.default_rng(seed).random((n, 4, 4, 1)).astype("float32")


def _model():
    return conv_dense_model(filters=4, conv_activation="relu")


class Counting:
    """A source of 5 batches of 4 that counts its passes and the batches it yields."""

    def __init__(self):
        self.x = _images(20)
        self.passes = 0
        self.yielded = 0

    def batches(self):
        self.passes += 1
        for i in range(0, 20, 4):
            self.yielded += 1
            yield self.x[i:i + 4]


class ReIterable(Counting):
    def __iter__(self):
        return self.batches()


def _sources():
    """(name, counter, data) for every re-iterable form."""
    callable_source = Counting()
    dataset_source = Counting()
    dataset = tf.data.Dataset.from_generator(
        dataset_source.batches,
        output_signature=tf.TensorSpec((None, 4, 4, 1), tf.float32))
    iterable = ReIterable()
    return [("callable", callable_source, callable_source.batches),
            ("dataset", dataset_source, dataset),
            ("iterable", iterable, iterable)]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["callable", "dataset", "iterable"])
def test_ptq_reads_a_reiterable_source_once_per_pass(index):
    _, counter, data = _sources()[index]
    config = mct_logger.QuantizationConfig(batch_size=4)
    _, info = mct_logger.keras_post_training_quantization(_model(), data, config)
    # the checking pass, then statistics collection; the rebuild check reuses the
    # first batch kept by the checking pass
    assert counter.passes == 2
    assert counter.yielded == 10
    assert info.stage_results["statistics_collection"].num_samples == 20


def test_each_analysis_pass_reads_the_source_again(tmp_path):
    counter = Counting()
    config = mct_logger.QuantizationConfig(batch_size=4, bias_correction="empirical")
    mct_logger.set_log_folder(str(tmp_path))
    try:
        _, info = mct_logger.keras_post_training_quantization(_model(), counter.batches, config)
    finally:
        mct_logger.set_log_folder(None)
    bias_passes = info.stage_results["bias_correction"].passes  # float means + one per wave
    assert bias_passes == 3  # the conv, then the dense
    # checking + statistics + bias correction + similarity (the first 20 samples, one
    # paired pass, which also counts the quantized histograms)
    assert counter.passes == 2 + bias_passes + 1


@pytest.mark.parametrize("samples, passes, yielded", [(3, 2, 10), (6, 3, 12)])
def test_the_similarity_analysis_reads_no_batch_beyond_its_samples(samples, passes, yielded):
    """Within the first batch: the one the checking pass kept, no new pass; 6
    samples of batches of 4: two batches, not a third."""
    counter = Counting()
    config = mct_logger.QuantizationConfig(batch_size=4, analyze_similarity=True,
                                           similarity_samples=samples)
    _, info = mct_logger.keras_post_training_quantization(_model(), counter.batches, config)
    assert info.stage_results["similarity_analysis"].num_samples == samples
    assert (counter.passes, counter.yielded) == (passes, yielded)


def test_a_one_shot_generator_is_read_once_and_cached_in_memory(caplog):
    x = _images(20)
    read = []

    def generator():
        for i in range(0, 20, 4):
            read.append(i)
            yield x[i:i + 4]

    with caplog.at_level(logging.INFO, logger="mct_logger"):
        batches = CalibrationBatches(generator(), ONE, batch_size=4)
    assert batches.cached == "memory"
    first, second = list(batches), list(batches)
    assert read == [0, 4, 8, 12, 16]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, second))
    assert any("one-shot generator, cached" in r.getMessage() and "in memory" in r.getMessage()
               for r in caplog.records)


def test_a_large_one_shot_generator_is_cached_in_a_temporary_folder(caplog):
    x = _images(20)
    with caplog.at_level(logging.INFO, logger="mct_logger"):
        batches = CalibrationBatches((x[i:i + 4] for i in range(0, 20, 4)), ONE,
                                     batch_size=4, memory_limit=3 * x[:4].nbytes)
    assert batches.cached == "disk"
    folder = batches._cache.folder
    assert len(os.listdir(folder)) == 5
    for _ in range(2):
        assert np.array_equal(np.concatenate([b[0] for b in batches]), x)
    assert any("temporary folder" in r.getMessage() for r in caplog.records)
    del batches
    assert not os.path.exists(folder)


def test_ptq_on_a_one_shot_generator_calibrates_on_every_sample():
    x = _images(20)
    config = mct_logger.QuantizationConfig(batch_size=4)
    _, info = mct_logger.keras_post_training_quantization(
        _model(), (x[i:i + 4] for i in range(0, 20, 4)), config)
    assert info.stage_results["statistics_collection"].num_samples == 20


def test_whole_arrays_are_sliced_per_pass_and_capped():
    x = _images(20)
    batches = CalibrationBatches(x, ONE, batch_size=8, max_samples=18)
    assert (len(batches), batches.num_samples) == (3, 18)
    for _ in range(2):
        assert [len(b[0]) for b in batches] == [8, 8, 2]
    assert np.shares_memory(next(iter(batches))[0], x)  # views, no copy


def test_a_callable_returning_the_same_generator_is_refused_on_the_next_pass():
    x = _images(8)
    generator = (x[i:i + 4] for i in range(0, 8, 4))
    batches = CalibrationBatches(lambda: generator, ONE, batch_size=4)
    with pytest.raises(RepresentativeDataError, match="fresh iterator"):
        list(batches)


def test_an_endless_callable_is_capped_on_every_pass():
    x = _images(4)
    calls = []

    def endless():
        calls.append(1)
        while True:
            yield x

    batches = CalibrationBatches(endless, ONE, batch_size=4, max_samples=10)
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert len(calls) == 3


def test_a_bad_batch_fails_on_the_checking_pass_naming_it():
    def source():
        yield _images(4)
        yield np.full((4, 4, 4, 1), np.nan, "float32")

    with pytest.raises(RepresentativeDataError, match="batch 1.*NaN or Inf"):
        CalibrationBatches(source, ONE, batch_size=4)
