"""End to end: a real TensorBoard (both loaders) on a user's log folder, the
QuantAnalyzer and CLE tabs opened in headless Chromium."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import chromium_page, plugin_frame, screenshot, tensorboard_server, wait_for_tab

pytestmark = pytest.mark.e2e  # a real TensorBoard and headless Chromium

QA_VIEWS = ["sensitivity", "per-layer", "sqnr", "mse", "ranges", "histograms", "weights"]


@pytest.fixture(scope="module", params=["true", "false"])
def server(request, dashboard_logs):
    with tensorboard_server(dashboard_logs["logdir"], request.param) as url:
        yield url, request.param


def open_tab(page, url, name):
    page.goto(f"{url}#{name}")
    frame = plugin_frame(page, name)
    # data-runs is set once a run is drawn (the Rust loader may still be reading the folder)
    frame.locator("main[data-runs]").wait_for(timeout=60_000)
    return frame


def select_runs(frame, names):
    """Checks exactly `names` in the run picker and waits for them to be drawn."""
    for box in frame.locator(".qa-run-picker input").all():
        value = box.get_attribute("value")
        if value in names and not box.is_checked():
            box.check()
        elif value not in names and box.is_checked() and box.get_attribute("type") == "checkbox":
            box.uncheck()
    joined = ",".join(names)
    frame.locator(f"main[data-runs='{joined}']").wait_for(timeout=20_000)


def chart_points(frame, scope="body"):
    """Data points per drawn chart under `scope` (one number per chart)."""
    return frame.locator(scope).first.evaluate(
        """(root) => Array.from(root.querySelectorAll('.js-plotly-plot')).map((chart) =>
            (chart._fullData || []).reduce((n, trace) =>
                n + (trace.y || []).filter((v) => v !== null && v !== undefined).length, 0))""")


def errors_of(page):
    return [e for e in page.errors if "favicon" not in e]


def test_quant_analyzer_tab_shows_every_analysis_with_data(server, dashboard_logs):
    url, loader = server
    with chromium_page() as page:
        frame = open_tab(page, url, "quant_analyzer")
        select_runs(frame, ["analyzer"])
        frame.get_by_text("Headline findings").wait_for()
        assert frame.locator(".qa-card").count() >= 5
        for view in QA_VIEWS:
            frame.locator(f"button.qa-tab[data-view='{view}']").click()
            panel = f".qa-panel[data-view='{view}']"
            frame.locator(f"{panel} .js-plotly-plot").first.wait_for(timeout=20_000)
            page.wait_for_timeout(300)  # per-channel charts arrive from /detail
            points = chart_points(frame, panel)
            assert points and all(n > 0 for n in points), (view, points)
        screenshot(page, f"quant_analyzer_histograms_{loader}.png")
        frame.locator("button.qa-tab[data-view='layers']").click()
        rows = frame.locator(".qa-panel[data-view='layers'] tbody tr")
        assert rows.count() == len(dashboard_logs["analysis"].layers)
        # a "most suspicious layer" is named only when it crosses a headline card's
        # stated rule: it is the first layer of such a card
        suspect = frame.locator(".qa-suspect").inner_text()
        firsts = frame.locator(".qa-card li:first-child button")
        first_layers = [firsts.nth(i).inner_text() for i in range(firsts.count())]
        if suspect.startswith("Most suspicious layer: "):
            assert suspect.split(": ")[1].split(" ")[0] in first_layers, (suspect, first_layers)
        else:
            assert suspect.startswith("Nothing stands out"), suspect
        assert "Thresholds" in frame.locator(".qa-panel[data-view='layers']").inner_text()
        screenshot(page, f"quant_analyzer_layers_{loader}.png")
        assert not errors_of(page), page.errors


def test_a_ptq_run_has_its_layer_table_linked_to_the_graphs_tab(server, dashboard_logs):
    url, loader = server
    info = dashboard_logs["info_cle"]
    with chromium_page() as page:
        frame = open_tab(page, url, "quant_analyzer")
        select_runs(frame, ["ptq_cle"])
        frame.locator("button.qa-tab[data-view='layers']").click()
        panel = frame.locator(".qa-panel[data-view='layers']")
        quantized = [n for n, p in info.plan.items() if p.quantized]
        assert panel.locator("tbody tr").count() == len(quantized)
        assert "memory" in frame.locator(".qa-facts").first.inner_text()
        frame.locator("button.qa-tab[data-view='sqnr']").click()
        frame.locator(".qa-panel[data-view='sqnr'] .js-plotly-plot").first.wait_for()
        assert all(n > 0 for n in chart_points(frame, ".qa-panel[data-view='sqnr']"))
        frame.locator("button.qa-tab[data-view='layers']").click()
        link = panel.locator("a.qa-graph-link", has_text="stem")
        assert "run=ptq_cle%2F06_quantized_model" in link.get_attribute("href")
        link.click()
        page.wait_for_url("**#graphs&run=ptq_cle%2F06_quantized_model", timeout=20_000)
        page.wait_for_timeout(3000)  # the run list arrives, the menu resets, the link sets it back
        # the graph drawn is the quantized model's (the run menu says so, and the
        # folded batch norm of the first stage's graph is gone)
        page.wait_for_function(
            """() => { const d = document.querySelector('tf-graph-dashboard');
                       return d && d._selection && d._selection.run === 'ptq_cle/06_quantized_model'; }""",
            timeout=60_000)
        page.locator("paper-dropdown-menu", has_text="ptq_cle/06_quantized_model").first.wait_for(
            state="visible", timeout=30_000)
        page.locator('g.node[data-name="stem"]').first.wait_for(timeout=60_000)
        assert page.locator('g.node[data-name^="batch_normalization"]').count() == 0
        screenshot(page, f"graphs_from_layer_link_{loader}.png")
        assert not errors_of(page), page.errors


def test_two_ptq_runs_side_by_side(server, dashboard_logs):
    url, loader = server
    with chromium_page() as page:
        frame = open_tab(page, url, "quant_analyzer")
        select_runs(frame, ["ptq_cle", "ptq_default"])
        assert "Comparing 2 runs" in frame.locator("h1").first.inner_text()
        traces = frame.locator(".js-plotly-plot").first.evaluate(
            "(chart) => chart._fullData.map((t) => [t.name, t.y.filter((v) => v !== null).length])")
        names = {name.split(":")[0] for name, n in traces if n > 0}
        assert names == {"ptq_cle", "ptq_default"}, traces
        layers = len(dashboard_logs["info_cle"].plan)
        assert frame.locator(".qa-compare-section").last.locator("tbody tr").count() == layers
        assert "better at" in frame.locator(".qa-compare-verdict").inner_text()
        screenshot(page, f"quant_analyzer_compare_{loader}.png")
        assert not errors_of(page), page.errors


def test_unreadable_payloads_show_a_message_not_a_blank_tab(server):
    url, _ = server
    with chromium_page() as page:
        frame = open_tab(page, url, "quant_analyzer")
        select_runs(frame, ["broken"])
        problems = frame.locator(".qa-problems").first.inner_text()
        assert "could not be read" in problems and "Upgrade mct-logger" in problems
        assert not errors_of(page), page.errors


def test_cle_tab_shows_ranges_scale_factors_and_weight_quantization(server, dashboard_logs):
    url, loader = server
    with chromium_page(viewport=(1400, 2400)) as page:
        frame = open_tab(page, url, "cle")
        select_runs(frame, ["ptq_cle"])
        verdict = frame.locator(".cle-verdict").inner_text()
        assert "Cross-layer equalization was applied" in verdict
        page.wait_for_timeout(500)  # per-channel charts arrive from /detail
        points = chart_points(frame)
        assert len(points) >= 6 and all(n > 0 for n in points), points
        text = frame.locator("main").inner_text()
        for heading in ("Layers ranked by channel-range spread", "Per-channel weight ranges",
                        "Scale factors", "ReLU6 replaced by ReLU", "High-bias folds",
                        "Weights before vs after quantization"):
            assert heading in text
        screenshot(page, f"cle_{loader}.png")
        select_runs(frame, ["ptq_default"])
        assert "cross-layer equalization" in frame.locator(".cle-verdict").inner_text().lower()
        assert "CLE off" in frame.locator(".qa-facts").first.inner_text()
        assert not errors_of(page), page.errors


LIVE_SCRIPT = textwrap.dedent("""
    import os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras
    import mct_logger
    from mct_logger.demo import build_digits_cnn, load_digits_split
    keras.utils.set_random_seed(0)
    data = load_digits_split()
    model = build_digits_cnn()
    mct_logger.set_log_folder(sys.argv[1], run_name="live")
    def evaluate(m):
        time.sleep(float(sys.argv[2]))
        return float((m.predict(data.x_test[:64], verbose=0).argmax(-1) == data.y_test[:64]).mean())
    analyzer = mct_logger.QuantAnalyzer(
        model, lambda m: m.predict(data.x_train[:64], verbose=0), evaluate)
    analyzer.analyze(results_dir=sys.argv[3])
""")


@pytest.mark.parametrize("load_fast", ["true", "false"])
def test_a_running_analysis_fills_the_tab_in_live(tmp_path, load_fast):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    analysis = subprocess.Popen(
        [sys.executable, "-c", LIVE_SCRIPT, str(logdir), "0.7", str(tmp_path / "results")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list(logdir.glob("live/quant_analyzer/events.*")) and time.time() < deadline:
            assert analysis.poll() is None, analysis.stderr.read()
            time.sleep(0.5)
        with tensorboard_server(logdir, load_fast) as url, chromium_page() as page:
            frame = wait_for_tab(page, url, "quant_analyzer", "main[data-ready='true']",
                                 time.time() + 360)
            progress = frame.locator(".qa-progress")
            progress.wait_for(timeout=60_000)
            seen = set()
            partial = None
            while analysis.poll() is None and time.time() < deadline + 120:
                if progress.count():
                    text = progress.first.inner_text()
                    seen.add(text)
                    enabled = frame.locator("button.qa-tab[data-view='per-layer']")
                    done = int(text.split(": ")[1].split(" of ")[0])
                    total = int(text.split(" of ")[1].split(" ")[0])
                    if 3 < done < total and partial is None and enabled.count():
                        enabled.click()
                        chart = frame.locator(".qa-panel[data-view='per-layer'] .js-plotly-plot")
                        if chart.count():
                            points = chart_points(frame, ".qa-panel[data-view='per-layer']")
                            if points and 0 < points[0] < total:
                                partial = (text, points)
                                screenshot(page, f"quant_analyzer_live_{load_fast}.png")
                time.sleep(0.5)
            assert analysis.wait(timeout=120) == 0, analysis.stderr.read()
            assert partial is not None, seen
            assert "left" in partial[0], partial
            assert len(seen) >= 2, seen  # the count moved while we watched
            # when it ends, the tab redraws complete without anyone pressing anything
            frame.locator("main[data-ready='true'] .qa-progress").wait_for(state="detached", timeout=30_000)
            frame.locator("button.qa-tab[data-view='per-layer']").click()
            points = chart_points(frame, ".qa-panel[data-view='per-layer']")
            assert points[0] == points[1] and points[0] > partial[1][0], (points, partial)
            assert not errors_of(page), page.errors
    finally:
        if analysis.poll() is None:
            analysis.kill()
