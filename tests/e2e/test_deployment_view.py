"""End to end: a PTQ run exported to LiteRT with a log folder set; the QuantAnalyzer
tab's Deployment view in headless Chromium under both TensorBoard loaders."""

import keras
import numpy as np
import pytest

import mct_logger
from tests.helpers import BROWSER_WAIT_MS, chromium_page, plugin_frame, screenshot, tensorboard_server

pytestmark = pytest.mark.e2e  # a real TensorBoard and headless Chromium


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.ReLU(6.0, name="stem_relu6")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = keras.layers.ReLU(6.0, name="dw_relu6")(y)
    x = keras.layers.Add(name="residual")([x, keras.layers.Conv2D(8, 1, name="project")(y)])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(6, name="logits")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="softmax")(x), name="deploy_net")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    x = np.random.default_rng(0).normal(size=(48, 12, 12, 3)).astype("float32")
    mct_logger.set_log_folder(logs, run_name="deploy")
    try:
        # the default (generic INT8) config: its per-channel Dense grid is adapted,
        # so the view has a flagged node to show
        _, info = mct_logger.keras_post_training_quantization(_model(), x)
        result = info.export_litert(str(tmp_path_factory.mktemp("out") / "deploy.tflite"))
    finally:
        mct_logger.set_log_folder(None)
    return logs, result


@pytest.fixture(scope="module", params=["true", "false"])
def server(request, exported):
    with tensorboard_server(exported[0], request.param) as url:
        yield url, request.param


def test_deployment_view_renders_with_zero_console_errors(server, exported):
    url, loader = server
    _, result = exported
    with chromium_page() as page:
        page.goto(f"{url}#quant_analyzer")
        frame = plugin_frame(page, "quant_analyzer")
        frame.locator("main[data-runs]").wait_for(timeout=BROWSER_WAIT_MS)
        # the PTQ run links to its export
        link = frame.locator(".qa-deploy-link")
        link.wait_for(timeout=BROWSER_WAIT_MS)
        assert "LiteRT int8 export" in link.inner_text()
        link.locator("button").click()
        panel = frame.locator(".qa-panel[data-view='deployment']")
        panel.locator(".js-plotly-plot").first.wait_for(timeout=BROWSER_WAIT_MS)
        text = panel.inner_text()
        assert "simulated → LiteRT: cosine" in text
        assert "int8 ops" in text and "float" in text
        points = panel.locator(".js-plotly-plot").first.evaluate(
            """(chart) => chart._fullData.filter((t) => t.mode === 'lines+markers')
                 .map((t) => t.y.filter((v) => v !== null).length)""")
        # the three curves; bit-exact values (>= 120 dB) are left out of the chart
        expected = [sum(getattr(r, field) < 120 for r in result.parity.nodes)
                    for field in ("sqnr_float_sim_db", "sqnr_float_litert_db", "sqnr_sim_litert_db")]
        assert points == expected, (points, expected)
        rows = panel.locator("tbody tr")
        first = rows.first.locator("td").first.inner_text()
        flagged = [r.node for r in result.parity.flagged]
        if flagged:  # flagged nodes first
            assert first == flagged[0] or first in flagged, (first, flagged)
        panel.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
        screenshot(page, f"deployment_view_{loader}.png")
        assert not [e for e in page.errors if "favicon" not in e], page.errors
