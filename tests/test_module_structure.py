"""The shape of the code base, read from the source with `ast` (nothing is imported):

- `mct_logger/` holds only `__init__`, `cli`, `demo` and `listeners` at its top
  level; everything else lives in a folder named for its concept;
- the folders form layers: a module imports only its own folder and the layers
  below it, and `tensorboard/` never imports an engine entry point;
- no module reads another module's private (`_x`) names or attributes; private
  attributes of Keras or TensorFlow are read only where listed, with the reason;
- no file over 500 lines, Python or JavaScript/CSS alike.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = {"mct_logger": ROOT / "mct_logger", "mct_logger.tb_plugin": ROOT / "tb_plugin"}
MAX_LINES = 500
TOP_LEVEL = {"__init__", "cli", "demo", "listeners"}
# Bottom to top: a folder may import its own modules and the folders of lower layers.
LAYERS = [
    {"utils"},                                  # JSON, atomic files, callbacks, heap, paths
    {"tb_plugin", "listeners", "data"},         # payload formats, who listens, the data
    {"graph"},                                  # the model IR
    {"quantization"},                           # config, plan, encodings, observers, quantsim
    {"diagnostics", "techniques"},              # error measures; BN folding, CLE, bias correction
    {"ptq", "compression"},                     # the PTQ pipeline; model compression
    {"mixed_precision"},                        # search over bit widths (runs PTQ trials)
    {"analyzer"},                               # QuantAnalyzer, its report and recommend
    {"tensorboard"},                            # listeners that write TensorBoard files
    {"tb_plugin.routes"},                       # the tabs' server side (ranks old logs again)
    {"demo"},                                   # the built-in example
    {"cli"},                                    # the `mct-logger` command
]
LAYER_OF = {folder: level for level, folders in enumerate(LAYERS) for folder in folders}
# The engine's entry points: run by users, never by a listener.
ENTRY_POINTS = {
    "mct_logger.ptq.pipeline", "mct_logger.analyzer.driver", "mct_logger.analyzer.recommend",
    "mct_logger.mixed_precision.search", "mct_logger.compression.compress",
}
# Private attributes of Keras / TensorFlow objects read where no public API gives them:
# (module, attribute) -> why.
THIRD_PARTY_PRIVATE = {
    ("mct_logger.graph.ir", "_keras_history"): "a KerasTensor's producing operation",
    ("mct_logger.graph.ir", "_nodes_by_depth"): "a Functional model's call graph",
    ("mct_logger.graph.ir", "_inbound_nodes"): "an operation's calls in the graph",
    ("mct_logger.graph.clone", "_flatten_layers"): "every sublayer, tracked or not",
    ("mct_logger.graph.layer_kinds", "_flatten_layers"): "every sublayer, tracked or not",
    ("mct_logger.diagnostics.rebuild_check", "_flatten_layers"): "every sublayer",
    ("mct_logger.quantization.quantsim", "_flatten_layers"): "every sublayer",
    ("mct_logger.quantization.layers", "_compute_causal_padding"): "Conv1D's causal padding",
    ("mct_logger.data.dataset_length", "_as_serialized_graph"): "a tf.data pipeline's graph",
}


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            if package == "mct_logger" and "tb_plugin" in path.parts:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _imports(name: str, path: pathlib.Path) -> set[str]:
    """Project modules `name` imports anywhere in its source (function bodies too)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            # importing a.b.c runs the packages a and a.b first; a module inside a
            # package importing its sibling does not re-enter its own package
            while target and target != name and not name.startswith(target + "."):
                found.add(target)
                target = target.rpartition(".")[0]
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


# The plugin's server side reads logs (and may rank them with the analyzer's rules);
# the rest of tb_plugin (metadata, summary, reader, assets) is shared by the writers.
PLUGIN_ROUTES = {"mct_logger.tb_plugin.dashboard", "mct_logger.tb_plugin.quant_analyzer_plugin",
                 "mct_logger.tb_plugin.cle_plugin", "mct_logger.tb_plugin.compression_plugin"}


def _folder(module: str) -> str | None:
    """The concept folder (or top-level module) a project module belongs to."""
    if module in PLUGIN_ROUTES:
        return "tb_plugin.routes"
    if module.startswith("mct_logger.tb_plugin"):
        return "tb_plugin"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package mct_logger itself


def _cycle() -> list[str] | None:
    """One import cycle among the project's modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name):
        state[name] = 1
        stack.append(name)
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(GRAPH):
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def test_the_walk_sees_every_module_and_real_edges():
    assert "mct_logger.ptq.pipeline" in MODULES and "mct_logger.tb_plugin.summary" in MODULES
    assert "mct_logger.listeners" in GRAPH["mct_logger.ptq.pipeline"]
    assert "mct_logger.tb_plugin.metadata" in GRAPH["mct_logger.tb_plugin.summary"]


def test_only_the_entry_modules_stay_at_the_package_top_level():
    top = {path.stem for path in (ROOT / "mct_logger").glob("*.py")}
    assert top == TOP_LEVEL, f"move {sorted(top - TOP_LEVEL)} into the folder of its concept"
    folders = {p.name for p in (ROOT / "mct_logger").iterdir()
               if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LAYER_OF) - TOP_LEVEL - {"tb_plugin", "tb_plugin.routes", "listeners"}, \
        "a new folder needs its place in LAYERS"


def test_no_import_cycle_among_the_project_modules():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_folders_form_layers():
    offenders = []
    for name, targets in GRAPH.items():
        source = _folder(name)
        if source is None:
            continue
        for target in targets:
            folder = _folder(target)
            if folder in (None, source):
                continue
            if LAYER_OF[folder] >= LAYER_OF[source]:
                offenders.append(f"{name} -> {target}")
    assert not offenders, offenders


def test_tensorboard_never_imports_an_engine_entry_point():
    offenders = [f"{name} -> {sorted(GRAPH[name] & ENTRY_POINTS)}" for name in GRAPH
                 if _folder(name) == "tensorboard" and GRAPH[name] & ENTRY_POINTS]
    assert not offenders, offenders


@pytest.mark.parametrize("engine", sorted(ENTRY_POINTS))
def test_the_engine_imports_nothing_that_logs(engine):
    seen, todo = set(), [engine]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(GRAPH[name])
    reached = sorted(n for n in seen if _folder(n) == "tensorboard"
                     or n == "mct_logger.tb_plugin.summary")
    assert not reached, f"{engine} reaches {reached}"


def test_no_module_reads_another_modules_private_names():
    """`from x import _y`, and `obj._y` where `_y` is defined by another project
    module (or by no project module: then only the listed Keras/TF internals)."""
    defined: dict[str, set[str]] = {}
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.setdefault(node.name, set()).add(name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                defined.setdefault(node.attr, set()).add(name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.setdefault(node.id, set()).add(name)
    offenders = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level and \
                    (node.module or "").startswith("mct_logger"):
                offenders += [f"{name}: from {node.module} import {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            owners = defined.get(attr, set())
            if name in owners:
                continue
            if owners or (name, attr) not in THIRD_PARTY_PRIVATE:
                offenders.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, offenders


SOURCES = sorted(
    [path for path in MODULES.values()]
    + [p for p in (ROOT / "frontend").rglob("*") if p.suffix in (".js", ".mjs", ".css")],
    key=str)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_is_over_500_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it within its folder"
