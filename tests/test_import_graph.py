"""No import cycles among the project's modules, and project imports at the top of
modules unless a heavy import is deliberately deferred (listed in ``DEFERRED``).

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

# The project modules that may be imported inside a function, and why: each keeps
# something heavy off a light path (a CLI's --help; a step module's import, which the
# definition does to read its spec: issue 22 wants each step's start-up under 1 s), or
# out of a runtime that lacks it. Any other project import goes at the top of its
# module. The times are what the import adds to the light path it is kept off
# (``python -X importtime``, 2 shared cores).
DEFERRED = {
    "features": "pandas, numpy, pyarrow (+270 ms): off Preflight's import, the CLIs' "
    "--help, and the Snowflake procedure's runtime (stdlib and Snowpark only)",
    "processing.extract": "pandas, pyarrow (+280 ms): off Preflight's import; "
    "monitoring.check reads the warehouse only for --source predictions",
    "processing.stream": "pandas, pyarrow (+280 ms): off benchmarks.extract's parent "
    "process and --help",
    "stack.config": "pydantic, yaml (+110 ms): off the step modules' import (their "
    "contract reads the job's configuration when they run) and the benchmarks' --help; "
    "not in the Snowflake procedure's runtime",
    "stack.resources": "stack.config's pydantic and yaml (+115 ms): off the step "
    "modules' import and the benchmarks' --help",
    "stack.warehouse": "stack.config's pydantic and yaml (+105 ms): off "
    "benchmarks.scaleout --help",
    "datagen.seed": "pandas (+245 ms): only a run that seeds the demo data",
    "pipelines.definition": "the step modules' pandas (+275 ms) and, once called, the "
    "SageMaker SDK (3 s): off pipelines.run --help and the other CLIs until they "
    "build a definition",
    "monitoring.pipeline": "pandas via monitoring.check (+340 ms) and the SageMaker "
    "SDK: off pipelines.entry_points --help",
    "monitoring.capture": "the capture reader (+5 ms), for --source capture only: "
    "monitoring.check's import is at its 30 ms budget with the rest at its top",
    "pipelines.local_runner": "the local runner, its jobs and image staging (+35 ms): "
    "off stack.resources, which every CLI imports (test_pipeline_service checks it)",
    "pipelines.local_jobs": "subprocess, sandbox and archive machinery (+35 ms): off "
    "benchmarks.scaleout --help",
    "pipelines.local_tuning": "the local jobs' machinery (+35 ms): off "
    "benchmarks.scaleout --help",
    "pipelines.image": "image staging (+25 ms): off benchmarks.scaleout --help",
    "inference.model": "pandas, pyarrow (+225 ms): off stack.resources (every CLI) "
    "and benchmarks.serving --help",
    "inference.codec": "pandas, pyarrow (+225 ms): off benchmarks.serving --help",
    "inference.app": "pandas, pyarrow (+235 ms): off benchmarks.serving --help",
    "inference.worker": "pandas, pyarrow (+235 ms): off benchmarks.serving --help",
    "snowflake.sagemaker_predictions.templates": "pandas via features (+250 ms): off "
    "the WriteBack step's import and the deployer's --help",
    "snowflake.sagemaker_predictions.deploy": "pandas via features (+250 ms): off the "
    "WriteBack step's import and the deployer's --help",
    "snowflake.sagemaker_predictions.writeback": "pandas, pyarrow (+265 ms): off the "
    "WriteBack step's import and the deployer's --help",
    "training.train": "XGBoost and scikit-learn (+1 s): only the benchmark that trains",
}


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


def function_level_imports(
    path: Path, modules: dict[str, Path]
) -> list[tuple[int, str]]:
    """(line, module) of each project module imported inside a function of ``path``
    (nested functions included).
    """
    found = {
        (node.lineno, module)
        for node in _function_imports(ast.parse(path.read_text(), str(path)))
        for module in _imported(node, modules)
    }
    return sorted(found)


def top_level_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports outside its functions (and outside
    ``if TYPE_CHECKING:``).
    """
    tree = ast.parse(path.read_text(), str(path))
    deferred = {id(node) for node in _function_imports(tree)}
    return {
        module
        for node in _runnable(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in deferred
        for module in _imported(node, modules)
    }


def _function_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found = {
        id(node): node
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.Import | ast.ImportFrom)
    }
    return list(found.values())


def _imported(node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The project modules an import statement names, each the most specific one
    (``from inference import artifact`` is ``inference.artifact``).
    """
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif node.module and not node.level:
        names = [
            f"{node.module}.{alias.name}"
            if f"{node.module}.{alias.name}" in modules
            else node.module
            for alias in node.names
        ]
    else:
        names = []
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def deferral_problems(
    modules: dict[str, Path], allowed: dict[str, str], root: Path = PROJECT_ROOT
) -> list[str]:
    """Each function-level import of a project module that ``allowed`` does not
    list, or that its module also imports at its top (a deferral that defers nothing).
    """
    problems = []
    for path in modules.values():
        top = top_level_imports(path, modules)
        for line, module in function_level_imports(path, modules):
            where = f"{path.relative_to(root)}:{line}"
            if module not in allowed:
                problems.append(
                    f"{where} imports {module} inside a function: import it at the "
                    "top, or list it in DEFERRED with what it keeps off which path "
                    "(measured with python -X importtime)"
                )
            elif module in top:
                problems.append(f"{where} imports {module} again inside a function")
    return problems


def test_project_imports_are_at_the_top_unless_listed_as_deferred():
    assert deferral_problems(project_modules(), DEFERRED) == []


def test_every_listed_deferral_is_still_made():
    modules = project_modules()
    deferred = {
        module
        for path in modules.values()
        for _, module in function_level_imports(path, modules)
    }
    assert sorted(set(DEFERRED) - deferred) == []  # an entry nothing needs goes


def test_an_unlisted_or_pointless_function_level_import_is_found(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "stack" / "__init__.py").write_text("")
    (tmp_path / "stack" / "heavy.py").write_text("")
    (tmp_path / "stack" / "light.py").write_text("")
    (tmp_path / "stack" / "user.py").write_text(
        "import json\n"
        "import stack.light\n"
        "def listed():\n    from stack import heavy\n"
        "def unlisted():\n    def inner():\n        import stack.light as again\n"
        "def third_party():\n    import numpy\n"
    )
    modules = project_modules(tmp_path)
    assert function_level_imports(tmp_path / "stack" / "user.py", modules) == [
        (4, "stack.heavy"),
        (7, "stack.light"),
    ]
    assert deferral_problems(modules, {"stack.heavy": "why"}, tmp_path) == [
        "stack/user.py:7 imports stack.light inside a function: import it at the "
        "top, or list it in DEFERRED with what it keeps off which path (measured "
        "with python -X importtime)"
    ]
    assert deferral_problems(
        modules, {"stack.heavy": "", "stack.light": ""}, tmp_path
    ) == ["stack/user.py:7 imports stack.light again inside a function"]
    # and a function-level import is an edge of the graph the cycle test reads
    assert import_graph(modules)["stack.user"] == {
        "stack",
        "stack.heavy",
        "stack.light",
    }
