"""The layout's promises: dependencies point one way, no cycles, a fast command line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("converter", "server", "vindr_convert")
# Who may import whom (top-level packages of this project).
ALLOWED = {
    "converter": {"converter"},
    "server": {"server", "converter"},
    "vindr_convert": {"vindr_convert", "server", "converter"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Project modules imported by the file at ``path`` (absolute and relative imports)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def test_dependencies_point_one_way() -> None:
    wrong = [(module, target) for module, targets in _graph().items() for target in targets
             if target.split(".")[0] not in ALLOWED[module.split(".")[0]]]
    assert wrong == []


def test_no_import_cycle() -> None:
    graph = _graph()
    # a package's __init__ re-exporting its own modules is not a cycle of the data flow
    edges = {m: {t for t in ts if not (m.count(".") < t.count(".") and t.startswith(m + "."))}
             for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize("module", ["vindr_convert.app"])
def test_help_loads_no_heavy_library(module: str) -> None:
    code = (f"import sys, {module}; "
            "print(','.join(m for m in ('pydicom', 'highdicom', 'numpy', 'pynetdicom', "
            "'dicomweb_client', 'requests') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == ""


def test_help_imports_no_library() -> None:
    """``--help`` stays fast (about 0.2 s) because the commands import the libraries only when
    they run: checked by what it imports, not by a clock (a busy machine is no failure)."""
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['vindr-convert', '--help']\n"
        "try:\n"
        "    runpy.run_module('vindr_convert', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('pydicom', 'highdicom', 'numpy', 'pynetdicom', 'dicomweb_client', 'requests')\n"
        "print('IMPORTED:' + ','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert "Usage" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "IMPORTED:", result.stdout[-300:]
