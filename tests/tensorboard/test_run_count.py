"""How many TensorBoard runs the README's flows leave: past 40 runs in one log
folder TensorBoard ticks none, and Scalars, Histograms and Images look empty."""

import logging
import os

import keras
import numpy as np

import mct_logger


def _tensorboard_runs(folder) -> set[str]:
    """Folders holding an event file: what TensorBoard lists as runs."""
    return {os.path.relpath(root, folder) for root, _, files in os.walk(folder)
            if any(f.startswith("events.out.tfevents") for f in files)}


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x), name="tiny")


def test_the_readme_flow_on_one_model_stays_under_40_runs(tmp_path, caplog):
    """PTQ, CLE PTQ, QuantAnalyzer, search, recommend, PTQ from JSON, one compression."""
    model = _model()
    x = np.random.default_rng(0).standard_normal((64, 8, 8, 3)).astype("float32")
    reference = model.predict(x, verbose=0)

    def evaluate(m):  # higher is better; FP32 scores 0
        return -float(np.mean((m.predict(x, verbose=0) - reference) ** 2))

    logs = tmp_path / "logs"
    mct_logger.set_log_folder(logs)
    try:
        with caplog.at_level(logging.INFO, logger="mct_logger"):
            _, info = mct_logger.keras_post_training_quantization(model, x)
            ptq_runs = _tensorboard_runs(logs)
            mct_logger.keras_post_training_quantization(
                model, x, mct_logger.QuantizationConfig(cross_layer_equalization=True))
            analyzer = mct_logger.QuantAnalyzer(model, lambda m: m.predict(x, verbose=0),
                                                evaluate)
            analyzer.analyze(results_dir=str(tmp_path / "qa"))
            weights = sum(m["weights"] for m in info.node_memory_after.values())
            mct_logger.search_mixed_precision(model, x, eval_callback=evaluate,
                                              weights_memory=0.75 * weights,
                                              bit_candidates=(4, 8))
            before = set(os.listdir(logs))
            config, recommendation = analyzer.recommend(max_accuracy_drop=1e9)
            recommend_folders = set(os.listdir(logs)) - before
            config.to_json(str(tmp_path / "recommended.json"))
            mct_logger.keras_post_training_quantization(
                model, x, mct_logger.QuantizationConfig.from_json(str(tmp_path / "recommended.json")))
            mct_logger.compress_model(model, evaluate, target_comp_ratio=0.5,
                                      num_comp_ratio_candidates=2,
                                      forward_pass_callback=lambda m: m.predict(x, verbose=0))
    finally:
        mct_logger.set_log_folder(None)
    # one PTQ call: a run per stage it runs (6: AdaRound and bias correction are off and
    # write none; the similarity analysis is part of the quantized model's run),
    # min/max/mean and accumulated/isolated are tags
    assert len(ptq_runs) == 6, sorted(ptq_runs)
    runs = _tensorboard_runs(logs)
    assert len(runs) < 40, sorted(runs)
    # recommend() with nothing to change logs the baseline once, and says so
    assert not recommendation.changes
    assert recommend_folders == {"tiny_recommend_baseline"}, recommend_folders
    assert any("the baseline already meets the target" in r.getMessage() for r in caplog.records)
    # the search's runs are told apart from the recommendation's
    assert {"tiny_search_baseline", "tiny_search_recommended"} <= set(os.listdir(logs))


def test_a_ptq_call_with_every_optional_stage_on_writes_at_most_8_runs(tmp_path):
    model = _model()
    x = np.random.default_rng(0).standard_normal((64, 8, 8, 3)).astype("float32")
    config = mct_logger.QuantizationConfig(
        cross_layer_equalization=True, bias_correction="empirical",
        adaround=mct_logger.AdaRoundConfig(iterations=20, batch_size=16))
    mct_logger.set_log_folder(tmp_path, run_name="all")
    try:
        mct_logger.keras_post_training_quantization(model, x, config)
    finally:
        mct_logger.set_log_folder(None)
    runs = sorted(_tensorboard_runs(tmp_path))
    assert runs == ["all/00_initial_graph", "all/01_batch_norm_folding",
                    "all/02_cross_layer_equalization", "all/03_statistics_collection",
                    "all/04_quantization_parameters", "all/05_adaround",
                    "all/06_bias_correction", "all/07_quantized_model"], "\n".join(runs)
