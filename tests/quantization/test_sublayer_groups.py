"""A composite layer's sublayer groups (`node/point`: a KerasHub block's query,
key, ..., feed-forward Dense) as quantizers of their own: switched one at a
time by `set_quantizers_enabled` and the QuantAnalyzer's per-layer analyses,
named by overrides, and given widths of their own by the mixed-precision
search. A small KerasHub BERT, built from config with random weights."""

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger.quantization.quantsim import quantizers, set_quantizers_enabled
from tests.helpers import padded_token_batches

keras_hub = pytest.importorskip("keras_hub")

VOCAB, SEQ, HIDDEN, N = 500, 12, 16, 32
BLOCK = "transformer_layer_0"
QUERY = f"{BLOCK}/self_attention_layer/query"
FFN = f"{BLOCK}/feedforward_output_dense"


def _bert():
    keras.utils.set_random_seed(0)
    return keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=HIDDEN,
        intermediate_dim=2 * HIDDEN, max_sequence_length=SEQ)


def _inputs(seed=0) -> dict:
    return padded_token_batches(VOCAB, SEQ, N, segments=True, seed=seed)


@pytest.fixture(scope="module")
def bert():
    model = _bert()
    x = _inputs()
    config = mct_logger.QuantizationConfig(weight_bits=4, activation_bits=8)
    sim, info = mct_logger.keras_post_training_quantization(model, x, config)
    return model, sim, info, x


def _output(model, x):
    return np.asarray(model.predict(x, verbose=0)["sequence_output"], np.float64)


def test_one_group_is_switched_alone(bert):
    model, sim, _, x = bert
    wrapper = quantizers(sim)[BLOCK]["weights"]
    groups = wrapper.groups()
    assert "self_attention_layer/query" in groups and len(groups) >= 6
    float_out = _output(model, x)
    try:
        set_quantizers_enabled(sim, weights=False, activations=False)
        np.testing.assert_allclose(_output(sim, x), float_out, atol=1e-5)
        set_quantizers_enabled(sim, weights=True, activations=True, nodes=[QUERY, FFN])
        assert wrapper.weight_enabled("self_attention_layer/query/kernel")
        assert wrapper.activation_enabled("self_attention_layer/query")
        assert not wrapper.weight_enabled("self_attention_layer/key/kernel")
        assert not wrapper.activation_enabled("self_attention_layer/key")
        alone = _output(sim, x)
        assert wrapper.weight_enabled("feedforward_output_dense/kernel")
        assert np.max(np.abs(alone - float_out)) > 1e-3  # the 4-bit kernels show
    finally:
        set_quantizers_enabled(sim, weights=True, activations=True)
    with pytest.raises(KeyError, match="no quantizer"):
        set_quantizers_enabled(sim, weights=False, nodes=[f"{BLOCK}/no_such_sublayer"])


def test_an_override_names_one_group(bert):
    model, _, _, x = bert
    config = mct_logger.QuantizationConfig(
        weight_bits=8, overrides={QUERY: mct_logger.LayerOverride(weight_bits=4,
                                                                   activation_bits=16)})
    _, info = mct_logger.keras_post_training_quantization(model, x, config)
    plan = info.plan[BLOCK]
    assert plan.weights["self_attention_layer/query/kernel"].bitwidth == 4
    assert plan.inner_activations["self_attention_layer/query"].bitwidth == 16
    assert plan.weights["self_attention_layer/key/kernel"].bitwidth == 8
    assert plan.inner_activations["self_attention_layer/key"].bitwidth == 8
    kept = mct_logger.QuantizationConfig(
        overrides={QUERY: mct_logger.LayerOverride(keep_float=True)})
    _, info = mct_logger.keras_post_training_quantization(model, x, kept)
    assert "self_attention_layer/query/kernel" not in info.plan[BLOCK].weights
    assert "self_attention_layer/query" not in info.plan[BLOCK].inner_activations
    assert "self_attention_layer/key/kernel" in info.plan[BLOCK].weights
    # a bare sublayer name is no group's name (it would hit every block's query)
    with pytest.raises(ValueError, match="match no node"):
        mct_logger.keras_post_training_quantization(model, x, mct_logger.QuantizationConfig(
            overrides={"query": mct_logger.LayerOverride(weight_bits=4)}))


def test_the_analyzer_switches_each_group(bert, tmp_path):
    model, _, _, x = bert
    reference = _output(model, x)

    def score(m):
        out = _output(m, x)
        return float(-np.mean((out - reference) ** 2))

    analyzer = mct_logger.QuantAnalyzer(model, lambda m: m.predict(x, verbose=0), score)
    result = analyzer.analyze(mct_logger.QuantizationConfig(weight_bits=4),
                              results_dir=str(tmp_path / "qa"))
    enabled, disabled = result.per_layer_quant_enabled, result.per_layer_quant_disabled
    assert QUERY in enabled and BLOCK in enabled and QUERY in disabled
    groups = [n for n in enabled if n.startswith(BLOCK + "/")]
    assert len(groups) >= 6
    # a group alone quantized costs less than its whole block alone quantized
    assert enabled[FFN] > enabled[BLOCK]
    assert all(enabled[g] >= enabled[BLOCK] - 1e-9 for g in groups)
    assert enabled[FFN] < result.sensitivity["fp32"]
    from mct_logger.analyzer.evaluations import mask_units

    units = mask_units(info_graph(model, x), result_plan(model, x))
    assert units[QUERY] == "EinsumDense" and units[BLOCK] == "TransformerEncoder"


def info_graph(model, x):
    return mct_logger.keras_post_training_quantization(model, x)[1].float_graph


def result_plan(model, x):
    return mct_logger.keras_post_training_quantization(model, x)[1].plan


def test_mixed_precision_gives_each_group_its_width(bert):
    model, _, _, x = bert
    plan_all8 = mct_logger.keras_post_training_quantization(model, x)[1].plan
    budget = _weights_bytes(model, plan_all8, bits=6)
    config, result = mct_logger.search_mixed_precision(
        model, x, weights_memory=budget, bit_candidates=(4, 8))
    names = [r["layer"] for r in result.layers]
    assert QUERY in names and BLOCK not in names
    row = next(r for r in result.layers if r["layer"] == QUERY)
    assert row["class"] == "EinsumDense" and row["parameters"] == HIDDEN * HIDDEN
    assert result.weights_memory <= budget
    _, info = mct_logger.keras_post_training_quantization(model, x, config)
    for r in result.layers:
        node, _, point = r["layer"].partition("/")
        if point and node in info.plan and info.plan[node].inner_activations:
            kernels = [k for k in info.plan[node].weights if k.rpartition("/")[0] == point]
            assert kernels and all(info.plan[node].weights[k].bitwidth == r["bits"]
                                   for k in kernels), r
    assert len({r["bits"] for r in result.layers if r["layer"].startswith(BLOCK + "/")}) >= 1


def _weights_bytes(model, plan, bits):
    from mct_logger.graph.ir import read_model
    from mct_logger.mixed_precision.search import plan_weights_memory
    import dataclasses

    graph = read_model(model)
    widths = {n: dataclasses.replace(p, weights={k: dataclasses.replace(s, bitwidth=bits)
                                                 for k, s in p.weights.items()})
              for n, p in plan.items()}
    return plan_weights_memory(graph, widths)
