"""The architecture as a test: no import cycle, the core never imports a component or tests a
component's name, capabilities are declared (never probed with getattr), no function over 80
lines, at most 12 modules directly in errorgate/. Each check also runs on a small bad example,
so a check that could never fail would show here."""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from errorgate.component import Capabilities, ComponentConfig, ExporterCapabilities, Extension

ROOT = Path(__file__).resolve().parent.parent
# The design card's folders are sub-packages of the import package (linked under errorgate/).
COMPONENT_FOLDERS = ("processors", "exporters", "extensions", "governance", "dashboards", "alert_rules")
# The top layer may use anything: the command line, its commands and the demo.
TOP_LAYER = ("errorgate.cli", "errorgate.__main__", "errorgate.commands", "errorgate.demo")
COMPONENTS = tuple(f"errorgate.{f}" for f in COMPONENT_FOLDERS)
# Declarative builders (dashboards, alert rules) may be long: they are data written as code.
LENGTH_EXEMPT = ("errorgate.dashboards", "errorgate.alert_rules")
MAX_FUNCTION_LINES = 80
MAX_TOP_LEVEL_MODULES = 12

DECLARED = (
    {f.name for f in fields(Capabilities)}
    | {f.name for f in fields(ExporterCapabilities)}
    | {"capabilities", "signals"}
    | {n for n in vars(ComponentConfig) if not n.startswith("_") and callable(vars(ComponentConfig)[n])}
    | {n for n in vars(Extension) if not n.startswith("_")}
)
COMPONENT_TYPES = {
    "classify", "sample", "redact", "encrypt", "retention", "file", "debug", "keyring", "catalog", "redis"
}  # fmt: skip


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    paths = [
        Path(folder) / file
        for folder, _, files in os.walk(ROOT / "errorgate", followlinks=True)  # the linked folders too
        for file in files
        if file.endswith(".py")
    ]
    for path in sorted(paths):
        if "__pycache__" in path.parts or "tests" in path.relative_to(ROOT).parts[2:]:
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def imports_of(name: str, source: str, known: set[str], is_package: bool = False) -> set[str]:
    """Modules of ``known`` that ``name`` imports, at any depth of its code (lazy imports
    count: they hide a cycle, they do not remove it), ``if TYPE_CHECKING:`` blocks aside."""
    tree = ast.parse(source)
    skipped = _type_checking_nodes(tree)
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    resolved = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {
        name: imports_of(name, path.read_text(), known, path.name == "__init__.py")
        for name, path in found.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def is_core(name: str) -> bool:
    return not name.startswith(COMPONENTS + TOP_LAYER)


def capability_probes(source: str) -> Iterator[str]:
    """``getattr(x, "thread_safe", ...)``-style reads of anything the contracts declare."""
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in DECLARED
        ):
            yield f"line {node.lineno}: {ast.unparse(node)}"


def name_tests(source: str) -> Iterator[str]:
    """A component id split by hand, or compared with a component type's name."""
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and ast.unparse(node.func).endswith(".split")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "/"
        ):
            yield f"line {node.lineno}: {ast.unparse(node)} (use component.component_type)"
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                literals = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                for literal in literals:
                    if isinstance(literal, ast.Constant) and literal.value in COMPONENT_TYPES:
                        yield f"line {node.lineno}: {ast.unparse(node)}"


def long_functions(source: str) -> Iterator[str]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                yield f"{node.name} (line {node.lineno}) has {length} lines"


# ------------------------------------------------------------------ the checks


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_core_never_imports_a_component() -> None:
    wrong = {
        name: sorted(t for t in targets if t.startswith(COMPONENTS))
        for name, targets in import_graph().items()
        if is_core(name) and any(t.startswith(COMPONENTS) for t in targets)
    }
    assert wrong == {}


def test_capabilities_are_declared_never_probed() -> None:
    found = {
        name: list(capability_probes(path.read_text()))
        for name, path in modules().items()
        if not name.startswith(("errorgate.dashboards", "errorgate.alert_rules"))
    }
    assert {k: v for k, v in found.items() if v} == {}


def test_the_core_never_tests_a_component_name() -> None:
    found = {
        name: list(name_tests(path.read_text()))
        for name, path in modules().items()
        if is_core(name) and name != "errorgate.component"
    }
    assert {k: v for k, v in found.items() if v} == {}


def test_no_function_over_80_lines() -> None:
    found = {
        name: list(long_functions(path.read_text()))
        for name, path in modules().items()
        if not name.startswith(LENGTH_EXEMPT)
    }
    assert {k: v for k, v in found.items() if v} == {}


def test_every_component_folder_is_read() -> None:
    names = set(modules())
    assert {
        "errorgate.governance.lineage",
        "errorgate.processors.classify",
        "errorgate.extensions.keyring",
    } <= names


def test_at_most_12_modules_directly_in_errorgate() -> None:
    top = sorted(p.name for p in (ROOT / "errorgate").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_components_listed_once_and_loadable() -> None:
    """The distribution's list (entry points): each names a Factory of its own type, and the
    registries serve exactly those (tests may register more at run time)."""
    from importlib.metadata import entry_points

    from errorgate.component import EXPORTERS, EXTENSIONS, PROCESSORS, RECEIVERS, Factory

    expected = {
        PROCESSORS: {"classify", "encrypt", "redact", "retention", "sample"},
        EXPORTERS: {"debug", "file", "otlp"},
        EXTENSIONS: {"catalog", "keyring", "redis"},
        RECEIVERS: {"otlp"},
    }
    for registry, names in expected.items():
        listed = {point.name: point.load() for point in entry_points(group=registry.group)}
        assert set(listed) == names
        assert all(isinstance(f, Factory) and f.type_name == name for name, f in listed.items())
        assert names <= set(registry.names())


# ------------------------------------------------------------------ the checks can fail


def test_checks_catch_bad_examples() -> None:
    graph = {
        "errorgate.a": imports_of(
            "errorgate.a", "def f():\n    import errorgate.b\n", {"errorgate.a", "errorgate.b"}
        ),
        "errorgate.b": imports_of(
            "errorgate.b", "from errorgate.a import x\n", {"errorgate.a", "errorgate.b"}
        ),
    }
    assert cycles(graph) == [["errorgate.a", "errorgate.b"]]
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import errorgate.b\n"
    assert imports_of("errorgate.a", typed, {"errorgate.a", "errorgate.b"}) == set()
    assert list(capability_probes('x = getattr(p, "thread_safe", False)\n'))
    assert list(capability_probes('x = bool(getattr(e, "sends_serialized", False))\n'))
    assert not list(capability_probes('x = getattr(e, "problem_mark", None)\n'))
    assert list(name_tests('if cid.split("/", 1)[0] == "encrypt":\n    pass\n'))
    assert list(name_tests('ok = type_name in ("classify", "sample")\n'))
    assert list(long_functions("def f():\n" + "    x = 1\n" * 80))
    assert not list(long_functions("def f():\n" + "    x = 1\n" * 79))
    assert not is_core("errorgate.processors.classify") and is_core("errorgate.service.gateway")


@pytest.mark.parametrize("folder", COMPONENT_FOLDERS)
def test_component_folders_are_subpackages(folder: str) -> None:
    link = ROOT / "errorgate" / folder
    assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve()
