"""QuantAnalyzer on a model with one deliberately broken layer.

conv1 -> ReLU -> conv2: conv1's output channel 5 is scaled by 1/1000 and conv2's
weights reading it by 1000. The float model computes the same function, but
conv2's per-channel weight grids are now 1000x too coarse for its other inputs,
so quantizing conv2 destroys its output. Every analysis must point at conv2.
"""

import json
import os

import keras
import numpy as np
import pytest

from tests.helpers import tensorboard_provider
from mct_logger.data import sources as data_lib
from mct_logger.tensorboard import log_folder as log_lib
from mct_logger.analyzer.aimet_layout import resolve_config
from mct_logger.analyzer.driver import QuantAnalyzer
from mct_logger.utils.callbacks import as_callback
from mct_logger.quantization import Encoding, QuantizationConfig
from mct_logger.quantization.quantsim import quantizers, set_quantizers_enabled
from mct_logger.tb_plugin import reader

BROKEN, CHANNEL = "conv2", 5
LAYERS = ["x", "conv1", "conv2", "conv3", "relu3", "gap", "head"]


def build_broken_model():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    inputs = keras.Input((8, 8, 3), name="x")
    a = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    b = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(a)
    c = keras.layers.Conv2D(16, 3, padding="same", name="conv3")(b)
    c = keras.layers.BatchNormalization(name="bn3")(c)
    c = keras.layers.ReLU(name="relu3")(c)
    d = keras.layers.GlobalAveragePooling2D(name="gap")(c)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(d), name="broken")
    model.get_layer("bn3").set_weights([
        rng.uniform(0.5, 1.5, 16), rng.normal(0, 0.1, 16),
        rng.normal(0, 0.1, 16), rng.uniform(0.5, 2.0, 16),
    ])
    w1, b1 = model.get_layer("conv1").get_weights()
    w1[..., CHANNEL] /= 1000.0
    b1[CHANNEL] /= 1000.0
    model.get_layer("conv1").set_weights([w1, b1])
    w2, b2 = model.get_layer("conv2").get_weights()
    w2[:, :, CHANNEL, :] *= 1000.0
    model.get_layer("conv2").set_weights([w2, b2])
    return model


class Task:
    """The user's side: data, callbacks, and a count of evaluations."""

    def __init__(self, model):
        self.model = model
        self.x = np.random.default_rng(1).normal(size=(256, 8, 8, 3)).astype("float32")
        self.calibration = self.x[:128]
        self.test = self.x[128:]
        self.reference = model.predict(self.test, verbose=0)
        self.evaluations = 0

    def calibrate(self, model):
        model.predict(self.calibration, batch_size=32, verbose=0)

    def evaluate(self, model):
        """1 - ||y - y_float|| / ||y_float||: fidelity to the float model, higher is better."""
        self.evaluations += 1
        y = model.predict(self.test, batch_size=128, verbose=0)
        return 1.0 - np.linalg.norm(y - self.reference) / np.linalg.norm(self.reference)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model = build_broken_model()
    task = Task(model)
    results = tmp_path_factory.mktemp("results")
    logs = tmp_path_factory.mktemp("logs")
    log_lib.set_log_folder(logs)
    try:
        analyzer = QuantAnalyzer(model, task.calibrate, task.evaluate, dummy_input=task.x[:1])
        analyzer.enable_per_layer_mse_loss(task.x[:128], num_batches=3)  # 3 batches of 32
        result = analyzer.analyze(
            {"quant_scheme": "post_training_tf", "default_param_bw": 8, "default_output_bw": 8},
            results_dir=str(results),
        )
    finally:
        log_lib.set_log_folder(None)
    return task, result, results, logs


def load(folder, name):
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------ the broken layer


def test_every_analysis_ranks_the_broken_layer_worst(run):
    _, result, _, _ = run
    assert result.status == "complete"
    assert result.layers == LAYERS
    assert result.ranking("per_layer_quant_enabled")[0] == BROKEN
    assert result.ranking("per_layer_quant_disabled")[0] == BROKEN
    assert result.ranking("sqnr_isolated")[0] == BROKEN
    assert result.ranking("sqnr_accumulated_step")[0] == BROKEN
    sqnr = result.per_layer_sqnr
    # a clear outlier, not a close call
    others = [sqnr[n]["sqnr_isolated_db"] for n in LAYERS if n != BROKEN]
    assert sqnr[BROKEN]["sqnr_isolated_db"] < min(others) - 20
    enabled = result.per_layer_quant_enabled
    assert enabled[BROKEN] < min(v for k, v in enabled.items() if k != BROKEN) - 0.3
    # accumulated error carries downstream: every later layer stays about as bad
    drop = sqnr["conv1"]["sqnr_accumulated_db"] - sqnr[BROKEN]["sqnr_accumulated_db"]
    assert drop > 25 and sqnr[BROKEN]["accumulated_step_db"] == pytest.approx(drop)
    for later in ("conv3", "relu3", "gap", "head"):
        assert sqnr[later]["sqnr_accumulated_db"] < sqnr["conv1"]["sqnr_accumulated_db"] - 20
    # cosine is secondary, but must not call a wiped-out output similar
    assert sqnr[BROKEN]["cosine_accumulated"] < 0.9 < sqnr["conv1"]["cosine_accumulated"]


def test_evaluations_are_2l_plus_4_and_fp32_is_the_folded_model(run):
    task, result, results, _ = run
    assert task.evaluations == 2 * len(LAYERS) + 4
    summary = load(results, "summary.json")
    assert summary["status"] == "complete"
    assert summary["evaluations_done"] == summary["evaluations_total"] == 18
    assert summary["batch_norms_folded"] == {"bn3": "conv3"}
    assert "bn3" not in [layer.name for layer in result.float_model.layers]
    assert result.sensitivity["fp32"] == pytest.approx(1.0, abs=1e-5)


def test_sensitivity_is_persisted_and_matches_ptq_with_quantizers_switched(run):
    import mct_logger

    task, result, results, _ = run
    table = load(results, "sensitivity.json")
    assert table["labels"] == {"fp32": "W32A32", "weights_only": "W8A32",
                               "activations_only": "W32A8", "fully_quantized": "W8A8"}
    assert table["complete"] is True
    for key in ("fp32", "weights_only", "activations_only", "fully_quantized"):
        assert table[key] == pytest.approx(result.sensitivity[key])
    config = QuantizationConfig(weight_observer="min_max", activation_observer="min_max")
    model_q, _ = mct_logger.keras_post_training_quantization(task.model, task.calibration, config)
    set_quantizers_enabled(model_q, activations=False)
    assert task.evaluate(model_q) == pytest.approx(table["weights_only"], abs=1e-5)
    set_quantizers_enabled(model_q, weights=False, activations=True)
    assert task.evaluate(model_q) == pytest.approx(table["activations_only"], abs=1e-5)
    set_quantizers_enabled(model_q, weights=True, activations=True)
    assert task.evaluate(model_q) == pytest.approx(table["fully_quantized"], abs=1e-5)
    assert table["weights_only"] < table["activations_only"] - 0.2  # conv2 is a weight problem


# ------------------------------------------------------------------ AIMET's files


def test_per_layer_files_have_aimet_names_and_shape(run):
    _, result, results, _ = run
    enabled = load(results, "per_layer_quant_enabled.json")
    disabled = load(results, "per_layer_quant_disabled.json")
    assert list(enabled) == list(disabled) == LAYERS
    assert enabled == pytest.approx(result.per_layer_quant_enabled)
    assert disabled == pytest.approx(result.per_layer_quant_disabled)
    assert all(isinstance(v, float) for v in enabled.values())


def test_min_max_ranges_match_independent_encodings(run):
    task, _, results, _ = run
    activations = load(results, "min_max_ranges/activations.json")
    weights = load(results, "min_max_ranges/weights.json")
    assert set(activations) == {f"{n}_output_0" for n in ("x", "conv1", "conv2", "relu3", "gap", "head")}
    probe = keras.Model(task.model.inputs, task.model.get_layer("conv1").output)
    outputs = probe.predict(task.calibration, verbose=0)
    expected = Encoding.from_range(outputs.min(), outputs.max(), 8, symmetric=False)
    assert activations["conv1_output_0"] == pytest.approx([expected.min, expected.max], rel=1e-6)
    # per-channel weights: AIMET's nested dict, one symmetric grid per output channel
    kernel = task.model.get_layer(BROKEN).get_weights()[0]
    per_channel = weights["conv2_conv2-kernel"]
    assert list(per_channel) == [f"conv2_conv2-kernel_{c}" for c in range(16)]
    scale = np.abs(kernel).reshape(-1, 16).max(axis=0) / 127
    for c in range(16):
        assert per_channel[f"conv2_conv2-kernel_{c}"] == pytest.approx(
            [-128 * scale[c], 127 * scale[c]], rel=1e-6)
    assert set(weights) == {"conv1_conv1-kernel", "conv2_conv2-kernel",
                            "conv3_conv3-kernel", "head_head-kernel"}
    table = load(results, "min_max_ranges/encodings.json")
    row = next(r for r in table["activations"] if r["layer"] == "conv1")
    assert row["observed_max"] == pytest.approx(float(outputs.max()), rel=1e-6)


def test_mse_is_per_element_against_sub_models_of_both_models(run):
    task, result, results, _ = run
    mse = load(results, "per_layer_mse_loss.json")
    assert list(mse) == LAYERS
    found = quantizers(result.quantized_model)
    data = task.x[:96]  # the 3 batches of 32 given to enable_per_layer_mse_loss
    for layer in ("conv1", BROKEN, "head"):
        f = keras.Model(result.float_model.inputs, result.float_model.get_layer(layer).output)
        q = keras.Model(result.quantized_model.inputs, found[layer]["activation"].output)
        difference = f.predict(data, verbose=0).astype(np.float64) - q.predict(data, verbose=0)
        assert mse[layer] == pytest.approx(np.mean(difference**2), rel=1e-4)
    table = load(results, "per_layer_sqnr.json")
    assert table["samples"] == 96 and table["data"] == "enable_per_layer_mse_loss data"


def test_weight_sqnr_matches_numpy_quantization(run):
    task, result, results, _ = run
    rows = {r["layer"]: r for r in load(results, "weight_sqnr.json")["rows"]}
    assert list(rows) == ["conv1", "conv2", "conv3", "head"]
    kernel = task.model.get_layer(BROKEN).get_weights()[0].astype(np.float64)
    scale = np.abs(kernel).reshape(-1, 16).max(axis=0) / 127
    quantized = np.clip(np.round(kernel / scale), -128, 127) * scale
    signal = (kernel**2).reshape(-1, 16).sum(axis=0)
    noise = ((kernel - quantized) ** 2).reshape(-1, 16).sum(axis=0)
    assert rows[BROKEN]["channel_sqnr_db"] == pytest.approx(10 * np.log10(signal / noise), abs=2e-3)
    assert rows[BROKEN]["sqnr_db"] == pytest.approx(10 * np.log10(signal.sum() / noise.sum()), abs=1e-4)
    assert result.ranking("weight_sqnr")[0] == "conv2/kernel"


def test_histograms_hold_every_value_and_the_encodings(run):
    task, _, results, _ = run
    table = load(results, "histograms.json")
    ranges = load(results, "min_max_ranges/encodings.json")
    activations = {r["layer"]: r for r in table["activations"]}
    assert sum(activations["conv1"]["counts"]) == pytest.approx(128 * 8 * 8 * 16, rel=1e-4)
    conv1 = next(r for r in ranges["activations"] if r["layer"] == "conv1")
    assert activations["conv1"]["encoding_max"] == pytest.approx(conv1["max"])
    weights = {r["layer"]: r for r in table["weights"]}
    conv2 = weights[BROKEN]
    assert sum(conv2["counts"]) == 3 * 3 * 16 * 16
    assert len(conv2["channels"]["counts"]) == 16
    assert all(sum(c) == 3 * 3 * 16 for c in conv2["channels"]["counts"])
    weight_row = next(r for r in ranges["weights"] if r["layer"] == BROKEN)
    assert conv2["channels"]["encoding_max"] == pytest.approx(weight_row["channel_max"])


# ------------------------------------------------------------------ TensorBoard


@pytest.mark.parametrize("loader", ["python", "rust"])
def test_plugin_payloads_read_back_under_both_loaders(run, loader):
    from mct_logger.tb_plugin.reader import read_payloads

    _, result, results, logs = run
    with tensorboard_provider(logs, loader) as (provider, ctx, experiment):
        payloads = {}
        for run_name, tag, info, table in read_payloads(provider, ctx, experiment, "quant_analyzer"):
            assert run_name == os.path.relpath(os.path.join(result.log_folder, "quant_analyzer"), logs)
            assert info == {"kind": tag, "version": 1}
            payloads[tag] = table
    assert set(payloads) == {
        "summary", "sensitivity", "per_layer_quant_enabled", "per_layer_quant_disabled",
        "min_max_ranges", "histograms", "per_layer_mse_loss", "per_layer_sqnr", "weight_sqnr",
    }
    assert payloads["per_layer_sqnr"] == load(results, "per_layer_sqnr.json")
    assert payloads["histograms"] == load(results, "histograms.json")  # a blob sequence
    assert payloads["sensitivity"] == load(results, "sensitivity.json")  # a tensor
    assert payloads["summary"] == load(results, "summary.json")
    enabled = {r["layer"]: r["score"] for r in payloads["per_layer_quant_enabled"]["rows"]}
    assert enabled == pytest.approx(load(results, "per_layer_quant_enabled.json"))


# ------------------------------------------------------------------ other paths


def test_interrupted_analysis_keeps_the_results_finished_so_far(tmp_path):
    model = build_broken_model()
    task = Task(model)

    def evaluate(model):
        if task.evaluations == 6:  # fp32, W8A32, W32A8, W8A8, then 2 of the enabled loop
            raise KeyboardInterrupt
        return task.evaluate(model)

    with pytest.raises(KeyboardInterrupt):
        QuantAnalyzer(model, task.calibrate, evaluate).analyze(results_dir=str(tmp_path))
    summary = load(tmp_path, "summary.json")
    assert summary["status"] == "interrupted"
    assert summary["evaluations_done"] == 6 and summary["evaluations_total"] == 18
    assert load(tmp_path, "sensitivity.json")["complete"] is True
    assert list(load(tmp_path, "per_layer_quant_enabled.json")) == ["x", "conv1"]
    assert not (tmp_path / "per_layer_quant_disabled.json").exists()
    assert not (tmp_path / "per_layer_mse_loss.json").exists()  # never enabled
    # evaluation-free analyses ran first; SQNR on the recorded calibration data
    sqnr = load(tmp_path, "per_layer_sqnr.json")
    assert sqnr["samples"] == 128 and sqnr["data"].startswith("calibration")
    for name in ("histograms.json", "weight_sqnr.json", "min_max_ranges/weights.json", "index.html"):
        assert (tmp_path / name).exists()
    assert '"status":"interrupted"' in (tmp_path / "index.html").read_text()


def test_ignored_layer_stays_float_and_aimet_keywords_and_pairs_work(tmp_path):
    model = build_broken_model()
    task = Task(model)

    class CallbackFunc:  # AIMET's callback object: func(model, args)
        def __init__(self, func, args):
            self.func, self.args = func, args

    def calibrate(model, data):
        model.predict(data, batch_size=64, verbose=0)

    analyzer = QuantAnalyzer(
        model, CallbackFunc(calibrate, task.calibration),
        (lambda model, _: task.evaluate(model), None),
        layers_to_ignore=[model.get_layer(BROKEN)],
    )
    result = analyzer.analyze(quant_scheme="post_training_tf_enhanced", default_param_bw=8,
                              default_output_bw=8, results_dir=str(tmp_path))
    assert BROKEN not in result.per_layer_quant_enabled
    assert BROKEN not in load(tmp_path, "min_max_ranges/weights.json").get("conv2_conv2-kernel", {})
    assert result.sensitivity["weights_only"] > 0.95  # conv2 in float: nothing is broken
    assert result.per_layer_sqnr[BROKEN]["sqnr_isolated_db"] is None
    summary = load(tmp_path, "summary.json")
    assert summary["layers_ignored"] == [BROKEN]
    assert summary["config"]["weight_observer"] == summary["config"]["activation_observer"] \
        == "tf_enhanced"
    assert task.evaluations == 2 * 6 + 4


def test_resolve_config_accepts_ours_aimet_names_and_enum_members():
    class QuantScheme:  # stands for aimet_common.defs.QuantScheme members
        name = "post_training_tf_enhanced"

    config = resolve_config({"quant_scheme": QuantScheme(), "default_param_bw": 4,
                             "default_output_bw": 16, "rounding_mode": "nearest"})
    assert (config.weight_observer, config.activation_observer) == ("tf_enhanced", "tf_enhanced")
    assert (config.weight_bits, config.activation_bits) == (4, 16)
    assert resolve_config(quant_scheme="tf").activation_observer == "min_max"
    assert resolve_config(quant_scheme="mse", weight_per_channel=False).weight_per_channel is False
    ours = QuantizationConfig(weight_bits=6)
    assert resolve_config(ours) is ours
    assert resolve_config(ours, default_output_bw=4).activation_bits == 4
    assert resolve_config(None) == QuantizationConfig()
    with pytest.raises(ValueError, match="quant_scheme"):
        resolve_config(quant_scheme="post_training_percentile")
    with pytest.raises(ValueError, match="Unknown quantization setting 'default_bw'"):
        resolve_config({"default_bw": 8})
    with pytest.raises(ValueError, match="bitwidth"):
        resolve_config(default_param_bw=1)
    with pytest.raises(ValueError, match="config files"):
        resolve_config(config_file="aimet_config.json")


def test_dummy_input_and_unlabeled_data_errors_name_their_argument():
    img, vec = keras.Input((4, 4, 1), name="img"), keras.Input((3,), name="vec")
    flat = keras.layers.Concatenate()([keras.layers.Flatten()(img), vec])
    model = keras.Model([img, vec], keras.layers.Dense(2)(flat))
    xi, xv = np.zeros((5, 4, 4, 1), "float32"), np.zeros((5, 3), "float32")
    with pytest.raises(data_lib.RepresentativeDataError,
                       match=r"^dummy_input, input 'img' expects .* shape \(5, 3\)"):
        QuantAnalyzer(model, lambda m: None, lambda m: 0.0, dummy_input=[xv, xi])
    analyzer = QuantAnalyzer(model, lambda m: None, lambda m: 0.0, dummy_input={"img": xi, "vec": xv})
    with pytest.raises(data_lib.RepresentativeDataError, match=r"^unlabeled_data, input 'img'"):
        analyzer.enable_per_layer_mse_loss([xv, xi], 2)
    with pytest.raises(data_lib.RepresentativeDataError,
                       match=r"^unlabeled_data is a callable that takes arguments \(m\)"):
        analyzer.enable_per_layer_mse_loss(lambda m: m.predict([xi, xv]), 2)
    analyzer.enable_per_layer_mse_loss(((xi, xv), np.zeros(5)), 2)
    assert [[a.shape for a in b] for b in analyzer.mse_batches] == [[(5, 4, 4, 1), (5, 3)]]


def test_callbacks_and_inputs_fail_early_with_actionable_errors(tmp_path):
    model = build_broken_model()
    task = Task(model)
    assert as_callback((lambda m, a: a + 1, 41), "cb")(None) == 42
    with pytest.raises(TypeError, match="eval_callback must be a callable"):
        QuantAnalyzer(model, task.calibrate, 3)

    def calibrate_lazily(m):  # a generator function: its call runs nothing
        yield task.calibrate(m)

    with pytest.raises(TypeError, match="forward_pass_callback .* got generator function"):
        QuantAnalyzer(model, calibrate_lazily, task.evaluate)
    with pytest.raises(TypeError, match="forward_pass_callback .* got a generator object"):
        QuantAnalyzer(model, calibrate_lazily(model), task.evaluate)
    with pytest.raises(data_lib.RepresentativeDataError, match="shape"):
        QuantAnalyzer(model, task.calibrate, task.evaluate, dummy_input=np.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="has no layer 'nope'"):
        QuantAnalyzer(model, task.calibrate, task.evaluate, layers_to_ignore=["nope"])
    analyzer = QuantAnalyzer(model, task.calibrate, task.evaluate)
    with pytest.raises(ValueError, match="num_batches"):
        analyzer.enable_per_layer_mse_loss(task.x, 0)
    analyzer.enable_per_layer_mse_loss((task.x[i:i + 8] for i in range(0, 256, 8)), num_batches=2)
    assert [len(b[0]) for b in analyzer.mse_batches] == [8, 8]
    with pytest.raises(RuntimeError, match="forward_pass_callback did not run"):
        QuantAnalyzer(model, lambda m: None, task.evaluate).analyze(results_dir=str(tmp_path / "a"))
    with pytest.raises(TypeError, match="must return one number"):
        QuantAnalyzer(model, task.calibrate, lambda m: "good").analyze(
            results_dir=str(tmp_path / "b"))
    assert load(tmp_path / "b", "summary.json")["status"] == "failed"


def test_tables_leave_through_the_registered_analysis_listeners(tmp_path):
    """Without a log folder, a listener registered in `mct_logger.listeners` hears
    every table (growing ones again as they grow) and the end of the analysis."""
    from mct_logger import listeners

    class Recorder:
        folder = str(tmp_path / "elsewhere")

        def __init__(self, run):
            self.model_name, self.heard, self.closed = run.model_name, [], []

        def __call__(self, event):
            self.heard.append((event.name, json.loads(json.dumps(event.data))))

        def close(self, error=None):
            self.closed.append(error)

    made = []
    listeners.set_run_listener_factory("test", lambda name: made.append(Recorder(name))
                                       or made[-1], kind=listeners.ANALYSIS)
    try:
        model = build_broken_model()
        task = Task(model)
        result = QuantAnalyzer(model, task.calibrate, task.evaluate).analyze(
            results_dir=str(tmp_path / "results"))
    finally:
        listeners.set_run_listener_factory("test", None, kind=listeners.ANALYSIS)
    (recorder,) = made
    assert recorder.model_name == "broken" and recorder.closed == [None]
    assert result.log_folder == Recorder.folder
    last = dict(recorder.heard)
    assert set(last) == {"summary", "sensitivity", "per_layer_quant_enabled",
                         "per_layer_quant_disabled", "min_max_ranges", "histograms",
                         "per_layer_sqnr", "weight_sqnr"}
    assert recorder.heard[0][0] == "summary" and last["summary"]["status"] == "complete"
    assert last["per_layer_sqnr"] == load(tmp_path / "results", "per_layer_sqnr.json")
    assert last["per_layer_quant_enabled"]["complete"] is True
    assert last["per_layer_quant_enabled"]["worst_layers"]["enabled"]["layers"][0]["layer"] \
        == BROKEN == result.ranking("per_layer_quant_enabled")[0]


def test_sensitivity_scores_are_tensorboard_scalars(run):
    _, result, _, logs = run
    tables_run = os.path.relpath(os.path.join(result.log_folder, "quant_analyzer"), logs)
    with tensorboard_provider(logs, "python") as (provider, ctx, experiment):
        scalars = provider.read_scalars(ctx, experiment_id=experiment, plugin_name="scalars",
                                        downsample=10)[tables_run]
    assert all(len(data) == 1 for data in scalars.values())  # one step each
    assert {tag: data[0].value for tag, data in scalars.items()} == pytest.approx({
        "sensitivity/W32A32": result.sensitivity["fp32"],
        "sensitivity/W8A32": result.sensitivity["weights_only"],
        "sensitivity/W32A8": result.sensitivity["activations_only"],
        "sensitivity/W8A8": result.sensitivity["fully_quantized"],
    }, rel=1e-6)


def _analyze_logged(tmp_path, caplog, scores):
    """A logged analysis of the broken model whose eval scores are `scores` at those
    evaluations (1-based) and the true ones elsewhere: (result, task, model)."""
    model = build_broken_model()
    task = Task(model)

    def evaluate(m):
        score = task.evaluate(m)  # counts the evaluation
        return scores.get(task.evaluations, score)

    log_lib.set_log_folder(tmp_path / "logs")
    try:
        with caplog.at_level("WARNING", logger="mct_logger"):
            result = QuantAnalyzer(model, task.calibrate, evaluate).analyze(
                results_dir=str(tmp_path / "results"))
    finally:
        log_lib.set_log_folder(None)
    return result, task, model


def test_finite_eval_scores_beyond_float32_are_left_out_of_the_scalars_and_named(tmp_path, caplog):
    """TensorBoard stores scalars as float32: a score of 1e39 would read back as Inf."""
    result, _, _ = _analyze_logged(  # W32A32, W32A8: finite, beyond float32
        tmp_path, caplog, {1: 1e39, 3: -1e39})
    assert result.status == "complete"
    assert result.sensitivity["fp32"] == 1e39 and result.sensitivity["activations_only"] == -1e39
    warned = [r.getMessage() for r in caplog.records if "beyond float32" in r.getMessage()]
    assert len(warned) == 1 and "W32A32 (1e+39), W32A8 (-1e+39)" in warned[0], warned
    assert load(tmp_path / "results", "sensitivity.json")["fp32"] == 1e39
    tables_run = os.path.relpath(os.path.join(result.log_folder, "quant_analyzer"),
                                 tmp_path / "logs")
    for loader in ("python", "rust"):
        with tensorboard_provider(tmp_path / "logs", loader) as (provider, ctx, experiment):
            scalars = provider.read_scalars(ctx, experiment_id=experiment, plugin_name="scalars",
                                            downsample=10)[tables_run]
            tables = {tag: table for _, tag, _, table in reader.read_payloads(
                provider, ctx, experiment, "quant_analyzer", run=tables_run)}
        assert sorted(scalars) == ["sensitivity/W8A32", "sensitivity/W8A8"]  # never an Inf point
        assert all(np.isfinite(d[0].value) for d in scalars.values())
        assert tables["sensitivity"]["fp32"] == 1e39  # the tab has the score (JSON is float64)


def test_a_non_finite_eval_score_is_refused_for_fp32_and_otherwise_warned_once(tmp_path, caplog):
    result, task, model = _analyze_logged(  # W8A32, W32A8, the 1st layer alone
        tmp_path, caplog, {2: float("nan"), 3: float("inf"), 5: float("nan")})
    assert result.status == "complete"
    warned = [r.getMessage() for r in caplog.records if "eval_callback returned" in r.getMessage()]
    assert warned == [warned[0]] and "nan for the weights_only model (W8A32)" in warned[0]
    sensitivity = load(tmp_path / "results", "sensitivity.json")
    assert sensitivity["weights_only"] is None and sensitivity["activations_only"] is None
    assert load(tmp_path / "results", "per_layer_quant_enabled.json")[result.layers[0]] is None
    tables_run = os.path.relpath(os.path.join(result.log_folder, "quant_analyzer"),
                                 tmp_path / "logs")
    with tensorboard_provider(tmp_path / "logs", "python") as (provider, ctx, experiment):
        scalars = provider.read_scalars(ctx, experiment_id=experiment, plugin_name="scalars",
                                        downsample=10)[tables_run]
    assert sorted(scalars) == ["sensitivity/W32A32", "sensitivity/W8A8"]  # no NaN/Inf points
    assert all(np.isfinite(d[0].value) for d in scalars.values())

    task.evaluations = 0
    calls = []
    with pytest.raises(ValueError, match=r"eval_callback returned nan for the fp32 model "
                                         r"\(W32A32\).*finite number"):
        QuantAnalyzer(model, task.calibrate, lambda m: calls.append(1) or float("nan")).analyze(
            results_dir=str(tmp_path / "fp32"))
    assert calls == [1]  # no evaluation after the float model's
    summary = load(tmp_path / "fp32", "summary.json")
    assert summary["status"] == "failed" and "eval_callback returned nan" in summary["error"]
    assert os.path.exists(tmp_path / "fp32" / "weight_sqnr.json")  # finished tables kept
