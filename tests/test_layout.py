"""The house: imports run one way, down the pipeline, and no module imports itself in a circle.

The import graph is read from the source (every ``import`` and ``from ... import`` statement,
inside functions too), so a lazy import counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from paths import ROOT

ALLOWED = {
    "scorer.contract": (),
    "scorer.errors": (),
    "scorer.atomic": (),
    "scorer.images": ("scorer.contract", "scorer.errors", "scorer.results.schema",
                      "scorer.rundir.child"),
    "scorer.model": ("scorer.contract", "scorer.errors", "scorer.metrics.stats"),
    "scorer.metrics": ("scorer.results.schema",),
    "scorer.rundir": ("scorer.atomic", "scorer.errors", "scorer.results"),
    "scorer.results": ("scorer.atomic", "scorer.contract", "scorer.errors"),
    "scorer.engine": ("scorer.images", "scorer.model", "scorer.metrics", "scorer.results"),
    "scorer.report": ("scorer.contract", "scorer.errors", "scorer.results", "scorer.atomic"),
    "scorer.scoring": ("scorer", "scorer.contract", "scorer.errors", "scorer.engine", "scorer.images",
                       "scorer.model", "scorer.results", "scorer.rundir"),
    "scorer.distributed": ("scorer.errors", "scorer.images", "scorer.model", "scorer.results",
                           "scorer.rundir", "scorer.scoring"),
    "scorer.predicting": ("scorer", "scorer.engine", "scorer.images", "scorer.model",
                          "scorer.predictions", "scorer.results", "scorer.scoring"),
    "scorer.predictions": ("scorer.atomic", "scorer.errors", "scorer.results", "scorer.rundir"),
    "scorer.doctor": ("scorer.contract", "scorer.errors", "scorer.images", "scorer.model"),
    "scorer.cli": ("scorer",),
    "scorer": (),  # the package's face imports lazily by name only
    "export.rewrites": ("scorer.contract",),
    "export.options": ("export.errors", "scorer.contract"),
    "export.preprocessing": ("export.errors", "export.options", "scorer.contract"),
    "export.checks": ("export.errors", "export.options", "export.rewrites", "scorer.contract"),
    "export.assemble": ("export.checks", "export.errors", "export.options", "export.rewrites",
                        "scorer.contract"),
    "export.from_keras": ("export.assemble", "export.errors", "export.options",
                          "export.preprocessing", "export.rewrites", "scorer.contract"),
    "export.from_onnx": ("export.assemble", "export.checks", "export.errors", "export.options",
                         "export.preprocessing", "export.rewrites", "scorer.contract"),
    "export.api": ("export", "scorer.contract", "scorer.atomic"),
    "export.in_memory": ("export", "scorer.predicting"),
    "export.cli": ("export", "scorer.cli.errors", "scorer.contract"),
    "export.errors": (),
    "export": (),
}
"""For each package or module, the project modules it may import besides its own (prefixes)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports() -> dict[str, set[str]]:
    """Each module of scorer/ and export/ -> the project modules it imports (``from package
    import module`` counts as an import of the module, not of the package's face)."""
    paths = sorted(p for top in ("scorer", "export") for p in (ROOT / top).rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = {f"{node.module}.{a.name}" for a in node.names} & modules
                found |= submodules or {node.module}
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[module_name(path)] = found & modules
    return graph


def rule_for(module: str) -> tuple[str, tuple[str, ...]]:
    owner = max((key for key in ALLOWED if module == key or module.startswith(f"{key}.")), key=len)
    return owner, ALLOWED[owner]


def inside(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(f"{prefix}.")


GRAPH = project_imports()


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_down_the_pipeline(module: str) -> None:
    owner, allowed = rule_for(module)
    wrong = sorted(target for target in GRAPH[module] if not inside(target, owner)
                   and not any(inside(target, prefix) for prefix in allowed))
    assert not wrong, f"{module} ({owner}) imports {wrong}; it may import only {allowed}"


def test_the_scorer_never_imports_the_exporter() -> None:
    offenders = {m: sorted(t for t in targets if t.startswith("export"))
                 for m, targets in GRAPH.items() if m.startswith("scorer")}
    assert not {m: t for m, t in offenders.items() if t}


def test_no_module_imports_itself_in_a_circle() -> None:
    circles = strongly_connected(GRAPH)
    assert not circles, f"import circles: {circles}"


def test_no_package_imports_itself_in_a_circle() -> None:
    def package(name: str) -> str:
        parts = name.split(".")
        return ".".join(parts[:2]) if len(parts) > 2 or (ROOT / Path(*parts)).is_dir() else name

    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        packages.setdefault(package(module), set()).update(
            package(t) for t in targets if package(t) != package(module))
    circles = strongly_connected(packages)
    assert not circles, f"package circles: {circles}"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_finds_a_circle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_package_says_its_job() -> None:
    for init in sorted([*(ROOT / "scorer").rglob("__init__.py"), *(ROOT / "export").rglob("__init__.py")]):
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring and len(docstring.split()) >= 12, f"{init} has no docstring saying its job"
        if init.parent.name not in ("scorer", "export", "cli", "report", "distributed"):
            assert "May import" in docstring, f"{init} does not say what it may import"
