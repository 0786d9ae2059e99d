"""Snowflake identifiers from configuration, and the error every configuration check
raises.

Dependency-free on purpose: the scoring procedure imports this module inside
Snowflake, where only the standard library and the procedure's PACKAGES exist.
``stack.config`` re-exports both names.
"""

from __future__ import annotations

import re

# A plain (unquoted) Snowflake identifier, as configuration may name one
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,254}")


class ConfigError(Exception):
    """The configuration is missing something or holds a bad value; nothing has run
    yet.
    """


def validate_identifier(value: str, what: str) -> str:
    """Return ``value`` if it is a plain Snowflake identifier, else raise ConfigError.

    Identifiers from configuration end up in SQL text (values are always bound), so
    they are restricted to letters, digits, ``_`` and ``$``.
    """
    if not IDENTIFIER.fullmatch(value or ""):
        raise ConfigError(
            f"{what} {value!r} is not a valid identifier "
            "(letters, digits, _ and $; must not start with a digit)"
        )
    return value
