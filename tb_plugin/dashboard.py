"""What the QuantAnalyzer and CLE plugins share: a dynamic TensorBoard plugin
over one plugin's payloads, with its own ES-module frontend.

Routes, served at `/data/plugin/<plugin_name>/...` (relative URLs only in the
browser, so `--path_prefix` works):

- `GET /runs`: `{"runs": [{"name", "tb_runs", "kinds", "fingerprint"}],
  "problems": [{"run", "tag", "reason"}]}`. A "run" here is a log folder of one
  PTQ or QuantAnalyzer call (the TensorBoard runs of its stages grouped by
  their parent folder); `fingerprint` changes whenever one of its payloads gets
  a new step, so a page can tell when to redraw.
- `GET /tables?run=R`: `{"run", "tb_runs", "fingerprint", "tables": {kind:
  table}, "problems"}`, each table as `metadata.SHAPES` documents it but
  without its per-channel `detail` fields, so a 600-layer model stays light.
- `GET /detail?run=R&kind=K&layer=L[&kernel=N]`: the whole row of that layer
  (per-channel lists included) from table K.
- `GET /static/<folder>/<file>`: the frontend's modules and stylesheet
  (`common/dom.js`, `cle/cle_tab.js`...), and `GET /static/plotly.min.js`, the
  bundle from the `plotly` wheel. Only those files are served.

Unknown runs, kinds or layers get a 4xx with a JSON message, never a 500.
Payloads are read only through `context.data_provider` (the multiplexer is
None under the Rust data server) and parsed once per new step; one listing of
the folder serves the requests of the next `LISTING_SECONDS`.

Imports nothing heavy (no TensorFlow, no Keras): plugin entry points load it.
"""

from __future__ import annotations

import gzip
import json
import posixpath
import re
import threading
import time

from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from . import assets, metadata, reader

PLOTLY_FILE = "plotly.min.js"
# How long one listing of the log folder serves requests. The data server itself
# reloads every few seconds (--reload_interval), and each listing is one or two
# ~40 ms gRPC calls under it.
LISTING_SECONDS = 1.0
MIME_TYPES = {".js": "text/javascript", ".css": "text/css"}
_SAFE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# A served frontend path: `file` or `folder/file` (common/ and one folder per tab).
MAX_STATIC_DEPTH = 2


def run_group(tb_run: str) -> str:
    """The log folder a TensorBoard run belongs to: `folder/07_similarity` -> `folder`."""
    parent = posixpath.dirname(tb_run.replace("\\", "/"))
    return parent or tb_run


def strip_detail(plugin_name: str, kind: str, table: dict) -> dict:
    """A copy of `table` without its rows' per-channel `detail` fields."""
    fields = metadata.SHAPES[plugin_name][kind].get("detail", ())
    if not fields:
        return table
    light = dict(table)
    for rows_key in metadata.row_keys(plugin_name, kind):
        light[rows_key] = [_without(row, fields) for row in table.get(rows_key) or []]
    return light


def _without(row: dict, fields) -> dict:
    row = dict(row)
    for field in fields:
        head, _, rest = field.partition(".")
        if rest:
            if isinstance(row.get(head), dict):
                row[head] = _without(row[head], (rest,))
        else:
            row.pop(head, None)
    return row


class PayloadDashboard(base_plugin.TBPlugin):
    """A tab over one plugin's payloads. Subclasses set the names below."""

    plugin_name = ""
    tab_name = ""
    entry_module = ""  # the frontend file whose `render()` draws the tab

    def __init__(self, context):
        self._provider = context.data_provider
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str], tuple[tuple, object]] = {}
        self._static: dict[str, tuple[bytes, str]] = {}
        self._responses: dict[tuple, bytes] = {}  # /tables bodies by run version
        self._listing: dict[str, tuple[float, tuple]] = {}  # experiment -> (time, _groups)

    # ---------------------------------------------------------------- plugin API

    def get_plugin_apps(self):
        return {
            "/runs": self._serve_runs,
            "/tables": self._serve_tables,
            "/detail": self._serve_detail,
            "/static/*": self._serve_static,
        }

    def is_active(self):
        # Enabled by TensorBoard when the data provider lists our plugin name,
        # that is when a payload of ours exists in the log folder.
        return False

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(
            es_module_path=f"/static/{self.entry_module}", tab_name=self.tab_name
        )

    # ---------------------------------------------------------------- data

    def _groups(self, ctx, experiment_id: str):
        """`({run: {"tb_runs": set, "kinds": {kind: Series}}}, [Problem])`: the
        newest series of each kind, grouped by log folder.

        Kept for `LISTING_SECONDS`, so the burst of requests a page makes (runs,
        tables, per-layer details) lists the folder once.
        """
        now = time.monotonic()
        with self._lock:
            cached = self._listing.get(experiment_id)
        if cached is not None and now - cached[0] < LISTING_SECONDS:
            return cached[1]
        listing = self._list_groups(ctx, experiment_id)
        with self._lock:
            self._listing[experiment_id] = (now, listing)
        return listing

    def _list_groups(self, ctx, experiment_id: str):
        problems: list = []
        series = reader.list_series(self._provider, ctx, experiment_id, self.plugin_name,
                                    problems=problems)
        groups: dict[str, dict] = {}
        for s in series:
            group = groups.setdefault(run_group(s.run), {"tb_runs": set(), "kinds": {}})
            group["tb_runs"].add(s.run)
            known = group["kinds"].get(s.kind)
            if known is None or s.max_wall_time >= known.max_wall_time:
                group["kinds"][s.kind] = s
        return groups, problems

    def runs(self, ctx, experiment_id: str) -> dict:
        """The `/runs` listing (see the module docs)."""
        groups, problems = self._groups(ctx, experiment_id)
        listing = []
        for name in sorted(groups):
            kinds = groups[name]["kinds"]
            listing.append({
                "name": name,
                "tb_runs": sorted(groups[name]["tb_runs"]),
                "kinds": {k: {"run": s.run, "tag": s.tag, "version": s.version,
                              "step": s.max_step, "wall_time": s.max_wall_time}
                          for k, s in sorted(kinds.items())},
                "fingerprint": _fingerprint(kinds.values()),
            })
        return {"runs": listing, "problems": [_problem(p) for p in problems]}

    def tables(self, ctx, experiment_id: str, run: str, light: bool = True,
               listing=None) -> dict:
        """Every table of one run (a log folder), newest step of each kind.

        `listing` is a `_groups` result already at hand.

        Raises:
            LookupError: no payload of this plugin belongs to `run`.
        """
        groups, problems = listing or self._groups(ctx, experiment_id)
        if run not in groups:
            raise LookupError(
                f"No {self.tab_name} data for run {run!r}; known runs: "
                f"{sorted(groups) or 'none'}."
            )
        problems = [_problem(p) for p in problems if run_group(p.run) == run]
        kinds = groups[run]["kinds"]
        tables = {}
        for kind, series in sorted(kinds.items()):
            try:
                table = self._read(ctx, experiment_id, series)
            except metadata.PayloadError as exc:
                problems.append(_problem(reader.Problem(series.run, series.tag, str(exc))))
                continue
            tables[kind] = strip_detail(self.plugin_name, kind, table) if light else table
        return {"run": run, "tb_runs": sorted(groups[run]["tb_runs"]),
                "fingerprint": _fingerprint(kinds.values()), "tables": tables,
                "problems": problems}

    def detail(self, ctx, experiment_id: str, run: str, kind: str, layer: str,
               kernel: str | None = None) -> dict:
        """The whole row of `layer` (and `kernel`, for weight rows) in table `kind`.

        Raises:
            ValueError: `kind` is not a table kind of this plugin.
            LookupError: the run, its table or the layer's row does not exist.
        """
        if kind not in metadata.PAYLOAD_KINDS[self.plugin_name]:
            raise ValueError(f"Unknown {self.plugin_name} table kind {kind!r}; expected one of "
                             f"{sorted(metadata.PAYLOAD_KINDS[self.plugin_name])}.")
        listing = self._groups(ctx, experiment_id)
        body = self.tables(ctx, experiment_id, run, light=False, listing=listing)
        tables = body["tables"]
        if kind not in tables:
            series = listing[0][run]["kinds"].get(kind)
            reasons = [p["reason"] for p in body["problems"] if series is not None
                       and (p["run"], p["tag"]) == (series.run, series.tag)]
            raise LookupError(f"Run {run!r} has no readable {kind!r} table"
                              + (f": {'; '.join(reasons)}" if reasons else "."))
        for rows_key in metadata.row_keys(self.plugin_name, kind):
            for row in tables[kind].get(rows_key) or []:
                if metadata.row_name(row) == layer and (
                        kernel is None or row.get("kernel") == kernel):
                    return {"run": run, "kind": kind, "rows_key": rows_key, "row": row}
        raise LookupError(f"Table {kind!r} of run {run!r} has no row for layer {layer!r}"
                          + (f" and kernel {kernel!r}." if kernel else "."))

    def tables_response(self, ctx, experiment_id: str, run: str) -> bytes:
        """The `/tables` body, gzipped JSON, built once per version of the run's payloads."""
        listing = self._groups(ctx, experiment_id)
        groups, problems = listing
        if run not in groups:
            return self.tables(ctx, experiment_id, run, listing=listing)  # raises LookupError
        key = (run, _fingerprint(groups[run]["kinds"].values()),
               tuple(p for p in problems if run_group(p.run) == run))
        with self._lock:
            cached = self._responses.get(key)
        if cached is None:
            body = self.tables(ctx, experiment_id, run, listing=listing)
            cached = gzip.compress(
                json.dumps(body, allow_nan=False, separators=(",", ":")).encode(), compresslevel=3,
                mtime=0)
            with self._lock:
                self._responses = {k: v for k, v in self._responses.items() if k[0] != run}
                self._responses[key] = cached
        return cached

    def _read(self, ctx, experiment_id: str, series: reader.Series):
        """One table, parsed once per new step (growing tables change step)."""
        key = (series.run, series.tag)
        with self._lock:
            cached = self._tables.get(key)
        if cached is not None and cached[0] == series.fingerprint:
            return cached[1]
        table = reader.read_series(self._provider, ctx, experiment_id, self.plugin_name, series)
        with self._lock:
            self._tables[key] = (series.fingerprint, table)
        return table

    # ---------------------------------------------------------------- routes

    @wrappers.Request.application
    def _serve_runs(self, request):
        ctx, eid = plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)
        return _json(request, self.runs(ctx, eid))

    @wrappers.Request.application
    def _serve_tables(self, request):
        run = request.args.get("run")
        if not run:
            return _json(request, {"error": "Missing the run parameter: /tables?run=<run>."}, 400)
        ctx, eid = plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)
        try:
            body = self.tables_response(ctx, eid, run)
        except LookupError as exc:
            return _json(request, {"error": str(exc)}, 404)
        return http_util.Respond(request, body, "application/json", content_encoding="gzip")

    @wrappers.Request.application
    def _serve_detail(self, request):
        args = request.args
        missing = [k for k in ("run", "kind", "layer") if not args.get(k)]
        if missing:
            return _json(request, {"error": f"Missing parameter(s) {missing}: "
                                            "/detail?run=<run>&kind=<kind>&layer=<layer>."}, 400)
        ctx, eid = plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)
        try:
            return _json(request, self.detail(ctx, eid, args["run"], args["kind"], args["layer"],
                                              args.get("kernel") or None))
        except ValueError as exc:
            return _json(request, {"error": str(exc)}, 400)
        except LookupError as exc:
            return _json(request, {"error": str(exc)}, 404)

    @wrappers.Request.application
    def _serve_static(self, request):
        name = request.path.rsplit("/static/", 1)[-1] if "/static/" in request.path else ""
        served = self._static_file(name)
        if served is None:
            return http_util.Respond(request, f"Not found: {name!r}", "text/plain", code=404)
        body, content_type = served
        return http_util.Respond(request, body, content_type, content_encoding="gzip")

    def _static_file(self, name: str):
        """(gzipped bytes, content type) of a servable file, or None.

        Only `.js` and `.css` files of the frontend folder and its subfolders,
        named `file` or `folder/file` (and the plotly bundle), are served: each
        part a plain name (no `..`, no backslash, no leading dot), nothing that
        resolves outside that folder.
        """
        parts = name.split("/")
        if (len(parts) > MAX_STATIC_DEPTH or ".." in name
                or not all(_SAFE_PART.match(part) for part in parts)):
            return None
        with self._lock:
            if name in self._static:
                return self._static[name]
        if name == PLOTLY_FILE:
            path = assets.plotly_bundle_path()
        else:
            folder = assets.frontend_dir().resolve()
            path = folder.joinpath(*parts).resolve()
            if (path.suffix not in MIME_TYPES or not path.is_relative_to(folder)
                    or not path.is_file()):
                return None
        served = (gzip.compress(path.read_bytes(), compresslevel=6, mtime=0),
                  MIME_TYPES[path.suffix])
        with self._lock:
            self._static[name] = served
        return served


def _fingerprint(series) -> str:
    return ";".join(f"{s.run}/{s.tag}@{s.max_step}:{s.max_wall_time:.6f}"
                    for s in sorted(series, key=lambda s: (s.run, s.tag)))


def _problem(problem: reader.Problem) -> dict:
    return {"run": problem.run, "tag": problem.tag, "reason": problem.reason}


def _json(request, body: dict, code: int = 200):
    text = json.dumps(body, allow_nan=False, separators=(",", ":"))
    return http_util.Respond(request, text, "application/json", code=code)
