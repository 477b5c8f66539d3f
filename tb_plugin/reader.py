"""Read path of mct-logger's plugin payloads, through TensorBoard's data provider only
(`context.multiplexer` is None under the Rust data server).

Each payload is read on its own: one that is malformed, of an unknown kind, of a
newer schema version, of the wrong shape or corrupted is reported as a
`Problem(run, tag, reason)` and skipped, and every other payload is still read.

Example:

```python
problems = []
for run, tag, info, table in read_payloads(provider, ctx, experiment_id, "cle", problems=problems):
    ...
for p in problems:
    print(p.run, p.tag, p.reason)
```
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging

from tensorboard.data import provider as provider_lib

from . import metadata

logger = logging.getLogger("mct_logger")

TENSOR = "tensor"
BLOB = "blob"


@dataclasses.dataclass(frozen=True)
class Problem:
    """A payload that could not be read, and why (shown to the user, never raised)."""

    run: str
    tag: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Series:
    """One payload series, listed without reading its data.

    `max_step` and `max_wall_time` change whenever a new datum is written, so
    they identify the newest version of a growing table (e.g. a live analysis).
    """

    run: str
    tag: str
    kind: str
    version: int
    storage: str  # TENSOR or BLOB
    max_step: int
    max_wall_time: float

    @property
    def fingerprint(self) -> tuple:
        return (self.max_step, self.max_wall_time)


def list_series(data_provider, ctx, experiment_id: str, plugin_name: str,
                run: str | None = None, problems: list | None = None) -> list[Series]:
    """Every payload series of the plugin (of one run, if given), without reading data.

    Series whose plugin content is malformed, of an unknown kind or newer than this
    reader go to `problems` (or a logged warning when `problems` is None).
    """
    run_filter = provider_lib.RunTagFilter(runs=[run]) if run is not None else None
    listings = ((TENSOR, data_provider.list_tensors), (BLOB, data_provider.list_blob_sequences))
    # Both listings at once: under the Rust data server each is a gRPC call of
    # about 40 ms, whatever its size.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        pending = [(storage, pool.submit(listing, ctx, experiment_id=experiment_id,
                                         plugin_name=plugin_name, run_tag_filter=run_filter))
                   for storage, listing in listings]
    found = []
    for storage, future in pending:
        for run_name, tags in future.result().items():
            for tag, series in tags.items():
                try:
                    info = metadata.parse_plugin_content(plugin_name, series.plugin_content)
                except metadata.PayloadError as exc:
                    _report(problems, Problem(run_name, tag, str(exc)))
                    continue
                found.append(Series(run_name, tag, info["kind"], info["version"], storage,
                                    int(series.max_step), float(series.max_wall_time)))
    return sorted(found, key=lambda s: (s.run, s.tag))


def read_series(data_provider, ctx, experiment_id: str, plugin_name: str, series: Series):
    """The newest table of one series.

    Raises:
        metadata.PayloadError: the datum is missing, not JSON, holds a number that
            is not finite (NaN, Infinity or beyond float64 such as 1e999: never
            written by mct-logger, and JSON responses cannot carry it), is nested
            too deeply to parse, or is not shaped as its kind's `metadata.SHAPES`
            entry says.
    """
    tag_filter = provider_lib.RunTagFilter(runs=[series.run], tags=[series.tag])
    try:
        if series.storage == TENSOR:
            read = data_provider.read_tensors(
                ctx, experiment_id=experiment_id, plugin_name=plugin_name, downsample=1,
                run_tag_filter=tag_filter,
            )
            body = read[series.run][series.tag][-1].numpy.item()
        else:
            read = data_provider.read_blob_sequences(
                ctx, experiment_id=experiment_id, plugin_name=plugin_name, downsample=1,
                run_tag_filter=tag_filter,
            )
            (reference,) = read[series.run][series.tag][-1].values
            body = data_provider.read_blob(ctx, blob_key=reference.blob_key)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise metadata.PayloadError(
            f"no readable datum ({type(exc).__name__}: {exc}); the event file may be "
            "truncated or written by another tool"
        ) from None
    try:
        table = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
        metadata.check_shape(plugin_name, series.kind, table)
    except _NonFinite as exc:
        raise metadata.PayloadError(
            f"the payload holds the number {exc}, which is not finite: JSON has no NaN or "
            "infinities and mct-logger never writes them (another writer?)") from None
    except (TypeError, ValueError) as exc:
        raise metadata.PayloadError(f"the payload is not JSON ({exc})") from None
    except RecursionError:
        raise metadata.PayloadError("the payload is nested too deeply to read "
                                    "(mct-logger's tables are a few levels deep)") from None
    except MemoryError:
        raise metadata.PayloadError("the payload is too large to read in memory") from None
    return table


class _NonFinite(Exception):
    """A NaN, Infinity or out-of-range number in a payload body (its text)."""


def _refuse_constant(name: str):
    raise _NonFinite(name)  # NaN, Infinity, -Infinity: Python's json extensions


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # inf or nan: 1e999 overflows to inf
        raise _NonFinite(text if len(text) <= 40 else text[:40] + "...")
    return value


def read_payloads(data_provider, ctx, experiment_id: str, plugin_name: str,
                  run: str | None = None, problems: list | None = None):
    """Yields `(run, tag, {"kind", "version"}, table)` for every readable payload.

    A payload that cannot be read is skipped and reported in `problems` as a
    `Problem` (or as a logged warning when `problems` is None); reading goes on.
    """
    for series in list_series(data_provider, ctx, experiment_id, plugin_name, run, problems):
        try:
            table = read_series(data_provider, ctx, experiment_id, plugin_name, series)
        except metadata.PayloadError as exc:
            _report(problems, Problem(series.run, series.tag, str(exc)))
            continue
        yield series.run, series.tag, {"kind": series.kind, "version": series.version}, table


def _report(problems: list | None, problem: Problem) -> None:
    if problems is None:
        logger.warning("Skipped %s payload %r of run %r: %s",
                       "mct-logger", problem.tag, problem.run, problem.reason)
    else:
        problems.append(problem)
