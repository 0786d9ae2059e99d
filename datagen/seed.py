"""Write the demo tables into Snowflake once, and know when they are already there."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from datagen.churn import generate
from stack.warehouse import Warehouse

log = logging.getLogger(__name__)

_DDL = {
    "CUSTOMERS": """CREATE OR REPLACE TABLE CUSTOMERS (
        CUSTOMER_ID NUMBER(38,0) NOT NULL, SIGNUP_DATE DATE NOT NULL, PLAN VARCHAR NOT NULL,
        REGION VARCHAR NOT NULL, AGE NUMBER(3,0), MONTHLY_FEE NUMBER(8,2) NOT NULL,
        ACQUISITION_CHANNEL VARCHAR NOT NULL, CANCEL_DATE DATE)""",  # noqa: E501 (SQL text kept as is)
    "TRANSACTIONS": """CREATE OR REPLACE TABLE TRANSACTIONS (
        TXN_ID NUMBER(38,0) NOT NULL, CUSTOMER_ID NUMBER(38,0) NOT NULL,
        TXN_TS TIMESTAMP_NTZ NOT NULL, AMOUNT NUMBER(12,2) NOT NULL,
        STORE_ID NUMBER(10,0) NOT NULL, CHANNEL VARCHAR NOT NULL)""",
    "SUPPORT_EVENTS": """CREATE OR REPLACE TABLE SUPPORT_EVENTS (
        EVENT_ID NUMBER(38,0) NOT NULL, CUSTOMER_ID NUMBER(38,0) NOT NULL,
        EVENT_TS TIMESTAMP_NTZ NOT NULL, EVENT_TYPE VARCHAR NOT NULL,
        SEVERITY NUMBER(2,0) NOT NULL, RESOLVED BOOLEAN NOT NULL)""",
}
_MARKER = "DEMO_DATA_INFO"


@dataclass(frozen=True)
class SeedResult:
    created: bool
    customers: int
    rows: dict[str, int]


def ensure_demo_data(warehouse: Warehouse, customers: int, seed: int) -> SeedResult:
    """Create the demo tables unless a completed seed of the same size is there.

    The marker row is written last, so a seed that was interrupted is redone in full.
    """
    with warehouse.connect() as conn:
        existing = _existing_seed(conn, warehouse.schema)
        if existing is not None and existing[:2] == (customers, seed):
            return SeedResult(False, customers, existing[2])
        log.info("seeding %s demo customers (seed %s)", customers, seed)
        tables = generate(customers, seed).as_dict()
        cursor = conn.cursor()
        cursor.execute(f"DROP TABLE IF EXISTS {_MARKER}")
        rows = {}
        for name, frame in tables.items():
            cursor.execute(_DDL[name])
            rows[name] = warehouse.write_pandas(
                conn, frame, name, use_logical_type=True
            )
        cursor.execute(
            f"CREATE TABLE {_MARKER} (CUSTOMERS NUMBER, SEED NUMBER, "
            "TRANSACTIONS NUMBER, SUPPORT_EVENTS NUMBER)"
        )
        cursor.execute(
            f"INSERT INTO {_MARKER} VALUES (%s, %s, %s, %s)",
            (customers, seed, rows["TRANSACTIONS"], rows["SUPPORT_EVENTS"]),
        )
        return SeedResult(True, customers, rows)


def _existing_seed(conn, schema: str) -> tuple[int, int, dict[str, int]] | None:
    cursor = conn.cursor()
    cursor.execute(
        "SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES"
        " WHERE TABLE_NAME = %s AND TABLE_SCHEMA = %s",
        (_MARKER, schema),
    )
    if cursor.fetchone()[0] == 0:
        return None
    cursor.execute(
        f"SELECT CUSTOMERS, SEED, TRANSACTIONS, SUPPORT_EVENTS FROM {_MARKER}"
    )
    row = cursor.fetchone()
    if row is None:
        return None
    return (
        int(row[0]),
        int(row[1]),
        {
            "CUSTOMERS": int(row[0]),
            "TRANSACTIONS": int(row[2]),
            "SUPPORT_EVENTS": int(row[3]),
        },
    )
