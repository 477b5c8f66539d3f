"""Names and versions of mct-logger's TensorBoard payloads, shared by the writer
(`summary.py`) and the plugins that read them.

A payload is one whole JSON table per summary value: small ones as a rank-0
string tensor (`DATA_CLASS_TENSOR`), larger ones as a one-element blob
sequence (`DATA_CLASS_BLOB_SEQUENCE`), so neither loader drops or samples them
away. `plugin_data.content` says which kind of table it is and its schema
version, so a reader can refuse what it does not understand.

Imports nothing heavy: plugin entry points load this module.
"""

from __future__ import annotations

import json

from tensorboard.compat.proto import summary_pb2

QUANT_ANALYZER = "quant_analyzer"
CLE = "cle"
COMPRESSION = "compression"
PLUGIN_NAMES = (QUANT_ANALYZER, CLE, COMPRESSION)

# Schema version of every payload kind; bump one when its table changes shape.
# An optional key added to a table keeps its version: "worst_layers" (measure
# id -> the ranking of the table's rows, `mct_logger.analyzer.worst_layers`) in the
# per-layer QuantAnalyzer tables and "layer_table" (the plugin ranks every table
# again with the current rules, so older payloads read alike); "run_info" (the
# run's label, config and origin) in "layer_table"; "pid", "host" and
# "heartbeat" (`mct_logger.utils.liveness`) in "summary" and "eval_scores".
PAYLOAD_KINDS = {
    QUANT_ANALYZER: {
        "sensitivity": 1,
        "per_layer_quant_enabled": 1,
        "per_layer_quant_disabled": 1,
        "min_max_ranges": 1,
        "histograms": 1,
        "per_layer_mse_loss": 1,
        "per_layer_sqnr": 1,
        "weight_sqnr": 1,
        "summary": 1,
        "layer_table": 1,
        "mixed_precision_search": 1,
        "recommendation": 1,
    },
    CLE: {
        "weight_ranges": 1,
        "scale_factors": 1,
        "high_bias_fold": 1,
        "weight_quantization": 1,
    },
    COMPRESSION: {
        "eval_scores": 1,
        "selection": 1,
    },
}

# The JSON shape of every payload kind, written once here. `required` is what
# a reader checks before using a table (top-level key -> JSON type); `rows`
# names the list of per-layer rows, each an object naming its layer (`row_name`);
# `detail` lists the per-channel fields of a row (dotted for nested ones)
# that the dashboards fetch one layer at a time instead of with the table.
SHAPES = {
    QUANT_ANALYZER: {
        "sensitivity": {
            "doc": '{"labels": {"fp32", "weights_only", "activations_only", '
                   '"fully_quantized": "W8A32"...}, "fp32", "weights_only", "activations_only", '
                   '"fully_quantized": eval score | null, "complete": bool}',
            "required": {"labels": dict, "complete": bool},
        },
        "per_layer_quant_enabled": {
            "doc": '{"fp32", "fully_quantized": score | null, "layers_total": int, '
                   '"complete": bool, "rows": [{"layer", "class", "score"}]} -- one step per '
                   "evaluation while the analysis runs (the table grows; the newest step is "
                   "the current one)",
            "required": {"rows": list, "layers_total": int, "complete": bool},
            "rows": "rows",
        },
        "per_layer_quant_disabled": {
            "doc": "as per_layer_quant_enabled: the score with only that layer left in float",
            "required": {"rows": list, "layers_total": int, "complete": bool},
            "rows": "rows",
        },
        "min_max_ranges": {
            "doc": '{"activations": [{"layer", "key", "min", "max", "bitwidth", "is_symmetric", '
                   '"per_channel", "scale", "offset" (per-tensor) | "channel_min", "channel_max" '
                   '(per-channel lists), "observed_min", "observed_max"}], "weights": [the same '
                   'plus "kernel"]}',
            "required": {"activations": list, "weights": list},
            "rows": ("activations", "weights"),
            "detail": ("channel_min", "channel_max"),
        },
        "histograms": {
            "doc": '{"activations": [{"layer", "lo", "width", "counts", "encoding_min", '
                   '"encoding_max", "per_channel_encoding"}], "weights": [{"layer", "kernel", '
                   '"lo", "width", "counts", "encoding_min", "encoding_max", '
                   '"per_channel_encoding", "channels": {"lo", "width", "counts" (channels x '
                   'bins), "encoding_min", "encoding_max"}}]} -- even bins from lo, width wide',
            "required": {"activations": list, "weights": list},
            "rows": ("activations", "weights"),
            "detail": ("channels",),
        },
        "per_layer_mse_loss": {
            "doc": '{"samples", "batches", "normalization", "rows": [{"layer", "mse"}]}',
            "required": {"rows": list},
            "rows": "rows",
        },
        "per_layer_sqnr": {
            "doc": '{"samples", "batches", "data", "max_sqnr_db", "rows": [{"layer", "class", '
                   '"quantized", "inputs", "sqnr_accumulated_db", "sqnr_isolated_db", '
                   '"accumulated_step_db", "mse_accumulated", "mse_isolated", '
                   '"cosine_accumulated"}]} -- SQNR in dB, in graph order',
            "required": {"rows": list, "samples": int},
            "rows": "rows",
        },
        "weight_sqnr": {
            "doc": '{"rows": [{"layer", "kernel", "class", "bitwidth", "per_channel_encoding", '
                   '"sqnr_db", "channels", "channel_sqnr_db": [per output channel]}]}',
            "required": {"rows": list},
            "rows": "rows",
            "detail": ("channel_sqnr_db",),
        },
        "summary": {
            "doc": '{"model", "status": "running" | "complete" | "interrupted" | "failed", '
                   '"config": {...}, "layers": [{"layer", "class", "weights", "activation"}], '
                   '"float_nodes", "batch_norms_folded", "layers_ignored", "evaluations_total", '
                   '"evaluations_done", "seconds", "error", "analyses"} -- one step per '
                   "evaluation while the analysis runs",
            "required": {},
        },
        "layer_table": {
            "doc": '{"source": "ptq", "model", "samples", "graph_run", "config": {...}, '
                   '"memory_before", "memory_after" (bytes), "rows": [{"layer", "graph_node", '
                   '"class", "quantized", "note", "weight_bits", "weight_per_channel", '
                   '"weight_min", "weight_max", "activation_bits", "encoding_min", '
                   '"encoding_max", "memory_before", "memory_after" (bytes, a fused output '
                   'counted once), "sqnr_accumulated_db", "sqnr_isolated_db", '
                   '"accumulated_step_db", "cosine", and where "adaround" is true '
                   '"adaround_loss_nearest", "adaround_loss" (reconstruction MSE), '
                   '"adaround_flipped" (share 0 to 1, null for layers not learned)}], '
                   '"adaround": bool, "worst_layers"} -- written by every '
                   "logged PTQ run, in graph order",
            "required": {"rows": list, "samples": int},
            "rows": "rows",
        },
        "mixed_precision_search": {
            "doc": '{"model", "bit_candidates": [bits ascending], "layers": [{"layer", "class", '
                   '"parameters", "bits" (chosen), "sqnr_db": [isolated SQNR per candidate], '
                   '"memory": [bytes per candidate]}], "steps": [{"step", "label", '
                   '"weights_memory", "predicted_sqnr_db", "score", "fits_budget", '
                   '"meets_target", "chosen", "bits": {layer: bits}}], "weights_memory", '
                   '"budget", "max_accuracy_drop", "float_score", "target_score", "score", '
                   '"evaluations", "seconds"} -- memory in bytes, SQNR in dB',
            "required": {"layers": list, "steps": list, "bit_candidates": list},
            "rows": "layers",
        },
        "recommendation": {
            "doc": '{"model", "max_accuracy_drop", "float_score", "target_score", '
                   '"baseline": {"score", "memory", "weights_memory"}, "final": {the same}, '
                   '"meets_target", "changes": [{"step", "kind": "cle" | "activation_observer" '
                   '| "precision", "layer" (null for CLE), "change", "evidence", '
                   '"score_before", "score_after", "memory_before", "memory_after", '
                   '"accepted"}]} -- memory in bytes (weights plus activations at batch 1)',
            "required": {"changes": list},
        },
    },
    CLE: {
        "weight_ranges": {
            "doc": '{"cle_applied", "reason", "layers": [{"node", "kernel", "layer_class", '
                   '"channels", "before": stats, "after": stats | null}]}; stats: {"min", '
                   '"max", "mean", "range", "relative_range" (per-channel lists, null for dead '
                   'channels), "dead_channels", "outlier_channels" (indices), "tukey_fence", '
                   '"spread_score" (log10 of the largest over the smallest live range)}',
            "required": {"layers": list, "cle_applied": bool},
            "rows": "layers",
            "detail": tuple(f"{when}.{field}" for when in ("before", "after")
                            for field in ("min", "max", "mean", "range", "relative_range")),
        },
        "scale_factors": {
            "doc": '{"cle_applied", "sets": [{"members", "kind", "links", "activations", '
                   '"scale_factors": [per-channel list per consecutive pair]}], "iterations", '
                   '"converged", "not_equalized": {node: reason}, "relu6_replaced": [{"node", '
                   '"form"}], "float_score_before", "float_score_after"}',
            "required": {"sets": list, "cle_applied": bool},
            "rows": "sets",
            "detail": ("scale_factors",),
        },
        "high_bias_fold": {
            "doc": '{"cle_applied", "folds": [{"source", "target", "activation", "amount", '
                   '"total", "channels_folded"}], "skipped": [{"pair", "reason"}]}',
            "required": {"folds": list},
        },
        "weight_quantization": {
            "doc": '{"rows": [{"layer", "kernel", "class", "bitwidth", "per_channel", '
                   '"sqnr_db", "channels", "channel_sqnr_db": [per output channel], '
                   '"histogram": {"lo", "width", "float", "quantized"} (counts on shared even '
                   'bins), "encoding_min", "encoding_max"}]} -- every quantized kernel, float '
                   "vs quantized",
            "required": {"rows": list},
            "rows": "rows",
            "detail": ("channel_sqnr_db", "histogram"),
        },
    },
}

SHAPES[COMPRESSION] = {
    "eval_scores": {
        "doc": '{"model", "scheme", "cost_metric" ("mac" | "memory"), "target_comp_ratio", '
               '"candidates": [ratio], "score_before", "status": "running" | "complete" | '
               '"interrupted" | "failed", "evaluations_total", "evaluations_done", '
               '"evaluations_reused" (from eval_scores_file), "evaluation_seconds", "error", '
               '"rows": [{"layer", "class", "macs", "params", "settings": [rank or kept '
               'channels per candidate, null where nothing is saved], "scores": [eval score '
               'per candidate | null]}], "ineligible": {layer: reason}} -- one step per '
               "update while the sweep runs (the table fills in)",
        "required": {"rows": list, "candidates": list, "status": str},
        "rows": "rows",
    },
    "selection": {
        "doc": '{"model", "scheme", "cost_metric", "target_comp_ratio", "threshold" (null: '
               'nothing compressed), "cost_before", "cost_after": {"macs", "params"}, '
               '"cost_ratio", "next_cost_ratio" (the next less compressed selection\'s, above '
               'the target; null: nothing compressed), "score_before", "score_after", '
               '"seconds", "rows": [{"layer", "class", "ratio" (null: not compressed), '
               '"setting", "macs_before", "macs_after", "params_before", "params_after"}]} '
               '-- written once the ratios are chosen',
        "required": {"rows": list, "cost_ratio": float},
        "rows": "rows",
    },
}

# JSON payloads up to this size go into a TENSOR; larger ones into a blob sequence.
TENSOR_LIMIT_BYTES = 4096


class PayloadError(ValueError):
    """A payload whose plugin, kind or version this reader does not know."""


def check_kind(plugin_name: str, kind: str) -> int:
    """The schema version of `kind`; raises for unknown plugins or kinds."""
    if plugin_name not in PAYLOAD_KINDS:
        raise PayloadError(f"Unknown plugin {plugin_name!r}; expected one of {PLUGIN_NAMES}.")
    kinds = PAYLOAD_KINDS[plugin_name]
    if kind not in kinds:
        raise PayloadError(
            f"Unknown {plugin_name} payload kind {kind!r}; expected one of {sorted(kinds)}."
        )
    return kinds[kind]


def check_shape(plugin_name: str, kind: str, table) -> None:
    """Raises PayloadError when `table` is not shaped as `SHAPES` says for its kind."""
    shape = SHAPES[plugin_name][kind]
    if not isinstance(table, dict):
        raise PayloadError(f"{plugin_name} payload {kind!r} is a {type(table).__name__}, "
                           "expected a JSON object.")
    for key, expected in shape["required"].items():
        if not isinstance(table.get(key), expected) or (expected is int and
                                                         isinstance(table.get(key), bool)):
            raise PayloadError(
                f"{plugin_name} payload {kind!r} has no {expected.__name__} {key!r} "
                f"(found {type(table.get(key)).__name__})."
            )
    for rows_key in row_keys(plugin_name, kind):
        for index, row in enumerate(table.get(rows_key) or []):
            if not isinstance(row, dict) or not isinstance(row_name(row), str):
                raise PayloadError(
                    f"{plugin_name} payload {kind!r}: {rows_key}[{index}] is not a row "
                    "naming its layer."
                )


def row_name(row: dict):
    """The layer a row is about: its "layer", "node", or first of its "members" (an
    equalized set is named after its first layer)."""
    name = row.get("layer", row.get("node"))
    if name is None and isinstance(row.get("members"), list) and row["members"]:
        name = row["members"][0]
    return name


def row_keys(plugin_name: str, kind: str) -> tuple:
    """The keys of a kind's per-layer row lists (empty for tables without rows)."""
    rows = SHAPES[plugin_name][kind].get("rows", ())
    return (rows,) if isinstance(rows, str) else tuple(rows)


def create_summary_metadata(plugin_name: str, kind: str, data_class: int, description: str = ""):
    """SummaryMetadata with the plugin's name, the kind and version, and `data_class` set."""
    content = {"kind": kind, "version": check_kind(plugin_name, kind)}
    return summary_pb2.SummaryMetadata(
        summary_description=description,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=plugin_name, content=json.dumps(content).encode()
        ),
        data_class=data_class,
    )


# Schema versions a reader takes for one: positive integers below this; anything
# else in plugin content (a float, Infinity, NaN, a bool, a string) is malformed.
MAX_VERSION = 2**31


def parse_plugin_content(plugin_name: str, content: bytes) -> dict:
    """`{"kind", "version"}` of a payload; raises PayloadError (and nothing else) for
    content that is malformed (not a JSON object with a string "kind" and a
    positive integer "version") or of an unknown kind or a version too new to read."""
    try:
        parsed = json.loads(content.decode() if isinstance(content, bytes) else content)
    except (ValueError, TypeError, AttributeError, RecursionError):
        parsed = None
    kind = parsed.get("kind") if isinstance(parsed, dict) else None
    version = parsed.get("version") if isinstance(parsed, dict) else None
    if not isinstance(kind, str) or type(version) is not int or not 0 < version < MAX_VERSION:
        shown = repr(content)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        raise PayloadError(
            f"Malformed {plugin_name} plugin content: {shown} (expected a JSON object with "
            'a string "kind" and a positive integer "version"; written by another tool?)'
        )
    supported = check_kind(plugin_name, kind)
    if version > supported:
        raise PayloadError(
            f"{plugin_name} payload {kind!r} has schema version {version}; this "
            f"mct-logger reads up to {supported}. Upgrade mct-logger."
        )
    return {"kind": kind, "version": version}
