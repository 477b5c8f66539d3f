"""End to end: a real TensorBoard (both loaders) on a user's log folder, the
QuantAnalyzer and CLE tabs opened in headless Chromium."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from tests.helpers import (BROWSER_WAIT_MS, GATE_CODE, chromium_page, open_gate, plugin_frame,
                           screenshot, tab_frame, tensorboard_server, until, wait_for_tab)

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
    frame.locator("main[data-runs]").wait_for(timeout=BROWSER_WAIT_MS)
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
    frame.locator(f"main[data-runs='{joined}']").wait_for(timeout=BROWSER_WAIT_MS)


# Points per drawn chart under the selector `arg`, once every chart there has some
# (per-channel charts arrive later, from /detail); false until then.
CHARTS_DRAWN = """(scope) => { const root = document.querySelector(scope); if (!root) return false;
    const charts = Array.from(root.querySelectorAll('.js-plotly-plot'));
    const points = charts.map((chart) => (chart._fullData || []).reduce((n, trace) =>
        n + (trace.y || []).filter((v) => v !== null && v !== undefined).length, 0));
    return charts.length && points.every((n) => n > 0) ? points : false; }"""


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
        frame.locator(".qa-card").nth(4).wait_for()  # at least five cards
        for view in QA_VIEWS:
            frame.locator(f"button.qa-tab[data-view='{view}']").click()
            panel = f".qa-panel[data-view='{view}']"
            frame.locator(f"{panel} .js-plotly-plot").first.wait_for(timeout=BROWSER_WAIT_MS)
            points = until(tab_frame(page, "quant_analyzer"), CHARTS_DRAWN, 60, arg=panel)
            assert points and all(n > 0 for n in points), (view, points)
        screenshot(page, f"quant_analyzer_histograms_{loader}.png")
        frame.locator("button.qa-tab[data-view='layers']").click()
        rows = frame.locator(".qa-panel[data-view='layers'] tbody tr")
        expect(rows).to_have_count(len(dashboard_logs["analysis"].layers))
        # a "most suspicious layer" is named only when it crosses a headline card's
        # stated rule: it is the first layer of such a card
        suspect = frame.locator(".qa-suspect").inner_text()
        first_layers = frame.locator(".qa-card li:first-child button").all_inner_texts()
        if suspect.startswith("Most suspicious layer: "):
            assert suspect.split(": ")[1].split(" ")[0] in first_layers, (suspect, first_layers)
        else:
            assert suspect.startswith("Nothing stands out"), suspect
        expect(frame.locator(".qa-panel[data-view='layers']")).to_contain_text("Thresholds")
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
        expect(panel.locator("tbody tr")).to_have_count(len(quantized))
        expect(frame.locator(".qa-facts").first).to_contain_text("memory")
        frame.locator("button.qa-tab[data-view='sqnr']").click()
        frame.locator(".qa-panel[data-view='sqnr'] .js-plotly-plot").first.wait_for()
        assert all(n > 0 for n in chart_points(frame, ".qa-panel[data-view='sqnr']"))
        frame.locator("button.qa-tab[data-view='layers']").click()
        link = panel.locator("a.qa-graph-link", has_text="stem")
        assert "run=ptq_cle%2F07_quantized_model" in link.get_attribute("href")
        link.click()
        page.wait_for_url("**#graphs&run=ptq_cle%2F07_quantized_model", timeout=BROWSER_WAIT_MS)
        # the graph drawn is the quantized model's (the run menu says so, and the
        # folded batch norm of the first stage's graph is gone)
        page.wait_for_function(
            """() => { const d = document.querySelector('tf-graph-dashboard');
                       return d && d._selection && d._selection.run === 'ptq_cle/07_quantized_model'; }""",
            timeout=BROWSER_WAIT_MS)
        page.locator("paper-dropdown-menu", has_text="ptq_cle/07_quantized_model").first.wait_for(
            state="visible", timeout=BROWSER_WAIT_MS)
        page.locator('g.node[data-name="stem"]').first.wait_for(timeout=BROWSER_WAIT_MS)
        expect(page.locator('g.node[data-name^="batch_normalization"]')).to_have_count(0)
        screenshot(page, f"graphs_from_layer_link_{loader}.png")
        assert not errors_of(page), page.errors


# The run whose graph TensorBoard's Graphs loader drew last (its last finished load).
DRAWN_RUN = """() => { const d = document.querySelector('tf-graph-dashboard');
    const l = d && (d.shadowRoot || d).querySelector('tf-graph-dashboard-loader');
    return l && l._graphRunTag ? l._graphRunTag.run : null; }"""


def test_the_graph_link_redraws_its_run_when_another_runs_graph_lands_last(server, dashboard_logs):
    """TensorBoard's Graphs tab starts loading its first run's graph when its run
    list arrives, beside the linked run's, and draws whichever load finishes last:
    on a busy machine the first run's graph was left drawn under a menu naming the
    linked run. Here every other run's graph is held until the linked one is drawn,
    so it lands last for sure; the link must then draw its own run again."""
    url, loader = server
    target = "ptq_cle/07_quantized_model"
    held = []
    with chromium_page() as page:
        page.route(lambda u: "/data/plugin/graphs/graph?" in u
                   and "run=ptq_cle%2F07_quantized_model" not in u, lambda route: held.append(route))
        frame = open_tab(page, url, "quant_analyzer")
        select_runs(frame, ["ptq_cle"])
        frame.locator("button.qa-tab[data-view='layers']").click()
        frame.locator(".qa-panel[data-view='layers'] a.qa-graph-link", has_text="stem").click()
        page.wait_for_function(f"() => ({DRAWN_RUN})() === {target!r}", timeout=BROWSER_WAIT_MS)
        assert held, "TensorBoard loaded no other run's graph beside the linked one"
        for route in held:
            route.continue_()
        page.wait_for_function(f"() => ({DRAWN_RUN})() !== {target!r}", timeout=BROWSER_WAIT_MS)
        page.wait_for_function(f"() => ({DRAWN_RUN})() === {target!r}", timeout=BROWSER_WAIT_MS)
        page.locator('g.node[data-name="stem"]').first.wait_for(timeout=BROWSER_WAIT_MS)
        expect(page.locator('g.node[data-name^="batch_normalization"]')).to_have_count(0)
        screenshot(page, f"graphs_after_a_late_load_{loader}.png")
        assert not errors_of(page), page.errors


# Installed in the tab's frame before a held /tables response is let go: records
# every "Comparing" heading drawn from then on, and sets __heldConsumed one task
# after the page parsed a response for run `arg`, once the microtasks that
# parse resumed (the tab's fetch, its check and any draw) have all run.
WATCH_A_HELD_FETCH = """(run) => {
    window.__comparisons = [];
    new MutationObserver(() => {
        for (const h1 of document.querySelectorAll('h1')) {
            if (h1.textContent.includes('Comparing')) window.__comparisons.push(h1.textContent);
        }
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
    const json = Response.prototype.json;
    Response.prototype.json = function () {
        const parsed = json.call(this);
        if (this.url.includes(`run=${run}`)) {
            parsed.finally(() => setTimeout(() => { window.__heldConsumed = true; }, 0));
        }
        return parsed;
    };
}"""


@pytest.mark.parametrize("then", [["analyzer"], []], ids=["one_run", "no_run"])
def test_a_slow_fetch_for_an_earlier_selection_never_draws_over_the_newer_one(server, then):
    """Checking a second run and unchecking it again fetches both runs' tables,
    then one run's: on a busy machine the two-run fetch finished last and drew a
    comparison over the one-run view, under a picker naming one run. Here the
    second run's tables are held until the newer selection (one run, or none:
    a note) is shown, then let go: the newer selection must stay."""
    url, _ = server
    held = []
    with chromium_page() as page:
        frame = open_tab(page, url, "quant_analyzer")
        select_runs(frame, ["analyzer"])
        frame.get_by_text("Headline findings").wait_for()
        frame.locator(".qa-board > .qa-root").evaluate("(root) => { root.dataset.before = '1'; }")
        page.route(lambda u: "/tables?run=broken" in u, lambda route: held.append(route))
        broken = frame.locator(".qa-run-picker input[value='broken']")
        with page.expect_request(lambda r: "/tables?run=broken" in r.url):
            broken.check()
        if then:
            with page.expect_request_finished(lambda r: "/tables?run=analyzer" in r.url):
                broken.uncheck()
            shown = frame.locator(".qa-board > .qa-root:not([data-before])").get_by_text("Headline findings")
        else:
            broken.uncheck()
            frame.locator(".qa-run-picker input[value='analyzer']").uncheck()
            shown = frame.locator(".qa-board").get_by_text("Select a run above.")
        shown.wait_for()
        tab = tab_frame(page, "quant_analyzer")
        tab.evaluate(WATCH_A_HELD_FETCH, "broken")
        assert held, "the two-run selection fetched no tables for 'broken'"
        for route in held:
            route.continue_()
        until(tab, "() => window.__heldConsumed === true", BROWSER_WAIT_MS / 1000)
        assert tab.evaluate("() => window.__comparisons") == []
        expect(shown).to_be_visible()
        if then:
            expect(frame.locator("main")).to_have_attribute("data-runs", ",".join(then))
        else:
            expect(frame.locator(".qa-root")).to_have_count(0)
            expect(frame.locator("main[data-runs]")).to_have_count(0)
        assert not errors_of(page), page.errors


def test_two_ptq_runs_side_by_side(server, dashboard_logs):
    url, loader = server
    with chromium_page() as page:
        frame = open_tab(page, url, "quant_analyzer")
        select_runs(frame, ["ptq_cle", "ptq_default"])
        expect(frame.locator("h1").first).to_contain_text("Comparing 2 runs")
        traces = frame.locator(".js-plotly-plot").first.evaluate(
            "(chart) => chart._fullData.map((t) => [t.name, t.y.filter((v) => v !== null).length])")
        names = {name.split(":")[0] for name, n in traces if n > 0}
        assert names == {"ptq_cle", "ptq_default"}, traces
        layers = len(dashboard_logs["info_cle"].plan)
        expect(frame.locator(".qa-compare-section").last.locator("tbody tr")).to_have_count(layers)
        expect(frame.locator(".qa-compare-verdict")).to_contain_text("better at")
        screenshot(page, f"quant_analyzer_compare_{loader}.png")
        assert not errors_of(page), page.errors


def test_unreadable_payloads_show_a_message_not_a_blank_tab(server):
    url, _ = server
    with chromium_page() as page:
        frame = open_tab(page, url, "quant_analyzer")
        select_runs(frame, ["broken"])
        problems = frame.locator(".qa-problems").first
        expect(problems).to_contain_text("could not be read")
        expect(problems).to_contain_text("Upgrade mct-logger")
        assert not errors_of(page), page.errors


def test_cle_tab_shows_ranges_scale_factors_and_weight_quantization(server, dashboard_logs):
    url, loader = server
    with chromium_page(viewport=(1400, 2400)) as page:
        frame = open_tab(page, url, "cle")
        select_runs(frame, ["ptq_cle"])
        verdict = frame.locator(".cle-verdict").inner_text()
        assert "Cross-layer equalization was applied" in verdict
        points = until(tab_frame(page, "cle"), """() => { const charts = Array.from(
            document.querySelectorAll('.js-plotly-plot')).map((c) => (c._fullData || []).reduce(
            (n, t) => n + (t.y || []).filter((v) => v !== null && v !== undefined).length, 0));
            return charts.length >= 6 && charts.every((n) => n > 0) ? charts : false; }""", 60)
        assert len(points) >= 6 and all(n > 0 for n in points), points
        text = frame.locator("main").inner_text()
        for heading in ("Layers ranked by channel-range spread", "Per-channel weight ranges",
                        "Scale factors", "ReLU6 replaced by ReLU", "High-bias folds",
                        "Weights before vs after quantization"):
            assert heading in text
        screenshot(page, f"cle_{loader}.png")
        select_runs(frame, ["ptq_default"])
        expect(frame.locator(".cle-verdict")).to_contain_text("cross-layer equalization",
                                                              ignore_case=True)
        expect(frame.locator(".qa-facts").first).to_contain_text("CLE off")
        assert not errors_of(page), page.errors


# Each evaluation waits at the test's gate (tests.helpers.GATE_CODE): the analysis
# is held at the points the test looks at, however loaded the machine.
LIVE_SCRIPT = GATE_CODE + textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras
    import mct_logger
    from mct_logger.demo import build_digits_cnn, load_digits_split
    keras.utils.set_random_seed(0)
    data = load_digits_split()
    model = build_digits_cnn()
    mct_logger.set_log_folder(sys.argv[1], run_name="live")
    def evaluate(m):
        gate(sys.argv[2])
        return float((m.predict(data.x_test[:64], verbose=0).argmax(-1) == data.y_test[:64]).mean())
    analyzer = mct_logger.QuantAnalyzer(
        model, lambda m: m.predict(data.x_train[:64], verbose=0), evaluate)
    analyzer.analyze(results_dir=sys.argv[3])
""")

# the progress text once it differs from `arg` (null while there is none)
PROGRESS_CHANGED = """(seen) => { const p = document.querySelector('main .qa-progress');
    const text = p ? p.innerText : null; return text && text !== seen ? text : false; }"""
PER_LAYER = ".qa-panel[data-view='per-layer']"
# points per chart under `arg` once the first chart has some (the others may be empty)
FIRST_CHART_DRAWN = """(scope) => { const root = document.querySelector(scope); if (!root) return false;
    const points = Array.from(root.querySelectorAll('.js-plotly-plot')).map((chart) =>
        (chart._fullData || []).reduce((n, trace) =>
            n + (trace.y || []).filter((v) => v !== null && v !== undefined).length, 0));
    return points.length && points[0] > 0 ? points : false; }"""


def _counts(text):
    """(done, total) of a progress text such as "...: 7 of 20 evaluations, ... left"."""
    return int(text.split(": ")[1].split(" of ")[0]), int(text.split(" of ")[1].split(" ")[0])


@pytest.mark.parametrize("load_fast", ["true", "false"])
def test_a_running_analysis_fills_the_tab_in_live(tmp_path, load_fast):
    logdir, gate = tmp_path / "logs", tmp_path / "gate"
    logdir.mkdir()
    gate.mkdir()
    open_gate(gate, 1)
    analysis = subprocess.Popen(
        [sys.executable, "-c", LIVE_SCRIPT, str(logdir), str(gate), str(tmp_path / "results")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 480
        with tensorboard_server(logdir, load_fast) as url, chromium_page() as page:
            frame = wait_for_tab(page, url, "quant_analyzer", "main[data-ready='true']",
                                 deadline, writer=analysis)
            tab = tab_frame(page, "quant_analyzer")
            seen, partial, calls = [None], None, 1
            # one more evaluation at a time; the analysis waits at the gate, so what the
            # tab shows stays put while it is read
            while partial is None:
                assert time.time() < deadline and analysis.poll() is None, (seen, analysis.poll())
                calls += 1
                open_gate(gate, calls)
                try:
                    seen.append(until(tab, PROGRESS_CHANGED, timeout_s=20, arg=seen[-1]))
                except PlaywrightTimeout:  # throttled: not published yet; go on
                    continue
                done, total = _counts(seen[-1])
                if 4 < done < total:  # a per-layer row is in: its chart is partial
                    frame.locator("button.qa-tab[data-view='per-layer']").click()
                    points = until(tab, FIRST_CHART_DRAWN, 60, arg=PER_LAYER)
                    assert 0 < points[0] < total, (seen[-1], points)
                    partial = (seen[-1], points)
                    screenshot(page, f"quant_analyzer_live_{load_fast}.png")
            assert "left" in partial[0], partial
            assert len(seen) >= 3, seen  # the count moved while we watched
            open_gate(gate, 10_000)
            assert analysis.wait(timeout=300) == 0, analysis.stderr.read()
            # when it ends, the tab redraws complete without anyone pressing anything
            frame.locator("main[data-ready='true'] .qa-progress").wait_for(state="detached",
                                                                           timeout=120_000)
            frame.locator("button.qa-tab[data-view='per-layer']").click()
            points = until(tab, """(scope) => { const f = (""" + CHARTS_DRAWN + """)(scope);
                return f && f[0] === f[1] ? f : false; }""", 60, arg=PER_LAYER)
            assert points[0] > partial[1][0], (points, partial)
            assert not errors_of(page), page.errors
    finally:
        if analysis.poll() is None:
            analysis.kill()
