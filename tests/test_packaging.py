"""The wheel carries the packages, the frontend files and the entry points; the CLI runs."""

import configparser
import pathlib
import subprocess
import sys
import zipfile

import pytest

from mct_logger import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out), str(ROOT)],
        check=True,
    )
    (path,) = out.glob("mct_logger-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_holds_both_packages(wheel):
    names = set(wheel.namelist())
    for module in ["mct_logger/__init__.py", "mct_logger/graph/ir.py", "mct_logger/ptq/pipeline.py",
                   "mct_logger/tensorboard/events.py", "mct_logger/utils/callbacks.py",
                   "mct_logger/quantization/layers.py",
                   "mct_logger/techniques/batch_norm_folding.py", "mct_logger/tb_plugin/__init__.py",
                   "mct_logger/compression/compress.py"]:
        assert module in names
    assert not any(n.startswith(("tests/", "benchmarks/", "tb_plugin/", "frontend/"))
                   for n in names)


def test_wheel_ships_every_frontend_file_as_plugin_package_data(wheel):
    names = set(wheel.namelist())
    shipped = [p for p in (ROOT / "frontend").rglob("*") if p.suffix in {".js", ".css", ".html"}]
    for path in shipped:
        assert f"mct_logger/tb_plugin/frontend/{path.relative_to(ROOT / 'frontend').as_posix()}" in names


def test_wheel_declares_the_entry_points(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert parser["console_scripts"]["mct-logger"].strip() == "mct_logger.cli:main"
    assert parser["tensorboard_plugins"]["compression"].strip() == \
        "mct_logger.tb_plugin.compression_plugin:CompressionPlugin"
    metadata = wheel.read(entry_points.replace("entry_points.txt", "METADATA")).decode()
    assert "Requires-Python: >=3.10" in metadata
    for requirement in ["tensorflow>=2.17", "keras<4,>=3", "tensorboard>=2.17", "plotly<8"]:
        assert f"Requires-Dist: {requirement}" in metadata


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text().splitlines()
    marker = readme.index("<!-- test-command -->")
    assert readme[marker + 1] == "```bash"
    assert "pytest" in readme[marker + 2]
    assert "<!-- test-command -->" in (ROOT / ".ci" / "run").read_text()


def test_demo_command_trains_quantizes_and_reports(tmp_path, capsys):
    assert cli.main(["demo", "--logdir", str(tmp_path), "--epochs", "4"]) == 0
    out = capsys.readouterr().out
    assert "Float accuracy:" in out and "Quantized (W8A8):" in out
    assert f"tensorboard --logdir {tmp_path}" in out
    assert (tmp_path / "digits_cnn_quantized.keras").exists()
    assert (tmp_path / "quant_analyzer_results" / "index.html").exists()
    runs = [d for d in tmp_path.iterdir() if d.is_dir() and d.name.startswith("digits_cnn_")]
    # the PTQ run folder, and beside it the analyzer's
    assert [d for d in runs if (d / "00_initial_graph").is_dir()]
    assert [d for d in runs if (d / "quant_analyzer").is_dir()]
    assert "Channel pruning:" in out and [d for d in runs if (d / "compression").is_dir()]


def test_demo_rejects_bad_epochs(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--epochs", "0"])
    assert "--epochs" in capsys.readouterr().err


def test_repository_name_tb_plugin_imports_the_installed_plugin_package(tmp_path):
    # From outside the repository (as ../shared/cases scripts run), `tb_plugin.reader`
    # is the installed mct_logger.tb_plugin.reader itself, without TensorFlow.
    script = ("import sys, mct_logger, tb_plugin.reader as a, mct_logger.tb_plugin.reader as b;"
              "assert a is b, (a, b); assert 'tensorflow' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
