"""The frontend's Node unit tests (tests/frontend/*.test.mjs): the pure `*_data.js`
modules of each tab and common/'s formatting and progress, run with Node's
built-in runner (`node --test`, `node:test` + `node:assert`), no npm package.

Node is a test dependency like Chromium: `.ci/run` installs Debian's `nodejs`.
Without `node` on PATH the test is skipped, saying so.
"""

import pathlib
import shutil
import subprocess

import pytest

HERE = pathlib.Path(__file__).resolve().parent
FRONTEND = HERE.parent.parent / "frontend"
TEST_FILES = sorted(HERE.glob("*.test.mjs"))


def test_every_pure_data_module_has_a_node_test():
    data_modules = sorted(p.stem for p in FRONTEND.glob("*/*_data.js"))
    assert data_modules, f"no *_data.js module under {FRONTEND}"
    tested = {p.name.removesuffix(".test.mjs") for p in TEST_FILES}
    assert set(data_modules) <= tested, f"no tests/frontend/<name>.test.mjs for {set(data_modules) - tested}"


@pytest.mark.skipif(shutil.which("node") is None,
                    reason="node is not on PATH: install Debian's nodejs (.ci/run does) to run "
                           "the frontend's unit tests")
def test_node_unit_tests_pass():
    result = subprocess.run(
        ["node", "--test", *map(str, TEST_FILES)], cwd=HERE, capture_output=True, text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node --test failed:\n{output[-8000:]}"
    # node's TAP summary: every file ran, none failed
    assert "# fail 0" in output and "# pass 0" not in output, output[-3000:]
