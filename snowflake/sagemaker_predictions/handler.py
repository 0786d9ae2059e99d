"""The scoring procedure's handler, ``snowflake.sagemaker_predictions.handler.run``.

Snowflake calls ``run`` with a Snowpark session, on the task's schedule or on ``CALL``.
It only finds the settings and the clock; the work is ``procedure``'s. Snowpark is
imported at the top here because the session is the handler's first parameter and
Snowpark's ``session.sproc.register`` resolves that annotation; only Snowflake and the
tests import this module (our image and its commands never do).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Optional

from snowflake.snowpark import Session

from snowflake.sagemaker_predictions.procedure import (
    load_settings,
    parse_as_of,
    score_new_predictions,
)


# Optional[str], not str | None: Snowpark 1.56's session.sproc.register maps
# typing.Optional to a nullable argument, and refuses a PEP 604 union.
def run(session: Session, as_of: Optional[str] = None) -> dict:  # noqa: UP045
    """Score new or changed entities into PREDICTIONS, as of ``as_of``
    (``YYYY-MM-DD``; None: today in UTC).

    Returns:
        ``ProcedureResult``'s counts (the procedure's VARIANT result).
    """
    now = datetime.now(UTC)
    day = parse_as_of(as_of, now)
    return score_new_predictions(session, load_settings(), day, now).as_dict()
