"""Where the dashboards' static files are: the frontend ES modules and the
plotly.js bundle. Shared by the plugins' static routes and the offline report.

Imports nothing heavy: plugin entry points load this module.

Example:

```python
(frontend_dir() / "quant_analyzer" / "qa_dashboard.js").read_text()
```
"""

from __future__ import annotations

import importlib.util
import pathlib

# The offline report's entry module, relative to the frontend folder (its
# subfolders: common/ and one per tab).
ENTRY_MODULE = "quant_analyzer/report_main.js"


def frontend_dir() -> pathlib.Path:
    """The dashboards' browser code.

    Installed from a wheel it is `mct_logger/tb_plugin/frontend/` (package
    data); from a checkout or an editable install, the repository's top-level
    `frontend/` beside `tb_plugin/`. Either holds `common/` and one folder per
    tab (`quant_analyzer/`, `cle/`, `compression/`).

    Raises:
        FileNotFoundError: neither folder holds the frontend (a broken install).
    """
    here = pathlib.Path(__file__).resolve().parent
    for candidate in (here / "frontend", here.parent / "frontend"):
        if (candidate / ENTRY_MODULE).is_file():
            return candidate
    raise FileNotFoundError(
        "The dashboards' frontend files are missing (mct_logger/tb_plugin/frontend in the "
        "installed package); reinstall mct-logger."
    )


def plotly_bundle_path() -> pathlib.Path:
    """plotly.min.js from the `plotly` wheel, found without importing plotly.

    Raises:
        ModuleNotFoundError: plotly is not installed.
        FileNotFoundError: plotly is installed without its JavaScript bundle.
    """
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The dashboards' charts come from the plotly package; install it with "
            "pip install 'plotly<8'."
        )
    for location in spec.submodule_search_locations:
        path = pathlib.Path(location) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise FileNotFoundError("plotly is installed without package_data/plotly.min.js; reinstall it.")
