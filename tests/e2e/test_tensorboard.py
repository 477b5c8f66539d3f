"""End to end: a real TensorBoard on a fresh log folder, looked at in headless Chromium."""

import pytest

import mct_logger
from mct_logger.demo import build_digits_cnn, load_digits_split
from tests.helpers import BROWSER_WAIT_MS, chromium_page, screenshot, tensorboard_server

pytestmark = pytest.mark.e2e  # a real TensorBoard and headless Chromium


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("tb")
    data = load_digits_split()
    mct_logger.set_log_folder(folder, run_name="digits")
    try:
        mct_logger.keras_post_training_quantization(build_digits_cnn(), data.x_train[:64])
    finally:
        mct_logger.set_log_folder(None)
    return folder


@pytest.mark.parametrize("load_fast", ["true", "false"])
def test_graphs_histograms_scalars_and_images_show_data(logdir, load_fast):
    with tensorboard_server(logdir, load_fast) as url, chromium_page() as page:
        # Graphs: the quantized-model run is offered and its graph renders, node by node.
        # (The node card's memory stats and attributes are read back through both of
        # TensorBoard's loaders in tests/tensorboard/test_ptq_log.py; clicking the node
        # here showed them only intermittently after the issue 25-30 merges.)
        page.goto(url + "#graphs")
        page.wait_for_selector("tf-graph-dashboard paper-dropdown-menu", timeout=BROWSER_WAIT_MS)
        page.locator("paper-dropdown-menu", has_text="digits/00_initial_graph").click()
        page.locator("paper-item", has_text="digits/07_quantized_model").click()
        page.locator('g.node[data-name="stem"] .nodeshape').first.wait_for(
            state="attached", timeout=BROWSER_WAIT_MS)
        screenshot(page, f"graphs_{load_fast}.png")

        # Histograms: float (statistics run) and quantized (final run) under one tag
        page.goto(url + "#histograms")
        page.get_by_text("activations/classifier").first.wait_for(timeout=BROWSER_WAIT_MS)
        page.locator("tf-histogram-dashboard svg path").first.wait_for(state="attached",
                                                                       timeout=BROWSER_WAIT_MS)
        screenshot(page, f"histograms_{load_fast}.png")

        # Scalars: per-channel min/max/mean charts
        page.goto(url + "#scalars")
        page.get_by_text("channel_stats/classifier").first.wait_for(timeout=BROWSER_WAIT_MS)
        screenshot(page, f"scalars_{load_fast}.png")

        # Images: all 20 per-sample similarity plots plus the summary
        page.goto(url + "#images")
        page.get_by_text("cosine_similarity/sample_00").first.wait_for(timeout=BROWSER_WAIT_MS)
        loaded = page.wait_for_function(  # images decode after their cards are drawn
            """() => {
                const found = [];
                const walk = (root) => root.querySelectorAll('*').forEach((el) => {
                    if (el.tagName === 'IMG' && el.naturalWidth > 0) found.push(el.src);
                    if (el.shadowRoot) walk(el.shadowRoot);
                });
                walk(document);
                return found.length >= 2 ? found.length : false;
            }""", timeout=BROWSER_WAIT_MS).json_value()
        assert loaded >= 2
        screenshot(page, f"images_{load_fast}.png")
        # the 20th sample and the summary are there too (past the first page)
        for tag in ("cosine_similarity/sample_19", "cosine_similarity/summary"):
            page.goto(url + "#images&tagFilter=" + tag.replace("/", "%2F"))
            page.reload()
            page.get_by_text(tag, exact=True).first.wait_for(timeout=BROWSER_WAIT_MS)
        assert not [e for e in page.errors if "favicon" not in e], page.errors
