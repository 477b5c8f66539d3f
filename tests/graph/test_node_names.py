"""One name per node in every view: the k-th call of a shared layer is `name/call_k`
in the IR, the Graphs tab, histograms, scalars, text, `info.plan` and the analyzer."""

import json

import keras
import numpy as np

import mct_logger
from mct_logger.tensorboard import events
from mct_logger.graph.ir import layer_name_of
from tests.helpers import tensorboard_provider


def shared_model():
    inputs = keras.Input((6,), name="x")
    shared = keras.layers.Dense(6, activation="tanh", name="shared")
    h = shared(keras.layers.Dense(6, name="first")(inputs))
    h = shared(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h), name="shared_net")


def test_a_shared_layer_call_has_one_name_everywhere(tmp_path):
    keras.utils.set_random_seed(0)
    model = shared_model()
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    mct_logger.set_log_folder(tmp_path / "logs", run_name="net")
    try:
        _, info = mct_logger.keras_post_training_quantization(model, x)
        result = mct_logger.QuantAnalyzer(
            model, lambda m: m.predict(x, verbose=0),
            lambda m: float(np.mean(m.predict(x[:16], verbose=0)))).analyze(
                results_dir=str(tmp_path / "results"))
    finally:
        mct_logger.set_log_folder(None)
    names = {"shared/call_0", "shared/call_1"}
    assert names <= set(info.plan)
    assert names <= set(result.per_layer_sqnr)
    sqnr = json.loads((tmp_path / "results" / "per_layer_sqnr.json").read_text())
    assert names <= {row["layer"] for row in sqnr["rows"]}
    with tensorboard_provider(tmp_path / "logs", "python") as (data, ctx, eid):
        histograms = data.list_tensors(ctx, experiment_id=eid, plugin_name="histograms")
        assert {f"activations/{n}" for n in names} <= set(histograms["net/03_statistics_collection"])
        scalars = data.list_scalars(ctx, experiment_id=eid, plugin_name="scalars")
        assert {f"channel_stats/{n}/max" for n in names} <= set(scalars["net/03_statistics_collection"])
        text = data.read_tensors(ctx, experiment_id=eid, plugin_name="text", downsample=10)
        table = text["net/07_quantized_model"]["nodes"][0].numpy.item().decode()
        assert all(f"`{n}`" in table for n in names)
        graph = data.read_blob_sequences(ctx, experiment_id=eid, plugin_name="graphs", downsample=1)
        blob = graph["net/07_quantized_model"]["__run_graph__"][-1].values[0]
        graph_def = events.graph_pb2.GraphDef.FromString(
            data.read_blob(ctx, blob_key=blob.blob_key))
        assert names <= {node.name for node in graph_def.node}


def test_layer_name_of_strips_the_call_suffix_and_nesting():
    assert layer_name_of("shared/call_1") == "shared"
    assert layer_name_of("block/call_0/dense_x") == "dense_x"
    assert layer_name_of("backbone/conv") == "conv"
    assert layer_name_of("conv") == "conv"


def test_overrides_and_ignored_layers_match_every_call_by_layer_name():
    model = shared_model()
    x = np.random.default_rng(1).normal(size=(32, 6)).astype("float32")
    config = mct_logger.QuantizationConfig(
        overrides={"shared": mct_logger.LayerOverride(keep_float=True)}, analyze_similarity=False)
    _, info = mct_logger.keras_post_training_quantization(model, x, config)
    assert not info.plan["shared/call_0"].quantized and not info.plan["shared/call_1"].quantized
