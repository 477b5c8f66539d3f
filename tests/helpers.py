"""Shared test helpers: error measures, TensorBoard's own data provider and server,
headless Chromium, and hostile plugin payloads. Fixtures are in conftest.py."""

import contextlib
import glob
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
    # the server loads the folder once, in the background: wait until it lists every
    # run folder (one holding an event file) that is on disk
    expected = {os.path.relpath(os.path.dirname(p), str(logdir)).replace(os.sep, "/")
                for p in glob.glob(os.path.join(str(logdir), "**", "events.out.tfevents.*"),
                                   recursive=True)}
    deadline = time.time() + 60
    while time.time() < deadline:
        listed = {run.run_name for run in provider.list_runs(ctx, experiment_id="")}
        if listed and expected <= listed:
            break
        time.sleep(0.2)  # polling the condition, not a pause
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


# The longest a browser test waits for one condition (Playwright's defaults: 5 s for
# `expect`, 30 s for actions).
BROWSER_WAIT_MS = 90_000


@contextlib.contextmanager
def chromium_page(viewport=(1400, 900)):
    """A Playwright page in Debian's headless Chromium; collects console errors in `page.errors`.

    Waits are conditions with long limits (`BROWSER_WAIT_MS`): on a fast machine
    they return as soon as the page is ready, and on a shared, loaded CI machine
    (two CPU hogs beside the suite) a table can take longer than Playwright's
    default 5 s for `expect` to appear after a click."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=BROWSER_WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.set_default_timeout(BROWSER_WAIT_MS)
            page.set_default_navigation_timeout(2 * BROWSER_WAIT_MS)
            page.errors = []
            page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page.errors.append(str(e)))
            try:
                yield page
            except BaseException as exc:  # what the page showed when the test failed
                _note_page_state(exc, page)
                raise
        finally:
            browser.close()


def _note_page_state(exc: BaseException, page) -> None:
    """Adds to `exc` the page's console errors and each frame's text (a browser
    test's failure then says what the page showed), and saves a screenshot."""
    lines = [f"console errors: {getattr(page, 'errors', [])}"]
    for frame in page.frames:
        try:
            text = frame.evaluate("() => document.body ? document.body.innerText : ''")
        except Exception as error:  # a detached or hung frame
            text = f"<unreadable: {type(error).__name__}>"
        lines.append(f"frame {frame.url}: {' '.join(str(text).split())[:1500]!r}")
    try:
        lines.append(f"screenshot: {screenshot(page, 'failed_' + str(int(time.time())) + '.png')}")
    except Exception:
        pass
    exc.add_note("\n".join(lines))


def plugin_frame(page, name):
    """The iframe of our plugin tab `name` inside TensorBoard's page."""
    return page.frame_locator(f'iframe[src*="plugin_entry.html?name={name}"]')


def tab_frame(page, name, timeout_s: float = 60):
    """The `Frame` of our plugin tab `name` (for `wait_for_function`: a condition
    read in one JavaScript turn, so no element can vanish between two reads)."""
    import time

    deadline = time.time() + timeout_s
    while True:
        for frame in page.frames:
            if f"plugin_entry.html?name={name}" in frame.url:
                return frame
        assert time.time() < deadline, f"no {name} tab frame in {[f.url for f in page.frames]}"
        page.wait_for_event("frameattached", timeout=timeout_s * 1000)


def until(frame, condition: str, timeout_s: float = 120, arg=None):
    """Waits until the JavaScript `condition` (a function of `arg`) is truthy in
    `frame`; returns its value (a state read at one instant)."""
    return frame.wait_for_function(condition, arg=arg, timeout=timeout_s * 1000).json_value()


# A script's eval callback gated by the test: `gate()` (in the script) blocks the
# n-th call until the file `open_<k>` with k >= n exists in the gate folder, so a
# live test holds a run at a chosen point instead of racing it with pauses.
GATE_CODE = """
import glob as _glob, os as _os, time as _time
_calls = [0]
def gate(folder):
    _calls[0] += 1
    while _calls[0] > max([int(p.rsplit("_", 1)[1]) for p in _glob.glob(_os.path.join(
            folder, "open_*"))] or [0]):
        _time.sleep(0.02)
"""


def open_gate(folder, calls: int) -> None:
    """Lets a gated script (GATE_CODE) run its eval callback up to `calls` times."""
    open(os.path.join(str(folder), f"open_{calls}"), "w").close()


def retry(action, timeout_s: float = 120):
    """Runs `action` (which waits on a condition and raises on timeout) until it
    succeeds: for a UI step that can be undone by a late reload (a menu opened
    before its items arrived). Raises its last error after `timeout_s`."""
    import time

    deadline = time.time() + timeout_s
    while True:
        try:
            return action()
        except Exception:
            if time.time() > deadline:
                raise


def wait_for_tab(page, url, name, ready, deadline, writer=None):
    """Reloads `url#name` until the tab shows `ready` (a selector): TensorBoard lists
    a plugin only once it has read its first payload. While waiting, the process
    `writer` (if given) must still be running. Returns the tab's frame."""
    import time

    frame = plugin_frame(page, name)
    while time.time() < deadline:
        assert writer is None or writer.poll() is None, writer.stderr.read()
        page.goto(f"{url}#{name}")
        try:
            frame.locator(ready).wait_for(timeout=5_000)
            break
        except Exception:
            continue  # not listed yet: reload and wait again
    return frame


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = os.environ.get("MCT_TEST_ARTIFACTS", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "artifacts"))


def screenshot(page, name: str) -> str:
    """Saves a screenshot as a test artifact (artifacts/ is not committed)."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name)
    page.screenshot(path=path)
    return path


# tag -> what is wrong with it; every one must be reported and skipped, never raised
HOSTILE = {
    "not_json": "the payload is not JSON",
    "wrong_shape": "has no list 'rows'",
    "unknown_kind": "Unknown quant_analyzer payload kind",
    "newer_version": "Upgrade mct-logger",
    "malformed_content": "Malformed quant_analyzer plugin content",
    "float_tensor": "the payload is not JSON",
}
# Plugin content whose kind or version is not a string and a positive integer:
# tag -> content; each is reported as malformed (HOSTILE) and skipped.
MALFORMED_CONTENT = {
    "version_infinity": b'{"kind": "summary", "version": 1e999}',
    "version_nan": b'{"kind": "summary", "version": NaN}',
    "version_bool": b'{"kind": "summary", "version": true}',
    "version_float": b'{"kind": "summary", "version": 1.5}',
    "version_string": b'{"kind": "summary", "version": "1"}',
    "version_negative": b'{"kind": "summary", "version": -1}',
    "version_huge": b'{"kind": "summary", "version": 1' + b"0" * 40 + b"}",
    "version_too_long": b'{"kind": "summary", "version": ' + b"9" * 5000 + b"}",
    "kind_list": b'{"kind": ["summary"], "version": 1}',
    "content_list": b'[{"kind": "summary", "version": 1}]',
}
HOSTILE.update({tag: "Malformed quant_analyzer plugin content" for tag in MALFORMED_CONTENT})
# Payload bodies (under good plugin content) that another writer could leave:
# tag -> (kind, body, what the problem says); each reported and skipped. One kind
# each, as the tabs read the newest payload of every kind.
_DEEP = 100_000
MALFORMED_BODY = {
    "body_nan": ("sensitivity", b'{"rows": [{"layer": "l0", "score": NaN}]}',
                 "holds the number NaN, which is not finite"),
    "body_infinity": ("per_layer_quant_enabled", b'{"rows": [{"layer": "l0", "x": Infinity}]}',
                      "holds the number Infinity, which is not finite"),
    "body_minus_infinity": ("min_max_ranges", b'{"rows": [{"layer": "l0", "x": [-Infinity, 1]}]}',
                            "holds the number -Infinity, which is not finite"),
    "body_1e999": ("histograms", b'{"rows": [{"layer": "l0", "x": -1e999}]}',
                   "holds the number -1e999, which is not finite"),
    "body_deep": ("layer_table", b'{"rows": ' + b"[" * _DEEP + b"]" * _DEEP + b"}",
                  "nested too deeply to read"),
}
HOSTILE.update({tag: reason for tag, (_, _, reason) in MALFORMED_BODY.items()})


def write_hostile_payloads(folder: str) -> None:
    """One TensorBoard run `<folder>/quant_analyzer` whose every payload is bad
    (see HOSTILE), and one good `per_layer_mse_loss` payload among them."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2

    from mct_logger.tensorboard.events import EventWriter
    from mct_logger.tb_plugin.summary import payload_summary

    def relabel(summary, tag, content=None):
        value = summary.value[0]
        value.tag = tag
        if content is not None:
            value.metadata.plugin_data.content = content
        return summary

    good = {"samples": 4, "batches": 1, "normalization": "mean", "rows": [{"layer": "x", "mse": 0.5}]}
    with EventWriter(f"{folder}/quant_analyzer") as writer:
        writer.add_summary(payload_summary("quant_analyzer", "per_layer_mse_loss", "good", good))
        bad = payload_summary("quant_analyzer", "per_layer_sqnr", "not_json", {"rows": []})
        bad.value[0].tensor.string_val[0] = b"{not json"
        writer.add_summary(bad)
        writer.add_summary(payload_summary("quant_analyzer", "weight_sqnr", "wrong_shape",
                                           {"samples": 3, "layers": ["a"]}))
        writer.add_summary(relabel(payload_summary("quant_analyzer", "summary", "x", {"status": "x"}),
                                   "unknown_kind", b'{"kind": "mystery", "version": 1}'))
        writer.add_summary(relabel(payload_summary("quant_analyzer", "summary", "x", {"status": "x"}),
                                   "newer_version", b'{"kind": "summary", "version": 99}'))
        writer.add_summary(relabel(payload_summary("quant_analyzer", "summary", "x", {"status": "x"}),
                                   "malformed_content", b"\xff not json"))
        floats = payload_summary("quant_analyzer", "summary", "float_tensor", {"status": "x"})
        floats.value[0].tensor.CopyFrom(tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, float_val=[1.5]))
        floats.value[0].metadata.data_class = summary_pb2.DATA_CLASS_TENSOR
        writer.add_summary(floats)
        for tag, content in MALFORMED_CONTENT.items():
            writer.add_summary(relabel(
                payload_summary("quant_analyzer", "summary", "x", {"status": "x"}), tag, content))
        for tag, (kind, body, _) in MALFORMED_BODY.items():
            bad = payload_summary("quant_analyzer", kind, tag, {"rows": []})
            bad.value[0].tensor.string_val[0] = body
            writer.add_summary(bad)


# ------------------------------------------------------------- the small model the tests share


def conv_dense_model(input_shape=(4, 4, 1), filters=2, outputs=3, hidden=None, *,
                     conv_activation=None, hidden_activation=None, relu_layer=False,
                     input_name="x", head_name="head", name="tiny", seed=0):
    """Input -> Conv2D(filters, 3) "conv" -> Flatten "flat" [-> Dense(hidden) "wide"
    [-> ReLU "relu"]] -> Dense(outputs) `head_name`: the small model most tests quantize.

    `relu_layer` puts the hidden layer's ReLU in its own layer (a fused activation
    the plan sees) instead of `hidden_activation`; weights are seeded by `seed`.
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name=input_name)
    h = keras.layers.Conv2D(filters, 3, activation=conv_activation, name="conv")(inputs)
    h = keras.layers.Flatten(name="flat")(h)
    if hidden is not None:
        h = keras.layers.Dense(hidden, activation=hidden_activation, name="wide")(h)
        if relu_layer:
            h = keras.layers.ReLU(name="relu")(h)
    return keras.Model(inputs, keras.layers.Dense(outputs, name=head_name)(h), name=name)


def padded_token_batches(vocab: int, length: int, count: int, segments: bool = True,
                         seed: int = 0) -> dict:
    """A KerasHub backbone's inputs: `count` token rows of `length`, each padded
    with 0 after a random length of at least 3, with its `padding_mask` (and
    zero `segment_ids` when `segments`)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab, (count, length)).astype("int32")
    mask = np.ones((count, length), "int32")
    for row, kept in enumerate(rng.integers(3, length + 1, count)):
        tokens[row, kept:] = 0
        mask[row, kept:] = 0
    x = {"token_ids": tokens, "padding_mask": mask}
    if segments:
        x["segment_ids"] = np.zeros((count, length), "int32")
    return x
