"""The package stays one clear house: no import cycles, lean data modules, short functions."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).parent.parent / "keras_lcnet"
MAX_FUNCTION_LINES = 80


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """The package modules `path` imports anywhere (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from keras_lcnet.deploy import verify` imports a module, not a name.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    # A package's __init__ only re-exports: importing `keras_lcnet.x` runs it,
    # but the cycle that matters is between the modules that hold code.
    for name in graph:
        if modules[name].name != "__init__.py":
            graph[name] = {m for m in graph[name] if modules[m].name != "__init__.py"}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_between_package_modules():
    assert _find_cycle(_graph()) is None


@pytest.mark.parametrize("data_module", ["keras_lcnet.presets", "keras_lcnet.errors"])
def test_data_modules_import_nothing_from_the_package(data_module):
    assert _graph()[data_module] == set()


def test_deploy_is_not_needed_by_the_model_port():
    """Building and loading a model never imports the deployment tools."""
    graph = _graph()
    reachable, stack = set(), ["keras_lcnet.model", "keras_lcnet.weights"]
    while stack:
        for target in graph[stack.pop()]:
            if target not in reachable:
                reachable.add(target)
                stack.append(target)
    assert not {m for m in reachable if m.startswith("keras_lcnet.deploy")}


def _code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function from its signature to its end, its docstring left out."""
    body = function.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        docstring = body[0].end_lineno - body[0].lineno + 1
    else:
        docstring = 0
    return function.end_lineno - function.lineno + 1 - docstring


def test_no_function_is_longer_than_the_limit():
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = _code_lines(node)
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
