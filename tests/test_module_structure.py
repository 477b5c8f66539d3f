"""The shape of the code base: one-way imports, small modules, an engine that never
names TensorBoard. Read from the source with `ast` (nothing is imported)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = {"mct_logger": ROOT / "mct_logger", "mct_logger.tb_plugin": ROOT / "tb_plugin"}
MAX_LINES = 500
# Modules that write logs or TensorBoard files: the PTQ engine imports none of them.
LOGGING_MODULES = {
    "mct_logger.logger", "mct_logger.run_log", "mct_logger.tensorboard_listener",
    "mct_logger.events", "mct_logger.stage_summary", "mct_logger.similarity_plots",
    "mct_logger.layer_table", "mct_logger.recommendation_log", "mct_logger.compression_log",
    "mct_logger.live_payloads", "mct_logger.analysis_log",
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


def _imports(name: str, path: pathlib.Path) -> set[str]:
    """Project modules `name` imports anywhere in its source (function bodies too)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
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
    assert "mct_logger.ptq" in MODULES and "mct_logger.tb_plugin.summary" in MODULES
    assert "mct_logger.listeners" in GRAPH["mct_logger.ptq"]
    assert "mct_logger.tb_plugin.metadata" in GRAPH["mct_logger.tb_plugin.summary"]


def test_no_import_cycle_among_the_project_modules():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("engine", ["mct_logger.ptq", "mct_logger.mixed_precision_search",
                                    "mct_logger.recommend", "mct_logger.compression.compress",
                                    "mct_logger.analyzer"])
def test_the_engine_imports_nothing_that_logs(engine):
    seen, todo = set(), [engine]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(GRAPH[name])
    assert not GRAPH[engine] & LOGGING_MODULES
    reached = sorted(seen & (LOGGING_MODULES | {"mct_logger.tb_plugin.summary"}))
    assert not reached, f"{engine} reaches {reached}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_500_lines(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level and \
                    (node.module or "").startswith("mct_logger"):
                offenders += [f"{name}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, offenders


FRONTEND_FILES = sorted(p for p in (ROOT / "frontend").rglob("*") if p.suffix in {".js", ".css"})


@pytest.mark.parametrize("path", FRONTEND_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_frontend_file_is_over_500_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines"
