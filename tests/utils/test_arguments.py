"""Every public argument of every entry point, given a wrong type or value: an error
(TypeError or ValueError) naming the argument, before any work: nothing logged,
nothing written, no model run. One table row per argument and wrong value."""

import os
import pathlib

import keras
import numpy as np
import pytest

import mct_logger
from mct_logger import LayerOverride, QuantizationConfig

X = np.random.default_rng(0).random((32, 8, 8, 3), dtype=np.float32)


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), name="img")
    h = keras.layers.Conv2D(4, 3, name="conv")(inp)
    return keras.Model(inp, keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(h)),
                       name="args")


MODEL = _model()
EV = lambda m: 0.5  # noqa: E731
FWD = lambda m: m.predict(X, verbose=0)  # noqa: E731


def ptq(**kwargs):
    return lambda: mct_logger.keras_post_training_quantization(
        kwargs.get("model", MODEL), kwargs.get("data", X), kwargs.get("config"))


def qc(**kwargs):
    return lambda: QuantizationConfig(**kwargs)


def lo(**kwargs):
    return lambda: LayerOverride(**kwargs)


def search(**kwargs):
    args = dict(model=MODEL, representative_data=X, weights_memory=1e9)
    args.update(kwargs)
    return lambda: mct_logger.search_mixed_precision(**args)


def compress(**kwargs):
    args = dict(model=MODEL, eval_callback=EV, target_comp_ratio=0.8,
                num_comp_ratio_candidates=3, scheme="weight_svd")
    args.update(kwargs)
    return lambda: mct_logger.compress_model(**args)


def analyzer(**kwargs):
    args = dict(model=MODEL, forward_pass_callback=FWD, eval_callback=EV)
    args.update(kwargs)
    return lambda: mct_logger.QuantAnalyzer(**args)


def analyze(tmp, **kwargs):
    args = dict(results_dir=str(tmp / "qa"))
    args.update(kwargs)
    return lambda: mct_logger.QuantAnalyzer(MODEL, FWD, EV).analyze(**args)


def bias(**kwargs):
    args = dict(model=MODEL, representative_data=X)
    args.update(kwargs)
    return lambda: mct_logger.correct_bias(**args)


def quantized():
    if not hasattr(quantized, "value"):
        quantized.value = mct_logger.keras_post_training_quantization(MODEL, X)
    return quantized.value


ROWS = {
    # keras_post_training_quantization
    "ptq model": ("model", lambda t: ptq(model="m")),
    "ptq model is a layer": ("model", lambda t: ptq(model=keras.layers.Dense(2))),
    "ptq config": ("config", lambda t: ptq(config={"weight_bits": 4})),
    # QuantizationConfig
    **{f"config {f}={v!r}": (f, lambda t, f=f, v=v: qc(**{f: v})) for f, v in [
        ("weight_bits", "8"), ("weight_bits", 8.0), ("weight_bits", True), ("weight_bits", None),
        ("activation_bits", 1), ("weight_per_channel", "yes"), ("weight_symmetric", 1),
        ("activation_symmetric", None), ("activation_per_channel", 0),
        ("weight_observer", None), ("weight_observer", "minmax"), ("weight_observer", ["mse"]),
        ("activation_observer", None), ("activation_observer", 3),
        ("quantize_inputs", "no"), ("batch_size", 0), ("batch_size", True),
        ("batch_size", 2.5), ("num_calibration_samples", 0), ("num_calibration_samples", "all"),
        ("overrides", [("conv", LayerOverride())]), ("overrides", {1: LayerOverride()}),
        ("overrides", {"conv": {"weight_bits": 4}}), ("overrides", {"(": LayerOverride()}),
        ("encodings_file", 3), ("encodings_file", ["a"]), ("encodings_file", b"e.json"),
        ("encodings_file", ""), ("analyze_similarity", "yes"), ("similarity_samples", 0),
        ("similarity_samples", True), ("cross_layer_equalization", None),
        ("bias_correction", "always"), ("bias_correction", ["empirical"]),
        ("bias_correction", True)]},
    # LayerOverride
    **{f"override {f}={v!r}": (f, lambda t, f=f, v=v: lo(**{f: v})) for f, v in [
        ("weight_bits", "4"), ("activation_bits", 17), ("weight_per_channel", "no"),
        ("weight_symmetric", 0), ("activation_symmetric", "x"), ("activation_per_channel", 1),
        ("weight_observer", "percentile"), ("activation_observer", 2), ("keep_float", "yes"),
        ("keep_float", None)]},
    # search_mixed_precision
    "search model": ("model", lambda t: search(model=None)),
    "search eval_callback": ("eval_callback", lambda t: search(eval_callback=0.9)),
    "search weights_memory str": ("weights_memory", lambda t: search(weights_memory="1MB")),
    "search weights_memory bool": ("weights_memory", lambda t: search(weights_memory=True)),
    "search max_accuracy_drop": ("max_accuracy_drop", lambda t: search(
        max_accuracy_drop="1%", eval_callback=EV)),
    "search bit_candidates int": ("bit_candidates", lambda t: search(bit_candidates=8)),
    "search bit_candidates str": ("bit_candidates", lambda t: search(bit_candidates="48")),
    "search config": ("config", lambda t: search(config={"weight_bits": 4})),
    # compress_model
    "compress model": ("model", lambda t: compress(model=[MODEL])),
    "compress eval_callback": ("eval_callback", lambda t: compress(eval_callback=None)),
    "compress target_comp_ratio": ("target_comp_ratio", lambda t: compress(
        target_comp_ratio="0.5")),
    "compress scheme": ("scheme", lambda t: compress(scheme=["weight_svd"])),
    "compress cost_metric": ("cost_metric", lambda t: compress(cost_metric=None)),
    "compress candidates": ("num_comp_ratio_candidates", lambda t: compress(
        num_comp_ratio_candidates=3.0)),
    "compress layers_to_ignore int": ("layers_to_ignore", lambda t: compress(
        layers_to_ignore=3)),
    "compress layers_to_ignore ints": ("layers_to_ignore", lambda t: compress(
        layers_to_ignore=[1])),
    "compress layers_to_ignore dict": ("layers_to_ignore", lambda t: compress(
        layers_to_ignore={"conv": True})),
    "compress eval_scores_file int": ("eval_scores_file", lambda t: compress(
        eval_scores_file=3)),
    "compress eval_scores_file list": ("eval_scores_file", lambda t: compress(
        eval_scores_file=["s.json"])),
    "compress forward_pass_callback": ("forward_pass_callback", lambda t: compress(
        scheme="channel_pruning", forward_pass_callback=X)),
    "compress listeners": ("listeners", lambda t: compress(listeners=print)),
    "compress listeners entry": ("listeners", lambda t: compress(listeners=["x"])),
    # QuantAnalyzer and its methods
    "analyzer model": ("model", lambda t: analyzer(model="m")),
    "analyzer forward_pass_callback": ("forward_pass_callback", lambda t: analyzer(
        forward_pass_callback=X)),
    "analyzer eval_callback": ("eval_callback", lambda t: analyzer(eval_callback=1.0)),
    "analyzer layers_to_ignore": ("layers_to_ignore", lambda t: analyzer(layers_to_ignore=3)),
    "analyzer dummy_input": ("dummy_input", lambda t: analyzer(dummy_input="x")),
    "analyze config": ("config", lambda t: analyze(t, config=8)),
    "analyze results_dir int": ("results_dir", lambda t: analyze(t, results_dir=3)),
    "analyze results_dir list": ("results_dir", lambda t: analyze(t, results_dir=["a"])),
    "analyze aimet setting": ("quant_scheme", lambda t: analyze(t, quant_scheme=3)),
    "mse num_batches": ("num_batches", lambda t: lambda: mct_logger.QuantAnalyzer(
        MODEL, FWD, EV).enable_per_layer_mse_loss(X, num_batches="2")),
    "recommend max_accuracy_drop": ("max_accuracy_drop", lambda t: lambda: mct_logger.QuantAnalyzer(
        MODEL, FWD, EV).recommend(max_accuracy_drop="0.01")),
    # equalize_model, correct_bias
    "equalize model": ("model", lambda t: lambda: mct_logger.equalize_model("m")),
    "equalize eval_callback": ("eval_callback", lambda t: lambda: mct_logger.equalize_model(
        MODEL, eval_callback=0.5)),
    "equalize high_bias_fold": ("high_bias_fold", lambda t: lambda: mct_logger.equalize_model(
        MODEL, high_bias_fold="yes")),
    "bias model": ("model", lambda t: bias(model=None)),
    "bias config": ("config", lambda t: bias(config={"weight_bits": 4})),
    "bias mode": ("mode", lambda t: bias(mode=["empirical"])),
    "bias equalization": ("equalization", lambda t: bias(equalization={"conv": 1})),
    # set_log_folder
    "log folder int": ("path", lambda t: lambda: mct_logger.set_log_folder(3)),
    "log folder list": ("path", lambda t: lambda: mct_logger.set_log_folder([str(t)])),
    "log run_name": ("run_name", lambda t: lambda: mct_logger.set_log_folder(str(t), run_name=5)),
    # set_quantizers_enabled, export_encodings
    "switch model": ("model", lambda t: lambda: mct_logger.set_quantizers_enabled(
        MODEL, weights=False)),
    "switch weights": ("weights", lambda t: lambda: mct_logger.set_quantizers_enabled(
        quantized()[0], weights="off")),
    "switch activations": ("activations", lambda t: lambda: mct_logger.set_quantizers_enabled(
        quantized()[0], activations=0)),
    "switch nodes int": ("nodes", lambda t: lambda: mct_logger.set_quantizers_enabled(
        quantized()[0], weights=False, nodes=3)),
    "export int": ("path", lambda t: lambda: quantized()[1].export_encodings(3)),
    "export list": ("path", lambda t: lambda: quantized()[1].export_encodings(["e.json"])),
    # export_litert
    "litert path int": ("path", lambda t: lambda: quantized()[1].export_litert(3)),
    "litert path list": ("path", lambda t: lambda: quantized()[1].export_litert([str(t)])),
    "litert io_dtype": ("io_dtype", lambda t: lambda: quantized()[1].export_litert(
        str(t / "m.tflite"), io_dtype="int16")),
    "litert parity_samples 0": ("parity_samples", lambda t: lambda: quantized()[1].export_litert(
        str(t / "m.tflite"), parity_samples=0)),
    "litert parity_samples str": ("parity_samples", lambda t: lambda: quantized()[
        1].export_litert(str(t / "m.tflite"), parity_samples="all")),
    # Encoding (set on a quantizer by hand): refused when made, not when applied
    **{f"encoding {f}={v!r}": (f, lambda t, f=f, v=v: lambda: mct_logger.Encoding(
        **{**dict(scale=np.float64(0.1), offset=np.float64(-128.0), bitwidth=8,
                  is_symmetric=True), f: v})) for f, v in [
        ("scale", 0.0), ("scale", -1.0), ("scale", np.array([0.1, np.nan])), ("scale", "0.1"),
        ("scale", np.ones((2, 2))), ("offset", 5.0), ("offset", -300.0), ("offset", -1.5),
        ("offset", np.array([-128.0, -128.0])), ("bitwidth", 0), ("bitwidth", 8.0),
        ("is_symmetric", 1)]},
    # AdaRoundConfig
    **{f"adaround {f}={v!r}": (f, lambda t, f=f, v=v: lambda: mct_logger.AdaRoundConfig(
        **{f: v})) for f, v in [
        ("iterations", -1), ("iterations", "100"), ("batch_size", 0), ("learning_rate", 0.0),
        ("reg_weight", -1.0), ("beta_range", (2, 20)), ("warm_start", 1.0),
        ("num_samples", 0), ("cache_mib", -1), ("seed", "0")]},
    # evaluators
    **{f"ray {f}={v!r}": (f, lambda t, f=f, v=v: lambda: __import__(
        "mct_logger.evaluators", fromlist=["Ray"]).Ray(**{f: v})) for f, v in [
        ("num_workers", 0), ("num_workers", "2"), ("num_cpus_per_worker", -1),
        ("num_gpus_per_worker", "1"), ("max_retries", -1), ("address", 3),
        ("runtime_env", "env")]},
    # listeners
    "stage listener": ("listener", lambda t: lambda: mct_logger.add_stage_listener(3)),
    "run listener factory": ("factory", lambda t: lambda: mct_logger.set_run_listener_factory(
        "mine", 3)),
    "run listener kind": ("kind", lambda t: lambda: mct_logger.set_run_listener_factory(
        "mine", print, kind="training")),
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_a_wrong_argument_is_refused_naming_it_before_any_work(row, tmp_path):
    argument, make = ROWS[row]
    before = set(os.listdir(tmp_path))
    with pytest.raises((TypeError, ValueError)) as raised:
        make(tmp_path)()
    assert argument in str(raised.value), f"{row}: {type(raised.value).__name__}: {raised.value}"
    assert set(os.listdir(tmp_path)) == before, f"{row} wrote {os.listdir(tmp_path)}"


def test_ptq_with_a_wrong_config_logs_no_stage(tmp_path):
    mct_logger.set_log_folder(tmp_path, run_name="r")
    try:
        with pytest.raises((TypeError, ValueError), match="weight_observer"):
            mct_logger.keras_post_training_quantization(
                MODEL, X, QuantizationConfig(weight_observer=None))
    finally:
        mct_logger.set_log_folder(None)
    assert not (tmp_path / "r").exists()


def test_paths_and_names_that_are_right_pass(tmp_path):
    config = QuantizationConfig(encodings_file=pathlib.Path(tmp_path / "e.json"))
    assert config.encodings_file == str(tmp_path / "e.json")
    _, info = quantized()
    assert info.export_encodings(pathlib.Path(tmp_path / "x.json")) == str(tmp_path / "x.json")
    model_q = quantized()[0]
    mct_logger.set_quantizers_enabled(model_q, weights=False, nodes=("conv",))
    mct_logger.set_quantizers_enabled(model_q, weights=True, nodes="conv")  # one name, not chars
