"""A Ray runtime started once for the evaluator tests (2 CPUs, no dashboard)."""

import pytest


@pytest.fixture(scope="session")
def ray_runtime():
    ray = pytest.importorskip("ray")
    import ray.cloudpickle

    from tests.evaluators import sweep_models

    ray.cloudpickle.register_pickle_by_value(sweep_models)
    started = not ray.is_initialized()
    if started:
        # "local": a new runtime, never another local cluster found on the machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()
