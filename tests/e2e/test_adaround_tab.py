"""End to end: a PTQ run with AdaRound and one without, in a real TensorBoard, the
QuantAnalyzer tab opened in headless Chromium: the AdaRound run's layer table has
the AdaRound columns, and the two runs compare with their rounding named."""

import numpy as np
import pytest

import mct_logger
from mct_logger.quantization.config import AdaRoundConfig, QuantizationConfig
from tests.e2e.test_dashboards import errors_of, open_tab, select_runs
from tests.helpers import BROWSER_WAIT_MS, chromium_page, conv_dense_model, tensorboard_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def adaround_logs(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("adaround_logs")
    model = conv_dense_model(input_shape=(6, 6, 2), filters=4, hidden=8, relu_layer=True)
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 2)).astype("float32")
    try:
        mct_logger.set_log_folder(logdir, run_name="ptq_plain")
        mct_logger.keras_post_training_quantization(model, x, QuantizationConfig(weight_bits=4))
        mct_logger.set_log_folder(logdir, run_name="ptq_learned")
        _, info = mct_logger.keras_post_training_quantization(
            model, x, QuantizationConfig(weight_bits=4, adaround=AdaRoundConfig(
                iterations=50, learning_rate=1e-2)))
    finally:
        mct_logger.set_log_folder(None)
    return logdir, info


def test_the_layer_table_shows_adaround_and_two_runs_compare(adaround_logs):
    logdir, info = adaround_logs
    learned = info.stage_results["adaround"].layers
    with tensorboard_server(logdir, "false") as url, chromium_page() as page:
        frame = open_tab(page, url, "quant_analyzer")
        select_runs(frame, ["ptq_learned"])
        frame.locator("button.qa-tab[data-view='layers']").click()
        panel = frame.locator(".qa-panel[data-view='layers']")
        panel.locator("tbody tr").first.wait_for(timeout=BROWSER_WAIT_MS)
        headers = panel.locator("thead th").all_inner_texts()
        column = next(i for i, t in enumerate(headers) if "rounded away from nearest" in t)
        assert any("AdaRound: loss learned" in t for t in headers), headers
        row = panel.locator("tbody tr", has_text="wide").first
        shown = row.locator("td").nth(column).inner_text()
        assert shown == f"{100 * learned['wide'].flipped_fraction:.1f}%"

        select_runs(frame, ["ptq_learned", "ptq_plain"])
        summary = frame.locator("table").first.inner_text()
        assert "weight rounding" in summary and "AdaRound" in summary and "nearest" in summary
        assert not errors_of(page), page.errors
