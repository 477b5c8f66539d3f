"""Logging never costs the model under memory pressure (`utils.address_space`).

Per thread, glibc reserves a stack and, for a thread that allocates, a 64 MiB
malloc arena; under `ulimit -v` the arenas are capped and mct-logger's threads
get small stacks. With little address space left, optional work degrades in
order (no extra thread, then no log statistics, then no similarity view), each
with a warning, and PTQ still returns the model. The smallest `ulimit -v` at
which PTQ returns, with and without logging, is measured by
benchmarks/memory_limit.py.
"""

import logging
import os
import subprocess
import sys
import textwrap
import threading

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.quantization import quantsim
from mct_logger.utils import address_space

MIB = 1 << 20


def _run(code: str, limit_kib: int | None) -> str:
    script = textwrap.dedent(code)
    command = [sys.executable, "-c", script]
    if limit_kib is not None:
        command = ["bash", "-c", f"ulimit -v {limit_kib}; exec \"$0\" -c \"$1\"", sys.executable,
                   script]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


THREAD_COST = """
    import threading
    from mct_logger.utils import address_space as a
    bounded = a.bound_per_thread_memory()
    together = threading.Barrier(6)
    def work():  # all six alive at once, each with small allocations (an arena's job)
        blocks = [bytearray(4096) for _ in range(2000)]
        together.wait()
    before = a.in_use()
    threads = [threading.Thread(target=work) for _ in range(6)]
    with a.thread_stacks():
        for t in threads:
            t.start()
    for t in threads:
        t.join()
    print(bounded, (a.in_use() - before) >> 20)
"""


def test_under_a_limit_threads_cost_no_arena_and_a_small_stack():
    bounded, grown = _run(THREAD_COST, 16 << 20).split()  # 16 GiB: finite, never reached
    assert bounded == "True"
    # at most one more 64 MiB arena (the cap's second) for six threads
    assert int(grown) < 2 * 64, grown
    unbounded, grown_free = _run(THREAD_COST, None).split()
    assert unbounded == "False" and int(grown_free) >= 5 * 64, grown_free  # an arena each


def test_without_a_limit_nothing_changes():
    assert address_space.limit() is None or address_space.limit() > 0
    if address_space.limit() is None:
        assert address_space.headroom() is None and address_space.affordable(1 << 50)
        assert not address_space.bound_per_thread_memory()


@pytest.fixture
def headroom_mib(monkeypatch):
    """Pretends only `value` MiB of address space are left under a limit, none of it
    reserved yet."""
    left = {"value": 10_000}
    monkeypatch.setattr(address_space, "limit", lambda: 16_384 * MIB)
    monkeypatch.setattr(address_space, "in_use", lambda: (16_384 - left["value"]) * MIB)
    monkeypatch.setattr(address_space, "headroom", lambda: left["value"] * MIB)
    return left


def test_with_no_room_for_a_thread_the_work_runs_inline(headroom_mib):
    headroom_mib["value"] = 10
    ran = []
    thread = threading.Thread(target=lambda: ran.append(threading.current_thread()))
    assert not address_space.start_thread(thread)
    executor = address_space.worker("mct_logger_test")
    assert executor.submit(lambda: threading.current_thread()).result() is \
        threading.current_thread()
    headroom_mib["value"] = 10_000
    thread = threading.Thread(target=lambda: ran.append(threading.current_thread()))
    assert address_space.start_thread(thread)
    thread.join()
    assert ran == [thread]


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="img")
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inp)
    return keras.Model(inp, keras.layers.Dense(4, name="fc")(keras.layers.Flatten()(h)),
                       name="pressure")


X = np.random.default_rng(0).random((128, 16, 16, 3), dtype=np.float32)


def _logged_ptq(tmp_path, caplog):
    mct_logger.set_log_folder(tmp_path, run_name="r")
    try:
        with caplog.at_level(logging.WARNING, "mct_logger"):
            model_q, info = mct_logger.keras_post_training_quantization(_model(), X)
    finally:
        mct_logger.set_log_folder(None)
    assert isinstance(model_q, keras.Model)
    return info, sorted(os.listdir(tmp_path / "r")), caplog.text


@pytest.mark.parametrize("left, skipped, alongside", [
    (20, ["Collecting activation statistics for the log", "The similarity analysis"], None),
    (40, ["Collecting activation statistics for the log"], False),
    (100, [], False),
    (400, [], True),
])
def test_logged_ptq_under_pressure_degrades_views_with_a_warning_and_returns(
        headroom_mib, monkeypatch, left, skipped, alongside, tmp_path, caplog):
    """Cheapest loss first: the similarity view runs beside the model build, then
    after it (a lower peak), then not at all; the log statistics go when their
    64 MiB do not fit."""
    headroom_mib["value"] = left
    threads = []
    start_thread = address_space.start_thread
    monkeypatch.setattr(address_space, "start_thread",
                        lambda thread: threads.append(thread.name) or start_thread(thread))
    info, runs, text = _logged_ptq(tmp_path, caplog)
    for view in skipped:
        assert f"{view} is skipped: only {left} MiB" in text and "ulimit -v" in text
    assert ("similarity_analysis" in info.stage_results) == (alongside is not None)
    assert ("mct_logger-similarity_analysis" in threads) == bool(alongside)
    assert any(r.endswith("quantized_model") for r in runs)  # the log is still written
    assert (info.stage_results["statistics_collection"].statistics is None) == bool(skipped)


def test_a_view_whose_room_is_only_reserved_memory_is_skipped_naming_both(monkeypatch):
    # eager TensorFlow kernels crash natively when a fresh mapping fails: free chunks
    # inside reserved memory do not count for them
    monkeypatch.setattr(address_space, "limit", lambda: 2048 * MIB)
    monkeypatch.setattr(address_space, "in_use", lambda: 2044 * MIB)
    monkeypatch.setattr(address_space, "reserved_spare", lambda: 300 * MIB)
    assert address_space.afford("A view", 100 * MIB)  # work that can use free chunks
    warnings = []
    monkeypatch.setattr(address_space.logger, "warning", lambda *a: warnings.append(a[0] % a[1:]))
    assert not address_space.afford("A view", 100 * MIB, unreserved=True)
    assert "only 4 MiB of the 2048 MiB" in warnings[0] and "300 MiB free inside" in warnings[0]


def test_a_failing_statistics_pass_is_retried_without_them(monkeypatch, tmp_path, caplog):
    def fail(self, *args, **kwargs):
        raise MemoryError("Unable to allocate 1.0 MiB (simulated)")
    monkeypatch.setattr(quantsim.ChannelStatistics, "add_batch", fail)  # the log's tables only
    info, runs, text = _logged_ptq(tmp_path, caplog)
    assert "Calibration with activation statistics for the log failed (MemoryError" in text
    assert info.stage_results["statistics_collection"].statistics is None
    assert "similarity_analysis" in info.stage_results  # only the statistics were dropped
