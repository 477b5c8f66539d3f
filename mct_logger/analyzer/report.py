"""The offline HTML report: one `index.html` that opens from the file system.
Imports neither TensorFlow nor Keras.

The page inlines the plotly.js bundle (from the `plotly` wheel) once as a
classic script, the analysis tables as JSON, the stylesheet, and the
dashboard's ES modules from `frontend/` (the entry
`quant_analyzer/report_main.js` and what it imports from `quant_analyzer/`
and `common/`) bundled into one inline module script (browsers refuse to load
module files over file://). The TensorBoard tab serves the same modules as
files.

The bundler understands the subset of module syntax the frontend uses: named
relative imports (`import { a, b as c } from "./x.js";`, or from
`"../common/x.js"` within the frontend folder) and `export` in front of
`function`, `async function`, `class`, `const` or `let` declarations.
Anything else raises, so a module written otherwise fails here, not in a
browser.

Example:

```python
path = write_report("results", {"per_layer_sqnr": table, "summary": summary})
```
"""

from __future__ import annotations

import html
import json
import os
import pathlib
import re

from mct_logger.tb_plugin.assets import ENTRY_MODULE, frontend_dir, plotly_bundle_path
from mct_logger.utils.json_safe import json_ready
from mct_logger.utils.atomic_files import write_atomically

REPORT_FILE = "index.html"
STYLESHEETS = ("common/dashboard.css",)
DATA_ELEMENT_ID = "quant-analyzer-data"
ROOT_ELEMENT_ID = "quant-analyzer"

_IMPORT = re.compile(
    r"""^[ \t]*import\s*\{(?P<names>[^}]*)\}\s*from\s*(?P<q>["'])(?P<path>\.\.?/[\w./-]+\.js)(?P=q)\s*;?[ \t]*$""",
    re.M,
)
_ANY_IMPORT = re.compile(r"^[ \t]*import\b", re.M)
_EXPORT = re.compile(
    r"^export\s+(?P<kind>async\s+function\*?|function\*?|class|const|let)\s+(?P<name>[A-Za-z_$][\w$]*)",
    re.M,
)
_ANY_EXPORT = re.compile(r"^[ \t]*export\b", re.M)


def bundle_modules(directory: pathlib.Path, entry: str = ENTRY_MODULE) -> str:
    """The entry module and every module it imports, as one module script."""
    sources: dict[str, str] = {}
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, importer: str | None) -> None:
        if name in sources:
            return
        if name in visiting:
            raise ValueError(f"Circular import of {name} (from {importer}) in {directory}.")
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"{importer or 'The report'} imports {name}, missing from {directory}.")
        visiting.add(name)
        text = path.read_text(encoding="utf-8")
        for match in _IMPORT.finditer(text):
            visit(_normalise(name, match.group("path")), name)
        visiting.discard(name)
        sources[name] = text
        order.append(name)

    visit(entry, None)
    parts = ["// Bundled from mct-logger's frontend/ ES modules: " + ", ".join(order) + "."]
    for name in order:
        parts.append(_wrap(name, sources[name]))
    return "\n".join(parts)


def _normalise(importer: str, relative: str) -> str:
    joined = os.path.normpath(os.path.join(os.path.dirname(importer), relative))
    if joined.startswith(".."):
        raise ValueError(f"{importer} imports {relative}, outside the frontend folder.")
    return pathlib.PurePosixPath(joined).as_posix()


def _variable(name: str) -> str:
    return "__module_" + re.sub(r"\W", "_", name)


def _wrap(name: str, text: str) -> str:
    """One module as a function scope returning its exports."""
    imports = []

    def replace_import(match: re.Match) -> str:
        dependency = _normalise(name, match.group("path"))
        bindings = []
        for part in match.group("names").split(","):
            part = part.strip()
            if not part:
                continue
            pieces = part.split()
            if len(pieces) == 3 and pieces[1] == "as":
                bindings.append(f"{pieces[0]}: {pieces[2]}")
            elif len(pieces) == 1:
                bindings.append(pieces[0])
            else:
                raise ValueError(f"{name}: cannot bundle the import binding {part!r}.")
        imports.append(f"const {{ {', '.join(bindings)} }} = {_variable(dependency)};")
        return ""

    body = _IMPORT.sub(replace_import, text)
    if _ANY_IMPORT.search(body):
        line = _ANY_IMPORT.search(body)
        snippet = body[line.start():body.find("\n", line.start())].strip()
        raise ValueError(
            f"{name}: only named relative imports can be bundled, found {snippet!r}."
        )
    exports = [m.group("name") for m in _EXPORT.finditer(body)]
    body = _EXPORT.sub(lambda m: f"{m.group('kind')} {m.group('name')}", body)
    if _ANY_EXPORT.search(body):
        line = _ANY_EXPORT.search(body)
        snippet = body[line.start():body.find("\n", line.start())].strip()
        raise ValueError(f"{name}: only exported declarations can be bundled, found {snippet!r}.")
    return (
        f"// ---- {name}\n"
        f"const {_variable(name)} = (() => {{\n"
        + "\n".join(imports) + "\n"
        + body
        + f"\nreturn {{ {', '.join(exports)} }};\n}})();\n"
    )


def _script_safe(text: str) -> str:
    """Text that cannot end or confuse an inline <script> element."""
    text = re.sub(r"</(script)", r"<\\/\1", text, flags=re.I)
    return text.replace("<!--", "<\\!--")


def render_html(tables: dict, title: str | None = None) -> str:
    """The whole report page for `tables` (payload kind -> table)."""
    directory = frontend_dir()
    css = "\n".join((directory / name).read_text(encoding="utf-8") for name in STYLESHEETS)
    bundle = bundle_modules(directory)
    plotly_js = plotly_bundle_path().read_text(encoding="utf-8")
    data = json.dumps({"tables": json_ready(tables)}, allow_nan=False, separators=(",", ":"))
    # JSON text has "<" only inside strings, where \u003c is the same character.
    data = data.replace("<", "\\u003c")
    model = (tables.get("summary") or {}).get("model")
    title = title or (f"QuantAnalyzer: {model}" if model else "QuantAnalyzer")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>\n{_script_safe(css)}\n</style>\n"
        f"<script>\n{_script_safe(plotly_js)}\n</script>\n"
        "</head>\n<body>\n"
        f'<main id="{ROOT_ELEMENT_ID}"><noscript>This report needs JavaScript.</noscript></main>\n'
        f'<script type="application/json" id="{DATA_ELEMENT_ID}">{data}</script>\n'
        f'<script type="module">\n{_script_safe(bundle)}\n</script>\n'
        "</body>\n</html>\n"
    )


def write_report(results_dir: str, tables: dict, title: str | None = None) -> str:
    """Writes `results_dir/index.html`; returns its path.

    Raises:
        OSError: the page cannot be written (disk full, a folder in its way),
            naming `index.html`'s path; no `index.html.tmp` is left behind.
    """
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, REPORT_FILE)
    page = render_html(tables, title)
    write_atomically(path, lambda f: f.write(page))
    return path
