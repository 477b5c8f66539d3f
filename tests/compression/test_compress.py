"""Model compression: SVD and channel pruning layers, costs, greedy selection,
the resumable score file, argument checks, and the TensorBoard payloads."""

import re
import json
import warnings

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.compression import channel_pruning, greedy, svd
from mct_logger.compression.cost import layer_costs, model_cost
from mct_logger.graph.ir import GraphError, read_model
from tests.helpers import norm_relative_error, tensorboard_provider


def conv_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 10, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(24, (3, 5), strides=(2, 1), padding="valid", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(20, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(7, name="fc")(x)
    model = keras.Model(inputs, outputs, name="convs")
    # a batch norm with statistics that are not the identity
    bn = model.get_layer("bn2")
    bn.set_weights([np.random.rand(24) + 0.5, np.random.randn(24), np.random.randn(24) * 0.1,
                    np.random.rand(24) + 0.5])
    return model


X = np.random.default_rng(0).random((16, 12, 10, 3)).astype("float32")


@pytest.fixture(scope="module")
def model():
    return conv_model()


@pytest.mark.parametrize("name,scheme", [("c1", "spatial_svd"), ("c2", "spatial_svd"),
                                         ("pw", "weight_svd"), ("fc", "weight_svd")])
def test_full_rank_decomposition_reproduces_the_layer(model, name, scheme):
    graph = read_model(model)
    assert svd.why_not(graph, graph.nodes[name], scheme) is None
    layer = svd.SvdLayer.of(graph, graph.nodes[name], scheme)
    rebuilt = layer.apply(graph, layer.max_rank).to_keras()
    assert norm_relative_error(rebuilt.predict(X, verbose=0), model.predict(X, verbose=0)) < 1e-5
    # a zero-padded pair (the sweep's cheap candidate) is the rank-r pair's function
    low = layer.apply(graph, 2).to_keras().predict(X, verbose=0)
    padded = layer.apply(graph, 2, capacity=layer.max_rank).to_keras().predict(X, verbose=0)
    assert norm_relative_error(padded, low) < 1e-5


def test_mac_count_at_rank_r_matches_the_formula(model):
    graph = read_model(model)
    rank = 5
    c2 = svd.SvdLayer.of(graph, graph.nodes["c2"], "spatial_svd")
    costs = layer_costs(c2.apply(graph, rank))
    # c2: 3x5 kernel, stride (2, 1), valid, 16 -> 24 channels, on 12x10 -> 5x6 out;
    # the 3x1 conv's output is 5 x 10
    ho, wo, wa, kh, kw, cin, cout = 5, 6, 10, 3, 5, 16, 24
    assert costs["c2_a"].macs + costs["c2_b"].macs == rank * (ho * wa * kh * cin + ho * wo * kw * cout)
    assert costs["c2_a"].params + costs["c2_b"].params == rank * (kh * cin + kw * cout) + cout
    assert layer_costs(graph)["c2"].macs == ho * wo * kh * kw * cin * cout
    fc = svd.SvdLayer.of(graph, graph.nodes["fc"], "weight_svd")
    costs = layer_costs(fc.apply(graph, 3))
    assert costs["fc_a"].macs + costs["fc_b"].macs == 3 * (20 + 7)


def pruning_layer(graph, name, model):
    chain = channel_pruning.trace_chain(graph, graph.nodes[name])
    node = graph.nodes[name]
    ref = node.inputs[0]
    probe = keras.Model(model.inputs, model.get_layer(name).input)
    x = probe.predict(X, verbose=0)
    where = channel_pruning.sample_positions(node.output_shapes[0], len(x), np.random.default_rng(0))
    assert ref.node == chain.between[-1] if chain.between else chain.producer
    return channel_pruning.PruningLayer(node, chain, channel_pruning.patches(node.layer, x, where))


def test_channel_pruning_at_ratio_one_is_the_identity_and_at_half_halves_the_inputs(model):
    graph = read_model(model)
    layer = pruning_layer(graph, "pw", model)
    assert layer.chain == channel_pruning.Chain("c2", ("bn2", "relu2", "dw"))
    assert layer.keep_for_ratio(1.0) is None  # nothing to prune
    kept, kernel = layer.reconstruct(layer.channels)
    same = layer.apply(graph, kept, kernel).to_keras()
    assert norm_relative_error(same.predict(X, verbose=0), model.predict(X, verbose=0)) < 1e-5

    keep = layer.keep_for_ratio(0.5)
    assert keep == 12
    kept, kernel = layer.reconstruct(keep)
    pruned = layer.apply(graph, kept, kernel).to_keras()
    assert pruned.get_layer("pw").kernel.shape[2] == 12
    assert pruned.get_layer("c2").kernel.shape[3] == 12
    assert pruned.get_layer("dw").kernel.shape[2] == 12
    assert pruned.get_layer("bn2").moving_mean.shape[0] == 12
    before, after = layer_costs(graph), layer_costs(read_model(pruned))
    assert after["pw"].macs * 2 == before["pw"].macs
    assert after["c2"].macs * 2 == before["c2"].macs
    # the refit beats plain slicing on inputs it never saw
    held_out = np.random.default_rng(7).random((16, 12, 10, 3)).astype("float32")
    sliced = layer.apply(graph, kept, layer.kernel[:, :, kept, :].astype("float32")).to_keras()
    reference = model.predict(held_out, verbose=0)
    assert norm_relative_error(pruned.predict(held_out, verbose=0), reference) < \
        norm_relative_error(sliced.predict(held_out, verbose=0), reference)
    # the masked kernel on the unpruned model is the pruned model's function
    work = keras.models.clone_model(model)
    work.set_weights(model.get_weights())
    work.get_layer("pw").kernel.assign(layer.masked_kernel(kept, kernel))
    assert norm_relative_error(work.predict(X, verbose=0), pruned.predict(X, verbose=0)) < 1e-5
    # the model input and a Dense are no candidates
    assert "model input" in channel_pruning.trace_chain(graph, graph.nodes["c1"])
    assert isinstance(channel_pruning.trace_chain(graph, graph.nodes["fc"]), str)


def test_greedy_selection_meets_the_target_within_one_candidate_step():
    candidates = greedy.candidate_ratios(10)
    assert candidates == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    rng = np.random.default_rng(0)
    weights = {f"l{i}": float(w) for i, w in enumerate(rng.random(8) + 0.2)}
    sensitivity = {name: float(s) for name, s in zip(weights, rng.random(8) * 3 + 0.5)}
    scores = {name: {r: 1 - np.exp(-sensitivity[name] * r * 4) for r in candidates}
              for name in weights}
    total = sum(weights.values())

    def cost_ratio(ratios):
        return sum(w * (ratios[n] if ratios[n] is not None else 1.0) for n, w in weights.items()) / total

    for target in (0.3, 0.5, 0.8):
        chosen = greedy.select_ratios(scores, cost_ratio, target)
        assert target - 0.1 <= chosen.cost_ratio <= target, (target, chosen)
        assert chosen.cost_ratio == pytest.approx(cost_ratio(chosen.ratios))
    with pytest.raises(ValueError, match="above target"):
        greedy.select_ratios(scores, cost_ratio, 0.05)


def test_greedy_selection_is_the_least_compressed_one_meeting_the_target():
    candidates = greedy.candidate_ratios(4)
    weights = {"a": 5.0, "b": 3.0, "c": 2.0}
    # scores a hair apart (closer than AIMET's 1e-4 stopping window of the range)
    scores = {"a": {0.25: 0.1, 0.5: 0.6, 0.75: 0.99990},
              "b": {0.25: 0.2, 0.5: 0.7, 0.75: 0.99995},
              "c": {0.25: 0.3, 0.5: None, 0.75: 1.0}}

    def cost_ratio(ratios):
        return sum(w * (ratios[n] or 1.0) for n, w in weights.items()) / sum(weights.values())

    distinct = sorted({v for by in scores.values() for v in by.values() if v is not None})
    family = [greedy.ratios_at(scores, t) for t in distinct + [None]]
    assert family[-1] == {"a": None, "b": None, "c": None}
    for target in (1.0, 0.99, 0.96, 0.95, 0.9, 0.875, 0.7, 0.5, 0.25):
        chosen = greedy.select_ratios(scores, cost_ratio, target)
        meeting = [cost_ratio(r) for r in family if cost_ratio(r) <= target]
        assert chosen.cost_ratio == max(meeting) <= target, (target, chosen)
        assert chosen.cost_ratio == cost_ratio(chosen.ratios)
        above = [cost_ratio(r) for r in family if cost_ratio(r) > target]
        assert chosen.next_cost_ratio == (min(above) if above else None), (target, chosen)
    nothing = greedy.select_ratios(scores, cost_ratio, 1.0)
    assert nothing.ratios == {"a": None, "b": None, "c": None}
    assert nothing.threshold is None and nothing.cost_ratio == 1.0
    # near 1 the least compression the candidates allow: c alone at 0.75
    near = greedy.select_ratios(scores, cost_ratio, 0.99)
    assert near.ratios == {"a": None, "b": None, "c": 0.75} and near.next_cost_ratio == 1.0
    assert candidates == [0.25, 0.5, 0.75]


def test_a_target_the_uncompressed_model_meets_compresses_nothing(model, caplog):
    reference = model.predict(X, verbose=0)

    def evaluate(m):
        return -float(np.mean((m.predict(X, verbose=0) - reference) ** 2))

    for scheme, metric in (("spatial_svd", "mac"), ("weight_svd", "memory")):
        with caplog.at_level("INFO", logger="mct_logger"):
            compressed, stats = mct_logger.compress_model(
                model, evaluate, 1.0, scheme=scheme, cost_metric=metric,
                num_comp_ratio_candidates=4)
        assert stats.chosen_ratios == {} and stats.cost_ratio == 1.0, stats
        assert stats.threshold is None and stats.next_cost_ratio is None
        assert np.array_equal(compressed.predict(X, verbose=0), reference)
        assert "nothing compressed" in str(stats).splitlines()[0]
        assert "already meets target_comp_ratio=1.0" in caplog.text
    # a NumPy scalar target is a number like any other (and is logged as JSON)
    _, stats = mct_logger.compress_model(model, evaluate, np.float32(1.0), scheme="weight_svd",
                                         num_comp_ratio_candidates=4)
    assert stats.chosen_ratios == {} and type(stats.target_comp_ratio) is float
    # just below 1: the least compression the candidates allow, and the log says why
    caplog.clear()
    with caplog.at_level("INFO", logger="mct_logger"):
        _, stats = mct_logger.compress_model(model, evaluate, 0.99, scheme="spatial_svd",
                                             num_comp_ratio_candidates=4)
    assert len(stats.chosen_ratios) == 1 and stats.cost_ratio <= 0.99, stats
    assert stats.next_cost_ratio == 1.0
    assert "the next less compressed one keeps 1.000" in caplog.text


@pytest.fixture(scope="module")
def digits():
    from mct_logger.demo import accuracy, load_digits_split, train_digits_cnn

    data = load_digits_split()
    model = train_digits_cnn(data, epochs=15)
    return {"model": model, "data": data,
            "evaluate": lambda m: accuracy(m, data.x_test[:200], data.y_test[:200]),
            "forward": lambda m: m.predict(data.x_train[:128], batch_size=64, verbose=0)}


def test_channel_pruning_of_a_trained_cnn_meets_the_target_and_logs_the_tab(digits, tmp_path, capsys):
    model = digits["model"]
    weights = [w.copy() for w in model.get_weights()]
    mct_logger.set_log_folder(tmp_path / "logs", run_name="pruned")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compressed, stats = mct_logger.compress_model(
                model, digits["evaluate"], 0.5, scheme="channel_pruning",
                num_comp_ratio_candidates=10, forward_pass_callback=digits["forward"],
                eval_scores_file=tmp_path / "scores.json")
    finally:
        mct_logger.set_log_folder(None)
    # every model the callbacks get takes the user's input structure (one tensor here)
    assert not [w for w in caught if "structure of `inputs`" in str(w.message)]
    assert re.search(r"compression evaluation: (\d+) of \1 \(100%\)", capsys.readouterr().out)
    assert 0.4 <= stats.cost_ratio <= 0.5 + 1e-3, stats
    assert stats.cost_after == model_cost(layer_costs(read_model(compressed)))
    assert stats.score_before > 0.8 and stats.score_after > 0.5, stats
    assert set(stats.chosen_ratios) <= {"pw1", "pw2"} and stats.chosen_ratios
    assert {r["layer"] for r in stats.layers} == {"pw1", "pw2"}
    assert len(stats.eval_scores["pw1"]) == 9
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    path = tmp_path / "compressed.keras"
    compressed.save(path)
    loaded = keras.models.load_model(path)
    x = digits["data"].x_test[:32]
    assert norm_relative_error(loaded.predict(x, verbose=0), compressed.predict(x, verbose=0)) < 1e-6
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["format"] == "mct_logger.compression.eval_scores"
    assert saved["scores"]["pw2"] == stats.eval_scores["pw2"]

    for loader in ("python", "rust"):
        with tensorboard_provider(tmp_path / "logs", loader) as (provider, ctx, eid):
            from mct_logger.tb_plugin import reader

            problems = []
            tables = {tag: table for run, tag, _, table in reader.read_payloads(
                provider, ctx, eid, "compression", problems=problems)}
            assert not problems
            assert tables["eval_scores"]["status"] == "complete"
            assert tables["eval_scores"]["evaluations_done"] == 18
            assert tables["selection"]["cost_ratio"] == pytest.approx(stats.cost_ratio)
            assert len(tables["selection"]["rows"]) == 2


def test_resuming_from_a_partial_score_file_evaluates_only_the_missing_entries(digits, tmp_path):
    model, evaluate = digits["model"], digits["evaluate"]
    scores_file = tmp_path / "scores.json"
    calls = []

    def interrupted(m):
        if len(calls) == 6:  # the baseline, then 5 candidates
            raise KeyboardInterrupt
        calls.append(m.name)
        return evaluate(m)

    with pytest.raises(KeyboardInterrupt):
        mct_logger.compress_model(model, interrupted, 0.6, scheme="weight_svd",
                                  num_comp_ratio_candidates=5, eval_scores_file=scores_file)
    partial = json.loads(scores_file.read_text())["scores"]
    assert sum(len(v) for v in partial.values()) == 5

    calls.clear()
    counted = lambda m: calls.append(m.name) or evaluate(m)  # noqa: E731
    _, stats = mct_logger.compress_model(model, counted, 0.6, scheme="weight_svd",
                                         num_comp_ratio_candidates=5, eval_scores_file=scores_file)
    total = sum(len(v) for v in stats.eval_scores.values())
    assert stats.evaluations_reused == 5
    assert stats.evaluations == total - 5
    assert len(calls) == total - 5 + 2  # the missing ones, the baseline and the compressed model
    for layer, by_ratio in partial.items():
        assert {k: stats.eval_scores[layer][k] for k in by_ratio} == by_ratio

    with pytest.raises(ValueError, match="cost_metric='mac', not 'memory'"):
        mct_logger.compress_model(model, evaluate, 0.6, scheme="weight_svd", cost_metric="memory",
                                  num_comp_ratio_candidates=5, eval_scores_file=scores_file)


def _forward_pass_generator(m):
    """A generator function: calling it runs none of this (a `yield` too many)."""
    for i in range(0, len(X), 8):
        m(X[i:i + 8])
        yield i


@pytest.mark.parametrize("kwargs,error,message", [
    ({"target_comp_ratio": 0}, ValueError, "target_comp_ratio=0 must be a number in \\(0, 1\\]"),
    ({"target_comp_ratio": 1.5}, ValueError, "target_comp_ratio=1.5"),
    ({"target_comp_ratio": "half"}, ValueError, "target_comp_ratio='half'"),
    ({"scheme": "tucker"}, ValueError, "scheme='tucker' is not supported"),
    ({"cost_metric": "flops"}, ValueError, "cost_metric='flops'"),
    ({"num_comp_ratio_candidates": 1}, ValueError, "num_comp_ratio_candidates=1"),
    ({"scheme": "channel_pruning"}, ValueError, "pass forward_pass_callback"),
    ({"scheme": "channel_pruning", "forward_pass_callback": (X[i:i + 8] for i in range(0, 16, 8))},
     TypeError, "forward_pass_callback must be a callable .* got a generator object"),
    ({"scheme": "channel_pruning", "forward_pass_callback": _forward_pass_generator}, TypeError,
     "forward_pass_callback must be a callable .* got generator function "
     "'_forward_pass_generator'.* without yield"),
    ({"layers_to_ignore": ["nope"]}, ValueError, "layers_to_ignore names \\['nope'\\]"),
    ({"eval_callback": lambda m: 1 / 0}, RuntimeError, "eval_callback failed on the uncompressed"),
    ({"eval_callback": lambda m: "good"}, TypeError, "eval_callback must return one number"),
    ({"target_comp_ratio": 0.1, "scheme": "spatial_svd"}, ValueError, "below what spatial_svd can reach"),
])
def test_bad_arguments_fail_before_any_work_with_the_fix(model, kwargs, error, message):
    calls = []
    arguments = {"eval_callback": lambda m: calls.append(1) or 1.0, "target_comp_ratio": 0.5}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        mct_logger.compress_model(model, **arguments)
    assert len(calls) == 0


def test_an_eval_scores_file_that_cannot_be_written_or_reused_fails_before_any_evaluation(
        model, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    foreign = tmp_path / "other.json"
    foreign.write_text('{"accuracy": 0.9}')
    calls = []
    for path, error, message in [
        (afile / "scores.json", NotADirectoryError, r"eval_scores_file .*afile.* is a file"),
        (tmp_path, IsADirectoryError, r"eval_scores_file .* is a folder; pass a file path"),
        (foreign, ValueError, r"eval_scores_file .*other.json.* is not an mct-logger score"),
    ]:
        with pytest.raises(error, match=message):
            mct_logger.compress_model(model, lambda m: calls.append(1) or 1.0, 0.5,
                                      eval_scores_file=path)
    assert calls == []
    assert afile.read_text() == "mine" and foreign.read_text() == '{"accuracy": 0.9}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "other.json"]


def test_an_eval_scores_file_that_cannot_be_written_mid_sweep_is_one_warning(
        model, tmp_path, caplog):
    scores_file = tmp_path / "scores.json"
    calls = {"n": 0}

    def evaluate(m):
        calls["n"] += 1
        if calls["n"] == 2:  # the first sweep score: a folder where the file goes
            scores_file.mkdir()
        if calls["n"] == 4:  # gone again: the next score writes them all
            scores_file.rmdir()
        return 1.0 - 0.01 * calls["n"]

    with caplog.at_level("WARNING", logger="mct_logger"):
        _, stats = mct_logger.compress_model(model, evaluate, 0.8, scheme="spatial_svd",
                                             num_comp_ratio_candidates=3,
                                             eval_scores_file=scores_file)
    assert calls["n"] == stats.evaluations + 2 >= 5
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"eval_scores_file {scores_file} cannot be written "
                              "(IsADirectoryError: ")
    assert "the sweep goes on with its scores in memory" in warning
    assert json.loads(scores_file.read_text())["scores"] == stats.eval_scores
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_a_model_the_ir_cannot_read_is_refused(model):
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises((GraphError, TypeError)):
        mct_logger.compress_model(Subclassed(), lambda m: 1.0, 0.5)
    with pytest.raises(TypeError, match="keras.Model"):
        mct_logger.compress_model("model.keras", lambda m: 1.0, 0.5)
    with pytest.raises(RuntimeError, match="forward_pass_callback failed"):
        mct_logger.compress_model(model, lambda m: 1.0, 0.5, scheme="channel_pruning",
                                  forward_pass_callback=lambda m: m.predict(np.zeros((2, 3))))
