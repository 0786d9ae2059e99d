"""How our commands run and end: ``pipelines.process_gc.run_process``."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import run_python
from tests.test_import_graph import project_modules

# Long-running servers, stopped by a signal (the endpoint, the Streamlit dashboard),
# and the benchmarks: their exit is on nobody's path. The approval events' module is
# also the Lambda's handler, whose archive holds only what the handler imports.
NOT_COMMANDS = (
    "benchmarks",
    "dashboard",
    "inference.server",
    "inference.worker",
    "pipelines.approval_events",
)


def test_exit_keeps_the_code_the_output_and_the_atexit_handlers() -> None:
    done = run_python(
        """
        import atexit, gc, logging, sys
        from pipelines.process_gc import exit_process
        logging.basicConfig(stream=sys.stderr, format="%(message)s")
        atexit.register(
            lambda: print("frozen at exit:", gc.get_freeze_count() > 0, flush=True)
        )
        logging.getLogger("job").warning("logged")
        print("unflushed", end="")
        exit_process(3)
        """
    )
    assert done.returncode == 3
    assert done.stdout == "unflushedfrozen at exit: True\n"
    assert done.stderr == "logged\n"


def test_a_process_with_duckdb_exits_the_normal_way_without_leak_reports() -> None:
    done = run_python(
        """
        import atexit, gc
        import duckdb
        from pipelines.process_gc import exit_process
        duckdb.connect().execute("select 1").fetchall()
        atexit.register(lambda: print("frozen:", gc.get_freeze_count() > 0))
        exit_process(0)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "frozen: False\n"
    assert "leaked" not in done.stderr


@pytest.mark.parametrize("code", [None, 0, "a message"])
def test_exit_takes_what_sys_exit_takes(code: object) -> None:
    done = run_python(
        f"""
        from pipelines.process_gc import exit_process
        exit_process({code!r})
        """
    )
    assert done.returncode == (1 if isinstance(code, str) else 0)
    assert done.stderr == ("a message\n" if isinstance(code, str) else "")


def _main_block_calls(tree: ast.Module) -> list[str]:
    """The functions the module's ``if __name__ == "__main__":`` block calls."""
    calls = []
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            for call in ast.walk(node):
                if isinstance(call, ast.Call):
                    calls.append(ast.unparse(call.func))
    return calls


def test_every_command_of_ours_runs_through_run_process() -> None:
    modules = project_modules()
    commands = {}
    for name, path in modules.items():
        if any(name == n or name.startswith(n + ".") for n in NOT_COMMANDS):
            continue
        calls = _main_block_calls(ast.parse(path.read_text()))
        if calls:
            commands[name] = calls
    assert "pipelines.run" in commands and "training.train" in commands
    wrong = {
        name: calls for name, calls in commands.items() if calls != ["run_process"]
    }
    assert not wrong, f"run these with pipelines.process_gc.run_process: {wrong}"


# Long-lived objects made the way an import makes them: many, and all kept.
_IMPORT_LIKE = """
import gc
kept = [{"i": i, "l": [i]} for i in range(1_500_000)]
print(gc.get_stats()[2]["collections"], gc.get_threshold()[2])
"""


def test_a_command_collects_the_heap_in_full_far_less_often() -> None:
    default = run_python(_IMPORT_LIKE)
    command = run_python(
        "from pipelines.process_gc import collect_less_often\n"
        "collect_less_often()\n" + _IMPORT_LIKE
    )
    assert default.returncode == 0 and command.returncode == 0, command.stderr
    full_default, threshold_default = map(int, default.stdout.split())
    full_command, threshold_command = map(int, command.stdout.split())
    assert threshold_default == 10 and threshold_command == 100
    # CPython's defaults collect that heap in full 13 times here, ours 3 times
    assert full_default >= 6 and full_command * 3 < full_default


def test_run_process_runs_main_with_fewer_full_collections_and_exits_frozen() -> None:
    done = run_python(
        """
        import atexit, gc
        from pipelines.process_gc import run_process
        atexit.register(lambda: print("frozen:", gc.get_freeze_count() > 0))
        def main():
            print("threshold:", gc.get_threshold()[2])
            return 4
        run_process(main)
        """
    )
    assert done.returncode == 4
    assert done.stdout == "threshold: 100\nfrozen: True\n"
