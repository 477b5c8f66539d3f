"""Full garbage collections during a run skip the objects the run started with."""

import gc
import threading

import keras
import numpy as np

import mct_logger
from mct_logger.utils.frozen_heap import frozen_heap


def test_the_heap_is_frozen_inside_and_restored_after_the_outermost_exit():
    before = gc.get_freeze_count()
    marker = [object()]  # alive before the run: frozen
    with frozen_heap():
        frozen = gc.get_freeze_count()
        assert frozen > before
        with frozen_heap():  # nested (e.g. PTQ inside a QuantAnalyzer run): still frozen
            assert gc.get_freeze_count() >= frozen
        assert gc.get_freeze_count() == frozen  # the inner exit leaves the outer frozen
        assert gc.is_tracked(marker)
    assert gc.get_freeze_count() == before == 0


def test_an_error_inside_still_unfreezes():
    try:
        with frozen_heap():
            raise KeyError("boom")
    except KeyError:
        pass
    assert gc.get_freeze_count() == 0


def test_overlapping_runs_in_threads_unfreeze_when_the_last_one_ends():
    inside, release = threading.Barrier(2), threading.Event()

    def run():
        with frozen_heap():
            inside.wait()
            release.wait(10)

    worker = threading.Thread(target=run)
    worker.start()
    with frozen_heap():
        inside.wait()
    assert gc.get_freeze_count() > 0  # the worker's run is still inside
    release.set()
    worker.join(10)
    assert gc.get_freeze_count() == 0


def test_ptq_runs_with_the_heap_frozen_and_garbage_made_during_it_is_collected():
    inputs = keras.Input((6, 6, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 3)(inputs))
    x = np.random.default_rng(0).random((16, 6, 6, 2)).astype("float32")
    seen = []

    def listener(stage, graph, result):
        cycle = []
        cycle.append(cycle)  # garbage only a collection frees, made during the run
        del cycle
        seen.append((gc.get_freeze_count() > 0, gc.collect() >= 1))

    mct_logger.add_stage_listener(listener)
    try:
        mct_logger.keras_post_training_quantization(model, x)
    finally:
        mct_logger.remove_stage_listener(listener)
    assert seen and all(frozen and collected for frozen, collected in seen), seen
    assert gc.get_freeze_count() == 0
