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
