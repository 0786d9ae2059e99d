"""The garbage collector over a command's life: few full collections while it runs,
none of the heap at its exit.

Our commands are short-lived processes that import a great deal (the SageMaker SDK,
MLflow, XGBoost with scikit-learn) and then work for seconds or minutes.

While they run. CPython collects the oldest generation, the whole heap, whenever the
young generations have been collected ``threshold2`` times (10) and the objects that
survived since the last full collection have grown by a quarter. Importing keeps
adding long-lived objects, so the heap's size crosses that bar again and again: the
SDK's import made 5 full collections and an import of MLflow, scikit-learn, XGBoost,
pandas and SciPy 6, 0.5-0.7 s of each import's 2-3 s (docs/benchmarks.md, "Fourth
pass"). ``collect_less_often`` raises ``threshold2`` to 100: the young generations,
where nearly all cyclic garbage dies, are collected as before, and the heap is still
collected in full, ten times less often.

At exit. When CPython exits it clears every module and collects the cyclic garbage
of the whole heap: 0.3 to 0.9 s after those imports ("Third pass (run 5)").
``exit_process`` calls ``gc.freeze()`` first, which moves every object alive to the
permanent generation that those collections skip; the operating system frees the
memory as the process ends. Everything else of a normal exit still happens:
``atexit`` handlers (logging's flush, MLflow's, ``weakref.finalize``), the flush of
stdout and stderr, and the deallocation, with its ``__del__``, of each object no cycle
holds. What is skipped is only the finalizers of objects in reference cycles, which
CPython does not promise to run at exit either; our entry points close their files and
connections themselves. Not where DuckDB is loaded (the embedded Snowflake, fakesnow):
its nanobind binding counts its objects still alive when its module is finalized and
prints "nanobind: leaked N instances!" for each one the skipped collections would have
freed. Those processes exit the normal way.

Every command ends ``run_process(main)``. The long-running servers (the endpoint's
workers, the dashboard) keep CPython's defaults.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import NoReturn

# Young-generation collections between two full ones (CPython's default is 10).
FULL_COLLECTION_EVERY = 100
# the bindings that report, at their finalization, objects a collection would free
_REPORTS_LEAKS_AT_EXIT = ("_duckdb",)


def run_process(main: Callable[[], int | str | None]) -> NoReturn:
    """A command's whole life: ``collect_less_often()``, then ``main()``, then
    ``exit_process`` with what it returned."""
    collect_less_often()
    exit_process(main())


def collect_less_often() -> None:
    """Collect the whole heap ten times less often (the young generations as before)."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def exit_process(code: int | str | None) -> NoReturn:
    """``sys.exit(code)``, skipping the final garbage collections of the heap unless
    a module that would report it as a leak is loaded.
    """
    if not any(name in sys.modules for name in _REPORTS_LEAKS_AT_EXIT):
        gc.freeze()
    sys.exit(code)
