"""QuantAnalyzer's results_dir never mixes runs: the manifest comes first, an earlier
run's files are moved aside, a killed run is recognised, foreign files refused."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from mct_logger.analyzer.aimet_layout import RESULT_FILES
from mct_logger.analyzer.driver import QuantAnalyzer
from mct_logger.analyzer.results_dir import PREVIOUS_RUNS, ResultWriter
from tests.helpers import conv_dense_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model():
    return conv_dense_model((8, 8, 1), filters=4, outputs=10, input_name="img",
                            head_name="fc", name="small")


X = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32")


def _forward(model):
    model.predict(X, verbose=0)


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _files(folder):
    """Result files in `folder` itself (not in previous_runs/)."""
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder)
                  for f in fs if PREVIOUS_RUNS not in os.path.relpath(d, folder).split(os.sep))


def test_reused_results_dir_moves_the_earlier_run_aside_first(tmp_path):
    QuantAnalyzer(_model(), _forward, lambda m: 0.5).analyze(results_dir=tmp_path)
    first = _files(tmp_path)
    assert "per_layer_quant_disabled.json" in first
    calls = {"n": 0}

    def interrupted(model):
        calls["n"] += 1
        if calls["n"] == 1:  # the manifest is on disk before any evaluation
            manifest = _load(tmp_path / "summary.json")
            assert manifest["status"] == "running" and manifest["pid"] == os.getpid()
            assert set(manifest["files"]) == set(RESULT_FILES) - {"per_layer_mse_loss.json"}
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return 0.1

    with pytest.raises(KeyboardInterrupt):
        QuantAnalyzer(_model(), _forward, interrupted).analyze(
            {"default_param_bw": 4}, results_dir=tmp_path)
    summary = _load(tmp_path / "summary.json")
    assert summary["status"] == "interrupted"
    (earlier,) = os.listdir(tmp_path / PREVIOUS_RUNS)
    assert summary["earlier_run_moved_to"] == os.path.join(PREVIOUS_RUNS, earlier)
    assert _files(tmp_path / PREVIOUS_RUNS / earlier) == first
    assert _load(tmp_path / PREVIOUS_RUNS / earlier / "summary.json")["status"] == "complete"
    now = _files(tmp_path)
    assert "per_layer_quant_disabled.json" not in now  # the second run never got there
    assert set(now) <= set(summary["files"])
    assert _load(tmp_path / "sensitivity.json")["weights_only"] == 0.1


def test_killed_analysis_is_an_earlier_run_and_a_live_one_is_refused(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        from tests.analyzer.test_results_dir import QuantAnalyzer, _forward, _model

        def killed(model):
            os.kill(os.getpid(), signal.SIGKILL)

        QuantAnalyzer(_model(), _forward, killed).analyze(results_dir={str(tmp_path)!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    killed = _load(tmp_path / "summary.json")
    assert killed["status"] == "running" and killed["pid"] != os.getpid()
    killed_files = _files(tmp_path)

    result = QuantAnalyzer(_model(), _forward, lambda m: 0.5).analyze(results_dir=tmp_path)
    assert result.status == "complete"
    (earlier,) = os.listdir(tmp_path / PREVIOUS_RUNS)
    assert _files(tmp_path / PREVIOUS_RUNS / earlier) == killed_files

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        manifest = _load(tmp_path / "summary.json")
        manifest.update(status="running", pid=live.pid)
        (tmp_path / "summary.json").write_text(json.dumps(manifest))
        before = _files(tmp_path)
        with pytest.raises(RuntimeError, match=rf"is in use.*process {live.pid}.*another "
                                               r"results_dir"):
            QuantAnalyzer(_model(), _forward, lambda m: 0.5).analyze(results_dir=tmp_path)
        assert _files(tmp_path) == before
    finally:
        live.kill()
        live.wait()


def test_result_files_of_another_tool_are_refused_untouched(tmp_path):
    (tmp_path / "per_layer_quant_enabled.json").write_text('{"conv": 0.9}')
    with pytest.raises(FileExistsError, match=r"per_layer_quant_enabled.json but no summary.json"
                                              r".*new or empty results_dir"):
        QuantAnalyzer(_model(), _forward, lambda m: 0.5).analyze(results_dir=tmp_path)
    assert os.listdir(tmp_path) == ["per_layer_quant_enabled.json"]
    assert (tmp_path / "per_layer_quant_enabled.json").read_text() == '{"conv": 0.9}'
    with pytest.raises(NotADirectoryError, match="is a file; pass a folder"):
        QuantAnalyzer(_model(), _forward, lambda m: 0.5).analyze(
            results_dir=tmp_path / "per_layer_quant_enabled.json")


def test_another_tools_summary_json_is_refused_with_its_files_untouched(tmp_path):
    theirs = '{"status": "done", "files": ["model.keras", "metrics.csv"], "epochs": 10}'
    (tmp_path / "summary.json").write_text(theirs)
    (tmp_path / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    (tmp_path / "model.keras").write_text("weights")
    calls = []
    with pytest.raises(FileExistsError, match=r"summary.json that QuantAnalyzer did not write"
                                              r".*new or empty results_dir"):
        QuantAnalyzer(_model(), _forward, lambda m: calls.append(1) or 0.5).analyze(
            results_dir=tmp_path)
    assert calls == []
    assert sorted(os.listdir(tmp_path)) == ["metrics.csv", "model.keras", "summary.json"]
    assert (tmp_path / "summary.json").read_text() == theirs
    assert (tmp_path / "model.keras").read_text() == "weights"


def test_a_manifest_written_before_the_format_marker_is_still_an_earlier_run(tmp_path):
    QuantAnalyzer(_model(), _forward, lambda m: 0.5).analyze(results_dir=tmp_path)
    summary = _load(tmp_path / "summary.json")
    assert summary["format"] == "mct_logger.QuantAnalyzer.summary"
    del summary["format"]  # as the versions before it wrote it
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    first = _files(tmp_path)
    result = QuantAnalyzer(_model(), _forward, lambda m: 0.4).analyze(results_dir=tmp_path)
    assert result.status == "complete"
    (earlier,) = os.listdir(tmp_path / PREVIOUS_RUNS)
    assert _files(tmp_path / PREVIOUS_RUNS / earlier) == first
    assert _load(tmp_path / "summary.json")["format"] == "mct_logger.QuantAnalyzer.summary"


def test_a_path_the_analysis_would_write_that_is_blocked_fails_before_any_evaluation(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    folder_for_file = tmp_path / "a"
    (folder_for_file / "index.html").mkdir(parents=True)
    file_for_folder = tmp_path / "b"
    file_for_folder.mkdir()
    (file_for_folder / "min_max_ranges").write_text("mine")
    calls = []
    for results_dir, error, message in [
        (afile / "sub", NotADirectoryError, r"results_dir .*afile/sub.* cannot be written: .*afile"
                                            r".* is a file"),
        (folder_for_file, IsADirectoryError, r"holds a folder 'index.html' where the analysis "
                                             r"writes a file"),
        (file_for_folder, NotADirectoryError, r"holds a file 'min_max_ranges' where the analysis "
                                              r"writes a folder"),
    ]:
        with pytest.raises(error, match=message):
            QuantAnalyzer(_model(), _forward, lambda m: calls.append(1) or 0.5).analyze(
                results_dir=results_dir)
        assert not os.path.exists(os.path.join(results_dir, "summary.json"))
    assert calls == [] and afile.read_text() == "mine"
    (file_for_folder / "min_max_ranges").unlink()  # the folder was never claimed: usable now
    result = QuantAnalyzer(_model(), _forward, lambda m: 0.5).analyze(results_dir=file_for_folder)
    assert result.status == "complete"


def test_two_processes_sharing_a_results_dir_never_mix_their_files(tmp_path):
    go = tmp_path / "go"
    results = tmp_path / "results"
    script = textwrap.dedent(f"""
        import json, os, sys, time
        sys.path.insert(0, {ROOT!r})
        from tests.analyzer.test_results_dir import QuantAnalyzer, _forward, _model
        model = _model()
        open(os.path.join({str(tmp_path)!r}, "ready_" + sys.argv[1]), "w").close()
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        try:
            QuantAnalyzer(model, _forward, lambda m: 0.5).analyze(results_dir={str(results)!r})
            print(json.dumps("complete"))
        except RuntimeError as exc:
            print(json.dumps(str(exc)))
    """)
    processes = [subprocess.Popen([sys.executable, "-c", script, str(k)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT) for k in range(2)]
    while not all((tmp_path / f"ready_{k}").exists() for k in range(2)):
        assert all(p.poll() is None for p in processes), [p.stderr.read() for p in processes]
        time.sleep(0.01)
    go.write_text("")  # both are set up and waiting: they start together
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    # One ran; the other found the folder in use (or, if the first had already
    # finished, moved the first's files aside and ran too).
    assert "complete" in outcomes
    for outcome in outcomes:
        assert outcome == "complete" or "is in use" in outcome
    summary = _load(results / "summary.json")
    assert summary["status"] == "complete"
    assert summary["pid"] in [p.pid for p in processes]
    assert set(_files(results)) <= set(summary["files"])
    if outcomes == ["complete", "complete"]:  # then one after the other, never together
        (earlier,) = os.listdir(results / PREVIOUS_RUNS)
        assert summary["earlier_run_moved_to"] == os.path.join(PREVIOUS_RUNS, earlier)
        first = _load(results / PREVIOUS_RUNS / earlier / "summary.json")
        assert first["status"] == "complete" and first["pid"] != summary["pid"]


def test_a_symbolic_link_where_a_result_goes_is_refused_before_any_evaluation(tmp_path):
    """Never followed: moving the earlier run aside through it would move the
    user's own files, and the new files would land in the user's folder."""
    results = tmp_path / "results"
    QuantAnalyzer(_model(), _forward, lambda m: 0.5).analyze(results_dir=results)
    earlier = {f: (results / f).read_bytes() for f in _files(results)}
    user_folder = tmp_path / "mine"
    user_folder.mkdir()
    (user_folder / "activations.json").write_text("my own")
    user_file = tmp_path / "my.json"
    user_file.write_text("my own too")
    calls = []
    for link, target in [("min_max_ranges", user_folder), ("sensitivity.json", user_file),
                         ("index.html.tmp", tmp_path / "nowhere")]:
        held = results / (link + ".held")
        if (results / link).exists():
            os.rename(results / link, held)
        os.symlink(target, results / link)
        with pytest.raises(FileExistsError, match=(
                rf"A symbolic link stands at '{results / link}', where results_dir "
                rf"'{results}' .*never followed.* Remove the link")):
            QuantAnalyzer(_model(), _forward, lambda m: calls.append(1) or 0.5).analyze(
                results_dir=results)
        os.unlink(results / link)
        if held.exists():
            os.rename(held, results / link)
    assert calls == [] and not (results / PREVIOUS_RUNS).exists()
    assert {f: (results / f).read_bytes() for f in _files(results)} == earlier
    assert os.listdir(user_folder) == ["activations.json"]
    assert (user_folder / "activations.json").read_text() == "my own"
    assert user_file.read_text() == "my own too" and not (tmp_path / "nowhere").exists()


def test_a_file_or_link_where_previous_runs_goes_is_refused_before_any_evaluation(tmp_path):
    results = tmp_path / "results"
    QuantAnalyzer(_model(), _forward, lambda m: 0.5).analyze(results_dir=results)
    first = _files(results)
    user_folder = tmp_path / "mine"
    user_folder.mkdir()
    calls = []
    for kind, make in [("A file", lambda p: p.write_text("my notes")),
                       ("A symbolic link", lambda p: os.symlink(user_folder, p))]:
        make(results / PREVIOUS_RUNS)
        with pytest.raises(FileExistsError, match=(
                rf"{kind} stands at '{results / PREVIOUS_RUNS}', where results_dir '{results}' "
                r"keeps earlier runs' results .*nothing was moved or evaluated. Rename or move")):
            QuantAnalyzer(_model(), _forward, lambda m: calls.append(1) or 0.5).analyze(
                {"default_param_bw": 4}, results_dir=results)
        assert _files(results) == sorted(first + [PREVIOUS_RUNS] * (kind == "A file"))
        assert _load(results / "summary.json")["status"] == "complete"
        os.unlink(results / PREVIOUS_RUNS)
    assert calls == [] and os.listdir(user_folder) == []


def test_a_result_file_that_cannot_be_written_is_a_warning_and_the_result_returned(
        tmp_path, caplog):
    results = tmp_path / "results"
    calls = {"n": 0}

    def evaluate(model):
        calls["n"] += 1
        if calls["n"] == 3:  # something puts a folder where the report goes
            (results / "index.html").mkdir()
        return 0.5

    with caplog.at_level("WARNING", logger="mct_logger"):
        result = QuantAnalyzer(_model(), _forward, evaluate).analyze(results_dir=results)
    assert result.status == "complete" and result.report_path is None
    assert result.sensitivity["fully_quantized"] == 0.5 and result.per_layer_quant_disabled
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"cannot write {results / 'index.html'} in results_dir {results} (" in warning
    assert "IsADirectoryError" in warning and "goes on and returns its AnalysisResult" in warning
    summary = _load(results / "summary.json")
    assert summary["status"] == "complete"
    assert list(summary["files_not_written"]) == ["index.html"] == list(result.files_not_written)
    assert "index.html.tmp" not in os.listdir(results) and os.listdir(results / "index.html") == []
    assert _load(results / "per_layer_quant_disabled.json") == result.per_layer_quant_disabled


def test_a_full_disk_after_the_evaluations_keeps_them_and_leaves_no_temporary_file(tmp_path):
    """Files capped at a few kB (as on a full disk): the small tables are written,
    the larger ones and the report are listed, warned about, never half written."""
    results = tmp_path / "results"
    script = textwrap.dedent(f"""
        import json, logging, resource, signal, sys
        sys.path.insert(0, {ROOT!r})
        from tests.analyzer.test_results_dir import QuantAnalyzer, _forward, _model
        model = _model()
        warnings = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = lambda record: warnings.append(record.getMessage())
        logging.getLogger("mct_logger").addHandler(handler)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4000, resource.RLIM_INFINITY))
        result = QuantAnalyzer(model, _forward, lambda m: 0.5).analyze(results_dir={str(results)!r})
        print(json.dumps([result.status, result.report_path, result.files_not_written,
                          result.per_layer_quant_enabled, warnings]))
    """)
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             cwd=ROOT, timeout=300)
    assert process.returncode == 0, process.stderr[-2000:]
    status, report, not_written, enabled, warnings = json.loads(process.stdout.splitlines()[-1])
    assert status == "complete" and report is None
    assert {"conv", "fc"} <= set(enabled) and set(enabled.values()) == {0.5}
    assert {"histograms.json", "index.html"} <= set(not_written)
    assert all(cause == "OSError: File too large" for cause in not_written.values())
    first, last = warnings
    assert f"cannot write {results / 'histograms.json'} in results_dir {results}" in first
    assert f"complete, but {len(not_written)} result file(s) in results_dir {results}" in last
    assert all(name in last for name in not_written)
    summary = _load(results / "summary.json")
    assert summary["status"] == "complete" and summary["files_not_written"] == not_written
    on_disk = _files(results)
    assert not [f for f in on_disk if f.endswith(".tmp")]
    assert not set(on_disk) & set(not_written)
    assert _load(results / "per_layer_quant_enabled.json") == enabled


def test_result_writer_never_follows_a_link_put_in_its_way_mid_run(tmp_path):
    user_folder, user_file = tmp_path / "mine", tmp_path / "my.json"
    user_folder.mkdir()
    user_file.write_text("my own")
    results = tmp_path / "results"
    (results / "tables").mkdir(parents=True)
    writer = ResultWriter(str(results))
    os.symlink(user_folder, results / "linked")
    os.symlink(user_file, results / "a.json.tmp")
    assert not writer.write_json(os.path.join("linked", "t.json"), {"x": 1})
    assert not writer.write_json("a.json", {"x": 1})
    assert os.listdir(user_folder) == [] and user_file.read_text() == "my own"
    assert os.path.islink(results / "a.json.tmp") and not (results / "a.json").exists()
    assert "symbolic link" in writer.not_written[os.path.join("linked", "t.json")]
    assert set(writer.not_written) == {os.path.join("linked", "t.json"), "a.json"}
    os.unlink(results / "a.json.tmp")
    assert writer.write_json("a.json", {"x": 2})  # written after all: off the list
    assert _load(results / "a.json") == {"x": 2} and "a.json" not in writer.not_written
