"""search_mixed_precision with the user's overrides and with callbacks returning NaN/inf.

Overrides: a layer whose override sets `weight_bits` (by exact name or by a
regular expression) is pinned and never searched; every field of every override
comes back unchanged, and a searched layer's own override only gains
`weight_bits`. Scores: every entry point taking an `eval_callback` follows the
one rule of `aimet_layout.ScoreCheck`.
"""

import dataclasses
import logging

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.graph.ir import read_model
from mct_logger.mixed_precision.search import plan_weights_memory
from mct_logger.quantization.config import LayerOverride, QuantizationConfig
from mct_logger.quantization.plan import plan_quantization


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((16,), name="x")
    h = keras.layers.Dense(64, activation="relu", name="a_big")(inp)
    h = keras.layers.Dense(32, activation="relu", name="b")(h)
    h = keras.layers.Dense(32, activation="relu", name="c")(h)
    return keras.Model(inp, keras.layers.Dense(4, name="out")(h), name="pins")


X = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
BASE = QuantizationConfig(overrides={
    r"a_.*": LayerOverride(weight_bits=8, activation_bits=16),          # pinned by a regex
    "b": LayerOverride(activation_bits=16, weight_observer="mse"),     # searched, kept
    "c": LayerOverride(keep_float=True),                               # float, not searched
})


def _memory(model, config):
    graph = read_model(model)
    return plan_weights_memory(graph, plan_quantization(graph, config, report=False))


def _with(config, **bits):
    overrides = dict(config.overrides)
    for name, b in bits.items():
        overrides[name] = dataclasses.replace(overrides.get(name, LayerOverride()), weight_bits=b)
    return dataclasses.replace(config, overrides=overrides)


def test_pinned_layers_are_not_searched_and_every_override_survives():
    model = _model()
    budget = _memory(model, _with(BASE, b=4, out=4))  # only every searched layer at 4 bits fits
    config, result = mct_logger.search_mixed_precision(
        model, X, weights_memory=budget, bit_candidates=(4, 8), config=BASE)
    assert [r["layer"] for r in result.layers] == ["b", "out"]
    assert config.overrides[r"a_.*"] == BASE.overrides[r"a_.*"]
    assert config.overrides["c"] == BASE.overrides["c"]
    # b's own override keeps its fields (its width may come from the global weight_bits)
    assert dataclasses.replace(config.overrides["b"], weight_bits=None) == BASE.overrides["b"]
    _, info = mct_logger.keras_post_training_quantization(model, X, config)
    assert info.plan["a_big"].weights["kernel"].bitwidth == 8
    assert info.plan["a_big"].activation.bitwidth == 16
    assert info.plan["b"].weights["kernel"].bitwidth == 4
    assert info.plan["b"].activation.bitwidth == 16
    assert info.plan["b"].weights["kernel"].observer == "mse"
    assert not info.plan["c"].weights and info.plan["c"].activation is None


def test_a_budget_only_the_pins_break_warns_and_keeps_them(caplog):
    model = _model()
    smallest = _memory(model, _with(BASE, b=4, out=4))
    with caplog.at_level(logging.WARNING, "mct_logger"):
        config, result = mct_logger.search_mixed_precision(
            model, X, weights_memory=smallest - 100, bit_candidates=(4, 8), config=BASE)
    said = [r.getMessage() for r in caplog.records if "pinned" in r.getMessage()]
    assert said and "a_big" in said[0] and str(smallest) in said[0], caplog.text
    assert config.overrides[r"a_.*"].weight_bits == 8
    assert {r["layer"]: r["bits"] for r in result.layers} == {"b": 4, "out": 4}
    # below what even the pinned layers at 4 bits reach: refused, as without pins
    with pytest.raises(ValueError, match="below the smallest memory"):
        mct_logger.search_mixed_precision(model, X, weights_memory=100, bit_candidates=(4, 8),
                                          config=BASE)


def test_every_weight_layer_pinned_is_refused_naming_the_overrides():
    config = QuantizationConfig(overrides={".*": LayerOverride(weight_bits=8)})
    with pytest.raises(ValueError, match="fixed by an override"):
        mct_logger.search_mixed_precision(_model(), X, weights_memory=1e9, config=config)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("entry", ["search_budget", "search_target", "compress", "equalize",
                                   "analyze"])
def test_a_non_finite_float_score_is_refused_by_every_entry_point(entry, bad, tmp_path):
    model = _model()
    evaluate = lambda m: np.float32(bad)  # noqa: E731 - a NumPy scalar, as metrics return
    calls = {
        "search_budget": lambda: mct_logger.search_mixed_precision(
            model, X, eval_callback=evaluate, weights_memory=1e9),
        "search_target": lambda: mct_logger.search_mixed_precision(
            model, X, eval_callback=evaluate, max_accuracy_drop=0.1),
        "compress": lambda: mct_logger.compress_model(
            model, evaluate, 0.8, scheme="weight_svd", num_comp_ratio_candidates=3),
        "equalize": lambda: mct_logger.equalize_model(model, eval_callback=evaluate),
        "analyze": lambda: mct_logger.QuantAnalyzer(
            model, lambda m: m.predict(X, verbose=0), evaluate).analyze(
                results_dir=str(tmp_path / "qa")),
    }
    with pytest.raises(ValueError, match=rf"eval_callback returned {bad}.*finite number"):
        calls[entry]()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_quantized_score_never_meets_the_target(bad, caplog):
    model = _model()
    evaluate = lambda m: 1.0 if m is model else bad  # noqa: E731
    with caplog.at_level(logging.WARNING, "mct_logger"):
        config, result = mct_logger.search_mixed_precision(
            model, X, eval_callback=evaluate, max_accuracy_drop=0.1, bit_candidates=(4, 8))
    assert all(row["meets_target"] in (False, None) for row in result.steps)
    assert {r["bits"] for r in result.layers} == {8}  # the widest, never "verified" 4-bit
    assert f"eval_callback returned {bad}" in caplog.text
    assert "below the target" in caplog.text
    with caplog.at_level(logging.WARNING, "mct_logger"):
        _, result = mct_logger.search_mixed_precision(
            model, X, eval_callback=evaluate, weights_memory=1e9, bit_candidates=(4, 8))
    chosen = [row for row in result.steps if row["chosen"]]
    assert chosen and all(b == 8 for b in chosen[0]["bits"].values())


def test_recommend_never_keeps_or_meets_on_an_infinite_score(tmp_path):
    model = _model()
    state = {"later": False}
    evaluate = lambda m: np.inf if state["later"] else 1.0  # noqa: E731
    analyzer = mct_logger.QuantAnalyzer(model, lambda m: m.predict(X, verbose=0), evaluate)
    analyzer.analyze(results_dir=str(tmp_path / "qa"))
    state["later"] = True
    _, recommendation = analyzer.recommend(max_accuracy_drop=0.01)
    assert not recommendation.meets_target
    assert not any(change["accepted"] for change in recommendation.changes)
