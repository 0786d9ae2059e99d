"""The scoring procedure (``procedure.run``) under Snowflake's own local testing.

Snowpark runs the procedure in-process (``local_testing``): the DataFrame operations,
the UDF standing in for the external function PREDICT_CHURN (it scores with a model
trained on the demo data, ``LoadedModel.predict``), and ``Table.merge`` into a local
PREDICTIONS table. Local testing cannot run SQL text, so ``session.sql`` (the one
call the procedure makes with text: the feature set's query with its fingerprint) is
replayed on the embedded Snowflake that holds the demo data, and its rows become a
local DataFrame (docs/local-vs-aws.md). The batch job scores the same data with the
same model through ``write_back``; every column but SCORED_AT must agree.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest
import sqlglot
from snowflake.snowpark import Session
from snowflake.snowpark import types as T

from datagen.seed import ensure_demo_data
from features import load_feature_set
from inference.model import LoadedModel, load_model
from processing.extract import query_features
from snowflake.sagemaker_predictions.handler import run
from snowflake.sagemaker_predictions.procedure import (
    SETTINGS_FILE,
    ProcedureError,
    ProcedureSettings,
    feature_query,
    load_settings,
    parse_as_of,
    score_new_predictions,
)
from snowflake.sagemaker_predictions.writeback import endpoint_scorer, write_back
from stack.config import ConfigError, load_config
from stack.warehouse import EmbeddedWarehouse
from tests.conftest import PROJECT_ROOT
from training.hyperparameters import DEFAULTS
from training.train import save_model, train_model

# Snowpark 1.56's local testing warns about its own pandas use (chained assignment,
# downcasting); nothing of ours to act on
pytestmark = pytest.mark.filterwarnings("ignore::Warning:snowflake.snowpark.mock")

AS_OF = date(2026, 6, 30)
FEATURE_SET = load_feature_set("churn")
SCHEMA = FEATURE_SET.schema
SETTINGS = ProcedureSettings.from_config(load_config("local", environ={}), FEATURE_SET)
# Snowpark's local testing evaluates row by row in pandas (about 15 ms a row for one
# run of the procedure): the procedure scores a smaller demo data set than the shared
# fixture's; the model is trained on the shared one.
CUSTOMERS = 300
COMPARED = "CUSTOMER_ID, AS_OF_DATE, SCORE, MODEL_PACKAGE_ARN, PIPELINE_EXECUTION_ID, FEATURES_HASH"


@pytest.fixture(scope="module")
def model(seeded_snowflake_dir: Path, tmp_path_factory) -> LoadedModel:
    """A model trained on the demo data as of the training date, as the pipeline
    trains it (smaller), loaded the way the endpoint loads it.
    """
    warehouse = EmbeddedWarehouse(seeded_snowflake_dir, "MLOPS", "CHURN")
    with warehouse.connect() as conn:
        frame = query_features(
            conn, FEATURE_SET.sql, {"as_of": "2026-03-31", "label_window_days": 90}
        )
    SCHEMA.coerce(frame)
    validation = frame[SCHEMA.entity_id] % 5 == 0
    trained = train_model(
        frame[~validation],
        frame[validation],
        SCHEMA,
        {**DEFAULTS, "num_round": 30},
        threads=1,
    )
    folder = tmp_path_factory.mktemp("procedure-model")
    save_model(trained, folder)
    return load_model(folder)


@pytest.fixture(scope="module")
def small_snowflake_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("procedure-data") / "snowflake"
    ensure_demo_data(EmbeddedWarehouse(root, "MLOPS", "CHURN"), CUSTOMERS, 11)
    return root


@pytest.fixture
def warehouse(small_snowflake_dir: Path, tmp_path: Path) -> EmbeddedWarehouse:
    """A private copy of the small demo data (tests change it)."""
    root = tmp_path / "snowflake"
    shutil.copytree(small_snowflake_dir, root)
    return EmbeddedWarehouse(root, "MLOPS", "CHURN")


class LocalSnowflake:
    """A Snowpark local-testing session set up as the procedure finds Snowflake:
    PREDICTIONS (V001's columns), PREDICT_CHURN scoring with ``model``, and
    ``session.sql`` answered by the embedded Snowflake ``warehouse``.
    """

    def __init__(self, warehouse: EmbeddedWarehouse, model: LoadedModel) -> None:
        self.warehouse, self.model = warehouse, model
        self.session = Session.builder.config("local_testing", True).create()
        self.queries: list[str] = []
        self.scored_rows: list[tuple] = []
        self.answer = self._score
        self.session.sql = self._replay
        self.session.create_dataframe([], PREDICTIONS_SCHEMA).write.save_as_table(
            "PREDICTIONS"
        )
        self.session.udf.register(
            lambda *features: self.answer(features),
            name="PREDICT_CHURN",
            return_type=T.DoubleType(),
            input_types=[T.DoubleType()] * len(SETTINGS.features),
        )

    def _score(self, features: tuple) -> float:
        """What the endpoint answers for one row of the external function: the
        calibrated score of the same float32 row the batch job sends.
        """
        self.scored_rows.append(features)
        row = [np.nan if v is None else float(v) for v in features]
        return float(self.model.predict(np.array([row], dtype=np.float32))[0])

    def _replay(self, query: str, params: list | None = None):
        """``session.sql`` on the embedded Snowflake: the procedure's own SQL text,
        its rows loaded into a local DataFrame with Snowflake's column types.
        """
        assert params is None
        self.queries.append(query)
        with self.warehouse.connect() as conn:
            cursor = conn.cursor()
            cursor.execute(query)
            frame = cursor.fetch_pandas_all()
        table = pa.Table.from_pandas(frame, preserve_index=False)
        fields = [_snowpark_field(f.name, f.type) for f in table.schema]
        rows = [
            [_value(v, f.datatype) for v, f in zip(row.values(), fields, strict=True)]
            for row in table.to_pylist()
        ]
        return self.session.create_dataframe(rows, T.StructType(fields))

    def rows(self) -> list[tuple]:
        frame = self.session.table("PREDICTIONS").select(*COMPARED.split(", "))
        return _normalized(r for r in frame.collect())

    def snapshot(self) -> list[tuple]:
        """Every column of every row, SCORED_AT included."""
        table = self.session.table("PREDICTIONS")
        return sorted(tuple(r) for r in table.collect())

    def score(self, as_of: date = AS_OF, now: datetime | None = None):
        return score_new_predictions(
            self.session, SETTINGS, as_of, now or datetime.now(UTC)
        )


PREDICTIONS_SCHEMA = T.StructType(
    [
        T.StructField("CUSTOMER_ID", T.LongType(), nullable=False),
        T.StructField("AS_OF_DATE", T.DateType(), nullable=False),
        T.StructField("SCORE", T.DoubleType(), nullable=False),
        T.StructField("MODEL_PACKAGE_ARN", T.StringType()),
        T.StructField("PIPELINE_EXECUTION_ID", T.StringType()),
        T.StructField("FEATURES_HASH", T.StringType()),
        T.StructField(
            "SCORED_AT", T.TimestampType(T.TimestampTimeZone.NTZ), nullable=False
        ),
    ]
)


def _snowpark_field(name: str, kind: pa.DataType) -> T.StructField:
    """Snowflake's type for a column of the embedded Snowflake's answer (NUMBER(p,0)
    as an integer, as Snowpark reads it)."""
    if pa.types.is_integer(kind) or (pa.types.is_decimal(kind) and kind.scale == 0):
        datatype: T.DataType = T.LongType()
    elif pa.types.is_decimal(kind):
        datatype = T.DecimalType(kind.precision, kind.scale)
    elif pa.types.is_floating(kind):
        datatype = T.DoubleType()
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        datatype = T.StringType()
    else:
        raise AssertionError(f"no Snowpark type for {name}: {kind}")
    return T.StructField(name, datatype)


def _value(value, datatype: T.DataType):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(datatype, T.LongType):
        return int(value)
    if isinstance(datatype, T.DecimalType):
        return Decimal(value)
    return value


def _normalized(rows) -> list[tuple]:
    return sorted((int(r[0]), r[1], float(r[2]), r[3], r[4], str(r[5])) for r in rows)


class ModelRuntime:
    """A sagemaker-runtime client whose endpoint scores the CSV rows it gets with
    ``model``, as the served model would (the batch job's side).
    """

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def invoke_endpoint(self, **request):
        text = request["Body"].decode()
        rows = [
            [float(v) if v else np.nan for v in line.split(",")]
            for line in text.strip().splitlines()
        ]
        scores = self.model.predict(np.array(rows, dtype=np.float32))
        body = orjson.dumps({"predictions": [float(s) for s in scores]})
        return {"Body": io.BytesIO(body)}


def batch_write_back(warehouse: EmbeddedWarehouse, model: LoadedModel):
    """The batch job on the same data and model, recording what the procedure
    records: no model package (the external function does not say which model
    answered) and the task as the execution.
    """
    return write_back(
        warehouse,
        FEATURE_SET,
        endpoint_scorer(ModelRuntime(model), "churn-endpoint", 500),
        as_of=AS_OF,
        label_window_days=SETTINGS.label_window_days,
        table=SETTINGS.table,
        model_package_arn=None,
        execution_id=SETTINGS.execution_id,
    )


def batch_rows(warehouse: EmbeddedWarehouse) -> list[tuple]:
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT {COMPARED} FROM PREDICTIONS")
        return _normalized(cursor.fetchall())


def execute(warehouse: EmbeddedWarehouse, statement: str, *params) -> None:
    with warehouse.connect() as conn:
        conn.cursor().execute(statement, params)


@pytest.fixture
def local(warehouse: EmbeddedWarehouse, model: LoadedModel):
    snowflake = LocalSnowflake(warehouse, model)
    yield snowflake
    snowflake.session.close()


def first_ids(local: LocalSnowflake, n: int) -> list[int]:
    return [row[0] for row in local.rows()[:n]]


def complete_customers(warehouse: EmbeddedWarehouse, n: int) -> list[int]:
    """Customers active at AS_OF with no null feature.

    (The batch job refuses a set of changed rows in which a feature is null in every
    row, which one changed customer with a null feature would be.)
    """
    with warehouse.connect() as conn:
        frame = query_features(
            conn, FEATURE_SET.sql, {"as_of": AS_OF.isoformat(), "label_window_days": 90}
        )
    complete = frame.dropna(subset=SCHEMA.feature_names)
    return [int(v) for v in complete[SCHEMA.entity_id].head(n)]


def test_its_rows_equal_the_batch_jobs_rows_for_the_same_data_and_model(
    local, warehouse, model
):
    result = local.score()
    batch = batch_write_back(warehouse, model)
    assert result.scored == result.inserted == batch.rows_inserted > CUSTOMERS / 4
    assert len(local.scored_rows) == result.scored
    assert local.rows() == batch_rows(warehouse)
    assert len({row[2] for row in local.rows()}) > 50  # the model's scores, varied

    # one customer's features change, another cancels before the as-of date
    changed, cancelled = complete_customers(warehouse, 2)
    execute(
        warehouse, "UPDATE CUSTOMERS SET AGE = AGE + 7 WHERE CUSTOMER_ID = %s", changed
    )
    execute(
        warehouse,
        "UPDATE CUSTOMERS SET CANCEL_DATE = '2026-01-01' WHERE CUSTOMER_ID = %s",
        cancelled,
    )
    again = local.score()
    batch_again = batch_write_back(warehouse, model)
    assert (again.scored, again.inserted, again.updated, again.deleted) == (1, 0, 1, 1)
    assert (again.inserted, again.updated, again.deleted, again.unchanged) == (
        batch_again.rows_inserted,
        batch_again.rows_updated,
        batch_again.rows_deleted,
        batch_again.rows_unchanged,
    )
    assert local.rows() == batch_rows(warehouse)
    assert cancelled not in {row[0] for row in local.rows()}


def test_a_rerun_writes_nothing_new(local):
    first = local.score()
    before = local.snapshot()
    local.scored_rows.clear()
    second = local.score(now=datetime.now(UTC) + timedelta(hours=1))
    assert (second.scored, second.inserted, second.updated, second.deleted) == (
        0,
        0,
        0,
        0,
    )
    assert second.unchanged == first.inserted
    assert local.scored_rows == []  # the external function was not called
    assert local.snapshot() == before  # SCORED_AT included


def test_a_changed_feature_is_rescored_exactly(local, warehouse):
    first_time = datetime(2026, 6, 30, 6, 0, tzinfo=UTC)
    local.score(now=first_time)
    before = {row[0]: row for row in local.snapshot()}
    (changed,) = first_ids(local, 1)
    fee = monthly_fee(warehouse, changed)
    execute(
        warehouse,
        "UPDATE CUSTOMERS SET MONTHLY_FEE = MONTHLY_FEE + 40 WHERE CUSTOMER_ID = %s",
        changed,
    )
    local.scored_rows.clear()
    second = local.score(now=first_time + timedelta(days=1))
    assert (second.scored, second.inserted, second.updated, second.deleted) == (
        1,
        0,
        1,
        0,
    )
    assert second.unchanged == len(before) - 1
    assert len(local.scored_rows) == 1
    after = {row[0]: row for row in local.snapshot()}
    assert after.keys() == before.keys()
    differing = {key for key in after if after[key] != before[key]}
    assert differing == {changed}
    new, old = after[changed], before[changed]
    assert new[5] != old[5]  # FEATURES_HASH
    assert new[6] == datetime(2026, 7, 1, 6, 0)  # SCORED_AT: the second run's time
    # the external function got the new features
    assert local.scored_rows[0][SETTINGS.features.index("MONTHLY_FEE")] == fee + 40


def monthly_fee(warehouse: EmbeddedWarehouse, customer: int) -> float:
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT MONTHLY_FEE FROM CUSTOMERS WHERE CUSTOMER_ID = %s", (customer,)
        )
        return float(cursor.fetchone()[0])


def test_a_duplicate_source_key_is_refused_before_any_write(local, warehouse):
    local.score()
    before = local.snapshot()
    (duplicated,) = first_ids(local, 1)
    # a second CRM row for the customer: the feature query returns them twice
    execute(
        warehouse,
        "INSERT INTO CUSTOMERS SELECT * FROM CUSTOMERS WHERE CUSTOMER_ID = %s",
        duplicated,
    )
    local.scored_rows.clear()
    with pytest.raises(ProcedureError, match=rf"CUSTOMER_ID {duplicated} \(2 rows\)"):
        local.score()
    assert local.scored_rows == []
    assert local.snapshot() == before


def test_the_handler_runs_with_the_deployed_settings(local, tmp_path, monkeypatch):
    """``run`` as Snowflake calls it: the settings from the procedure's imports,
    registered and called as a stored procedure.
    """
    (tmp_path / SETTINGS_FILE).write_text(SETTINGS.to_json())
    monkeypatch.setitem(sys._xoptions, "snowflake_import_directory", str(tmp_path))
    local.session.sproc.register(
        run,
        name="SCORE_NEW_PREDICTIONS",
        return_type=T.VariantType(),
        input_types=[T.StringType()],
    )
    answer = local.session.call("SCORE_NEW_PREDICTIONS", "2026-06-30")
    counts = answer if isinstance(answer, dict) else orjson.loads(answer)
    assert counts["as_of"] == "2026-06-30" and counts["table"] == "PREDICTIONS"
    assert counts["inserted"] == counts["scored"] == len(local.rows()) > CUSTOMERS / 4
    assert (counts["updated"], counts["unchanged"], counts["deleted"]) == (0, 0, 0)
    rows = local.rows()
    assert {(r[1], r[3], r[4]) for r in rows} == {
        (AS_OF, None, "task:SCORE_PREDICTIONS")
    }
    assert run(local.session, "2026-06-30")["unchanged"] == len(rows)


def test_scored_at_is_utc_and_the_default_as_of_is_the_utc_date(local):
    # 01:30 on July 1st in UTC+05:00 is 20:30 on June 30th in UTC
    now = datetime(2026, 7, 1, 1, 30, tzinfo=timezone(timedelta(hours=5)))
    assert parse_as_of(None, now) == date(2026, 6, 30)
    local.score(now=now)
    scored_at = {row[6] for row in local.snapshot()}
    assert scored_at == {datetime(2026, 6, 30, 20, 30)}
    with pytest.raises(ValueError, match="timezone-aware"):
        local.score(as_of=date(2026, 7, 1), now=datetime(2026, 7, 1, 6, 0))


def test_the_feature_query_is_the_feature_sets_with_its_fingerprint(local):
    local.score()
    (query,) = local.queries
    assert query == feature_query(SETTINGS, AS_OF)
    assert "TO_DATE('2026-06-30')" in query and "%(" not in query
    assert "TO_VARCHAR(HASH(q.TENURE_DAYS, q.AGE," in query
    assert sqlglot.parse_one(query, read="snowflake") is not None


def test_scores_outside_zero_and_one_are_refused_and_nothing_is_written(local):
    local.answer = lambda features: 1.5
    with pytest.raises(ProcedureError, match=r"outside \[0, 1\]"):
        local.score()
    local.answer = lambda features: None
    with pytest.raises(ProcedureError, match="no score for"):
        local.score()
    assert local.snapshot() == []


def test_a_predictions_table_without_the_columns_is_refused(local):
    local.session.create_dataframe([[1]], ["CUSTOMER_ID"]).write.save_as_table(
        "PREDICTIONS", mode="overwrite"
    )
    with pytest.raises(ProcedureError, match="no column.*AS_OF_DATE.*deploy creates"):
        local.score()


def test_a_bad_as_of_is_refused():
    with pytest.raises(ProcedureError, match="not a date"):
        parse_as_of("30/06/2026", datetime.now(UTC))
    assert parse_as_of("2026-06-30", datetime.now(UTC)) == AS_OF


def test_a_feature_query_with_another_parameter_is_refused():
    settings = replace(
        SETTINGS, feature_sql="SELECT 1 AS CUSTOMER_ID WHERE %(region)s = 1"
    )
    with pytest.raises(ConfigError, match="only %\\(as_of\\)s"):
        feature_query(settings, AS_OF)


def test_settings_travel_as_json_and_are_checked(tmp_path):
    assert ProcedureSettings.from_json(SETTINGS.to_json()) == SETTINGS
    (tmp_path / SETTINGS_FILE).write_text(SETTINGS.to_json())
    assert load_settings(tmp_path) == SETTINGS
    with pytest.raises(ConfigError, match=SETTINGS_FILE):
        ProcedureSettings.from_json('{"table": "PREDICTIONS"}')
    with pytest.raises(ConfigError, match="not a valid"):
        replace(SETTINGS, function="PREDICT CHURN")
    with pytest.raises(ConfigError, match="clash"):
        replace(SETTINGS, features=("SCORE", "AGE"))


def test_the_cli_and_the_procedures_logic_import_without_snowpark():
    """Our image has no Snowpark (Snowflake's runtime brings it): the command line
    and the procedure's logic must not import it.
    """
    probe = (
        "import sys, snowflake.sagemaker_predictions.__main__, "
        "snowflake.sagemaker_predictions.procedure; "
        "print(sorted(m for m in sys.modules if m.startswith('snowflake.snowpark')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
