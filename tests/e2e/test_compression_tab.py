"""End to end: a compression sweep running in another process, watched live in
the Compression tab of a real TensorBoard (both loaders) in headless Chromium."""

import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import chromium_page, screenshot, tensorboard_server, wait_for_tab

pytestmark = pytest.mark.e2e  # a real TensorBoard and headless Chromium

# An untrained digits CNN, scored by the cosine of its outputs against the
# original's; each evaluation slowed down so the sweep is watched while it runs.
SWEEP_SCRIPT = textwrap.dedent("""
    import os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras, numpy as np
    import mct_logger
    from mct_logger.demo import build_digits_cnn, load_digits_split
    keras.utils.set_random_seed(0)
    data = load_digits_split()
    model = build_digits_cnn()
    reference = model.predict(data.x_test[:64], verbose=0)
    def cosine(m):
        time.sleep(float(sys.argv[2]))
        out = m.predict(data.x_test[:64], verbose=0)
        return float(np.sum(out * reference) / (np.linalg.norm(out) * np.linalg.norm(reference)))
    mct_logger.set_log_folder(sys.argv[1], run_name="sweep")
    mct_logger.compress_model(model, cosine, 0.5, scheme="weight_svd", num_comp_ratio_candidates=8)
""")


def bars(frame):
    return frame.locator(".cmp-ratio-chart.js-plotly-plot").first.evaluate(
        "(chart) => chart._fullData.map((t) => t.x.length)")


@pytest.mark.parametrize("load_fast", ["true", "false"])
def test_a_running_sweep_fills_the_compression_tab_in_live(tmp_path, load_fast):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    with tensorboard_server(logdir, load_fast) as url, chromium_page() as page:
        sweep = subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, str(logdir), "1.2"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            watch_sweep(page, url, sweep, load_fast)
        finally:
            if sweep.poll() is None:
                sweep.kill()


def state(frame):
    """(rows, scored cells, progress text or None), read at one instant."""
    return tuple(frame.locator("main").evaluate("""(main) => [
        main.querySelectorAll('.cmp-scores tbody tr').length,
        main.querySelectorAll('.cmp-scores td.cmp-done, .cmp-scores td.cmp-chosen').length,
        (main.querySelector('.qa-progress') || {}).innerText || null]"""))


def watch_sweep(page, url, sweep, load_fast):
    deadline = time.time() + 180
    frame = wait_for_tab(page, url, "compression", "main[data-runs]", deadline, writer=sweep)
    seen = []  # (rows, scored cells, progress text) while the sweep runs
    while sweep.poll() is None and time.time() < deadline:
        seen.append(state(frame))
        if len(seen) == 6:
            screenshot(page, f"compression_live_{load_fast}.png")
        time.sleep(0.5)
    assert sweep.wait(timeout=120) == 0, sweep.stderr.read()
    running = [s for s in seen if s[2] and "left" in s[2]]
    assert running, seen
    assert len({s[1] for s in running}) >= 2, seen  # cells filled in while we watched
    assert min(s[0] for s in running) < 3, seen  # rows appeared as the sweep reached them
    # when it ends, the tab redraws complete without anyone pressing anything
    frame.locator(".cmp-ratio-chart.js-plotly-plot").wait_for(timeout=30_000)
    assert frame.locator(".qa-progress").count() == 0
    assert frame.locator(".cmp-scores tbody tr").count() == 3
    chosen = frame.locator(".cmp-scores td.cmp-chosen").count()
    assert chosen >= 1 and bars(frame) == [chosen]
    assert "layers compressed" in frame.locator(".cmp-verdict").inner_text()
    screenshot(page, f"compression_done_{load_fast}.png")
    errors = [e for e in page.errors if "favicon" not in e]
    assert not errors, errors
