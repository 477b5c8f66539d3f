"""Plugin payloads: written by tb_plugin.summary, read back under both TensorBoard loaders."""

import pytest
from tensorboard.compat.proto import summary_pb2

from mct_logger.tensorboard.events import EventWriter
from mct_logger.tb_plugin import metadata, reader
from mct_logger.tb_plugin.summary import payload_summary
from tests.helpers import MALFORMED_CONTENT, tensorboard_provider

# Shaped as the kinds they claim to be (tb_plugin.metadata.SHAPES): the reader checks.
SMALL = {"samples": 8, "rows": [{"layer": "conv1", "sqnr_isolated_db": 31.5},
                                {"layer": "dense", "sqnr_isolated_db": float("nan")}]}
LARGE = {"cle_applied": False, "reason": "off",
         "layers": [{"node": "conv", "kernel": "kernel", "channels": 3000,
                     "before": {"max": [0.5] * 3000}, "after": None}]}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("payloads")
    with EventWriter(str(folder / "analysis" / "quant_analyzer")) as writer:
        writer.add_summary(payload_summary("quant_analyzer", "per_layer_sqnr", "per_layer_sqnr", SMALL))
    with EventWriter(str(folder / "analysis" / "cle")) as writer:
        writer.add_summary(payload_summary("cle", "weight_ranges", "weight_ranges/conv", LARGE))
    return folder


def test_small_tables_are_tensors_and_large_ones_blob_sequences():
    small = payload_summary("quant_analyzer", "per_layer_sqnr", "t", SMALL).value[0]
    large = payload_summary("cle", "weight_ranges", "t", LARGE).value[0]
    assert small.metadata.data_class == summary_pb2.DATA_CLASS_TENSOR
    assert large.metadata.data_class == summary_pb2.DATA_CLASS_BLOB_SEQUENCE
    assert small.metadata.plugin_data.plugin_name == "quant_analyzer"
    content = metadata.parse_plugin_content("cle", large.metadata.plugin_data.content)
    assert content == {"kind": "weight_ranges", "version": metadata.PAYLOAD_KINDS["cle"]["weight_ranges"]}


@pytest.mark.parametrize("loader", ["python", "rust"])
def test_payloads_round_trip_under_both_loaders(logdir, loader):
    with tensorboard_provider(logdir, loader) as (data, ctx, eid):
        plugins = data.list_plugins(ctx, experiment_id=eid)
        assert {"quant_analyzer", "cle"} <= set(plugins)
        (qa,) = reader.read_payloads(data, ctx, eid, "quant_analyzer")
        assert qa[:3] == ("analysis/quant_analyzer", "per_layer_sqnr",
                          {"kind": "per_layer_sqnr", "version": 1})
        assert qa[3]["rows"][1] == {"layer": "dense", "sqnr_isolated_db": None}  # NaN -> null
        assert qa[3]["rows"][0]["sqnr_isolated_db"] == 31.5
        (cle,) = reader.read_payloads(data, ctx, eid, "cle", run="analysis/cle")
        assert cle[1] == "weight_ranges/conv" and cle[3] == LARGE


def test_unknown_kinds_and_newer_versions_are_refused():
    with pytest.raises(metadata.PayloadError, match="Unknown cle payload kind"):
        payload_summary("cle", "nonsense", "t", {})
    with pytest.raises(metadata.PayloadError, match="Unknown plugin"):
        metadata.check_kind("other", "x")
    with pytest.raises(metadata.PayloadError, match="Upgrade mct-logger"):
        metadata.parse_plugin_content("cle", b'{"kind": "weight_ranges", "version": 99}')
    with pytest.raises(metadata.PayloadError, match="Malformed"):
        metadata.parse_plugin_content("cle", b"not json")


@pytest.mark.parametrize("tag", sorted(MALFORMED_CONTENT))
def test_malformed_kinds_and_versions_are_payload_errors_only(tag):
    """Infinity, NaN, bools, floats, strings, negative or huge versions, a kind that
    is not a string: a PayloadError naming the content, never another exception."""
    with pytest.raises(metadata.PayloadError, match="Malformed cle plugin content") as error:
        metadata.parse_plugin_content("cle", MALFORMED_CONTENT[tag])
    assert "positive integer" in str(error.value) and len(str(error.value)) < 400
