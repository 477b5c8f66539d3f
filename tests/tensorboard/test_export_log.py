"""A logged LiteRT export: the NN_litert_export run beside its PTQ run, read back with
TensorBoard's own loaders (both), and the Model Explorer node data next to the .tflite."""

import json
import os

import keras
import numpy as np
import pytest
from tensorboard.compat.proto import graph_pb2

import mct_logger
from mct_logger.tb_plugin import reader
from tests.helpers import tensorboard_provider


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU(6.0, name="relu6")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(5, name="logits")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="softmax")(x), name="small")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("float32")
    mct_logger.set_log_folder(logs)
    try:
        _, info = mct_logger.keras_post_training_quantization(
            _model(), x, mct_logger.QuantizationConfig(target="litert"))
        result = info.export_litert(str(tmp_path_factory.mktemp("out") / "small.tflite"))
    finally:
        mct_logger.set_log_folder(None)
    (run_folder,) = [d for d in os.listdir(logs) if os.path.isdir(logs / d)]
    return logs, run_folder, result


def test_export_run_follows_the_ptq_stages(exported):
    logs, run_folder, _ = exported
    runs = sorted(d for d in os.listdir(logs / run_folder) if d[:2].isdigit())
    assert runs[-1].endswith("_litert_export")
    assert int(runs[-1][:2]) == int(runs[-2][:2]) + 1  # right after the last PTQ stage


@pytest.mark.parametrize("loader", ["python", "rust"])
def test_graph_nodes_carry_parity_and_the_deployment_payload_reads_back(exported, loader):
    logs, run_folder, result = exported
    run = next(f"{run_folder}/{d}" for d in os.listdir(logs / run_folder)
               if d.endswith("_litert_export"))
    with tensorboard_provider(logs, loader) as (data, ctx, eid):
        from tensorboard.data import provider as provider_lib

        blobs = data.read_blob_sequences(
            ctx, experiment_id=eid, plugin_name="graphs", downsample=1,
            run_tag_filter=provider_lib.RunTagFilter(runs=[run]))
        (datum,) = blobs[run]["__run_graph__"]
        graph = graph_pb2.GraphDef()
        graph.ParseFromString(data.read_blob(ctx, blob_key=datum.values[0].blob_key))
        nodes = {n.name: n for n in graph.node}
        conv = nodes["relu6"].attr
        assert conv["litert_op"].s.decode().startswith("CONV_2D")
        assert float(conv["sqnr_sim_litert_db"].s) > 30
        assert "sqnr_float_litert_db" in nodes["logits"].attr
        tables = {t: table for r, t, i, table in reader.read_payloads(
            data, ctx, eid, "quant_analyzer") if r == run}
        curves = data.list_scalars(ctx, experiment_id=eid, plugin_name="scalars")
    table = tables["deployment"]
    assert [r["layer"] for r in table["rows"]] == [n.node for n in result.parity.nodes]
    assert table["size_bytes"] == result.size_bytes and table["op_counts"]["int8"]
    assert table["outputs"][0]["cosine_sim_litert"] > 0.999
    assert table["graph_run"] == run.split("/")[-1]
    for name in ("float_sim", "float_litert", "sim_litert"):
        assert "sqnr_db" in curves[f"{run}/{name}"]


def test_model_explorer_node_data_is_keyed_by_tflite_op_index(exported):
    _, _, result = exported
    with open(result.node_data_path, encoding="utf-8") as f:
        node_data = json.load(f)
    results = node_data["main"]["results"]
    assert set(results) == {str(r.op_index) for r in result.parity.nodes if r.op_index is not None}
    assert all(isinstance(v["value"], float) for v in results.values())
    assert node_data["main"]["thresholds"][0]["bgColor"]
