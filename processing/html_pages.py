"""The self-contained HTML pages the steps write (the evaluation and drift reports):
Jinja2 templates beside their module, autoescaped, an undefined name an error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2


def load_template(
    folder: Path, name: str, filters: dict[str, Callable[..., Any]] | None = None
) -> jinja2.Template:
    """Template ``name`` of ``folder``, with ``filters`` added.

    jinja2 is imported here, not at the top: the steps import their report modules
    when they start, and only a step that writes a page needs the ~35 ms of jinja2.
    """
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(filters or {})
    return environment.get_template(name)
