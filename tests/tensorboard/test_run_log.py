"""Logging under faults: a failed log never costs the model, run folders never
collide or escape the log folder, warnings stay visible.

Faults are real: a small tmpfs for a full disk (or, where none can be mounted, an
event write that raises ENOSPC), folders made read-only (run without the
permission-override capability when the tests run as root), a logging listener
that raises, threads and processes racing for one run name.
"""

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

import mct_logger
from mct_logger import listeners
from mct_logger.tensorboard import log_folder as log_lib
from mct_logger.tensorboard.events import EventWriter
from mct_logger.tensorboard.ptq_log import TensorBoardListener
from tests.helpers import conv_dense_model, tensorboard_provider

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = mct_logger.QuantizationConfig(analyze_similarity=False)


def _model(name="tiny"):
    return conv_dense_model(filters=8, hidden=64, hidden_activation="relu", name=name)


def _data(samples=40):
    return np.random.default_rng(0).random((samples, 4, 4, 1)).astype("float32")


@pytest.fixture(autouse=True)
def logging_off():
    yield
    mct_logger.set_log_folder(None)


def _log_warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "mct_logger" and r.levelno >= logging.WARNING
            and r.getMessage().startswith("TensorBoard logging")]


def _event_files(folder):
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs
            if f.startswith("events.out.tfevents")]


def _assert_readable(folder):
    """Every event file loads to its end with TensorBoard's own record reader."""
    for path in _event_files(folder):
        list(EventFileLoader(path).Load())


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """`small_disk(free_bytes)`: a folder with about that much space left.

    A 1 MiB tmpfs filled up to `free_bytes` where the test can mount one (root),
    else event writes raise ENOSPC once that many bytes were written.
    """
    mounted = []

    def make(free_bytes):
        folder = tmp_path / "small_disk"
        folder.mkdir()
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                               capture_output=True) if shutil.which("mount") else None
        if mount is not None and mount.returncode == 0:
            mounted.append(folder)
            stat = os.statvfs(folder)
            filler = stat.f_bavail * stat.f_frsize - free_bytes
            with open(folder / "filler", "wb") as f:
                f.write(b"\0" * max(filler, 0))
            return folder
        written = {"bytes": 0}
        add_event = EventWriter.add_event

        def add_event_on_a_small_disk(self, event):
            written["bytes"] += event.ByteSize() + 16
            if written["bytes"] > free_bytes:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
            add_event(self, event)

        monkeypatch.setattr(EventWriter, "add_event", add_event_on_a_small_disk)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=True)


# ------------------------------------------------------------- item 1: the model is returned


def test_full_disk_mid_run_returns_the_model_with_one_warning(small_disk, caplog):
    folder = small_disk(96 * 1024)  # the first stages fit, the similarity stage does not
    model, x = _model(), _data()
    expected = mct_logger.keras_post_training_quantization(model, x)[0].predict(x, verbose=0)
    mct_logger.set_log_folder(folder, run_name="r")
    with caplog.at_level(logging.WARNING, logger="mct_logger"):
        model_q, info = mct_logger.keras_post_training_quantization(model, x)
    np.testing.assert_allclose(model_q.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
    (warning,) = _log_warnings(caplog)
    assert os.path.join(str(folder), "r") in warning
    assert os.strerror(errno.ENOSPC) in warning and "returns the quantized model" in warning
    mct_logger.set_log_folder(None)
    _assert_readable(folder)
    with tensorboard_provider(folder, "python") as (data, ctx, eid):
        runs = {r.run_name for r in data.list_runs(ctx, experiment_id=eid)}
    assert {"r/00_initial_graph", "r/03_statistics_collection", "r/07_quantized_model"} <= runs


class _BrokenPlotListener(TensorBoardListener):
    """The TensorBoard listener with a statistics stage that cannot be drawn."""

    def _on_statistics_collection(self, run, graph, result):
        raise RuntimeError("this plot cannot be drawn")


def test_a_logging_listener_that_raises_costs_nothing(tmp_path, caplog):
    listener = _BrokenPlotListener(str(tmp_path / "run"))
    listeners.set_run_listener_factory("broken_plot", lambda run: listener)
    try:
        with caplog.at_level(logging.WARNING, logger="mct_logger"):
            model_q, _ = mct_logger.keras_post_training_quantization(_model(), _data(), QUICK)
    finally:
        listeners.set_run_listener_factory("broken_plot", None)
    assert model_q.predict(_data(4), verbose=0).shape == (4, 3)
    (warning,) = _log_warnings(caplog)
    assert os.path.join(str(tmp_path), "run", "03_statistics_collection") in warning
    assert "RuntimeError: this plot cannot be drawn" in warning
    runs = sorted(os.listdir(tmp_path / "run"))
    assert runs[:3] == ["00_initial_graph", "01_batch_norm_folding",
                        "02_cross_layer_equalization"]
    assert not [r for r in runs if r >= "04"], "logging goes on after the failure"
    _assert_readable(tmp_path)


def _without_permission_override():
    """The command prefix that makes file permissions apply (root overrides them)."""
    if os.geteuid() != 0:
        return []
    assert shutil.which("setpriv"), (
        "running as root, file permissions apply only through setpriv (Debian's util-linux)")
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", "--"]


def test_permission_denied_mid_run_and_at_start_return_the_model(tmp_path):
    script = textwrap.dedent(f"""
        import json, logging, os, sys
        sys.path.insert(0, {ROOT!r})
        import numpy as np
        from tests.tensorboard.test_run_log import QUICK, _data, _model
        import mct_logger
        warnings = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = lambda r: warnings.append(r.getMessage())
        logging.getLogger("mct_logger").addHandler(handler)
        logdir = {str(tmp_path / "logs")!r}
        mct_logger.set_log_folder(logdir, run_name="r")

        def read_only(stage, graph, result):
            if stage == "statistics_collection":
                os.chmod(os.path.join(logdir, "r"), 0o555)

        mct_logger.add_stage_listener(read_only)
        q1, _ = mct_logger.keras_post_training_quantization(_model(), _data(), QUICK)
        mct_logger.remove_stage_listener(read_only)
        os.chmod(logdir, 0o555)  # no run folder can be created now
        q2, _ = mct_logger.keras_post_training_quantization(_model(), _data(), QUICK)
        print(json.dumps({{"shapes": [q.predict(_data(4), verbose=0).shape for q in (q1, q2)],
                          "warnings": warnings}}))
    """)
    done = subprocess.run(_without_permission_override() + [sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["shapes"] == [[4, 3], [4, 3]]
    logs = [w for w in out["warnings"] if w.startswith("TensorBoard logging")]
    assert len(logs) == 2, out["warnings"]
    assert os.path.join(str(tmp_path), "logs", "r", "0") in logs[0]  # a stage run of r
    assert os.path.join(str(tmp_path), "logs", "r_2") in logs[1]  # the run folder itself
    assert all(os.strerror(errno.EACCES) in w and "returns the quantized model" in w
               for w in logs)
    os.chmod(tmp_path / "logs", 0o755)
    os.chmod(tmp_path / "logs" / "r", 0o755)
    _assert_readable(tmp_path / "logs")


def test_quant_analyzer_tensorboard_failure_keeps_the_analysis(small_disk, tmp_path, caplog):
    folder = small_disk(0)  # full
    inputs = keras.Input((4, 4, 1), name="x")
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(inputs)))
    x = _data()
    mct_logger.set_log_folder(folder)
    with caplog.at_level(logging.WARNING, logger="mct_logger"):
        result = mct_logger.QuantAnalyzer(model, lambda m: m.predict(x, verbose=0),
                                          lambda m: 1.0).analyze(results_dir=tmp_path / "qa")
    assert result.status == "complete"
    (warning,) = _log_warnings(caplog)
    assert str(folder) in warning and os.strerror(errno.ENOSPC) in warning
    assert "The analysis goes on" in warning
    summary = json.loads((tmp_path / "qa" / "summary.json").read_text())
    assert summary["status"] == "complete" and "sensitivity" in summary["analyses"]


# ------------------------------------------------------------- item 2: run folders


def test_four_threads_racing_for_one_run_name_each_get_their_own_folder(tmp_path):
    mct_logger.set_log_folder(tmp_path, run_name="sweep")
    models = [_model(f"m{i}") for i in range(4)]
    barrier, errors = threading.Barrier(4), []

    def work(model):
        barrier.wait()
        try:
            mct_logger.keras_post_training_quantization(model, _data(), QUICK)
        except Exception as exc:  # the assertion below shows it
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(m,)) for m in models]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    folders = sorted(d for d in os.listdir(tmp_path) if os.path.isdir(tmp_path / d))
    assert folders == ["sweep", "sweep_2", "sweep_3", "sweep_4"]
    for folder in folders:
        assert os.path.isdir(tmp_path / folder / "07_quantized_model")


def test_two_processes_racing_for_one_run_name_each_get_their_own_folders(tmp_path):
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {ROOT!r})
        from mct_logger.tensorboard import log_folder as logger
        logger.set_log_folder({str(tmp_path / "logs")!r}, run_name="race")
        open(os.path.join({str(tmp_path)!r}, "ready_" + sys.argv[1]), "w").close()
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        from mct_logger.listeners import PTQ, RunInfo
        print("\\n".join(logger.new_run_folder(RunInfo(PTQ, "model")) for _ in range(50)))
    """)
    processes = [subprocess.Popen([sys.executable, "-c", script, str(k)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for k in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready_{k}").exists() for k in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in processes)
        time.sleep(0.01)
    go.write_text("")  # both are set up and waiting: they start together
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    created = [line for out, _ in outputs for line in out.split()]
    assert len(created) == len(set(created)) == 100
    assert sorted(os.listdir(tmp_path / "logs")) == sorted(
        ["mct_logger.log", "race"] + [f"race_{k}" for k in range(2, 101)])


@pytest.mark.parametrize("run_name", ["../../escaped", "a/b", "a\\b", "..", ".", ""])
def test_run_name_outside_the_log_folder_is_refused_and_the_setting_kept(tmp_path, run_name):
    kept = tmp_path / "kept"
    mct_logger.set_log_folder(kept, run_name="ok")
    with pytest.raises(ValueError, match="run_name=.*not a plain folder name"):
        mct_logger.set_log_folder(tmp_path / "a" / "logs", run_name=run_name)
    assert sorted(os.listdir(tmp_path)) == ["kept"]
    assert mct_logger.get_log_folder() == str(kept)
    assert log_lib.new_run_folder(listeners.RunInfo(listeners.PTQ, "m")) == str(kept / "ok")
    logging.getLogger("mct_logger").warning("still logged here")
    assert "still logged here" in (kept / "mct_logger.log").read_text()


def test_failed_set_log_folder_leaves_the_previous_setting_whole(tmp_path):
    kept = tmp_path / "kept"
    mct_logger.set_log_folder(kept, run_name="ok")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        mct_logger.set_log_folder(blocker)
    with pytest.raises(OSError, match=r"cannot write there.*previous log folder .*kept"):
        mct_logger.set_log_folder(blocker / "logs")
    assert mct_logger.get_log_folder() == str(kept)
    mct_logger.keras_post_training_quantization(_model(), _data(), QUICK)
    assert os.path.isdir(kept / "ok" / "07_quantized_model")
    assert "PTQ stage quantized_model done" in (kept / "mct_logger.log").read_text()


@pytest.mark.parametrize("holder", ["folder", "fifo"])
def test_something_else_at_the_text_log_path_is_named_and_the_setting_kept(tmp_path, holder):
    """The folder is writable but its `mct_logger.log` is a folder or a FIFO (whose
    open would block): the error names that path and the fix, not the folder."""
    kept = tmp_path / "kept"
    mct_logger.set_log_folder(kept, run_name="ok")
    logdir = tmp_path / "logs"
    logdir.mkdir()
    text_log = logdir / log_lib.LOG_FILE
    os.mkdir(text_log) if holder == "folder" else os.mkfifo(text_log)
    error = IsADirectoryError if holder == "folder" else FileExistsError
    with pytest.raises(error) as raised:
        mct_logger.set_log_folder(logdir)
    message = str(raised.value)
    assert repr(str(text_log)) in message and "remove or rename it" in message
    assert "another folder" in message and "cannot write there" not in message
    assert mct_logger.get_log_folder() == str(kept)


def test_a_read_only_text_log_is_named_with_its_cause(tmp_path):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    (logdir / log_lib.LOG_FILE).write_text("")
    os.chmod(logdir / log_lib.LOG_FILE, 0o444)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        import mct_logger
        try:
            mct_logger.set_log_folder({str(logdir)!r})
        except PermissionError as error:
            print(error)
    """)
    done = subprocess.run(_without_permission_override() + [sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    message = done.stdout.strip()
    assert repr(str(logdir / log_lib.LOG_FILE)) in message, done.stdout
    assert os.strerror(errno.EACCES) in message and "make it writable" in message


def test_long_model_names_are_shortened_with_a_hash(tmp_path):
    with pytest.raises(ValueError, match="run_name is 300 bytes long.*shorter run_name"):
        mct_logger.set_log_folder(tmp_path, run_name="r" * 300)
    mct_logger.set_log_folder(tmp_path)
    for name in ("m" * 240, "m" * 239 + "n"):
        mct_logger.keras_post_training_quantization(_model(name), _data(), QUICK)
    mct_logger.set_log_folder(None)
    folders = sorted(d for d in os.listdir(tmp_path) if os.path.isdir(tmp_path / d))
    assert len(folders) == 2 and folders[0][:64] != folders[1][:64]
    for folder in folders:  # start of the name, a hash, the timestamp
        assert len(folder) == log_lib.MAX_MODEL_NAME_CHARS + len("_20260101-000000")
        assert folder.startswith("m" * 40)
    with tensorboard_provider(tmp_path, "python") as (data, ctx, eid):
        runs = {r.run_name for r in data.list_runs(ctx, experiment_id=eid)}
    assert {f"{f}/07_quantized_model" for f in folders} <= runs


def test_text_log_removed_while_logging_is_recreated(tmp_path):
    mct_logger.set_log_folder(tmp_path)
    os.remove(tmp_path / "mct_logger.log")
    mct_logger.keras_post_training_quantization(_model(), _data(), QUICK)
    assert "PTQ stage quantized_model done" in (tmp_path / "mct_logger.log").read_text()


# ------------------------------------------------------------- item 3: warnings stay visible


@pytest.mark.parametrize("application_handler", [False, True])
def test_library_warnings_reach_the_console_with_a_log_folder(tmp_path, application_handler):
    script = textwrap.dedent(f"""
        import logging, sys
        sys.path.insert(0, {ROOT!r})
        import keras, numpy as np
        import mct_logger
        if {application_handler!r}:
            logging.basicConfig(format="app: %(message)s")
        inputs = keras.Input((4, 4, 1))
        h = keras.layers.Conv2D(4, 3, activation="relu6")(inputs)
        h = keras.layers.Conv2D(4, 1)(h)
        model = keras.Model(inputs, keras.layers.Flatten()(h))
        mct_logger.set_log_folder({str(tmp_path)!r})
        config = mct_logger.QuantizationConfig(cross_layer_equalization=True,
                                               analyze_similarity=False)
        x = np.random.default_rng(0).random((8, 4, 4, 1)).astype("float32")
        mct_logger.keras_post_training_quantization(model, x, config)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    line = "Cross-layer equalization replaced 1 ReLU6 with ReLU"
    shown = [x for x in done.stderr.splitlines() if line in x]
    assert len(shown) == 1, done.stderr[-3000:]  # once: never lost, never doubled
    assert shown[0].startswith("app: ") == application_handler
    assert line in (tmp_path / "mct_logger.log").read_text()


# ------------------------------------------------------------- stages with odd numbers


def _scalars(folder, tag):
    with tensorboard_provider(folder, "python") as (data, ctx, eid):
        read = data.read_scalars(ctx, experiment_id=eid, plugin_name="scalars", downsample=1000)
    return {run: [d.value for d in tags[tag]] for run, tags in read.items() if tag in tags}


def test_huge_values_log_finite_sqnr_and_every_similarity_plot(tmp_path, caplog):
    inputs = keras.Input((8, 8, 1), name="img")
    model = keras.Model(inputs, keras.layers.Dense(10, name="fc")(keras.layers.Flatten()(inputs)))
    x = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32") * np.float32(1e30)
    mct_logger.set_log_folder(tmp_path, run_name="r")
    with caplog.at_level(logging.WARNING, logger="mct_logger"):
        _, info = mct_logger.keras_post_training_quantization(model, x)
    mct_logger.set_log_folder(None)
    assert _log_warnings(caplog) == []  # every stage was logged
    result = info.stage_results["similarity_analysis"]
    assert np.isfinite(result.cosine).all() and np.isfinite(result.cosine_isolated).all()
    sqnr = {path: _scalars(tmp_path, f"sqnr_db/{path}") for path in ("accumulated", "isolated")}
    assert all(list(runs) == ["r/07_quantized_model"] for runs in sqnr.values())
    values = [v for runs in sqnr.values() for run in runs.values() for v in run]
    assert len(values) == 2 * len(result.nodes) and np.isfinite(values).all()
    assert all(v > 20 for v in values)  # 8-bit grids at 1e30 are as good as at 1
    images = [f for f in os.listdir(tmp_path / "r" / "07_quantized_model")]
    assert images  # the per-sample plots were drawn


def test_paired_activation_errors_stay_finite_for_huge_values():
    from mct_logger.diagnostics.activations import PairedActivations

    inputs = keras.Input((16,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(4, name="fc")(inputs))
    x = np.random.default_rng(0).random((32, 16)).astype("float32") * np.float32(1e30)
    _, info = mct_logger.keras_post_training_quantization(model, x, QUICK)
    errors = PairedActivations(info.float_graph, info.plan, info.encodings).errors([[x]])
    for node, error in errors.items():
        numbers = [error.sqnr_accumulated_db, error.sqnr_isolated_db, error.mse_accumulated,
                   *error.cosine_per_sample("accumulated")]
        assert np.isfinite(numbers).all(), (node, numbers)


def test_every_layer_kept_in_float_is_logged_and_returns_the_model(tmp_path, caplog):
    config = mct_logger.QuantizationConfig(
        overrides={".*": mct_logger.LayerOverride(keep_float=True)})
    model, x = _model(), _data()
    mct_logger.set_log_folder(tmp_path, run_name="r")
    with caplog.at_level(logging.WARNING, logger="mct_logger"):
        model_q, _ = mct_logger.keras_post_training_quantization(model, x, config)
    mct_logger.set_log_folder(None)
    assert _log_warnings(caplog) == []
    np.testing.assert_allclose(model_q.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    with tensorboard_provider(tmp_path, "python") as (data, ctx, eid):
        read = data.read_tensors(ctx, experiment_id=eid, plugin_name="text", downsample=10)
    # every stage up to the quantized model is logged; with no quantized node
    # there is nothing to compare, so no similarity stage runs
    assert "r/07_quantized_model" in read and "similarity_summary" not in read[
        "r/07_quantized_model"]
    assert sorted(os.listdir(tmp_path / "r"))[-1] == "07_quantized_model"


def test_a_failing_similarity_analysis_is_one_warning_and_the_model_is_returned(
        tmp_path, caplog, monkeypatch):
    from mct_logger.ptq import pipeline as ptq

    def failing(*args, **kwargs):  # a diagnosis that breaks on some model nobody tried
        raise RuntimeError("the comparison could not run this layer")

    monkeypatch.setattr(ptq, "analyze_similarity", failing)
    model, x = _model(), _data()
    mct_logger.set_log_folder(tmp_path, run_name="r")
    with caplog.at_level(logging.WARNING, logger="mct_logger"):
        model_q, info = mct_logger.keras_post_training_quantization(model, x)
    mct_logger.set_log_folder(None)
    assert model_q.predict(x, verbose=0).shape == model.predict(x, verbose=0).shape
    failed = [r.getMessage() for r in caplog.records if "similarity analysis failed" in
              r.getMessage()]
    assert len(failed) == 1 and "the comparison could not run this layer" in failed[0]
    assert "returns the quantized model" in failed[0] and _log_warnings(caplog) == []
    assert info.stage_results["similarity_analysis"].reason.startswith(
        "the similarity analysis failed: RuntimeError")
    with tensorboard_provider(tmp_path, "python") as (data, ctx, eid):
        read = data.read_tensors(ctx, experiment_id=eid, plugin_name="text", downsample=10)
    summary = read["r/07_quantized_model"]["similarity_summary"][0].numpy.item().decode()
    assert "skipped: the similarity analysis failed" in summary


@pytest.mark.parametrize("holder", ["folder", "fifo"])
def test_text_log_that_cannot_be_written_is_one_warning_and_logging_goes_on(
        tmp_path, caplog, holder):
    mct_logger.set_log_folder(tmp_path, run_name="r")
    os.remove(tmp_path / "mct_logger.log")
    # a folder or a FIFO (whose open would block) where the text log was
    (os.mkdir if holder == "folder" else os.mkfifo)(tmp_path / "mct_logger.log")
    with caplog.at_level(logging.INFO, logger="mct_logger"):
        model_q, _ = mct_logger.keras_post_training_quantization(_model(), _data(), QUICK)
        logging.getLogger("mct_logger").warning("later warnings still shown")
    assert model_q.predict(_data(4), verbose=0).shape == (4, 3)
    failed = [r.getMessage() for r in caplog.records if "The text log" in r.getMessage()]
    assert len(failed) == 1 and str(tmp_path / "mct_logger.log") in failed[0]
    assert ("IsADirectoryError" if holder == "folder" else "not a regular file") in failed[0]
    assert "later warnings still shown" in caplog.text
    assert os.path.isdir(tmp_path / "r" / "07_quantized_model")  # TensorBoard logging went on
