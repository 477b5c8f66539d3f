"""worst_layers: headline rankings name only layers past a stated rule; a lossless
layer (a squeeze-excite gate far above what 8 bits give) and a tie never make a
false headline, and the console says what the tab says."""

import keras
import numpy as np

import mct_logger
from mct_logger.analyzer.worst_layers import (
    INPUT_CAP_DB, annotate, capped_step_db, headline_lines, worst_layers)


def _se_model():
    """A MobileNetV3-like squeeze-excite block: the gate's hard sigmoid
    (ReLU6(x + 3) / 6) saturates, so its quantized output is nearly exact."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="image")
    features = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    squeeze = keras.layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(features)
    excite = keras.layers.Conv2D(8, 1, name="excite",
                                 bias_initializer=keras.initializers.Constant(40.0))(squeeze)
    shifted = keras.layers.Rescaling(1.0, offset=3.0, name="shift")(excite)
    gate = keras.layers.ReLU(6.0, name="se_relu6")(shifted)
    gate = keras.layers.Rescaling(1 / 6, name="hard_sigmoid")(gate)
    scaled = keras.layers.Multiply(name="scale")([features, gate])
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(scaled)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(pooled), name="se_block")


def test_a_squeeze_excite_gate_never_ranks_as_a_drop():
    """The SE gate of a real PTQ run: its layer table (`layer_table`, the
    tab's and report's source) ranks no gate layer; and the numbers MobileNetV3Small
    showed (186 dB in, 138 dB out: 47.8 dB 'lost') rank nothing."""
    from mct_logger.tensorboard.layer_table import layer_table

    model = _se_model()
    x = np.random.default_rng(0).standard_normal((64, 8, 8, 3)).astype("float32")
    _, info = mct_logger.keras_post_training_quantization(
        model, x, mct_logger.QuantizationConfig(analyze_similarity=True))
    result = info.stage_results["similarity_analysis"]
    acc = result.sqnr_accumulated_db
    assert acc["excite"] > INPUT_CAP_DB and acc["se_relu6"] > INPUT_CAP_DB  # near exact
    table = layer_table(info.float_graph, result.plan, result.encodings, result, None)
    found = table["worst_layers"]["sqnr_step"]
    gate = {"excite", "shift", "se_relu6", "hard_sigmoid", "scale"}
    assert not gate & {e["layer"] for e in found["layers"]}, found
    assert all(e["value"] > 3.0 for e in found["layers"])
    steps = {r["layer"]: r["accumulated_step_db"] for r in table["rows"]}
    assert steps["scale"] < 3.0  # its gate input counts at most 49.9 dB
    issue = {"rows": [
        {"layer": "re_lu6_se", "quantized": True, "sqnr_isolated_db": 60.0,
         "sqnr_accumulated_db": 138.3, "accumulated_step_db": 186.1 - 138.3},
        {"layer": "expand", "quantized": True, "sqnr_isolated_db": 41.0,
         "sqnr_accumulated_db": 36.0, "accumulated_step_db": 1.5}]}
    assert worst_layers("per_layer_sqnr", issue)["sqnr_step"]["layers"] == []
    assert capped_step_db(186.1 - 138.3, 138.3) < 0


def test_a_tie_inside_the_thresholds_is_no_headline():
    five = {"rows": [{"layer": f"conv{k}", "kernel": "kernel", "sqnr_db": 48.1}
                     for k in range(5)]}
    found = annotate("weight_sqnr", five)["worst_layers"]["weight_sqnr"]
    assert found["count"] == 0 and found["ranked"] == 5 and found["layers"] == []
    assert found["rule"] == "weight SQNR below 35 dB"
    assert headline_lines({"weight_sqnr": annotate("weight_sqnr", five)}) == [
        "no layer crosses a threshold (isolated SQNR below 30 dB (8 bits give about 40 dB); "
        "accumulated SQNR dropping by more than 3 dB at the layer, its inputs counted at most "
        "49.9 dB (what an 8-bit grid gives); score with only this layer quantized more than "
        "0.2% of |FP32| below FP32; score with this layer left in float more than 0.2% of "
        "|FP32| above the fully quantized score; weight SQNR below 35 dB)"]


def test_a_tie_past_a_threshold_says_so():
    tied = {"rows": [{"layer": f"conv{k}", "kernel": "kernel", "sqnr_db": 20.0}
                     for k in range(5)] + [{"layer": "ok", "kernel": "kernel", "sqnr_db": 45.0}]}
    found = worst_layers("weight_sqnr", tied)["weight_sqnr"]
    assert found["count"] == 5 and found["ties"] == 5 and not found["decisive"]
    assert headline_lines({"weight_sqnr": tied}) == ["lowest weight SQNR: 5 layers tie at 20.0 dB"]


def test_scores_rank_only_past_their_margin_of_fp32():
    table = {"fp32": 0.9, "fully_quantized": 0.85,
             "rows": [{"layer": "a", "score": 0.8999}, {"layer": "b", "score": 0.85}]}
    enabled = worst_layers("per_layer_quant_enabled", table)["enabled"]
    assert [e["layer"] for e in enabled["layers"]] == ["b"]  # a is within 0.2% of FP32
    disabled = worst_layers("per_layer_quant_disabled", table)["disabled"]
    assert [e["layer"] for e in disabled["layers"]] == ["a"]  # b recovers nothing
    assert headline_lines({"per_layer_quant_enabled": table}) == [
        "costliest alone quantized: b (0.85)"]
