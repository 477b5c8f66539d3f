"""The offline QuantAnalyzer report in headless Chromium, and the frontend modules
served as plain files (as the TensorBoard tab will serve them)."""

import json
import pathlib
import re

import keras
import numpy as np
import pytest

from mct_logger.analyzer import report
from mct_logger.analyzer.driver import QuantAnalyzer
from tests.helpers import BROWSER_WAIT_MS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWS = ["sensitivity", "per-layer", "sqnr", "mse", "ranges", "histograms", "weights"]



def broken_model():
    """Dense layers linked by ReLU; dense2's weights reading channel 3 are 1000x
    larger (dense1's channel 3 is 1000x smaller): the same float function."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12,), name="features")
    x = keras.layers.Dense(16, activation="relu", name="dense1")(inputs)
    x = keras.layers.Dense(16, activation="relu", name="dense2")(x)
    x = keras.layers.Dense(16, activation="relu", name="dense3")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="mlp")
    w1, b1 = model.get_layer("dense1").get_weights()
    w1[:, 3] /= 1000.0
    b1[3] /= 1000.0
    model.get_layer("dense1").set_weights([w1, b1])
    w2, b2 = model.get_layer("dense2").get_weights()
    w2[3, :] *= 1000.0
    model.get_layer("dense2").set_weights([w2, b2])
    return model


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    model = broken_model()
    x = np.random.default_rng(0).normal(size=(512, 12)).astype("float32")
    reference = model.predict(x[256:], verbose=0)

    def evaluate(m):
        y = m.predict(x[256:], batch_size=256, verbose=0)
        return 1.0 - np.linalg.norm(y - reference) / np.linalg.norm(reference)

    analyzer = QuantAnalyzer(model, lambda m: m.predict(x[:256], batch_size=64, verbose=0), evaluate)
    analyzer.enable_per_layer_mse_loss(x[:256], num_batches=4)
    results = tmp_path_factory.mktemp("report")
    result = analyzer.analyze(results_dir=str(results))
    assert result.ranking("sqnr_isolated")[0] == "dense2"
    return result, results


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


class Page:
    """A page that records console errors, page errors and any network request."""

    def __init__(self, browser, offline=True):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(BROWSER_WAIT_MS)  # long limits: CI's machine is shared
        self.errors, self.requests = [], []
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        if offline:
            self.page.on("request", lambda r: self.requests.append(r.url))

    def open_report(self, path):
        self.page.goto(pathlib.Path(path).as_uri())
        self.page.wait_for_selector("#quant-analyzer[data-ready='true']")
        return self.page

    def close(self):
        self.context.close()


def drawn_traces(page, view):
    """Number of drawn SVG traces in the view's charts (and whether any uses WebGL)."""
    return page.evaluate(
        """(view) => {
            const panel = document.querySelector(`.qa-panel[data-view="${view}"]`);
            const charts = [...panel.querySelectorAll(".js-plotly-plot")].filter(c => !c.closest("[hidden]"));
            return {
                charts: charts.length,
                traces: charts.map(c => c.querySelectorAll("svg.main-svg g.trace").length),
                webgl: panel.querySelectorAll("canvas").length,
            };
        }""",
        view,
    )


def test_results_are_a_few_files_and_one_copy_of_the_chart_library(analysis):
    _, results = analysis
    files = sorted(p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file())
    assert files == [  # evaluations.json: the resumable record of the eval scores
        "evaluations.json", "histograms.json", "index.html", "min_max_ranges/activations.json",
        "min_max_ranges/encodings.json", "min_max_ranges/weights.json",
        "per_layer_mse_loss.json", "per_layer_quant_disabled.json",
        "per_layer_quant_enabled.json", "per_layer_sqnr.json", "sensitivity.json",
        "summary.json", "weight_sqnr.json",
    ]
    page = (results / "index.html").read_text(encoding="utf-8")
    bundle = report.plotly_bundle_path().read_text(encoding="utf-8")
    probe = bundle[len(bundle) // 2: len(bundle) // 2 + 300]
    assert page.count(probe) == 1
    assert not re.search(r"""<(script|link)[^>]+(src|href)=["'](?!data:)""", page)


def test_report_opens_from_disk_with_charts_in_every_view_and_no_errors(analysis, browser):
    _, results = analysis
    session = Page(browser)
    try:
        page = session.open_report(results / "index.html")
        for view in VIEWS:
            page.click(f"button.qa-tab[data-view='{view}']")
            assert page.get_attribute(f".qa-tab[data-view='{view}']", "aria-selected") == "true"
            drawn = drawn_traces(page, view)
            assert drawn["charts"] >= 1 and all(t >= 1 for t in drawn["traces"]), (view, drawn)
            assert drawn["webgl"] == 0, view
        assert session.errors == []
        assert all(url.startswith(("file:", "data:")) for url in session.requests), session.requests
    finally:
        session.close()


def test_headline_findings_come_first_and_name_the_broken_layer(analysis, browser):
    _, results = analysis
    session = Page(browser)
    try:
        page = session.open_report(results / "index.html")
        order = page.evaluate(
            "[...document.querySelector('#quant-analyzer').children].map(e => e.className)")
        assert order.index("qa-findings") < order.index("qa-tabs")
        assert "Most suspicious layer: dense2" in page.inner_text(".qa-suspect")
        for finding in ("sqnr_isolated", "sqnr_step", "enabled", "disabled"):
            first = page.inner_text(f".qa-card[data-finding='{finding}'] li:first-child button")
            assert first == "dense2", finding
        assert session.errors == []
    finally:
        session.close()


def test_finding_links_and_selectors_redraw_the_charts(analysis, browser):
    _, results = analysis
    session = Page(browser)
    try:
        page = session.open_report(results / "index.html")
        link = page.locator(".qa-card[data-finding='sqnr_isolated'] li:nth-child(1) button")
        layer = link.inner_text()
        link.click()
        assert page.get_attribute("#quant-analyzer", "data-view") == "sqnr"
        assert layer == "dense2" and "dense2" in page.inner_text(".qa-panel[data-view='sqnr']")
        page.click("button.qa-tab[data-view='weights']")
        weights = page.locator(".qa-panel[data-view='weights'] select")
        weights.select_option(index=1)
        layer = weights.evaluate("s => s.options[s.selectedIndex].text")
        assert re.search(rf"{re.escape(layer.split(' ')[0])}: SQNR of each of \d+ output channels",
                         page.inner_text(".qa-panel[data-view='weights']"))
        page.click("button.qa-tab[data-view='histograms']")
        panel = page.locator(".qa-panel[data-view='histograms']")
        panel.locator("select").select_option(label="dense2 (weights)")
        panel.locator("input[type='number']").fill("3")
        panel.locator("input[type='number']").dispatch_event("change")
        text = panel.inner_text()
        assert "dense2: all kernel values" in text and "output channel 3 of 16" in text
        panel.locator("input[type='checkbox']").check()
        assert page.evaluate(
            "document.querySelectorAll('.qa-panel[data-view=histograms] .js-plotly-plot')[0]"
            ".layout.yaxis.type") == "log"
        assert drawn_traces(page, "histograms")["charts"] == 2
        page.click("button.qa-tab[data-view='sqnr']")
        page.click(".qa-panel[data-view='sqnr'] th:text-is('isolated')")  # sort, lowest first
        first = page.inner_text(".qa-panel[data-view='sqnr'] tbody tr:first-child td:first-child")
        assert first == "dense2"
        assert session.errors == []
    finally:
        session.close()


def test_interrupted_report_shows_what_finished(analysis, browser, tmp_path):
    result, results = analysis
    tables = {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}
    tables["min_max_ranges"] = json.loads((results / "min_max_ranges/encodings.json").read_text())
    for kind in ("per_layer_quant_enabled", "per_layer_quant_disabled", "per_layer_mse_loss"):
        tables.pop(kind)
    tables["summary"].update(status="interrupted", evaluations_done=3)
    session = Page(browser)
    try:
        page = session.open_report(report.write_report(str(tmp_path), tables))
        assert "Analysis interrupted at 3 of 14 evaluations" in page.inner_text(".qa-header")
        assert page.locator(".qa-card[data-finding='enabled']").count() == 0
        page.click("button.qa-tab[data-view='per-layer']")
        assert "did not run" in page.inner_text(".qa-panel[data-view='per-layer']")
        page.click("button.qa-tab[data-view='sqnr']")
        assert drawn_traces(page, "sqnr")["charts"] == 2
        assert session.errors == []
    finally:
        session.close()


def test_modules_work_unbundled_over_http_under_a_strict_csp(analysis, browser):
    """What the TensorBoard tab will do: module files, relative URLs, no inline script,
    plotly injected as a classic script by plotly_loader.js."""
    _, results = analysis
    frontend = report.frontend_dir()
    tables = {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}
    tables["min_max_ranges"] = json.loads((results / "min_max_ranges/encodings.json").read_text())
    entry = (
        'import { loadPlotly } from "./common/plotly_loader.js";\n'
        'import { renderQuantAnalyzer } from "./quant_analyzer/qa_dashboard.js";\n'
        'const tables = await (await fetch("./tables.json")).json();\n'
        'const Plotly = await loadPlotly("./plotly.min.js");\n'
        'renderQuantAnalyzer(document.getElementById("root"), tables, Plotly);\n'
        'document.body.dataset.ready = "true";\n'
    )
    files = {
        "index.html": ('<!DOCTYPE html><html><head><link rel="stylesheet" href="common/dashboard.css">'
                       '<script type="module" src="entry.js"></script></head>'
                       '<body><div id="root"></div></body></html>', "text/html"),
        "entry.js": (entry, "text/javascript"),
        "tables.json": (json.dumps(tables), "application/json"),
        "plotly.min.js": (report.plotly_bundle_path().read_text(), "text/javascript"),
    }
    csp = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
    served = []

    def handle(route):
        name = route.request.url.split("http://tb.test/")[1].split("?")[0]
        served.append(name)
        if name in files:
            body, mime = files[name]
        elif (frontend / name).is_file():
            body = (frontend / name).read_text()
            mime = "text/css" if name.endswith(".css") else "text/javascript"
        else:
            return route.fulfill(status=404, body="")
        route.fulfill(status=200, body=body, content_type=mime,
                      headers={"Content-Security-Policy": csp})

    session = Page(browser, offline=False)
    try:
        session.context.route("http://tb.test/**", handle)
        page = session.page
        page.goto("http://tb.test/index.html")
        page.wait_for_selector("body[data-ready='true']", timeout=BROWSER_WAIT_MS)
        page.click("button.qa-tab[data-view='sqnr']")
        assert drawn_traces(page, "sqnr")["charts"] == 2
        assert {"common/dashboard.css", "common/dom.js", "common/plot.js", "common/plotly_loader.js",
                "quant_analyzer/qa_dashboard.js", "quant_analyzer/qa_data.js",
                "quant_analyzer/qa_charts.js", "plotly.min.js"} <= set(served)
        assert session.errors == []
    finally:
        session.close()


def test_bundler_resolves_aliases_and_rejects_other_module_syntax(tmp_path, browser):
    (tmp_path / "b.js").write_text("export function twice(x) {\n  return 2 * x;\n}\nexport const K = 5;\n")
    (tmp_path / "a.js").write_text(
        'import { twice as double, K } from "./b.js";\n'
        "export function main() {\n  window.answer = double(K) + 11;\n}\nmain();\n")
    bundle = report.bundle_modules(tmp_path, "a.js")
    session = Page(browser)
    try:
        session.page.set_content(f"<script type='module'>{bundle}</script>")
        session.page.wait_for_function("window.answer !== undefined")
        assert session.page.evaluate("window.answer") == 21
    finally:
        session.close()
    (tmp_path / "c.js").write_text("export default function f() {}\n")
    with pytest.raises(ValueError, match="only exported declarations"):
        report.bundle_modules(tmp_path, "c.js")
    (tmp_path / "d.js").write_text('import * as b from "./b.js";\n')
    with pytest.raises(ValueError, match="only named relative imports"):
        report.bundle_modules(tmp_path, "d.js")


def _findings_in_node(tmp_path, tables_list):
    """`qa_data.findings` of each tables dict, run by Node on the shipped module."""
    import shutil
    import subprocess

    frontend = pathlib.Path(report.__file__).resolve().parents[2] / "frontend"
    shutil.copytree(frontend, tmp_path, dirs_exist_ok=True)  # qa_data.js imports common/
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "tables.json").write_text(json.dumps(tables_list))
    script = ("import { findings, normalizeTables } from './quant_analyzer/qa_data.js';\n"
              "import { readFileSync } from 'node:fs';\n"
              "const all = JSON.parse(readFileSync('tables.json', 'utf8'));\n"
              "console.log(JSON.stringify(all.map((t) => findings(normalizeTables(t)))));\n")
    (tmp_path / "run.mjs").write_text(script)
    out = subprocess.run(["node", "run.mjs"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def _without_ranking(tables):
    return {k: {f: v for f, v in t.items() if f != "worst_layers"} if isinstance(t, dict) else t
            for k, t in tables.items()}


def test_worst_layers_are_ranked_once_in_python_and_read_by_the_frontend(analysis, tmp_path):
    """The report's tables carry the ranking (`mct_logger.analyzer.worst_layers`),
    with each headline measure's rule; the frontend shows it as carried and never
    ranks a table again itself (one copy of the rules): on the analysis, on a tie
    past the threshold and on a table where no layer crosses it."""
    from mct_logger.analyzer.worst_layers import annotate

    html = (analysis[1] / "index.html").read_text()
    start = html.index(f'id="{report.DATA_ELEMENT_ID}"')
    start = html.index(">", start) + 1
    tables = json.loads(html[start:html.index("</script>", start)])["tables"]
    ranked = {k: t["worst_layers"] for k, t in tables.items() if "worst_layers" in t}
    assert set(ranked) == {"per_layer_sqnr", "per_layer_quant_enabled",
                           "per_layer_quant_disabled", "per_layer_mse_loss", "weight_sqnr",
                           "min_max_ranges"}
    assert ranked["per_layer_sqnr"]["sqnr_isolated"]["layers"][0]["layer"] == "dense2"
    crossing = ranked["per_layer_sqnr"]["sqnr_isolated"]["count"]
    assert [e["layer"] for e in ranked["per_layer_sqnr"]["sqnr_isolated"]["layers"]] == \
        analysis[0].ranking("sqnr_isolated")[:min(crossing, 10)]
    rows = lambda scores: {"fp32": 1.0, "rows": [{"layer": n, "score": s}  # noqa: E731
                                                 for n, s in scores.items()]}
    tie = {"per_layer_quant_enabled": annotate(
        "per_layer_quant_enabled", rows({"a": 0.5, "b": 0.5, "c": 0.9}))}
    inside = {"per_layer_quant_enabled": annotate(
        "per_layer_quant_enabled", rows({"a": 0.9999, "b": 0.99995, "c": None}))}
    cases = [tables, tie, inside]
    carried = _findings_in_node(tmp_path, cases)
    assert carried[0][0]["items"][0]["layer"] == "dense2"
    assert carried[1][0]["decisive"] is False and carried[1][0]["note"] == "2 layers tie at 0.5."
    assert carried[2][0]["items"] == [] and carried[2][0]["note"] == "No layer crosses it."
    assert carried[2][0]["rule"].startswith("score with only this layer quantized more than 0.2%")
    # without the carried ranking nothing is ranked in the browser
    bare = _findings_in_node(tmp_path, [_without_ranking(t) for t in cases])
    assert all(f["items"] == [] for case in bare for f in case)
    # the frontend follows the carried ranking (it does not rank again)
    told = annotate("per_layer_quant_enabled", rows({"a": 0.5, "b": 0.6}))
    told["worst_layers"]["enabled"]["layers"].reverse()
    (shown,) = _findings_in_node(tmp_path, [{"per_layer_quant_enabled": told}])
    assert [i["layer"] for i in shown[0]["items"]] == ["b", "a"]
