"""set_log_folder: what lands in TensorBoard, read back with TensorBoard's own loaders."""

import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from tensorboard.compat.proto import config_pb2, graph_pb2

import mct_logger
from mct_logger import listeners
from mct_logger.ptq.pipeline import STAGES
from tests.helpers import conv_dense_model, tensorboard_provider

WIDE = 1200  # channels of the wide layer: more than one scalar chunk (1000) and histogram chunk (100)


def _model():
    return conv_dense_model(filters=2, hidden=WIDE, relu_layer=True)  # conv: 18 + 2 params


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs")
    x = np.random.default_rng(0).random((40, 4, 4, 1)).astype("float32")
    mct_logger.set_log_folder(folder)
    try:
        _, info = mct_logger.keras_post_training_quantization(_model(), x)
    finally:
        mct_logger.set_log_folder(None)
    (run_folder,) = [d for d in os.listdir(folder) if os.path.isdir(folder / d)]
    return folder, run_folder, info


@pytest.fixture(scope="module", params=["python", "rust"])
def provider(request, logged):
    folder = logged[0]
    with tensorboard_provider(folder, request.param) as opened:
        yield opened


def _graph(provider, run):
    data, ctx, eid = provider
    blobs = data.read_blob_sequences(ctx, experiment_id=eid, plugin_name="graphs", downsample=1,
                                     run_tag_filter=_filter(run))
    (datum,) = blobs[run]["__run_graph__"]
    graph = graph_pb2.GraphDef()
    graph.ParseFromString(data.read_blob(ctx, blob_key=datum.values[0].blob_key))
    return graph


def _resources(provider, run):
    data, ctx, eid = provider
    blobs = data.read_blob_sequences(ctx, experiment_id=eid, plugin_name="graph_tagged_run_metadata",
                                     downsample=1, run_tag_filter=_filter(run))
    (datum,) = blobs[run]["Resources"]
    metadata = config_pb2.RunMetadata()
    metadata.ParseFromString(data.read_blob(ctx, blob_key=datum.values[0].blob_key))
    (device,) = metadata.step_stats.dev_stats
    assert device.device == "/device:CPU:0"
    return {n.node_name: sum(m.total_bytes for m in n.memory) for n in device.node_stats}


def _filter(run, tags=None):
    from tensorboard.data import provider as provider_lib

    return provider_lib.RunTagFilter(runs=[run], tags=tags)


def test_one_run_per_stage_sorted_in_stage_order(logged, provider):
    _, run_folder, info = logged
    data, ctx, eid = provider
    runs = {r.run_name for r in data.list_runs(ctx, experiment_id=eid)}
    # a stage the config turned off (AdaRound, bias correction) writes no run;
    # the others keep their stage numbers
    # (the similarity analysis is part of the quantized model's run)
    stage_runs = [f"{run_folder}/{i:02d}_{s}" for i, s in enumerate(STAGES)
                  if not getattr(info.stage_results[s], "off", False)
                  and s != "similarity_analysis"]
    assert len(stage_runs) < len(STAGES)
    assert set(stage_runs) <= runs
    assert sorted(stage_runs) == stage_runs
    # min/max/mean and accumulated/isolated are tags of the stage runs, not runs:
    # one PTQ call is at most 8 TensorBoard runs
    assert runs == set(stage_runs) and len(runs) <= 8


def test_graph_nodes_are_named_like_the_ir_with_readable_attributes(logged, provider):
    _, run_folder, info = logged
    before = _graph(provider, f"{run_folder}/00_initial_graph")
    assert [n.name for n in before.node] == ["x", "conv", "flat", "wide", "relu", "head"]
    nodes = {n.name: n for n in _graph(provider, f"{run_folder}/04_quantization_parameters").node}
    conv = nodes["conv"]
    assert conv.op == "Conv2D" and list(conv.input) == ["x"]
    attrs = {k: v.s.decode() for k, v in conv.attr.items() if k != "_output_shapes"}
    assert attrs["parameters"] == "20" and attrs["kernel_bits"] == "8"
    assert attrs["kernel_per_channel"] == "True" and attrs["activation_bits"] == "8"
    assert attrs["output_shape"] == "(None, 2, 2, 2)"
    assert attrs["activation_min_max"].startswith("[") and "weights 26" in attrs["memory_bytes"]
    assert [d.size for d in conv.attr["_output_shapes"].list.shape[0].dim] == [-1, 2, 2, 2]
    assert "fused" in {k: v.s.decode() for k, v in nodes["wide"].attr.items()}["quantization_note"]
    # one attribute reads as a sentence inside the card's raw AttrValue JSON
    assert re.fullmatch(r"kernel: 8-bit symmetric per-channel \(2 channels\) in \[\S+, \S+\]; "
                        r"output: 8-bit asymmetric in \[\S+, \S+\]", attrs["quantization"])
    assert nodes["flat"].attr["quantization"].s.decode().startswith("float (")


def test_memory_per_node_matches_the_hand_computed_example(logged, provider):
    _, run_folder, _ = logged
    float_memory = _resources(provider, f"{run_folder}/00_initial_graph")
    # float32: input 16*4; conv (20 params + 8 outputs)*4; flatten 8*4
    assert float_memory["x"] == 64 and float_memory["conv"] == 112 and float_memory["flat"] == 32
    assert float_memory["wide"] == (8 * WIDE + WIDE) * 4 + WIDE * 4
    quantized = _resources(provider, f"{run_folder}/07_quantized_model")
    # W8A8: kernel bytes 1 each, bias 4 each, outputs 1 each; flatten keeps conv's grid;
    # wide's output is fused into the ReLU and stored at its 8 bits
    assert quantized["x"] == 16 and quantized["conv"] == 18 + 8 + 8 and quantized["flat"] == 8
    assert quantized["wide"] == 8 * WIDE + 4 * WIDE + WIDE
    assert quantized["head"] == 3 * WIDE + 12 + 3


def test_histograms_float_and_quantized_under_the_same_tag(logged, provider):
    _, run_folder, _ = logged
    data, ctx, eid = provider
    series = data.list_tensors(ctx, experiment_id=eid, plugin_name="histograms")
    stats_tags = set(series[f"{run_folder}/03_statistics_collection"])
    final_tags = set(series[f"{run_folder}/07_quantized_model"])  # with its similarity
    for node in ("x", "conv", "relu", "head"):
        assert f"activations/{node}" in stats_tags and f"activations/{node}" in final_tags
    read = data.read_tensors(ctx, experiment_id=eid, plugin_name="histograms", downsample=1000,
                             run_tag_filter=_filter(f"{run_folder}/03_statistics_collection",
                                                    ["activations/conv"]))
    (datum,) = read[f"{run_folder}/03_statistics_collection"]["activations/conv"]
    buckets = datum.numpy  # (k, 3): left edge, right edge, count
    assert buckets[:, 2].sum() == pytest.approx(40 * 2 * 2 * 2)  # num = element count
    # per-channel histograms: one step per channel, in chunks that keep every channel
    wide_tags = sorted(t for t in stats_tags if t.startswith("activations_per_channel/relu"))
    steps = set()
    for tag in wide_tags:
        got = data.read_tensors(ctx, experiment_id=eid, plugin_name="histograms", downsample=10_000,
                                run_tag_filter=_filter(f"{run_folder}/03_statistics_collection", [tag]))
        steps |= {d.step for d in got[f"{run_folder}/03_statistics_collection"][tag]}
    assert len(wide_tags) == 12 and steps == set(range(WIDE))
    # channel 105's histogram spans its own range and counts each of its values once
    run = f"{run_folder}/03_statistics_collection"
    got = data.read_tensors(ctx, experiment_id=eid, plugin_name="histograms", downsample=10_000,
                            run_tag_filter=_filter(run, ["activations_per_channel/relu [100-199]"]))
    (channel,) = [d.numpy for d in got[run]["activations_per_channel/relu [100-199]"]
                  if d.step == 105]
    stats = logged[2].stage_results["statistics_collection"].statistics["relu"]
    assert channel.shape == (16, 3)
    np.testing.assert_allclose(channel[[0, -1], [0, 1]], [stats.min[105], stats.max[105]],
                               rtol=1e-6, atol=1e-7)
    assert channel[:, 2].sum() == pytest.approx(stats.elements / WIDE)


def test_every_channel_min_max_mean_is_kept(logged, provider):
    _, run_folder, info = logged
    data, ctx, eid = provider
    run = f"{run_folder}/03_statistics_collection"
    tags = data.list_scalars(ctx, experiment_id=eid, plugin_name="scalars")[run]
    for kind in ("min", "max", "mean"):
        relu_tags = [t for t in tags if t.startswith("channel_stats/relu") and t.endswith(kind)]
        assert sorted(relu_tags) == [f"channel_stats/relu [0-999]/{kind}",
                                     f"channel_stats/relu [1000-1199]/{kind}"]
        read = data.read_scalars(ctx, experiment_id=eid, plugin_name="scalars", downsample=1000,
                                 run_tag_filter=_filter(run, relu_tags))
        steps = sorted(d.step for tag in relu_tags for d in read[run][tag])
        assert steps == list(range(WIDE))
    observer = info.stage_results["statistics_collection"].statistics["conv"]
    read = data.read_scalars(ctx, experiment_id=eid, plugin_name="scalars", downsample=1000,
                             run_tag_filter=_filter(run, ["channel_stats/conv/max"]))
    values = [d.value for d in sorted(read[run]["channel_stats/conv/max"], key=lambda d: d.step)]
    np.testing.assert_allclose(values, observer.max, rtol=1e-6)
    # the custom-scalars layout overlays each layer's min, max and mean in one chart
    charts = _layout(provider, run)
    assert charts["channel_stats/conv"] == [r"^channel_stats/conv/(min|max|mean)$"]
    assert charts["channel_stats/relu [1000-1199]"] == [
        r"^channel_stats/relu\ \[1000\-1199\]/(min|max|mean)$"]
    index = STAGES.index("quantized_model")  # the similarity analysis is part of its run
    sqnr = _layout(provider, f"{run_folder}/{index:02d}_quantized_model")
    assert list(sqnr.values()) == [[r"^sqnr_db/(accumulated|isolated)$"]]


def _layout(provider, run):
    """Chart title -> tag regexes of the custom-scalars layout written in `run`."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    data, ctx, eid = provider
    read = data.read_tensors(ctx, experiment_id=eid, plugin_name="custom_scalars", downsample=1,
                             run_tag_filter=_filter(run, ["custom_scalars__config__"]))
    layout = layout_pb2.Layout.FromString(
        read[run]["custom_scalars__config__"][0].numpy.item())
    return {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}


def test_all_twenty_similarity_images_and_sqnr_scalars(logged, provider):
    _, run_folder, info = logged
    data, ctx, eid = provider
    run = f"{run_folder}/07_quantized_model"
    images = data.list_blob_sequences(ctx, experiment_id=eid, plugin_name="images")[run]
    assert sorted(images) == sorted(
        [f"cosine_similarity/sample_{i:02d}" for i in range(20)] + ["cosine_similarity/summary"]
    )
    read = data.read_blob_sequences(ctx, experiment_id=eid, plugin_name="images", downsample=10,
                                    run_tag_filter=_filter(run, ["cosine_similarity/sample_19"]))
    (datum,) = read[run]["cosine_similarity/sample_19"]
    png = datum.values[2]  # values are width, height, then the encoded image
    assert data.read_blob(ctx, blob_key=png.blob_key).startswith(b"\x89PNG")
    result = info.stage_results["similarity_analysis"]
    for path, values in (("accumulated", result.sqnr_accumulated_db),
                         ("isolated", result.sqnr_isolated_db)):
        got = data.read_scalars(ctx, experiment_id=eid, plugin_name="scalars", downsample=1000,
                                run_tag_filter=_filter(run, [f"sqnr_db/{path}"]))
        points = sorted(got[run][f"sqnr_db/{path}"], key=lambda d: d.step)
        assert [d.value for d in points] == pytest.approx([values[n] for n in result.nodes], rel=1e-5)


def test_text_summary_per_stage(logged, provider):
    _, run_folder, info = logged
    data, ctx, eid = provider
    text = data.list_tensors(ctx, experiment_id=eid, plugin_name="text")
    for i, stage in enumerate(STAGES):
        if getattr(info.stage_results[stage], "off", False):
            assert f"{run_folder}/{i:02d}_{stage}" not in text  # turned off: no run
        elif stage == "similarity_analysis":  # part of the quantized model's run
            assert f"{run_folder}/{i:02d}_{stage}" not in text
            assert "similarity_summary" in text[f"{run_folder}/{i - 1:02d}_quantized_model"]
        else:
            assert "summary" in text[f"{run_folder}/{i:02d}_{stage}"]


def test_runs_never_overwrite_each_other_and_none_turns_logging_off(tmp_path):
    x = np.random.default_rng(0).random((8, 4, 4, 1)).astype("float32")
    model = _model()
    mct_logger.set_log_folder(tmp_path, run_name="same")
    try:
        config = mct_logger.QuantizationConfig(analyze_similarity=False)
        mct_logger.keras_post_training_quantization(model, x, config)
        mct_logger.keras_post_training_quantization(model, x, config)
    finally:
        mct_logger.set_log_folder(None)
    mct_logger.keras_post_training_quantization(model, x)
    assert sorted(d for d in os.listdir(tmp_path) if os.path.isdir(tmp_path / d)) == ["same", "same_2"]
    log_text = (tmp_path / "mct_logger.log").read_text()
    assert "PTQ stage quantized_model done" in log_text


def test_log_folder_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        mct_logger.set_log_folder(path)


def test_failure_midway_keeps_what_was_logged(tmp_path):
    def broken(stage, graph, result):
        if stage == "quantization_parameters":
            raise RuntimeError("boom")

    x = np.random.default_rng(0).random((8, 4, 4, 1)).astype("float32")
    mct_logger.set_log_folder(tmp_path)
    mct_logger.add_stage_listener(broken)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            mct_logger.keras_post_training_quantization(_model(), x)
    finally:
        mct_logger.remove_stage_listener(broken)
        mct_logger.set_log_folder(None)
    with tensorboard_provider(tmp_path, "python") as (data, ctx, eid):
        runs = {r.run_name.split("/", 1)[1] for r in data.list_runs(ctx, experiment_id=eid)}
        assert {"00_initial_graph", "03_statistics_collection", "04_failed"} <= runs
        failed = [r for r in data.list_runs(ctx, experiment_id=eid) if r.run_name.endswith("04_failed")]
        read = data.read_tensors(ctx, experiment_id=eid, plugin_name="text", downsample=1,
                                 run_tag_filter=_filter(failed[0].run_name))
        assert b"boom" in read[failed[0].run_name]["summary"][0].numpy.item()


def test_writer_runs_with_tensorflow_unimportable(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["tensorflow"] = None  # any import of TensorFlow now fails
        import numpy as np
        from mct_logger.tensorboard.log_folder import RunLog
        from mct_logger.tensorboard import events
        from mct_logger.tb_plugin.summary import payload_summary
        with RunLog({str(tmp_path)!r}) as log:
            w = log.writer("run")
            w.scalar("s", 1.5, step=2)
            w.histogram("h", np.linspace(0, 1, 5), np.array([1, 2, 3, 4]))
            w.text("t", "hello")
            node = events.node_def("a", "Dense", [], {{"k": "v"}}, [(None, 3)])
            w.graph(events.graph_pb2.GraphDef(node=[node]), {{"a": 12}}, "Resources")
            w.add_summary(payload_summary("cle", "weight_ranges", "ranges", {{"a": [1, 2]}}))
        assert "tensorflow" not in [m for m in sys.modules if sys.modules[m] is not None]
    """)
    subprocess.run([sys.executable, "-c", script], check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    with tensorboard_provider(tmp_path, "python") as (data, ctx, eid):
        scalars = data.read_scalars(ctx, experiment_id=eid, plugin_name="scalars", downsample=10)
        assert scalars["run"]["s"][0].value == 1.5 and scalars["run"]["s"][0].step == 2
        assert "h" in data.list_tensors(ctx, experiment_id=eid, plugin_name="histograms")["run"]
        assert "ranges" in data.list_tensors(ctx, experiment_id=eid, plugin_name="cle")["run"]


def test_cle_weight_ranges_are_logged_with_cle_off(logged, provider):
    from mct_logger.tb_plugin import reader

    _, run_folder, _ = logged
    data, ctx, eid = provider
    payloads = {kind: table for run, _, (kind), table in (
        (r, t, i["kind"], tb) for r, t, i, tb in reader.read_payloads(data, ctx, eid, "cle")
    ) if run == f"{run_folder}/02_cross_layer_equalization"}
    ranges = payloads["weight_ranges"]
    assert ranges["cle_applied"] is False
    layers = {layer["node"]: layer for layer in ranges["layers"]}
    assert set(layers) == {"conv", "wide", "head"}
    assert len(layers["wide"]["before"]["max"]) == WIDE and layers["wide"]["after"] is None


@pytest.mark.parametrize("stage", ["quantization_parameters", "quantized_model", "similarity_analysis"])
def test_a_later_result_alone_is_written_like_in_the_full_run(logged, provider, tmp_path, stage):
    """A listener fed one result from after "quantization_parameters", without the
    earlier ones, writes the same graph (bits, encodings, memory) and, for the
    similarity analysis, the same layer table: no listener depends on stage order."""
    from mct_logger.tb_plugin import reader
    from mct_logger import listeners
    from mct_logger.tensorboard.ptq_log import TensorBoardListener

    _, run_folder, info = logged
    index = STAGES.index(stage)
    graph = info.quantized_graph if stage == "quantized_model" else info.float_graph
    listener = TensorBoardListener(str(tmp_path / "alone"))
    listener(listeners.Event(listeners.PTQ, stage, info.stage_results[stage], graph))
    listener.close()

    def nodes(graph_def):
        return {n.name: {k: v.s for k, v in n.attr.items() if k != "_output_shapes"}
                for n in graph_def.node}

    merged = stage == "similarity_analysis"  # written into the quantized model's run
    full = (f"{run_folder}/{STAGES.index('quantized_model'):02d}_quantized_model" if merged
            else f"{run_folder}/{index:02d}_{stage}")
    with tensorboard_provider(tmp_path, "python") as alone:
        run = f"alone/00_{stage}"
        assert "activation_min_max" in nodes(_graph(alone, run))["conv"]
        if not merged:
            assert nodes(_graph(alone, run)) == nodes(_graph(provider, full))
            assert _resources(alone, run) == _resources(provider, full)
        tables = {(r.split("/", 1)[0], i["kind"]): t for source in (alone, provider)
                  for r, _, i, t in reader.read_payloads(*source, "quant_analyzer")
                  if r in (run, full)}
    if stage == "similarity_analysis":
        lone, logged_table = tables[("alone", "layer_table")], tables[(run_folder, "layer_table")]
        assert lone["graph_run"] is None  # this listener wrote no quantized model run
        assert {**lone, "graph_run": logged_table["graph_run"]} == logged_table
        assert [row["layer"] for row in lone["rows"]] == [n.name for n in info.float_graph]


@pytest.mark.parametrize("loader", ["python", "rust"])
def test_the_writer_never_logs_a_value_float32_cannot_hold(tmp_path, loader):
    """TensorBoard stores scalars and histogram tables as float32: NaN, Inf and finite
    values beyond its range (1e39 would read back as Inf) are left out and said so."""
    from mct_logger.tensorboard import events

    edges = np.array([0.0, 1.0, 2.0])
    with events.EventWriter(str(tmp_path / "run")) as writer:
        assert writer.scalar("ok", 3.0e38, step=0) is True
        for value in (1e39, -1e39, float("nan"), float("inf"), np.float64(-np.inf)):
            assert writer.scalar("bad", value, step=0) is False
        assert writer.scalars(1, [("ok", -3.0e38), ("bad", 1e39), ("nan", np.nan)]) == ["bad", "nan"]
        assert writer.scalars(2, [("bad", 1e39)]) == ["bad"]  # no event left empty
        assert writer.histogram("h_ok", edges, [1, 2]) is True
        assert writer.histogram("h_huge", np.array([0.0, 1e38, 1e39]), [1, 2]) is False
        assert writer.histogram("h_nan", edges, [1, np.nan]) is False
        assert writer.histogram("h_trimmed", np.array([0.0, 1.0, 1e39]), [1, 0]) is True
        with np.errstate(over="ignore"):
            huge = events.histogram_table([0.0, 1e39], [1])
        assert writer.compact_histograms(0, [("c_ok", events.histogram_table(edges, [1, 2])),
                                             ("c_huge", huge)]) == ["c_huge"]
        assert writer.compact_histogram("c_nan", np.array([np.nan, 1.0]), [1], step=0) is False
    with tensorboard_provider(tmp_path, loader) as (data, ctx, eid):
        scalars = data.read_scalars(ctx, experiment_id=eid, plugin_name="scalars",
                                    downsample=100)["run"]
        histograms = data.list_tensors(ctx, experiment_id=eid, plugin_name="histograms")["run"]
        tables = data.read_tensors(ctx, experiment_id=eid, plugin_name="histograms",
                                   downsample=100, run_tag_filter=_filter("run"))["run"]
    assert list(scalars) == ["ok"]
    assert [(d.step, d.value) for d in scalars["ok"]] == [(0, pytest.approx(3e38)),
                                                          (1, pytest.approx(-3e38))]
    assert sorted(histograms) == ["c_ok", "h_ok", "h_trimmed"]
    assert all(np.isfinite(d.numpy).all() for series in tables.values() for d in series)


def test_channel_statistics_holding_nan_are_left_out_and_named(tmp_path, caplog):
    """A channel range turned NaN (a sample holding NaN its range missed) is not logged
    as a NaN point or histogram: left out, and the node named in one warning."""
    from mct_logger.quantization.quantsim import ChannelStatistics
    from mct_logger.ptq.results import StatisticsResult
    from mct_logger.tensorboard.ptq_log import TensorBoardListener

    rng = np.random.default_rng(3)
    statistics = {name: ChannelStatistics() for name in ("clean", "broken")}
    for stats in statistics.values():
        stats.update(rng.random((16, 4)).astype("float32"))
    statistics["broken"].max[2] = np.nan  # as HistogramCollector reports such a range
    listener = TensorBoardListener(str(tmp_path / "folder"))
    with caplog.at_level("WARNING", logger="mct_logger"):
        listener._on_statistics_collection(
            "03_statistics_collection", None,
            StatisticsResult(num_batches=1, num_samples=16, observers={}, statistics=statistics))
    listener.log.close()
    warned = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(warned) == 1 and "Activation statistics of broken hold NaN" in warned[0], warned
    with tensorboard_provider(tmp_path, "python") as (data, ctx, eid):
        scalars = data.read_scalars(ctx, experiment_id=eid, plugin_name="scalars", downsample=100)
        tables = data.read_tensors(ctx, experiment_id=eid, plugin_name="histograms", downsample=100)
    maxima = scalars["folder/03_statistics_collection"]
    assert [d.step for d in maxima["channel_stats/clean/max"]] == [0, 1, 2, 3]
    assert [d.step for d in maxima["channel_stats/broken/max"]] == [0, 1, 3]  # channel 2 left out
    assert all(np.isfinite(d.value) for run in scalars.values() for tag in run.values() for d in tag)
    assert all(np.isfinite(d.numpy).all()
               for run in tables.values() for tag in run.values() for d in tag)
    per_channel = tables["folder/03_statistics_collection"]["activations_per_channel/clean"]
    assert [d.step for d in per_channel] == [0, 1, 2, 3]
