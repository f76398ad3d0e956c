"""Package layout: every module imports in a fresh interpreter, ifn.model's import graph is acyclic (counting
imports inside functions too, so no cycle is dodged by a lazy import), nothing below the applications imports
ifn.apps, and the module-level imports of the whole package form no cycle (so import order never matters).

Layers, imports pointing downward only: model -> render -> learn -> fit / breed / evaluate -> apps -> cli.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "ifn"

# Modules at the top that may import ifn.apps (besides ifn.apps itself): the command line and the stage and
# report modules that only the last pipeline stages (figures, report) and the smoke run use.
APPS_IMPORTERS = {"ifn.cli", "ifn.paper", "ifn.figures_paper", "ifn.report", "ifn.smoke"}
# Names of the package root that are modules imported on first use (ifn/__init__.py _LAZY).
LAZY = {"ifn.reconstruct": "ifn.apps.reconstruct"}


def module_names() -> dict[str, Path]:
    """{dotted module name: file} of every module under src/ifn."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _from_module(package: str, node: ast.ImportFrom) -> str:
    """The absolute module name of `from <module> import ...` in `package` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path, modules) -> list[tuple[str, bool]]:
    """[(imported ifn module, at module level)] of one module: every import statement, also those inside
    functions and `if TYPE_CHECKING:` (which count as not at module level)."""
    package = _package(name, path)
    found: list[tuple[str, bool]] = []

    def add(target: str, top: bool):
        target = LAZY.get(target, target)
        while target and target not in modules:   # `from ifn.x import name`: name is not a module
            target = target.rpartition(".")[0]
        if target and target != name:
            found.append((target, top))

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "ifn":
                        add(alias.name, top)
            elif isinstance(child, ast.ImportFrom):
                mod = _from_module(package, child)
                if mod.split(".")[0] != "ifn":
                    continue
                for alias in child.names:   # `from . import detect` imports the module ifn.detect
                    add(f"{mod}.{alias.name}" if f"{mod}.{alias.name}" in modules or
                        f"{mod}.{alias.name}" in LAZY else mod, top)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                visit(child, False)
            else:
                visit(child, top)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


def graph(modules, top_only: bool = False, within: str | None = None) -> dict[str, set[str]]:
    out = {}
    for name, path in modules.items():
        if within is not None and not (name == within or name.startswith(within + ".")):
            continue
        out[name] = {t for t, top in imports(name, path, modules) if (top or not top_only)
                     and (within is None or t == within or t.startswith(within + "."))}
    return out


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def test_the_import_parser_sees_lazy_relative_and_package_imports():
    modules = module_names()
    model = graph(modules, within="ifn.model")
    assert "ifn.model.facemodel" in model["ifn.model.bfm"] and "ifn.model.reflectance" in model["ifn.model.bfm"]
    assert {"ifn.model.bfm", "ifn.model.facemodel", "ifn.model.reflectance"} <= model["ifn.model.loader"]
    cli = {t for t, _ in imports("ifn.cli", modules["ifn.cli"], modules)}
    assert {"ifn.apps.reconstruct", "ifn.apps.edit", "ifn.apps.checkpoint"} <= cli   # all inside functions
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_model_import_graph_is_acyclic():
    g = graph(module_names(), within="ifn.model")
    assert find_cycle(g) is None, f"import cycle in ifn.model: {' -> '.join(find_cycle(g))}; graph {g}"


def test_only_the_top_imports_the_applications():
    modules = module_names()
    bad = sorted(f"{name} imports {target}" for name, path in modules.items()
                 if not (name == "ifn.apps" or name.startswith("ifn.apps.") or name in APPS_IMPORTERS)
                 for target, _ in imports(name, path, modules)
                 if target == "ifn.apps" or target.startswith("ifn.apps."))
    assert not bad, bad
    cli_importers = sorted(name for name, path in modules.items()
                           for target, _ in imports(name, path, modules) if target == "ifn.cli")
    assert not cli_importers, cli_importers


def test_module_level_imports_have_no_cycle():
    g = graph(module_names(), top_only=True)
    assert find_cycle(g) is None, f"module-level import cycle: {' -> '.join(find_cycle(g))}"


def imported_names(modules) -> list[tuple[str, str, str]]:
    """[(module, ifn module imported from, name)] of every `from ifn... import name`, also inside functions."""
    out = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                mod = _from_module(_package(name, path), node)
                if mod.split(".")[0] == "ifn":
                    out += [(name, mod, alias.name) for alias in node.names]
    return out


def test_every_module_imports_in_a_fresh_interpreter():
    """Every module imports, and every `from ifn... import name` (also the lazy ones inside functions, which
    only fail when called) names something that exists."""
    modules = module_names()
    names = sorted(modules)
    code = ("import importlib, sys\n"
            "import ifn\n"
            f"assert ifn.__file__.startswith({str(PACKAGE)!r}), ifn.__file__\n"
            "failed = []\n"
            f"for name in {names!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception as e:\n"
            "        failed.append(f'{name}: {type(e).__name__}: {e}')\n"
            f"for where, mod, name in {imported_names(modules)!r}:\n"
            "    if mod not in sys.modules:\n"
            "        failed.append(f'{where}: from {mod} import {name}: no module {mod}')\n"
            "    elif not hasattr(sys.modules[mod], name) and f'{mod}.{name}' not in sys.modules:\n"
            "        failed.append(f'{where}: from {mod} import {name}: no such name')\n"
            "from ifn import reconstruct\n"
            "assert reconstruct is sys.modules['ifn.apps.reconstruct'] and callable(reconstruct)\n"
            "assert reconstruct.Reconstructor and reconstruct.write_outputs and reconstruct.CheckpointError\n"
            "print('\\n'.join(failed) or 'ok')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
