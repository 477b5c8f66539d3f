"""tb_plugin.reader: every payload read on its own; a bad one is reported, never
raised, and hides nothing else, under both TensorBoard loaders."""

import pytest

from mct_logger.tensorboard.events import EventWriter
from mct_logger.tb_plugin import reader
from mct_logger.tb_plugin.summary import payload_summary
from tests.helpers import HOSTILE, tensorboard_provider, write_hostile_payloads

GOOD_SQNR = {"samples": 8, "rows": [{"layer": "conv", "sqnr_isolated_db": 41.0}]}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    for run in ("before", "after"):  # good runs on both sides of the bad one
        with EventWriter(str(folder / run / "quant_analyzer")) as writer:
            writer.add_summary(payload_summary("quant_analyzer", "per_layer_sqnr",
                                               "per_layer_sqnr", GOOD_SQNR))
    write_hostile_payloads(str(folder / "broken"))
    return folder


@pytest.mark.parametrize("loader", ["python", "rust"])
def test_every_good_payload_is_read_and_every_bad_one_reported(logdir, loader):
    with tensorboard_provider(logdir, loader) as (data, ctx, eid):
        problems = []
        read = {(run, tag): table for run, tag, _, table in
                reader.read_payloads(data, ctx, eid, "quant_analyzer", problems=problems)}
    assert read[("before/quant_analyzer", "per_layer_sqnr")] == GOOD_SQNR
    assert read[("after/quant_analyzer", "per_layer_sqnr")] == GOOD_SQNR
    assert read[("broken/quant_analyzer", "good")]["rows"] == [{"layer": "x", "mse": 0.5}]
    assert len(read) == 3
    reported = {p.tag: p for p in problems}
    assert set(reported) == set(HOSTILE), reported
    for tag, reason in HOSTILE.items():
        assert reported[tag].run == "broken/quant_analyzer"
        assert reason in reported[tag].reason, (tag, reported[tag].reason)


def test_without_a_problems_list_bad_payloads_are_logged(logdir, caplog):
    with tensorboard_provider(logdir, "python") as (data, ctx, eid):
        runs = [run for run, *_ in reader.read_payloads(data, ctx, eid, "quant_analyzer")]
    assert sorted(runs) == ["after/quant_analyzer", "before/quant_analyzer", "broken/quant_analyzer"]
    assert sum("Skipped" in r.message for r in caplog.records) == len(HOSTILE)
