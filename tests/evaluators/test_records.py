"""Every sweep resumes from its JSON record: a QuantAnalyzer SIGKILLed halfway
evaluates only what is missing (counted) and ends with the tables of an
uninterrupted run; a mixed-precision search reuses its scores_file; a record of
another model, config or calibration is refused before any evaluation."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from mct_logger import QuantAnalyzer, search_mixed_precision
from mct_logger.analyzer.evaluations import RECORD_FORMAT
from mct_logger.evaluators import ScoreRecords
from tests.evaluators import sweep_models

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = {"default_param_bw": 4}
TABLES = ("sensitivity.json", "per_layer_quant_enabled.json", "per_layer_quant_disabled.json")


def _analyzer(evaluate, calibrate=sweep_models.calibrate):
    return QuantAnalyzer(sweep_models.model(), calibrate, evaluate)


def test_a_sigkilled_analysis_resumes_with_only_the_missing_evaluations(tmp_path):
    results = tmp_path / "qa"
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from tests.evaluators import sweep_models\n"
              "from mct_logger import QuantAnalyzer\n"
              "a = QuantAnalyzer(sweep_models.model(), sweep_models.calibrate, "
              f"sweep_models.KillAt({str(tmp_path)!r}, at=7))\n"
              f"a.analyze({CONFIG!r}, results_dir={str(results)!r})\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    record = ScoreRecords.open(results / "evaluations.json", {}, format_name=RECORD_FORMAT)
    assert len(record) == 6  # the 7th evaluation died with its process

    counted = sweep_models.Counting()
    resumed = _analyzer(counted).analyze(CONFIG, results_dir=str(results), resume=True)
    total = 4 + 2 * len(resumed.layers)
    assert resumed.status == "complete" and counted.calls == total - 6
    summary = json.loads((results / "summary.json").read_text())
    assert summary["evaluations_reused"] == 6 and summary["evaluations_done"] == total
    assert len(ScoreRecords.open(results / "evaluations.json", {}, format_name=RECORD_FORMAT)) == total

    fresh = _analyzer(sweep_models.score).analyze(CONFIG, results_dir=str(tmp_path / "fresh"))
    for name in TABLES:
        assert json.loads((results / name).read_text()) == \
            json.loads((tmp_path / "fresh" / name).read_text())
    assert resumed.per_layer_quant_disabled == fresh.per_layer_quant_disabled

    again = sweep_models.Counting()  # a finished analysis resumes with nothing to do
    _analyzer(again).analyze(CONFIG, results_dir=str(results), resume=True)
    assert again.calls == 0


def test_a_record_of_another_config_or_calibration_is_refused(tmp_path):
    results = str(tmp_path / "qa")
    _analyzer(sweep_models.score).analyze(CONFIG, results_dir=results)
    counted = sweep_models.Counting()
    with pytest.raises(ValueError, match=r"evaluation record \(resume=True\) .* holds scores for "
                                         r"config=.*'weight_bits': 4.*not .*'weight_bits': 8"):
        _analyzer(counted).analyze({"default_param_bw": 8}, results_dir=results, resume=True)
    assert counted.calls == 0

    def other_calibration(m):
        m.predict(sweep_models.data().x_train[64:96], verbose=0)

    with pytest.raises(ValueError, match=r"holds scores for encodings=.*another model, config "
                                         r"or calibration"):
        _analyzer(counted, other_calibration).analyze(CONFIG, results_dir=results, resume=True)
    assert counted.calls == 0

    (tmp_path / "qa" / "evaluations.json").write_text('{"format": "someone.else"}')
    with pytest.raises(ValueError, match="is not an mct-logger score file"):
        _analyzer(counted).analyze(CONFIG, results_dir=results, resume=True)


def test_mixed_precision_reuses_its_scores_file_and_refuses_another_search(tmp_path):
    model, x = sweep_models.model(), sweep_models.data().x_train[:128]
    scores = tmp_path / "mp.json"
    kwargs = dict(bit_candidates=(4, 8), weights_memory=12_000, scores_file=scores)
    _, first = search_mixed_precision(model, x, eval_callback=sweep_models.score, **kwargs)
    counted = sweep_models.Counting()
    _, second = search_mixed_precision(model, x, eval_callback=counted, **kwargs)
    assert counted.calls == 0 and second.steps == first.steps
    assert len(ScoreRecords.open(scores, {}, matched=())) == first.evaluations
    with pytest.raises(ValueError, match=r"scores_file .* holds scores for bit_candidates="
                                         r"\[4, 8\], not \[4, 8, 16\]"):
        search_mixed_precision(model, x, eval_callback=counted, bit_candidates=(4, 8, 16),
                               weights_memory=12_000, scores_file=scores)
    assert counted.calls == 0


def test_non_finite_scores_round_trip_and_a_write_is_atomic(tmp_path):
    path = tmp_path / "r.json"
    records = ScoreRecords(path, {"model": "m"})
    records.put(("a", "x"), float("nan"))
    records.put(("a", "y"), float("-inf"))
    records.put(("b",), 0.5)
    assert not (tmp_path / "r.json.tmp").exists()
    reread = ScoreRecords.open(path, {"model": "m"})
    assert len(reread) == 3 and reread.get(("b",)) == 0.5
    assert reread.get(("a", "y")) == float("-inf") and reread.get(("a", "x")) != 0.5
    assert json.loads(path.read_text())["scores"]["a"] == {"x": "nan", "y": "-inf"}
    with pytest.raises(ValueError, match=r"holds scores for model='m', not 'n'"):
        ScoreRecords.open(path, {"model": "n"})
