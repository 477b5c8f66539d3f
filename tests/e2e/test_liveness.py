"""End to end: an analysis and a compression sweep killed mid-run (another
process, SIGKILL: nothing written at the end) show as interrupted in the
QuantAnalyzer and Compression tabs of a real TensorBoard (both loaders), with
polling stopped; stopped by SIGTERM, they mark themselves interrupted in their
logs and in summary.json before exiting."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import BROWSER_WAIT_MS, chromium_page, tensorboard_server, wait_for_tab

pytestmark = pytest.mark.e2e  # a real TensorBoard and headless Chromium

# An untrained digits CNN whose eval callback is slowed down, so the run is
# stopped while it evaluates. argv: kind ("analysis" or "sweep"), log folder,
# results folder.
SCRIPT = textwrap.dedent("""
    import os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras, numpy as np
    import mct_logger
    from mct_logger.demo import build_digits_cnn, load_digits_split
    keras.utils.set_random_seed(0)
    data = load_digits_split()
    model = build_digits_cnn()
    reference = model.predict(data.x_test[:64], verbose=0)
    def score(m):
        time.sleep(0.4)
        out = m.predict(data.x_test[:64], verbose=0)
        return float(np.sum(out * reference) / (np.linalg.norm(out) * np.linalg.norm(reference)))
    kind, logdir, results = sys.argv[1:4]
    mct_logger.set_log_folder(logdir, run_name=kind)
    if kind == "analysis":
        analyzer = mct_logger.QuantAnalyzer(
            model, lambda m: m.predict(data.x_train[:64], verbose=0), score)
        analyzer.analyze(results_dir=results)
    else:
        mct_logger.compress_model(model, score, 0.5, scheme="weight_svd",
                                  num_comp_ratio_candidates=8,
                                  eval_scores_file=os.path.join(results, "scores.json"))
""")


def _start(kind, logdir, results):
    os.makedirs(results, exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", SCRIPT, kind, str(logdir), str(results)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_until_running(process, path, logdir, plugin, kind, deadline):
    """Waits, while `process` runs, for `path` (written after a few evaluations) and
    then for its live `kind` table in `plugin`'s payloads to reach the event files,
    showing evaluations done: what a kill leaves for the dashboard to read."""
    from mct_logger.tb_plugin.reader import read_payloads
    from tests.helpers import tensorboard_provider

    def running():
        with tensorboard_provider(logdir, "python") as (provider, ctx, eid):
            return any(info["kind"] == kind and table.get("status") == "running"
                       and table.get("evaluations_done", 0) > 0
                       for _, _, info, table in read_payloads(provider, ctx, eid, plugin))

    while not (os.path.exists(path) and running()):
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline, f"{path} or a live {kind} table never appeared"
        time.sleep(0.2)  # polling the condition, not a pause


def _stop(process, signum) -> str:
    """Sends `signum`, reaps the process (its pid is gone, as after any real kill);
    returns how it ended and its stderr's tail, for the assertions' messages."""
    process.send_signal(signum)
    process.wait(timeout=60)
    return f"exit status {process.returncode}; stderr: {process.stderr.read()[-3000:]}"


def _summary(results):
    with open(os.path.join(results, "summary.json"), encoding="utf-8") as f:
        return json.load(f)


def test_killed_runs_show_as_interrupted_in_both_loaders(tmp_path):
    from mct_logger.utils import liveness

    logdir = tmp_path / "logs"
    deadline = time.time() + 300
    analysis = _start("analysis", logdir, tmp_path / "qa")
    _wait_until_running(analysis, tmp_path / "qa" / "per_layer_quant_enabled.json", logdir,
                        "quant_analyzer", "summary", deadline)
    _stop(analysis, signal.SIGKILL)
    sweep = _start("sweep", logdir, tmp_path / "sweep")
    _wait_until_running(sweep, tmp_path / "sweep" / "scores.json", logdir, "compression",
                        "eval_scores", deadline)
    _stop(sweep, signal.SIGKILL)

    # summary.json still says "running" (nothing ran after SIGKILL), but it names
    # the process and its heartbeat, so any reader can tell
    summary = _summary(tmp_path / "qa")
    assert summary["status"] == "running" and summary["pid"] == analysis.pid
    assert "heartbeat" in summary and summary["host"]
    found = liveness.check(summary)
    assert found and f"process {analysis.pid}" in found["reason"], found

    for load_fast in ("true", "false"):
        with tensorboard_server(logdir, load_fast) as url, chromium_page() as page:
            end = time.time() + 120
            frame = wait_for_tab(page, url, "quant_analyzer", "main[data-runs]", end)
            status = frame.locator(".qa-note", has_text="interrupted")
            status.first.wait_for(timeout=BROWSER_WAIT_MS)
            text = status.first.inner_text()
            assert "interrupted at" in text and "no progress since" in text, text
            assert frame.locator(".qa-progress").count() == 0  # no "about N min left"
            frame = wait_for_tab(page, url, "compression", "main[data-runs]", end)
            frame.get_by_text("interrupted at").first.wait_for(timeout=BROWSER_WAIT_MS)
            assert frame.locator(".qa-progress").count() == 0
            errors = [e for e in page.errors if "favicon" not in e]
            assert not errors, errors


def test_sigterm_marks_the_analysis_and_the_sweep_interrupted(tmp_path):
    from mct_logger.tb_plugin.reader import read_payloads
    from tests.helpers import tensorboard_provider

    logdir = tmp_path / "logs"
    deadline = time.time() + 300
    analysis = _start("analysis", logdir, tmp_path / "qa")
    _wait_until_running(analysis, tmp_path / "qa" / "per_layer_quant_enabled.json", logdir,
                        "quant_analyzer", "summary", deadline)
    analysis_end = _stop(analysis, signal.SIGTERM)
    sweep = _start("sweep", logdir, tmp_path / "sweep")
    _wait_until_running(sweep, tmp_path / "sweep" / "scores.json", logdir, "compression",
                        "eval_scores", deadline)
    sweep_end = _stop(sweep, signal.SIGTERM)

    summary = _summary(tmp_path / "qa")
    assert summary["status"] == "interrupted", (summary, analysis_end)
    assert "SIGTERM" in summary["error"] and 0 < summary["evaluations_done"] < \
        summary["evaluations_total"]
    with tensorboard_provider(logdir, "python") as (provider, ctx, eid):
        tables = {info["kind"]: table for plugin in ("quant_analyzer", "compression")
                  for _, _, info, table in read_payloads(provider, ctx, eid, plugin)}
    assert tables["summary"]["status"] == "interrupted", analysis_end
    assert tables["eval_scores"]["status"] == "interrupted", sweep_end
    assert "SIGTERM" in tables["eval_scores"]["error"]
