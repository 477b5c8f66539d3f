"""Logs written before issue 27 still open in the tabs: runs per statistic
(`03_statistics_collection/min`...), per SQNR path (`07_similarity_analysis/accumulated`),
the search's tables in a `mixed_precision` run, payloads without "worst_layers",
"run_info" or a liveness stamp. The folder is generated here in the old layout
and payload formats (no binary fixture), then read through TensorBoard's own
WSGI app with both loaders."""

import json

import pytest
from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from werkzeug import test as werkzeug_test

from mct_logger.tb_plugin.cle_plugin import CLEPlugin
from mct_logger.tb_plugin.compression_plugin import CompressionPlugin
from mct_logger.tb_plugin.quant_analyzer_plugin import QuantAnalyzerPlugin
from tests.helpers import tensorboard_provider

# The old per-layer SQNR rows: the step stored uncapped (an SE gate's 186 -> 138 dB).
OLD_SQNR = {"samples": 64, "batches": 2, "data": "enable_per_layer_mse_loss data",
            "max_sqnr_db": 200.0, "rows": [
                {"layer": "conv", "class": "Conv2D", "quantized": True, "inputs": ["x"],
                 "sqnr_accumulated_db": 186.1, "sqnr_isolated_db": 190.0,
                 "accumulated_step_db": 5.0},
                {"layer": "se_relu6", "class": "ReLU", "quantized": True, "inputs": ["conv"],
                 "sqnr_accumulated_db": 138.3, "sqnr_isolated_db": 140.0,
                 "accumulated_step_db": 47.8},
                {"layer": "head", "class": "Dense", "quantized": True, "inputs": ["se_relu6"],
                 "sqnr_accumulated_db": 22.0, "sqnr_isolated_db": 24.0,
                 "accumulated_step_db": 116.3}]}
OLD_LAYER_TABLE = {"source": "ptq", "model": "m", "samples": 20, "graph_run": "m/06_quantized_model",
                   "memory_before": 4096, "memory_after": 1024,
                   "rows": [{"layer": r["layer"], "class": r["class"], "quantized": True,
                             "sqnr_accumulated_db": r["sqnr_accumulated_db"],
                             "sqnr_isolated_db": r["sqnr_isolated_db"],
                             "accumulated_step_db": r["accumulated_step_db"]}
                            for r in OLD_SQNR["rows"]]}
OLD_SUMMARY = {"format": "mct_logger.quant_analyzer", "status": "running", "model": "m",
               "evaluations_done": 3, "evaluations_total": 10}  # no pid, host or heartbeat
OLD_SCORES = {"model": "m", "scheme": "weight_svd", "cost_metric": "mac", "target_comp_ratio": 0.5,
              "candidates": [0.5], "status": "complete", "evaluations_total": 1,
              "evaluations_done": 1, "rows": [{"layer": "conv", "scores": [0.9]}]}


def write_old_logs(folder) -> None:
    """A log folder as mct-logger wrote it before issue 27 (its run layout and payloads)."""
    from mct_logger.tb_plugin.summary import payload_summary
    from mct_logger.tensorboard.events import EventWriter

    def run(name):
        return EventWriter(str(folder / name))

    for stage in ("00_initial_graph", "03_statistics_collection", "07_similarity_analysis"):
        with run(f"m_20260101-000000/{stage}") as writer:
            writer.text("summary", f"old {stage}")
    for stat in ("min", "max", "mean"):  # a run per statistic
        with run(f"m_20260101-000000/03_statistics_collection/{stat}") as writer:
            writer.scalar("channel_stats/conv", 1.0, step=0)
    for path in ("accumulated", "isolated"):  # a run per SQNR path
        with run(f"m_20260101-000000/07_similarity_analysis/{path}") as writer:
            writer.scalar("sqnr_db", 30.0, step=0)
    with run("m_20260101-000000/07_similarity_analysis") as writer:
        writer.add_summary(payload_summary("quant_analyzer", "layer_table", "layer_table",
                                           OLD_LAYER_TABLE))
    with run("m_recommended/mixed_precision") as writer:
        writer.add_summary(payload_summary("quant_analyzer", "mixed_precision_search",
                                           "mixed_precision_search",
                                           {"layers": [], "steps": [], "bit_candidates": [4, 8]}))
    with run("m_recommended/07_similarity_analysis") as writer:
        writer.add_summary(payload_summary("quant_analyzer", "layer_table", "layer_table",
                                           OLD_LAYER_TABLE))
    with run("m_quant_analyzer/quant_analyzer") as writer:
        for kind, table in (("summary", OLD_SUMMARY), ("per_layer_sqnr", OLD_SQNR)):
            writer.add_summary(payload_summary("quant_analyzer", kind, kind, table))
    with run("m_weight_svd/compression") as writer:
        writer.add_summary(payload_summary("compression", "eval_scores", "eval_scores", OLD_SCORES))


@pytest.mark.parametrize("loader", ["python", "rust"])
def test_old_logs_open_and_are_ranked_by_todays_rules(tmp_path, loader):
    write_old_logs(tmp_path)
    with tensorboard_provider(tmp_path, loader) as (data, ctx, eid):
        context = base_plugin.TBContext(logdir=str(tmp_path), data_provider=data)
        app = application.TensorBoardWSGI(
            [QuantAnalyzerPlugin(context), CLEPlugin(context), CompressionPlugin(context)],
            data_provider=data)
        client = werkzeug_test.Client(app)

        def get(url):
            response = client.get(url)
            assert response.status_code == 200, (url, response.get_data()[:300])
            return json.loads(response.get_data())

        runs = {r["name"]: r for r in get("/data/plugin/quant_analyzer/runs")["runs"]}
        assert set(runs) == {"m_20260101-000000", "m_recommended", "m_quant_analyzer"}
        assert runs["m_20260101-000000"]["label"] == ""  # no run_info: nothing made up
        body = get("/data/plugin/quant_analyzer/tables?run=m_quant_analyzer")
        assert body["problems"] == []
        step = body["tables"]["per_layer_sqnr"]["worst_layers"]["sqnr_step"]
        # 186 -> 138 dB (uncapped 47.8 dB "lost") no longer ranks; head's real drop does
        assert [e["layer"] for e in step["layers"]] == ["head"]
        assert step["layers"][0]["value"] == pytest.approx(49.92 - 22.0)
        # an old summary has no stamp: left as it says, never guessed interrupted
        assert body["tables"]["summary"]["status"] == "running"
        tables = get("/data/plugin/quant_analyzer/tables?run=m_recommended")["tables"]
        assert set(tables) == {"layer_table", "mixed_precision_search"}
        assert tables["layer_table"]["worst_layers"]["sqnr_isolated"]["layers"][0]["layer"] \
            == "head"
        scores = get("/data/plugin/compression/runs")["runs"]
        assert scores[0]["label"] == "weight_svd, target 50% of the MACs"
