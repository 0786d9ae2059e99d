"""Ending a command's process without the interpreter's last garbage collections.

When CPython exits it clears every module and collects the cyclic garbage of the
whole heap. After importing the SageMaker SDK (about a thousand pydantic classes),
MLflow's SQLAlchemy store or XGBoost with scikit-learn, that pass alone took 0.3 to
0.9 s here (docs/benchmarks.md, "Third pass (run 5)"), on every job of the loop and on
``pipelines.run`` itself. ``gc.freeze()`` moves every object alive at that point to
the permanent generation, which those collections skip; the operating system frees
the memory as the process ends.

Everything else of a normal exit still happens: ``atexit`` handlers (logging's
flush, MLflow's, ``weakref.finalize``), the flush of stdout and stderr, and the
deallocation, with its ``__del__``, of each object no cycle holds. What is skipped is
only the finalizers of objects in reference cycles, which CPython does not promise to
run at exit either; our entry points close their files and connections themselves.

Not where DuckDB is loaded (the embedded Snowflake, fakesnow): its nanobind binding
counts its objects still alive when its module is finalized and prints "nanobind:
leaked N instances!" for each one the skipped collections would have freed. Those
processes exit the normal way.
"""

from __future__ import annotations

import gc
import sys
from typing import NoReturn

# the bindings that report, at their finalization, objects a collection would free
_REPORTS_LEAKS_AT_EXIT = ("_duckdb",)


def exit_process(code: int | str | None) -> NoReturn:
    """``sys.exit(code)``, skipping the final garbage collections of the heap unless
    a module that would report it as a leak is loaded.
    """
    if not any(name in sys.modules for name in _REPORTS_LEAKS_AT_EXIT):
        gc.freeze()
    sys.exit(code)
