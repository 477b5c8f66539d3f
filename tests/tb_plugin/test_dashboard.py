"""The QuantAnalyzer and CLE plugins' routes (tb_plugin.dashboard), on logs written
by the real library, through TensorBoard's own WSGI app and both data loaders."""

import importlib.metadata
import json
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from werkzeug import test as werkzeug_test

from mct_logger.tb_plugin.cle_plugin import CLEPlugin
from mct_logger.tb_plugin.quant_analyzer_plugin import QuantAnalyzerPlugin
from tests.helpers import HOSTILE, MALFORMED_BODY, tensorboard_provider


@pytest.fixture(scope="module", params=["python", "rust"])
def client(request, dashboard_logs):
    with tensorboard_provider(dashboard_logs["logdir"], request.param) as (data, ctx, eid):
        context = base_plugin.TBContext(logdir=str(dashboard_logs["logdir"]), data_provider=data)
        app = application.TensorBoardWSGI([QuantAnalyzerPlugin(context), CLEPlugin(context)],
                                          data_provider=data)
        yield werkzeug_test.Client(app)


def get(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, response.get_data()[:300])
    if response.mimetype == "application/json":
        return json.loads(response.get_data())
    return response


def results_file(dashboard_logs, name):
    with open(f"{dashboard_logs['results_dir']}/{name}", encoding="utf-8") as f:
        return json.load(f)


def test_both_tabs_are_listed_enabled_with_their_modules(client):
    listing = get(client, "/data/plugins_listing")
    for name, tab, module in [("quant_analyzer", "QuantAnalyzer", "quant_analyzer/qa_tab.js"),
                              ("cle", "CLE", "cle/cle_tab.js")]:
        assert listing[name]["enabled"] is True
        assert listing[name]["tab_name"] == tab
        assert listing[name]["loading_mechanism"] == {
            "type": "IFRAME", "module_path": f"/data/plugin/{name}/static/{module}"}


def test_runs_group_stage_runs_by_log_folder(client, dashboard_logs):
    qa = get(client, "/data/plugin/quant_analyzer/runs")
    names = [r["name"] for r in qa["runs"]]
    assert names == ["analyzer", "broken", "ptq_cle", "ptq_default"]
    ptq = next(r for r in qa["runs"] if r["name"] == "ptq_cle")
    assert set(ptq["kinds"]) == {"layer_table"}
    assert ptq["kinds"]["layer_table"]["run"] == "ptq_cle/07_quantized_model"
    analyzer = next(r for r in qa["runs"] if r["name"] == "analyzer")
    assert {"sensitivity", "per_layer_quant_enabled", "per_layer_quant_disabled", "per_layer_sqnr",
            "min_max_ranges", "histograms", "weight_sqnr", "per_layer_mse_loss",
            "summary"} <= set(analyzer["kinds"])
    assert {p["tag"] for p in qa["problems"]} == (
        set(HOSTILE) - {"not_json", "wrong_shape", "float_tensor"} - set(MALFORMED_BODY))
    cle = get(client, "/data/plugin/cle/runs")
    assert [r["name"] for r in cle["runs"]] == ["ptq_cle", "ptq_default"]
    assert set(cle["runs"][0]["kinds"]) == {"weight_ranges", "scale_factors", "high_bias_fold",
                                            "weight_quantization"}


def test_analyzer_tables_are_what_the_analysis_wrote(client, dashboard_logs):
    body = get(client, "/data/plugin/quant_analyzer/tables?run=analyzer")
    tables = body["tables"]
    assert body["problems"] == []
    assert tables["summary"]["status"] == "complete"
    sqnr = results_file(dashboard_logs, "per_layer_sqnr.json")
    assert tables["per_layer_sqnr"]["rows"] == sqnr["rows"]
    enabled = results_file(dashboard_logs, "per_layer_quant_enabled.json")
    assert {r["layer"]: r["score"] for r in tables["per_layer_quant_enabled"]["rows"]} == enabled
    assert tables["per_layer_quant_enabled"]["complete"] is True
    assert tables["sensitivity"] == results_file(dashboard_logs, "sensitivity.json")
    # per-channel fields are left out of /tables and served one layer at a time by /detail
    weights = tables["min_max_ranges"]["weights"]
    assert weights and all("channel_min" not in r for r in weights)
    full = results_file(dashboard_logs, "min_max_ranges/encodings.json")["weights"][0]
    detail = get(client, "/data/plugin/quant_analyzer/detail?run=analyzer&kind=min_max_ranges"
                         f"&layer={full['layer']}&kernel={full['kernel']}")
    assert detail["row"]["channel_min"] == full["channel_min"]
    assert len(detail["row"]["channel_max"]) == len(full["channel_max"]) > 1
    sqnr_rows = results_file(dashboard_logs, "weight_sqnr.json")["rows"]
    detail = get(client, "/data/plugin/quant_analyzer/detail?run=analyzer&kind=weight_sqnr"
                         f"&layer={sqnr_rows[0]['layer']}")
    assert detail["row"]["channel_sqnr_db"] == sqnr_rows[0]["channel_sqnr_db"]


def test_every_ptq_run_feeds_the_layer_table(client, dashboard_logs):
    for run, info in (("ptq_cle", dashboard_logs["info_cle"]),
                      ("ptq_default", dashboard_logs["info_default"])):
        table = get(client, f"/data/plugin/quant_analyzer/tables?run={run}")["tables"]["layer_table"]
        similarity = info.stage_results["similarity_analysis"]
        assert [r["layer"] for r in table["rows"]] == list(info.plan)
        assert table["graph_run"] == "07_quantized_model"
        assert table["samples"] == similarity.num_samples
        # the headline numbers, by the same definition (a fused output counted once)
        assert (table["memory_before"], table["memory_after"]) == (info.memory_before, info.memory_after)
        assert sum(r["memory_after"] for r in table["rows"]) == info.memory_after
        for row in table["rows"]:
            plan, encodings = info.plan[row["layer"]], info.encodings.get(row["layer"])
            assert row["quantized"] == plan.quantized
            if plan.activation is not None:
                assert row["activation_bits"] == plan.activation.bitwidth
                assert row["encoding_max"] == pytest.approx(float(np.max(encodings.activation.max)))
            if row["layer"] in similarity.sqnr_isolated_db:
                assert row["sqnr_isolated_db"] == pytest.approx(similarity.sqnr_isolated_db[row["layer"]])
                assert row["sqnr_accumulated_db"] == pytest.approx(
                    similarity.sqnr_accumulated_db[row["layer"]])
            if encodings is not None and "kernel" in encodings.weights:
                assert row["weight_bits"] == encodings.weights["kernel"].bitwidth
                assert row["weight_per_channel"] is True


def test_cle_tables_and_weight_quantization(client, dashboard_logs):
    body = get(client, "/data/plugin/cle/tables?run=ptq_cle")
    tables = body["tables"]
    ranges = dashboard_logs["info_cle"].stage_results["cross_layer_equalization"].to_tables()
    assert tables["weight_ranges"]["cle_applied"] is True
    assert [(l["node"], l["before"]["spread_score"]) for l in tables["weight_ranges"]["layers"]] == \
        [(l["node"], l["before"]["spread_score"]) for l in ranges["weight_ranges"]["layers"]]
    assert "min" not in tables["weight_ranges"]["layers"][0]["before"]  # per-channel: /detail
    sets = ranges["scale_factors"]["sets"]
    assert [s["members"] for s in tables["scale_factors"]["sets"]] == [s["members"] for s in sets]
    assert "scale_factors" not in tables["scale_factors"]["sets"][0]  # per-channel: /detail
    detail = get(client, f"/data/plugin/cle/detail?run=ptq_cle&kind=scale_factors&layer={sets[0]['members'][0]}")
    assert detail["row"]["scale_factors"] == json.loads(json.dumps(sets[0]["scale_factors"]))
    layer = ranges["weight_ranges"]["layers"][0]
    detail = get(client, f"/data/plugin/cle/detail?run=ptq_cle&kind=weight_ranges&layer={layer['node']}")
    assert detail["row"]["before"]["max"] == layer["before"]["max"]
    assert detail["row"]["after"]["max"] == layer["after"]["max"]
    rows = dashboard_logs["info_cle"].stage_results["similarity_analysis"].weights
    assert [r["layer"] for r in tables["weight_quantization"]["rows"]] == [r["layer"] for r in rows]
    detail = get(client, f"/data/plugin/cle/detail?run=ptq_cle&kind=weight_quantization&layer={rows[0]['layer']}")
    assert detail["row"]["channel_sqnr_db"] == rows[0]["channel_sqnr_db"]
    assert sum(detail["row"]["histogram"]["float"]) == sum(detail["row"]["histogram"]["quantized"])
    off = get(client, "/data/plugin/cle/tables?run=ptq_default")["tables"]
    assert off["weight_ranges"]["cle_applied"] is False and off["scale_factors"]["sets"] == []


def test_bad_payloads_are_reported_beside_the_good_one(client):
    body = get(client, "/data/plugin/quant_analyzer/tables?run=broken")
    assert list(body["tables"]) == ["per_layer_mse_loss"]
    assert {p["tag"] for p in body["problems"]} == set(HOSTILE)


# A good table of each plugin, and one kind of it whose body another writer filled
# with numbers JSON has no (NaN, -Infinity, 1e999) or nested 100,000 levels deep.
GOOD_TABLES = {
    "quant_analyzer": ("per_layer_sqnr", {"samples": 1, "rows": [{"layer": "l0", "sqnr_isolated_db": 1.0}]}),
    "cle": ("weight_ranges", {"cle_applied": False, "layers": [{"layer": "l0", "max": [1.0]}]}),
    "compression": ("eval_scores", {"status": "complete", "candidates": [0.5],
                                    "rows": [{"layer": "l0", "scores": [1.0]}]}),
}
BAD_BODIES = {  # run -> (what replaces the table's one 1.0, what the problem says)
    "nan": (b"NaN", "holds the number NaN"),
    "minus_infinity": (b"-Infinity", "holds the number -Infinity"),
    "1e999": (b"1e999", "holds the number 1e999"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
}


@pytest.mark.parametrize("loader", ["python", "rust"])
@pytest.mark.parametrize("plugin", sorted(GOOD_TABLES))
def test_bodies_with_non_finite_numbers_or_deep_nesting_are_problems_not_errors(
        tmp_path, loader, plugin):
    from mct_logger.tensorboard.events import EventWriter
    from mct_logger.tb_plugin.compression_plugin import CompressionPlugin
    from mct_logger.tb_plugin.summary import payload_summary

    kind, table = GOOD_TABLES[plugin]
    good = json.dumps(table).encode()
    assert good.count(b"1.0") == 1
    for name, (value, _) in [("good", (b"1.0", "")), *BAD_BODIES.items()]:
        summary = payload_summary(plugin, kind, kind, table)
        summary.value[0].tensor.string_val[0] = good.replace(b"1.0", value)
        with EventWriter(str(tmp_path / name / plugin)) as writer:
            writer.add_summary(summary)
    cls = {"quant_analyzer": QuantAnalyzerPlugin, "cle": CLEPlugin, "compression": CompressionPlugin}
    with tensorboard_provider(tmp_path, loader) as (data, ctx, eid):
        app = application.TensorBoardWSGI(
            [cls[plugin](base_plugin.TBContext(logdir=str(tmp_path), data_provider=data))],
            data_provider=data)
        client = werkzeug_test.Client(app)
        base = f"/data/plugin/{plugin}"
        runs = get(client, f"{base}/runs")
        assert [r["name"] for r in runs["runs"]] == sorted(["good", *BAD_BODIES])
        body = get(client, f"{base}/tables?run=good")
        # the QuantAnalyzer's tables are served ranked by this version's rules
        from mct_logger.analyzer.worst_layers import annotate
        served = annotate(kind, table) if plugin == "quant_analyzer" else table
        assert body["problems"] == [] and body["tables"] == {kind: served}
        assert get(client, f"{base}/detail?run=good&kind={kind}&layer=l0")["row"]["layer"] == "l0"
        for name, (_, reason) in BAD_BODIES.items():
            body = get(client, f"{base}/tables?run={name}")
            assert body["tables"] == {}
            [problem] = body["problems"]
            assert (problem["run"], problem["tag"]) == (f"{name}/{plugin}", kind)
            assert reason in problem["reason"], problem
            error = get(client, f"{base}/detail?run={name}&kind={kind}&layer=l0", 404)["error"]
            assert f"no readable {kind!r} table: " in error and reason in error, error


@pytest.mark.parametrize("url, status, message", [
    ("/tables", 400, "Missing the run"),
    ("/tables?run=nope", 404, "No QuantAnalyzer data for run 'nope'"),
    ("/detail?run=analyzer", 400, "Missing parameter"),
    ("/detail?run=analyzer&kind=bogus&layer=x", 400, "Unknown quant_analyzer table kind"),
    ("/detail?run=analyzer&kind=weight_sqnr&layer=nope", 404, "has no row for layer 'nope'"),
    ("/detail?run=ptq_cle&kind=weight_sqnr&layer=stem", 404, "no readable 'weight_sqnr' table"),
    ("/detail?run=nope&kind=weight_sqnr&layer=stem", 404, "No QuantAnalyzer data"),
])
def test_unknown_runs_kinds_and_layers_are_4xx_with_a_message(client, url, status, message):
    body = get(client, "/data/plugin/quant_analyzer" + url, status)
    assert message in body["error"]


def test_static_files_are_served_with_their_types(client):
    for name, mime in [("quant_analyzer/qa_tab.js", "text/javascript"),
                       ("cle/cle_tab.js", "text/javascript"), ("common/dom.js", "text/javascript"),
                       ("common/dashboard.css", "text/css"), ("plotly.min.js", "text/javascript")]:
        response = get(client, f"/data/plugin/cle/static/{name}")
        assert response.mimetype == mime
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert len(response.get_data()) > 100
    assert b"export async function render" in get(client, "/data/plugin/quant_analyzer/static/quant_analyzer/qa_tab.js").get_data()


def test_plotly_is_cached_by_the_browser_and_modules_revalidated(client):
    plotly = get(client, "/data/plugin/quant_analyzer/static/plotly.min.js")
    assert "max-age=604800" in plotly.headers["Cache-Control"]
    module = get(client, "/data/plugin/quant_analyzer/static/common/dom.js")
    assert "no-cache" in module.headers["Cache-Control"] and module.headers["ETag"]
    again = client.get("/data/plugin/quant_analyzer/static/common/dom.js",
                       headers={"If-None-Match": module.headers["ETag"]})
    assert again.status_code == 304 and again.get_data() == b""


@pytest.mark.parametrize("path", [
    "../dashboard.py", "..%2fdashboard.py", "%2e%2e/metadata.py", "%2e%2e%2f%2e%2e%2fsetup.py",
    "/etc/passwd", "%2fetc%2fpasswd", "..\\metadata.py", "..%5cmetadata.py", "README.md",
    "nonexistent.js", "", ".", "frontend/qa_tab.js", "qa_tab.js/..", "__init__.py",
    "qa_tab.js", "common/../cle/cle_tab.js", "common/..%2fcle/cle_tab.js", "./common/dom.js",
    "common/./dom.js", "common//dom.js", "common/dom.js/", "common", "quant_analyzer/",
    "common/.hidden.js", "cle/cle_tab.js/../../setup.py", "a/common/dom.js", "common%2fdom.js%00",
    "common\\dom.js", "common%5cdom.js", "../frontend/common/dom.js",
])
def test_static_route_refuses_traversal_and_unknown_files(client, path):
    response = client.get(f"/data/plugin/quant_analyzer/static/{path}")
    assert response.status_code == 404, (path, response.status_code)


def test_entry_points_are_declared_and_import_nothing_heavy():
    points = {e.name: e.value for e in importlib.metadata.entry_points().select(group="tensorboard_plugins")}
    assert points["quant_analyzer"] == "mct_logger.tb_plugin.quant_analyzer_plugin:QuantAnalyzerPlugin"
    assert points["cle"] == "mct_logger.tb_plugin.cle_plugin:CLEPlugin"
    script = (
        "import sys, importlib.metadata as m\n"
        "for e in m.entry_points().select(group='tensorboard_plugins'):\n"
        "    if e.value.startswith('mct_logger'): e.load()\n"
        "heavy = [n for n in ('tensorflow', 'keras', 'matplotlib') if n in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
