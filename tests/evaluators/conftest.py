"""A Ray runtime for the Ray evaluator tests (2 CPUs, no dashboard), one per test module."""

import pytest


@pytest.fixture(scope="module")
def ray_runtime():
    """Started for the Ray test module and shut down after it, long before the test
    process exits."""
    ray = pytest.importorskip("ray")
    import ray.cloudpickle

    from mct_logger.evaluators.ray_workers import LOCAL_SYSTEM_CONFIG
    from tests.evaluators import sweep_models

    ray.cloudpickle.register_pickle_by_value(sweep_models)
    started = not ray.is_initialized()
    if started:
        # "local": a new runtime, never another local cluster found on the machine
        # at the driver's priority, as `evaluators.Ray` starts it (Ray's default nice
        # 15 starves the workers on a busy CI machine)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _system_config=LOCAL_SYSTEM_CONFIG)
    yield ray
    if started:
        ray.shutdown()
