"""Each stage's text summary in TensorBoard says what the stage changed."""

import keras
import numpy as np

import mct_logger
from tests.helpers import tensorboard_provider


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="x")
    h = keras.layers.Conv2D(8, 3, name="conv_a")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(max_value=6, name="relu6")(h)
    h = keras.layers.DepthwiseConv2D(3, name="dw")(h)
    h = keras.layers.ReLU(name="relu")(h)
    return keras.Model(inputs, keras.layers.Conv2D(4, 1, name="conv_b")(h), name="dfq")


def _summaries(folder):
    with tensorboard_provider(folder, "python") as (data, ctx, eid):
        read = data.read_tensors(ctx, experiment_id=eid, plugin_name="text", downsample=10)
    return {run.split("/", 1)[1]: tags["summary"][0].numpy.item().decode()
            for run, tags in read.items() if "summary" in tags}


def test_cle_and_bias_correction_summaries_list_what_changed(tmp_path):
    x = np.random.default_rng(0).random((32, 8, 8, 3)).astype("float32")
    config = mct_logger.QuantizationConfig(cross_layer_equalization=True,
                                           bias_correction="empirical", analyze_similarity=False)
    mct_logger.set_log_folder(tmp_path / "on", run_name="r")
    try:
        _, info = mct_logger.keras_post_training_quantization(_model(), x, config)
        mct_logger.set_log_folder(tmp_path / "off", run_name="r")
        mct_logger.keras_post_training_quantization(
            _model(), x, mct_logger.QuantizationConfig(analyze_similarity=False))
    finally:
        mct_logger.set_log_folder(None)

    cle = info.stage_results["cross_layer_equalization"]
    text = _summaries(tmp_path / "on")["02_cross_layer_equalization"]
    assert f"equalized {len(cle.sets)} set(s)" in text and cle.sets
    for eq in cle.sets:
        for k, scales in enumerate(eq.scale_factors):
            assert (f"`{eq.members[k]}` -> `{eq.members[k + 1]}`" in text
                    and f"scale factors {np.min(scales):.3g} to {np.max(scales):.3g}" in text)
    assert f"high-bias folds (bias moved into the next layer): {len(cle.high_bias_folds)}" in text
    for fold in cle.high_bias_folds:
        assert f"`{fold.source}` -> `{fold.target}` ({fold.activation})" in text
    assert "ReLU6 replaced by ReLU (changes the float model): `relu6`" in text

    corrections = info.stage_results["bias_correction"].corrections
    text = _summaries(tmp_path / "on")["06_bias_correction"]
    assert f"corrected {len(corrections)} layer(s) (empirical, 32 samples" in text
    assert corrections
    for node, correction in corrections.items():
        amount = np.abs(correction.correction)
        assert (f"| `{node}` | empirical | {amount.size} | {amount.mean():.3g} | "
                f"{amount.max():.3g} |") in text

    text = _summaries(tmp_path / "off")["02_cross_layer_equalization"]
    assert "nothing changed" in text and "`cle` payload `weight_ranges`" in text
    assert "widest channel spread: `" in text
