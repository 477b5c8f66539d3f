"""utils.liveness: a run that says "running" but whose process stopped, or that
stopped beating, reads as interrupted; SIGTERM interrupts a run cleanly."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mct_logger.tb_plugin.dashboard import mark_interrupted
from mct_logger.utils import liveness


def _gone_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: the pid is free again
    return process.pid


def test_a_live_stamp_is_running():
    table = liveness.stamp({"status": "running"})
    assert table["pid"] == os.getpid() and table["host"] == socket.gethostname()
    assert liveness.check(table) is None
    assert liveness.check({**table, "status": "complete", "pid": _gone_pid()}) is None


def test_a_stopped_process_on_this_host_is_interrupted():
    pid = _gone_pid()
    table = {**liveness.stamp({"status": "running"}), "pid": pid}
    found = liveness.check(table)
    assert found["reason"] == f"process {pid} on {socket.gethostname()} stopped"
    assert found["heartbeat"] == table["heartbeat"]


def test_a_zombie_is_not_running():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while liveness.process_alive(process.pid) and time.time() < deadline:
        time.sleep(0.05)  # exited, not yet reaped: a zombie
    assert not liveness.process_alive(process.pid)
    process.wait()


def test_no_heartbeat_for_the_stated_time_is_interrupted_on_any_host():
    now = time.time()
    table = {"status": "running", "pid": 1, "host": "another-machine",
             "heartbeat": now - liveness.STALE_SECONDS - 60}
    assert "no heartbeat for 11 min" in liveness.check(table, now=now)["reason"]
    assert liveness.check({**table, "heartbeat": now - 30}, now=now) is None
    # written before stamps existed: nothing to go on, left as it says
    assert liveness.check({"status": "running"}) is None


def test_the_dashboard_marks_a_stale_live_table_interrupted():
    pid = _gone_pid()
    running = {"status": "running", "pid": pid, "host": socket.gethostname(),
               "heartbeat": 1.0e9, "evaluations_done": 20, "evaluations_total": 268}
    tables = mark_interrupted({"summary": running, "eval_scores": dict(running),
                               "layer_table": {"rows": []}})
    for kind in ("summary", "eval_scores"):
        assert tables[kind]["status"] == "interrupted"
        assert tables[kind]["interrupted"]["heartbeat"] == 1.0e9
    assert running["status"] == "running"  # the cached table is not changed


def test_sigterm_inside_the_block_is_a_keyboard_interrupt():
    # the process's own default (a library started earlier, e.g. Ray, may have set
    # one of its own, which the block leaves alone)
    application = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            with liveness.interrupt_on_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, application)


def test_a_handler_the_application_set_is_left_alone():
    def mine(signum, frame):
        raise RuntimeError("the application's own")

    application = signal.signal(signal.SIGTERM, mine)
    try:
        with liveness.interrupt_on_signals():
            assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, application)


def test_the_heartbeat_beats_until_stopped():
    beats = []
    heartbeat = liveness.Heartbeat(lambda: beats.append(time.time()), interval=0.05)
    time.sleep(0.5)
    heartbeat.stop()
    count = len(beats)
    time.sleep(0.2)
    assert count >= 3 and len(beats) == count


@pytest.fixture
def default_sigterm():
    """SIGTERM at the system's default for the test (as in a fresh process)."""
    application = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, application)


def test_a_signal_during_an_evaluation_stops_the_run_when_the_evaluation_returns(
        default_sigterm):
    finished = []
    with pytest.raises(KeyboardInterrupt, match="stopped by SIGTERM"):
        with liveness.interrupt_on_signals():
            with liveness.deferred_interrupt():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)  # the handler has run: nothing raised here
                finished.append("evaluation")
            finished.append("never")
    assert finished == ["evaluation"]


def test_a_second_signal_during_an_evaluation_stops_at_once(default_sigterm):
    finished = []
    with pytest.raises(KeyboardInterrupt, match="stopped by SIGTERM"):
        with liveness.interrupt_on_signals():
            with liveness.deferred_interrupt():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
                finished.append("evaluation")
    assert finished == []
    # nothing is left pending for a later run in this process
    with liveness.interrupt_on_signals():
        with liveness.deferred_interrupt():
            finished.append("next run")
    assert finished == ["next run"]
