"""End to end: a compression sweep running in another process, watched live in
the Compression tab of a real TensorBoard (both loaders) in headless Chromium."""

import subprocess
import sys
import textwrap
import time

import pytest

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.helpers import (GATE_CODE, chromium_page, open_gate, screenshot, tab_frame,
                           tensorboard_server, until, wait_for_tab)

pytestmark = pytest.mark.e2e  # a real TensorBoard and headless Chromium

# An untrained digits CNN, scored by the cosine of its outputs against the
# original's; each evaluation waits at the test's gate (tests.helpers.GATE_CODE),
# so the sweep is held at the points the test looks at, however loaded the machine.
SWEEP_SCRIPT = GATE_CODE + textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras, numpy as np
    import mct_logger
    from mct_logger.demo import build_digits_cnn, load_digits_split
    keras.utils.set_random_seed(0)
    data = load_digits_split()
    model = build_digits_cnn()
    reference = model.predict(data.x_test[:64], verbose=0)
    def cosine(m):
        gate(sys.argv[2])
        out = m.predict(data.x_test[:64], verbose=0)
        return float(np.sum(out * reference) / (np.linalg.norm(out) * np.linalg.norm(reference)))
    mct_logger.set_log_folder(sys.argv[1], run_name="sweep")
    mct_logger.compress_model(model, cosine, 0.5, scheme="weight_svd", num_comp_ratio_candidates=8)
""")

# (rows, scored cells, progress text or null) read in one JavaScript turn
STATE = """(main) => [
    main.querySelectorAll('.cmp-scores tbody tr').length,
    main.querySelectorAll('.cmp-scores td.cmp-done, .cmp-scores td.cmp-chosen').length,
    (main.querySelector('.qa-progress') || {}).innerText || null]"""
# the state once it differs from `seen` ([rows, scored, text]) while the sweep runs
CHANGED = """(seen) => { const main = document.querySelector('main'); if (!main) return false;
    const s = (""" + STATE + """)(main);
    return s[2] && s[2].includes('left') && (s[0] !== seen[0] || s[1] !== seen[1]) ? s : false; }"""
# the finished tab: no progress, every row, a chosen cell, the chart and the verdict
FINISHED = """() => { const main = document.querySelector('main'); if (!main) return false;
    const chosen = main.querySelectorAll('.cmp-scores td.cmp-chosen').length;
    const verdict = (main.querySelector('.cmp-verdict') || {}).innerText || '';
    const chart = main.querySelector('.cmp-ratio-chart.js-plotly-plot');
    if (main.querySelector('.qa-progress') || !chart || !chart._fullData || !chosen
        || !verdict.includes('layers compressed')) return false;
    return [main.querySelectorAll('.cmp-scores tbody tr').length, chosen,
            chart._fullData.map((t) => t.x.length)]; }"""


@pytest.mark.parametrize("load_fast", ["true", "false"])
def test_a_running_sweep_fills_the_compression_tab_in_live(tmp_path, load_fast):
    logdir, gate = tmp_path / "logs", tmp_path / "gate"
    logdir.mkdir()
    gate.mkdir()
    open_gate(gate, 1)  # the uncompressed model's score: the sweep starts and is logged
    with tensorboard_server(logdir, load_fast) as url, chromium_page() as page:
        sweep = subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, str(logdir), str(gate)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            watch_sweep(page, url, sweep, gate, load_fast)
        finally:
            if sweep.poll() is None:
                sweep.kill()


def watch_sweep(page, url, sweep, gate, load_fast):
    deadline = time.time() + 300
    wait_for_tab(page, url, "compression", "main[data-runs]", deadline, writer=sweep)
    tab = tab_frame(page, "compression")
    seen = [[None, None, None]]  # states of the running sweep, one per change the tab showed
    calls = 1
    # one more evaluation at a time, until the tab has shown the sweep fill in while
    # running: two counts of scored cells, and fewer rows than layers at first
    while len({s[1] for s in seen[1:]}) < 2 or min(s[0] for s in seen[1:]) >= 3:
        assert time.time() < deadline and sweep.poll() is None, (seen, sweep.poll())
        calls += 1
        open_gate(gate, calls)
        try:
            seen.append(until(tab, CHANGED, timeout_s=20, arg=seen[-1]))
        except PlaywrightTimeout:  # throttled: this score was not published; go on
            continue
        if len(seen) == 3:
            screenshot(page, f"compression_live_{load_fast}.png")
    open_gate(gate, 10_000)  # the rest of the sweep
    assert sweep.wait(timeout=300) == 0, sweep.stderr.read()
    # when it ends, the tab redraws complete without anyone pressing anything
    rows, chosen, bars = until(tab, FINISHED, timeout_s=120)
    assert rows == 3 and chosen >= 1 and bars == [chosen], (rows, chosen, bars)
    screenshot(page, f"compression_done_{load_fast}.png")
    errors = [e for e in page.errors if "favicon" not in e]
    assert not errors, errors
