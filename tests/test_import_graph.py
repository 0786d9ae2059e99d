"""No import cycles among the project's modules.

The graph counts every import statement of a project module that can run: at the top
or inside a function (a deferred heavy import). A cycle hidden inside a function is
still two modules that cannot be understood, or moved, one without the other. Imports
under ``if TYPE_CHECKING:`` are not edges: they never run, and naming a type of the
layer above (the runner's ``Resources``) is what they are for.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PROJECT_ROOT

PACKAGES = (
    "benchmarks",
    "dashboard",
    "datagen",
    "features",
    "inference",
    "monitoring",
    "pipelines",
    "processing",
    "snowflake",
    "stack",
    "training",
)


def project_modules(root: Path = PROJECT_ROOT) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (its package's ``__init__`` included
    when it imports from the package).
    """

    def project_module(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found = set()
    for node in _runnable(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found.update(m for n in names if (m := project_module(n)))
    return found


def _runnable(tree: ast.AST):
    """Every node of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child.test):
                pending.extend(child.orelse)
                continue
            pending.append(child)


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module
    (Tarjan's algorithm, iterative).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return found


def test_the_project_has_no_import_cycle():
    modules = project_modules()
    assert len(modules) > 100
    assert cycles(import_graph(modules)) == []


def test_a_cycle_is_found_however_it_is_hidden(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "stack" / "__init__.py").write_text("")
    (tmp_path / "stack" / "a.py").write_text("from stack.b import thing\n")
    (tmp_path / "stack" / "b.py").write_text("def thing():\n    from stack import c\n")
    (tmp_path / "stack" / "c.py").write_text("import stack.a\n")
    (tmp_path / "stack" / "d.py").write_text("import stack.a\n")  # not in the cycle
    # a type-only import back is not an edge
    (tmp_path / "stack" / "e.py").write_text("import stack.f\n")
    (tmp_path / "stack" / "f.py").write_text(
        "import typing\nif typing.TYPE_CHECKING:\n    import stack.e\nelse:\n    pass\n"
    )
    modules = project_modules(tmp_path)
    assert cycles(import_graph(modules)) == [["stack.a", "stack.b", "stack.c"]]
