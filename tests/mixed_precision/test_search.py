"""Mixed-precision search, QuantAnalyzer.recommend and QuantizationConfig JSON, on a
trained digits CNN: budgets met, sensitive layers kept wide, a broken layer fixed,
and the recommended run compared with the baseline in a real TensorBoard."""

import itertools
import json

import keras
import os

import numpy as np
import pytest
from playwright.sync_api import expect

import mct_logger
from mct_logger.demo import accuracy, load_digits_split, train_digits_cnn
from mct_logger.graph.ir import read_model
from mct_logger.mixed_precision.search import measure_sensitivity, plan_weights_memory
from mct_logger.mixed_precision.bit_allocation import Frontier
from mct_logger.quantization.config import LayerOverride, QuantizationConfig
from mct_logger.quantization.plan import plan_quantization
from mct_logger.techniques.batch_norm_folding import fold_batch_norms


@pytest.fixture(scope="module")
def digits():
    """A digits CNN trained to ~99% (20 epochs: fewer leave the batch-norm statistics
    unsettled and the float model near chance) and its data."""
    keras.utils.set_random_seed(0)
    data = load_digits_split()
    model = train_digits_cnn(data, epochs=20)
    return model, data


def _evaluate(data):
    return lambda m: accuracy(m, data.x_test[:300], data.y_test[:300])


def _broken(model, outlier: float):
    """A copy whose pw1 takes an input channel that is always 0 (dw1's channel 0 is
    pushed below its ReLU6) with a weight of `outlier` in every output channel: the
    float model is unchanged, but pw1's per-channel grids are stretched to `outlier`."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    names = [layer.name for layer in copy.layers]
    bn = copy.layers[names.index("dw1") + 1]
    gamma, beta, mean, var = bn.get_weights()
    beta[0] = -100.0
    bn.set_weights([gamma, beta, mean, var])
    pw1 = copy.get_layer("pw1")
    kernel = pw1.get_weights()[0]
    kernel[0, 0, 0, :] = outlier
    pw1.set_weights([kernel])
    return copy


def _memory(model, config):
    graph, _ = fold_batch_norms(read_model(model))
    return plan_weights_memory(graph, plan_quantization(graph, config, report=False))


def _bits(model, config):
    graph, _ = fold_batch_norms(read_model(model))
    plan = plan_quantization(graph, config, report=False)
    return {n: s.bitwidth for n, p in plan.items() for s in p.weights.values()}


def test_a_budget_of_all_8_bit_memory_gives_all_8_bit(digits):
    model, data = digits
    all8 = _memory(model, QuantizationConfig())
    config, result = mct_logger.search_mixed_precision(
        model, data.x_train[:256], weights_memory=all8)
    assert set(_bits(model, config).values()) == {8}
    assert config.weight_bits == 8 and not config.overrides
    assert result.weights_memory == all8
    assert [r["bits"] for r in result.layers] == [8] * len(result.layers)
    # every searched layer's SQNR rises with its width, about 6 dB per bit
    for row in result.layers:
        assert row["sqnr_db"] == sorted(row["sqnr_db"]), row
        assert 15 < row["sqnr_db"][1] - row["sqnr_db"][0] < 40, row


def test_a_budget_between_4_and_8_bit_is_met_and_keeps_the_sensitive_layer_wide(digits):
    model, data = digits
    model = _broken(model, outlier=3.0)
    all4 = _memory(model, QuantizationConfig(weight_bits=4))
    all8 = _memory(model, QuantizationConfig())
    budget = int(0.75 * all8)
    assert all4 < budget < all8
    config, result = mct_logger.search_mixed_precision(
        model, data.x_train[:256], eval_callback=_evaluate(data), weights_memory=budget,
        bit_candidates=(4, 8))
    bits = _bits(model, config)
    assert _memory(model, config) == result.weights_memory <= budget  # PTQ's own plan
    assert set(bits.values()) == {4, 8}
    rows = {r["layer"]: r for r in result.layers}
    most_sensitive = min(rows, key=lambda n: rows[n]["sqnr_db"][0])
    assert most_sensitive == "pw1"  # the stretched grids, measured as such
    assert bits["pw1"] == 8
    # checked with eval_callback: the choice scores at least every uniform width that fits
    chosen = [s for s in result.steps if s["chosen"]]
    assert chosen and all(s["score"] >= u["score"] for s in chosen for u in result.steps)
    model_q, _ = mct_logger.keras_post_training_quantization(model, data.x_train[:256], config)
    assert _evaluate(data)(model_q) == pytest.approx(result.score)


def test_an_accuracy_target_gives_the_smallest_memory_meeting_it(digits):
    model, data = digits
    evaluate = _evaluate(data)
    config, result = mct_logger.search_mixed_precision(
        model, data.x_train[:256], eval_callback=evaluate, max_accuracy_drop=0.01,
        bit_candidates=(2, 4, 8))
    assert result.target_score == pytest.approx(evaluate(model) - 0.01)
    assert result.score >= result.target_score
    model_q, _ = mct_logger.keras_post_training_quantization(model, data.x_train[:256], config)
    assert evaluate(model_q) == pytest.approx(result.score)
    meeting = [s for s in result.steps if s["meets_target"]]
    assert result.weights_memory == min(s["weights_memory"] for s in meeting)
    assert result.weights_memory < _memory(model, QuantizationConfig())  # smaller than 8-bit


def test_the_knapsack_finds_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    for _ in range(20):
        costs = np.sort(rng.uniform(0, 1, (5, 3)), axis=1)[:, ::-1]  # wider: less noise
        memories = np.sort(rng.integers(1, 40, (5, 3)), axis=1)
        capacity = int(rng.integers(memories[:, 0].sum(), memories[:, 2].sum() + 1))
        frontier = Frontier(costs, memories, capacity)
        best = min((sum(costs[i, k] for i, k in enumerate(c)), c)
                   for c in itertools.product(range(3), repeat=5)
                   if sum(memories[i, k] for i, k in enumerate(c)) <= capacity)
        choice = frontier.choice(len(frontier) - 1)
        assert sum(costs[i, k] for i, k in enumerate(choice)) == pytest.approx(best[0])
        assert frontier.costs[-1] == pytest.approx(best[0])
        assert np.all(np.diff(frontier.costs) < 0)


def _assert_sensitivity_is_the_isolated_sqnr(graph, plan, layers, batches):
    """The one-pass 4-bit sensitivity of `layers` is PairedActivations' isolated SQNR
    with only the weights quantized."""
    from dataclasses import replace

    from mct_logger.diagnostics.activations import PairedActivations
    from mct_logger.quantization.quantsim import NodeEncodings, weight_encodings

    ours = measure_sensitivity(graph, plan, layers, batches, [4])
    weights_only = {n: replace(p, activation=None) for n, p in plan.items()}
    encodings = {n: NodeEncodings(weights=w) for n, w in weight_encodings(graph, plan).items()}
    errors = PairedActivations(graph, weights_only, encodings, nodes=layers).errors(batches)
    for n in layers:
        assert ours[n][0] == pytest.approx(errors[n].sqnr_isolated_db, abs=0.05), n


def test_the_one_pass_sensitivity_equals_the_paired_activations_isolated_sqnr(digits):
    from mct_logger.data import sources as data_lib

    model, data = digits
    graph, _ = fold_batch_norms(read_model(model))
    plan = plan_quantization(graph, QuantizationConfig(weight_bits=4))
    layers = [n for n, p in plan.items() if p.weights]
    batches = data_lib.load_batches(data.x_train[:96], data_lib.input_specs(graph))
    _assert_sensitivity_is_the_isolated_sqnr(graph, plan, layers, batches)


def test_search_refuses_bad_input_before_any_work(digits):
    model, data = digits
    x = data.x_train[:64]
    with pytest.raises(ValueError, match="weights_memory .* or max_accuracy_drop"):
        mct_logger.search_mixed_precision(model, x)
    with pytest.raises(ValueError, match="needs eval_callback"):
        mct_logger.search_mixed_precision(model, x, max_accuracy_drop=0.01)
    with pytest.raises(ValueError, match="bit_candidates: bitwidth=1"):
        mct_logger.search_mixed_precision(model, x, weights_memory=1e5, bit_candidates=(1, 8))
    with pytest.raises(ValueError, match=r"below the smallest memory .* at 4 bits"):
        mct_logger.search_mixed_precision(model, x, weights_memory=100)
    with pytest.raises(ValueError, match="weights_memory must be a positive number"):
        mct_logger.search_mixed_precision(model, x, weights_memory=-5)


def test_config_json_round_trips_exactly_and_refuses_bad_files(tmp_path):
    config = QuantizationConfig(
        weight_bits=6, activation_bits=16, weight_per_channel=False, weight_symmetric=False,
        activation_symmetric=True, weight_observer="mse", activation_observer="tf_enhanced",
        quantize_inputs=False, batch_size=8, num_calibration_samples=None,
        similarity_samples=5, cross_layer_equalization=True, bias_correction="hybrid",
        analyze_similarity=False,
        overrides={r"block_\d+_project": LayerOverride(keep_float=True),
                   "classifier": LayerOverride(weight_bits=16, activation_observer="min_max"),
                   "stem": LayerOverride(weight_bits=4, weight_per_channel=True)})
    path = config.to_json(tmp_path / "config.json")
    loaded = QuantizationConfig.from_json(path)
    assert loaded == config
    assert list(loaded.overrides) == list(config.overrides)  # later patterns win: order kept
    content = json.loads((tmp_path / "config.json").read_text())
    assert content["format"] == "mct_logger.QuantizationConfig" and content["version"] == 1
    assert QuantizationConfig.from_json(QuantizationConfig().to_json(tmp_path / "d.json")) \
        == QuantizationConfig()

    def write(value, name="bad.json"):
        (tmp_path / name).write_text(value if isinstance(value, str) else json.dumps(value))
        return tmp_path / name

    good = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(ValueError, match=r"bad.json: not a UTF-8 JSON file"):
        QuantizationConfig.from_json(write("{not json"))
    with pytest.raises(ValueError, match=r"field\(s\) \['weight_bitz'\]"):
        QuantizationConfig.from_json(write({**good, "config": {"weight_bitz": 8}}))
    with pytest.raises(ValueError, match="newer than this mct-logger reads"):
        QuantizationConfig.from_json(write({**good, "version": 2}))
    with pytest.raises(ValueError, match="QuantizationConfig.weight_bits: bitwidth=32"):
        QuantizationConfig.from_json(write({**good, "config": {"weight_bits": 32}}))
    with pytest.raises(ValueError, match=r"overrides\[0\] \('stem'\): unknown LayerOverride"):
        QuantizationConfig.from_json(write({**good, "config": {
            "overrides": [{"pattern": "stem", "bits": 4}]}}))
    with pytest.raises(ValueError, match="not a QuantizationConfig file"):
        QuantizationConfig.from_json(write({"weight_bits": 8}))
    with pytest.raises(FileNotFoundError):
        QuantizationConfig.from_json(tmp_path / "missing.json")


def test_recommend_keeps_the_broken_layer_in_higher_precision_and_meets_the_target(
        digits, tmp_path):
    model, data = digits
    model = _broken(model, outlier=50.0)
    evaluate = _evaluate(data)
    analyzer = mct_logger.QuantAnalyzer(
        model, lambda m: m.predict(data.x_train[:256], batch_size=64, verbose=0), evaluate)
    with pytest.raises(RuntimeError, match="run QuantAnalyzer.analyze"):
        analyzer.recommend(max_accuracy_drop=0.02)
    analysis = analyzer.analyze(results_dir=str(tmp_path / "qa"))
    fp32 = analysis.sensitivity["fp32"]
    assert analysis.sensitivity["fully_quantized"] < fp32 - 0.2  # broken by pw1
    config, recommendation = analyzer.recommend(max_accuracy_drop=np.float32(0.02))  # NumPy too
    assert config.for_node("pw1")[0]["weight_bits"] == 16
    assert recommendation.meets_target and recommendation.final["score"] >= fp32 - 0.02
    kept = [c for c in recommendation.changes if c["accepted"]]
    assert [c["layer"] for c in kept if c["kind"] == "precision"] == ["pw1"]
    assert all(c["score_after"] > c["score_before"] for c in kept)
    assert recommendation.final["memory"] > recommendation.baseline["memory"]  # 16-bit costs
    # the config reproduces the score through PTQ (calibrated on the same data)
    model_q, _ = mct_logger.keras_post_training_quantization(model, data.x_train[:256], config)
    assert evaluate(model_q) >= fp32 - 0.02
    with pytest.raises(ValueError, match="max_accuracy_drop must be a number >= 0"):
        analyzer.recommend(max_accuracy_drop=-1)


@pytest.mark.e2e
def test_the_recommended_run_is_logged_and_compared_with_the_baseline_in_tensorboard(
        digits, tmp_path):
    from mct_logger.tb_plugin.reader import read_payloads
    from tests.helpers import chromium_page, screenshot, tensorboard_provider, tensorboard_server
    from tests.e2e.test_dashboards import chart_points, errors_of, open_tab, select_runs

    model, data = digits
    budget = int(0.75 * _memory(model, QuantizationConfig()))
    mct_logger.set_log_folder(tmp_path)
    try:
        config, result = mct_logger.search_mixed_precision(
            model, data.x_train[:256], eval_callback=_evaluate(data), weights_memory=budget)
    finally:
        mct_logger.set_log_folder(None)
    baseline, recommended = "digits_cnn_search_baseline", "digits_cnn_search_recommended"
    with tensorboard_provider(tmp_path, "python") as (provider, ctx, eid):
        problems = []
        kinds = {(run, info["kind"]): table for run, _, info, table in
                 read_payloads(provider, ctx, eid, "quant_analyzer", problems=problems)}
    assert not problems
    # a comparison run writes its graph and its layer table only, labelled by origin
    from mct_logger.ptq.pipeline import STAGES

    similarity = f"{STAGES.index('quantized_model'):02d}_quantized_model"  # with its similarity
    assert sorted(n for n in os.listdir(tmp_path / recommended) if n[0] != ".") == [similarity]
    assert kinds[(f"{recommended}/{similarity}", "layer_table")]["run_info"][
        "label"].startswith("search: recommended, W")
    assert kinds[(f"{recommended}/{similarity}", "mixed_precision_search")]["layers"] == \
        result.table()["layers"]
    tables = {run.split("/")[0]: t for (run, kind), t in kinds.items() if kind == "layer_table"}
    bits = {run: {r["layer"]: r["weight_bits"] for r in t["rows"] if r["weight_bits"]}
            for run, t in tables.items()}
    assert set(bits[baseline].values()) == {8}
    assert bits[recommended] == {r["layer"]: r["bits"] for r in result.layers}
    changed = sum(b != 8 for b in bits[recommended].values())
    assert changed and tables[recommended]["memory_after"] < tables[baseline]["memory_after"]

    with tensorboard_server(tmp_path) as url, chromium_page((1400, 1000)) as page:
        frame = open_tab(page, url, "quant_analyzer")
        select_runs(frame, [baseline, recommended])
        search = frame.locator(".qa-mp-section", has_text="Mixed-precision search")
        search.locator(".js-plotly-plot").wait_for(timeout=20_000)
        assert all(n > 0 for n in chart_points(frame, ".qa-mp-section"))
        expect(search.locator("table").first.locator("tbody tr")).to_have_count(len(result.layers))
        expect(frame.locator(".qa-compare-verdict")).to_contain_text(f"{recommended} vs")
        verdict = frame.locator(".qa-compare-verdict").inner_text()
        assert f"{recommended} vs {baseline}" in verdict, verdict  # recommended last
        assert f"weight bits changed at {changed} layers" in verdict and "memory −" in verdict
        screenshot(page, "mixed_precision_compare.png")
        assert not errors_of(page), page.errors


def test_recommend_proposes_cle_for_spread_ranges_under_per_tensor_grids(tmp_path):
    """Channels rescaled 1000x between ReLU-linked convs (the float function is the
    same): per-tensor weight grids lose the small channels; CLE is proposed first,
    verified, and kept."""
    from mct_logger.diagnostics.metrics import cosine_similarity
    from tests.techniques.test_cross_layer_equalization import rescaled_conv_chain

    model = rescaled_conv_chain()
    x = np.random.default_rng(0).standard_normal((64, 8, 8, 3)).astype("float32")
    reference = model.predict(x, verbose=0)
    analyzer = mct_logger.QuantAnalyzer(
        model, lambda m: m.predict(x, verbose=0),
        lambda m: cosine_similarity(reference, m.predict(x, verbose=0)))
    analyzer.analyze({"weight_per_channel": False}, results_dir=str(tmp_path / "qa"))
    config, recommendation = analyzer.recommend(max_accuracy_drop=1e-4)
    first = recommendation.changes[0]
    assert first["kind"] == "cle" and first["accepted"], first
    assert "spread" in first["evidence"] and first["score_after"] > first["score_before"]
    assert config.cross_layer_equalization and not config.weight_per_channel
    assert recommendation.meets_target


def test_recommend_reads_endless_data_up_to_the_analyzed_cap_and_warns_on_a_nan_score(
        tmp_path, caplog):
    import tensorflow as tf

    from mct_logger import listeners
    from mct_logger.data.sources import RepresentativeDataError

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc2")(
        keras.layers.Dense(5, activation="relu", name="fc1")(inputs)))
    x = np.random.default_rng(0).random((64, 6)).astype("float32")
    scores = {"nan": False}
    calls = []

    def evaluate(m):
        calls.append(1)
        return float("nan") if scores["nan"] else -float(np.abs(m.predict(x, verbose=0)).mean())

    def endless():
        while True:
            yield x[:8]

    heard = []

    def baseline_samples(run):  # the samples the baseline PTQ run calibrated on
        def listener(event):
            if run.role == "baseline" and event.name == "statistics_collection":
                heard.append(event.data.num_samples)
        return listener

    listeners.set_run_listener_factory("test", baseline_samples)
    try:
        analyzer = mct_logger.QuantAnalyzer(model, lambda m: m.predict(x, verbose=0), evaluate)
        analyzer.analyze({"num_calibration_samples": 36, "batch_size": 8},
                         results_dir=str(tmp_path / "capped"))
        analyzer.recommend(0.5, representative_data=endless())
        assert heard == [36]  # stopped at the analyzed config's cap, as PTQ stops

        scores["nan"] = True
        with caplog.at_level("WARNING", logger="mct_logger"):
            _, recommendation = analyzer.recommend(0.0, representative_data=x)
        warned = [r.getMessage() for r in caplog.records
                  if "eval_callback returned nan" in r.getMessage()]
        assert len(warned) == 1 and "for the analyzed config" in warned[0]
        assert not any(c["accepted"] for c in recommendation.changes)
        scores["nan"] = False

        analyzer.analyze({"num_calibration_samples": None}, results_dir=str(tmp_path / "all"))
        calls.clear()
        with pytest.raises(RepresentativeDataError,
                           match=r"\.take\(n\).*or set QuantizationConfig.num_calibration_samples "
                                 r"in the config given to QuantAnalyzer.analyze"):
            analyzer.recommend(0.5, tf.data.Dataset.from_tensor_slices(x).batch(8).repeat())
        assert calls == []  # refused before any evaluation
    finally:
        listeners.set_run_listener_factory("test", None)


def _attention_model():
    """Embedding + MultiHeadAttention + EinsumDense + Dense on int tokens."""
    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(30, 8, name="embedding")(tokens)
    x = x + keras.layers.MultiHeadAttention(2, 4, name="attention")(x, x)
    x = keras.layers.EinsumDense("abc,cd->abd", (None, 12), bias_axes="d", name="einsum")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(3, name="head")(x), name="attention_model")


def _recurrent_model():
    """Bidirectional(LSTM) + Dense on a float sequence."""
    inputs = keras.Input((5, 4))
    x = keras.layers.Bidirectional(keras.layers.LSTM(6), name="bilstm")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x), name="recurrent_model")


def _sequence_data(model, n=64):
    rng = np.random.default_rng(0)
    if model.inputs[0].dtype == "int32":
        return rng.integers(0, 30, (n, 6)).astype("int32")
    return rng.normal(size=(n, 5, 4)).astype("float32")


@pytest.mark.parametrize("build, searched", [
    (_attention_model, ["embedding", "attention", "einsum", "head"]),
    (_recurrent_model, ["bilstm", "head"])])
def test_every_weight_layer_ptq_quantizes_is_searched_as_ptq_computes_it(build, searched):
    """Embedding, MultiHeadAttention, EinsumDense and Bidirectional(LSTM) are measured
    through their own computation on fake-quantized kernels (as the similarity stage
    runs them), and the search meets a budget and an accuracy target with them."""
    from mct_logger.data import sources as data_lib

    keras.utils.set_random_seed(0)
    model = build()
    x = _sequence_data(model)
    reference = model.predict(x, verbose=0)
    evaluate = lambda m: -float(np.abs(m.predict(x, verbose=0) - reference).mean())  # noqa: E731

    graph = read_model(model)
    plan = plan_quantization(graph, QuantizationConfig(weight_bits=4), report=False)
    layers = [n for n, p in plan.items() if p.weights]
    assert layers == searched
    batches = data_lib.load_batches(x, data_lib.input_specs(graph))
    _assert_sensitivity_is_the_isolated_sqnr(graph, plan, layers, batches)

    all4 = _memory(model, QuantizationConfig(weight_bits=4))
    all8 = _memory(model, QuantizationConfig())
    budget = (all4 + all8) // 2
    config, result = mct_logger.search_mixed_precision(
        model, x, weights_memory=budget, bit_candidates=(4, 8))
    assert [r["layer"] for r in result.layers] == layers
    for row in result.layers:  # about 6 dB per bit, for every kind of layer
        assert 15 < row["sqnr_db"][1] - row["sqnr_db"][0] < 40, row
    assert _memory(model, config) == result.weights_memory <= budget

    config, result = mct_logger.search_mixed_precision(
        model, x, eval_callback=evaluate, max_accuracy_drop=0.01, bit_candidates=(4, 8))
    assert [r["layer"] for r in result.layers] == layers
    assert result.score >= result.target_score
    model_q, _ = mct_logger.keras_post_training_quantization(model, x, config)
    assert evaluate(model_q) == pytest.approx(result.score)
