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
PLUGIN_NAMES = (QUANT_ANALYZER, CLE)

# Schema version of every payload kind; bump one when its table changes shape.
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
    },
    CLE: {
        "weight_ranges": 1,
        "scale_factors": 1,
        "high_bias_fold": 1,
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


def parse_plugin_content(plugin_name: str, content: bytes) -> dict:
    """`{"kind", "version"}` of a payload; raises PayloadError for ones too new to read."""
    try:
        parsed = json.loads(content.decode() if isinstance(content, bytes) else content)
        kind, version = parsed["kind"], int(parsed["version"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PayloadError(f"Malformed {plugin_name} plugin content: {content!r}") from None
    supported = check_kind(plugin_name, kind)
    if version > supported:
        raise PayloadError(
            f"{plugin_name} payload {kind!r} has schema version {version}; this "
            f"mct-logger reads up to {supported}. Upgrade mct-logger."
        )
    return {"kind": kind, "version": version}
