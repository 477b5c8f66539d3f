"""Shared test helpers."""

import contextlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def norm_relative_error(a, b) -> float:
    """`||a - b|| / ||b||` over all elements (0 when both are all zeros)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    denominator = np.linalg.norm(b)
    numerator = np.linalg.norm(a - b)
    if denominator == 0.0:
        return float(numerator)
    return float(numerator / denominator)


@contextlib.contextmanager
def tensorboard_provider(logdir, loader):
    """TensorBoard's own data provider over `logdir`: the Python event multiplexer
    (`--load_fast=false`) or the Rust data server (`--load_fast=true`).

    Yields `(provider, ctx, experiment_id)`. Sampling is TensorBoard's default for
    the CLI, so tests see what users see.
    """
    from tensorboard import context
    from tensorboard.backend.event_processing import data_ingester, plugin_event_multiplexer
    from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider

    ctx = context.RequestContext()
    if loader == "python":
        multiplexer = plugin_event_multiplexer.EventMultiplexer(
            size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE,
            tensor_size_guidance=data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE,
        )
        multiplexer.AddRunsFromDirectory(str(logdir))
        multiplexer.Reload()
        yield MultiplexerDataProvider(multiplexer, str(logdir)), ctx, ""
        return
    from tensorboard.data import server_ingester
    from tensorboard.util import grpc_util

    ingester = server_ingester.SubprocessServerDataIngester(
        server_ingester.get_server_binary(), str(logdir), reload_interval=0,
        channel_creds_type=grpc_util.ChannelCredsType.LOCAL,
    )
    ingester.start()
    provider = ingester.data_provider
    deadline = time.time() + 60
    while not provider.list_runs(ctx, experiment_id="") and time.time() < deadline:
        time.sleep(0.2)  # the server loads the folder once, in the background
    time.sleep(0.5)
    yield provider, ctx, ""


@contextlib.contextmanager
def tensorboard_server(logdir, load_fast: str = "true"):
    """A real `tensorboard` (this environment's, so our plugins load) on a free port.

    Yields its base URL; the server is stopped on exit.
    """
    import re
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
         "--port", "0", f"--load_fast={load_fast}", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        url, seen = None, []
        deadline = time.time() + 120
        while url is None and time.time() < deadline:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                break
            seen.append(line)
            match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            if match:
                url = match.group(1)
        if url is None:
            raise RuntimeError("TensorBoard did not start:\n" + "".join(seen[-20:]))
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def chromium_page(viewport=(1400, 900)):
    """A Playwright page in Debian's headless Chromium; collects console errors in `page.errors`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.errors = []
            page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page.errors.append(str(e)))
            yield page
        finally:
            browser.close()


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = os.environ.get("MCT_TEST_ARTIFACTS", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "artifacts"))


def screenshot(page, name: str) -> str:
    """Saves a screenshot as a test artifact (artifacts/ is not committed)."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name)
    page.screenshot(path=path)
    return path
