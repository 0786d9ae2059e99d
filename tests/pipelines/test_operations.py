"""The local loop's preparation (``pipelines.operations``): the demo data's check in a
process of its own, so that ``pipelines.run`` never loads DuckDB."""

from __future__ import annotations

import json

from tests.conftest import SMALL_CUSTOMERS, run_python


def _in_a_fresh_process(code: str) -> dict[str, object]:
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_demo_data_is_seeded_then_found_by_a_child_process(tmp_path):
    code = f"""
        import json, multiprocessing, sys, time
        from pipelines.operations import _DemoData
        from stack.config import load_config

        config = load_config(
            "local",
            {{"state_dir": {str(tmp_path)!r}, "demo.customers": {SMALL_CUSTOMERS}}},
        )
        results, released = [], []
        for _ in range(2):
            with _DemoData(config) as demo_data:
                demo_data.start()
                seed = demo_data.result()
                deadline = time.monotonic() + 30
                while multiprocessing.active_children() and time.monotonic() < deadline:
                    time.sleep(0.05)
                released.append(not multiprocessing.active_children())
            results.append([seed.created, seed.rows["CUSTOMERS"]])
        print(json.dumps({{"results": results, "released": released,
                          "duckdb": "_duckdb" in sys.modules}}))
        """
    found = _in_a_fresh_process(code)
    assert found["results"] == [[True, SMALL_CUSTOMERS], [False, SMALL_CUSTOMERS]]
    assert found["duckdb"] is False  # the check ran in its own process
    assert found["released"] == [True, True]  # which ends once it has answered


def test_not_started_the_demo_data_is_checked_in_this_process(tmp_path):
    code = f"""
        import json, sys
        from pipelines.operations import _DemoData
        from stack.config import load_config

        config = load_config(
            "local",
            {{"state_dir": {str(tmp_path)!r}, "demo.customers": {SMALL_CUSTOMERS}}},
        )
        with _DemoData(config) as demo_data:
            seed = demo_data.result()
        print(json.dumps({{"created": seed.created, "duckdb": "_duckdb" in sys.modules}}))
        """
    assert _in_a_fresh_process(code) == {"created": True, "duckdb": True}
