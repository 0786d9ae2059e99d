"""Snowflake connections: the real connector, or fakesnow on DuckDB files for ``local``.

Callers get a DB-API connection from ``connect()`` and a ``write_pandas`` that matches
it; they never know which Snowflake they hold. Credentials are resolved here, when a
connection is made, never earlier and never into a definition or a log line.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stack.config import SnowflakeConfig, validate_identifier

if TYPE_CHECKING:  # pandas only where frames are written: a job that only reads
    import pandas as pd  # the registry through the resources does not pay for it

# fakesnow 0.12 warns "Arrow output on a DB-API result makes an extra copy" on every
# fetch through its cursor; nothing a caller can act on.
warnings.filterwarnings(
    "ignore", message="Arrow output on a DB-API result", category=UserWarning
)


class WarehouseUnavailable(Exception):
    """Snowflake could not be reached or refused the login."""


class Warehouse(ABC):
    """A source of Snowflake connections (database and schema already selected)."""

    database: str
    schema: str
    # Whether reads can be pinned with Time Travel (AT(TIMESTAMP => ...)). This is the
    # one place that says where they cannot: see the implementations below.
    time_travel: bool
    # Whether fakesnow stands behind it (the embedded default, or a fakesnow server in
    # tests). fakesnow 0.12 runs no CREATE PROCEDURE / TASK / API INTEGRATION /
    # EXTERNAL FUNCTION / GRANT, and no MERGE inside BEGIN ... COMMIT; the callers
    # that care (snowflake/sagemaker_predictions) ask this, nothing else.
    emulated: bool
    # Whether ``write_pandas`` can bulk-load (the connector's PUT of Parquet files to
    # a stage, then COPY INTO). A fakesnow server cannot (fakesnow 0.12): there
    # ``write_pandas`` sends bound multi-row INSERTs instead, which any Snowflake
    # runs, only slower.
    bulk_load: bool

    @abstractmethod
    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        """Yield an open DB-API connection, closed afterwards."""

    @abstractmethod
    def write_pandas(
        self, conn: Any, frame: pd.DataFrame, table: str, **kwargs: Any
    ) -> int:
        """Bulk-load ``frame`` into ``table`` and return the number of rows written."""


class EmbeddedWarehouse(Warehouse):
    """fakesnow (Snowflake's SQL on DuckDB), one DuckDB file per database under
    ``root``.

    DuckDB lets one process at a time open a database file, so connections here are
    short-lived (open, do the work, close) and a process that finds the file locked
    waits for it, up to ``lock_timeout`` seconds: several processing workers can then
    share it, one query at a time.

    fakesnow 0.12 on DuckDB has no Time Travel (``AT(...)`` fails with "Catalog type
    does not support time travel"), so reads here see the tables as they are and the
    extract records its data version as not pinned.
    """

    time_travel = False
    emulated = True
    bulk_load = True  # fakesnow's in-process write_pandas: a DuckDB insert

    def __init__(
        self, root: Path, database: str, schema: str, lock_timeout: float = 300.0
    ) -> None:
        self.root = root
        self.database = database
        self.schema = schema
        self.lock_timeout = lock_timeout

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        self.root.mkdir(parents=True, exist_ok=True)
        instance, conn = self._open()
        try:
            yield conn
        finally:
            conn.close()
            instance.duck_conn.close()

    def _open(self) -> tuple[Any, Any]:
        from fakesnow.instance import FakeSnow

        deadline = time.monotonic() + self.lock_timeout
        while True:
            instance = FakeSnow(db_path=self.root)
            try:
                return instance, instance.connect(
                    database=self.database, schema=self.schema
                )
            except Exception as exc:  # duckdb raises IOException on a locked file
                instance.duck_conn.close()
                locked = "Could not set lock" in str(exc)
                if not locked or time.monotonic() > deadline:
                    raise WarehouseUnavailable(
                        f"cannot open the embedded Snowflake at {self.root}: {exc}"
                    ) from exc
            time.sleep(0.2)

    def write_pandas(
        self, conn: Any, frame: pd.DataFrame, table: str, **kwargs: Any
    ) -> int:
        from fakesnow import fakes

        _, _, rows, _ = fakes.write_pandas(conn, frame, table, **kwargs)
        return int(rows)


class ConnectorWarehouse(Warehouse):
    """Snowflake through ``snowflake-connector-python`` (or a fakesnow server in
    tests).
    """

    def __init__(
        self,
        config: SnowflakeConfig,
        secret_resolver: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        if not config.account:
            raise WarehouseUnavailable(
                "snowflake.account is not set "
                "(set MLOPS_SNOWFLAKE__ACCOUNT or conf/<env>.yaml)"
            )
        self._config = config
        self._resolve_secret = secret_resolver
        # Snowflake has Time Travel; a fakesnow server (tests) does not: config says
        self.time_travel = config.time_travel
        # the documented way to reach a fakesnow server is account="fakesnow"
        self.emulated = config.account == "fakesnow"
        # fakesnow's server answers neither the PUT nor the COPY INTO of write_pandas
        self.bulk_load = not self.emulated
        self.database = config.database
        self.schema = config.schema_name

    def _credentials(self) -> dict[str, Any]:
        cfg = self._config
        creds: dict[str, Any] = {"user": cfg.user}
        if cfg.secret_arn:
            if self._resolve_secret is None:
                raise WarehouseUnavailable(
                    "snowflake.secret_arn is set but no AWS client"
                )
            secret = self._resolve_secret(cfg.secret_arn)
            creds["user"] = secret.get("user", cfg.user)
            if "private_key" in secret:
                creds["private_key"] = _load_private_key(secret["private_key"].encode())
            else:
                creds["password"] = secret.get("password")
        elif cfg.private_key_path:
            creds["private_key"] = _load_private_key(
                Path(cfg.private_key_path).read_bytes()
            )
        elif cfg.password is not None:
            creds["password"] = cfg.password.get_secret_value()
        if not creds.get("user"):
            raise WarehouseUnavailable(
                "snowflake.user is not set "
                "(set MLOPS_SNOWFLAKE__USER or the secret's 'user')"
            )
        return creds

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        import snowflake.connector

        cfg = self._config
        params: dict[str, Any] = {
            "account": cfg.account,
            "database": cfg.database,
            "schema": cfg.schema_name,
            "login_timeout": cfg.login_timeout,
            "network_timeout": cfg.network_timeout,
            "application": "snowflake-sagemaker-mlops",
            **self._credentials(),
        }
        for key in ("warehouse", "role", "host", "port"):
            if getattr(cfg, key):
                params[key] = getattr(cfg, key)
        if cfg.session_parameters:
            # Snowflake parameter names are upper-case; env var keys arrive lower-cased
            params["session_parameters"] = {
                k.upper(): v for k, v in cfg.session_parameters.items()
            }
        if cfg.protocol != "https":
            params["protocol"] = cfg.protocol
        try:
            conn = snowflake.connector.connect(**params)
        except snowflake.connector.errors.Error as exc:
            where = cfg.host or f"account {cfg.account}"
            raise WarehouseUnavailable(
                f"cannot connect to Snowflake at {where}: {_first_line(exc)}"
            ) from None
        try:
            yield conn
        finally:
            conn.close()

    def write_pandas(
        self, conn: Any, frame: pd.DataFrame, table: str, **kwargs: Any
    ) -> int:
        if not self.bulk_load:
            return insert_rows(conn, frame, table)
        from snowflake.connector.pandas_tools import write_pandas

        _, _, rows, _ = write_pandas(conn, frame, table, **kwargs)
        return int(rows)


INSERT_CHUNK_ROWS = 1000


def insert_rows(
    conn: Any, frame: pd.DataFrame, table: str, chunk_rows: int = INSERT_CHUNK_ROWS
) -> int:
    """Insert ``frame`` into ``table`` (an existing table, columns by name) with
    one bound multi-row ``INSERT ... VALUES (%s, ...), ...`` per ``chunk_rows``
    rows; the number of rows inserted.

    The values are bound, never formatted into the SQL: the connector's client-side
    (pyformat) binding quotes each by its Python type, so they are made plain
    Python values first (numpy scalars, pandas Timestamps and missing values are
    not among its types).
    """
    validate_identifier(table, "table")
    columns = [validate_identifier(str(c), "column") for c in frame.columns]
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    values = [_plain_column(frame[c]) for c in frame.columns]
    rows = list(zip(*values, strict=True))
    cursor = conn.cursor()
    for start in range(0, len(rows), chunk_rows):
        chunk = rows[start : start + chunk_rows]
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
            + ", ".join([row] * len(chunk)),
            [value for r in chunk for value in r],
        )
    return len(rows)


def _plain_column(column: pd.Series) -> list[Any]:
    """The column's values as Python objects the connector can bind."""
    import numpy as np
    import pandas as pd

    def plain(value: Any) -> Any:
        try:
            if pd.isna(value):
                return None
        except (TypeError, ValueError):  # a list or an array is not missing
            pass
        if isinstance(value, pd.Timestamp):
            return value.to_pydatetime()
        return value.item() if isinstance(value, np.generic) else value

    return [plain(v) for v in column]


def secrets_manager_resolver(client: Any) -> Callable[[str], dict[str, Any]]:
    """Read a JSON secret (``user``, ``password`` or ``private_key``) at connect
    time.
    """

    def resolve(secret_arn: str) -> dict[str, Any]:
        try:
            value = client.get_secret_value(SecretId=secret_arn)["SecretString"]
        except Exception as exc:
            raise WarehouseUnavailable(
                f"cannot read the Snowflake secret {secret_arn}: {_first_line(exc)}"
            ) from None
        try:
            secret = json.loads(value)
        except json.JSONDecodeError:
            raise WarehouseUnavailable(
                f"the secret {secret_arn} is not JSON with user/password or private_key"
            ) from None
        if not isinstance(secret, dict):
            raise WarehouseUnavailable(f"the secret {secret_arn} must be a JSON object")
        return secret

    return resolve


def _load_private_key(pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem, password=None)
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
