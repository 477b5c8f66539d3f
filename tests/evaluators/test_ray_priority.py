"""A Ray runtime that `evaluators.Ray` starts runs its workers at the driver's
priority: Ray's default (nice 15) starves the evaluations on a busy machine."""

import os

import pytest

from mct_logger import evaluators


def test_a_runtime_the_evaluator_starts_runs_its_workers_at_the_drivers_priority():
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()  # the other Ray modules shut theirs down
    evaluator = evaluators.Ray(num_workers=1)
    evaluator.connect()
    try:
        assert evaluator.started_runtime
        worker_nice = ray.get(ray.remote(num_cpus=1)(lambda: os.nice(0)).remote())
        assert worker_nice == os.nice(0)
    finally:
        evaluator.shutdown()
    assert not ray.is_initialized()
