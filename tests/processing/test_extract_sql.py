"""The SQL the extract sends where the embedded Snowflake cannot run it (Time Travel,
COPY INTO a stage) is checked with sqlglot's Snowflake dialect; slices run on fakesnow.
"""

import re

import pytest
import sqlglot
from sqlglot import exp

from features import load_feature_set
from processing.extract import unload_to_stage
from processing.extract_sql import (
    SPLIT_BUCKETS,
    copy_into_statement,
    drop_table_statement,
    pin_to_data_version,
    query_sha256,
    shard_table_statement,
    slice_predicate,
    split_predicates,
    table_count_query,
    table_slice_query,
)

FEATURES = load_feature_set("churn")
PARAMS = {"as_of": "2026-03-31", "label_window_days": 90}
SAMPLE = {
    "as_of": "'2026-03-31'",
    "label_window_days": "90",
    "data_version": "'2026-04-01T00:00:00+00:00'",
}


def parse(sql: str) -> exp.Expression:
    """Parse as Snowflake with the bound values the connector would substitute."""
    text = re.sub(r"%\((\w+)\)s", lambda m: SAMPLE[m.group(1)], sql)
    return sqlglot.parse_one(text, read="snowflake")


def test_every_table_is_read_at_the_data_version_and_ctes_are_not():
    pinned = pin_to_data_version(FEATURES.sql)
    tree = parse(pinned)
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    tables = list(tree.find_all(exp.Table))
    base = [t for t in tables if t.name.lower() not in ctes]
    assert {t.name.lower() for t in base} == {
        "customers",
        "transactions",
        "support_events",
    }
    for table in base:
        when = table.args["when"]
        assert (when.this, when.args["kind"]) == ("AT", "TIMESTAMP")
        assert "2026-04-01T00:00:00+00:00" in when.sql("snowflake")
    assert all(not t.args.get("when") for t in tables if t.name.lower() in ctes)
    # values stay bound: the data version is a parameter, not text in the SQL
    assert set(re.findall(r"%\((\w+)\)s", pinned)) == {
        "as_of",
        "label_window_days",
        "data_version",
    }
    assert "AT (TIMESTAMP => TO_TIMESTAMP_TZ(%(data_version)s))" in pinned


def test_a_qualified_table_is_pinned_and_a_query_without_tables_is_refused():
    pinned = pin_to_data_version(
        "SELECT a.id FROM db.sch.accounts a JOIN events e ON e.id = a.id"
    )
    assert pinned.count("AT (TIMESTAMP =>") == 2
    with pytest.raises(ValueError, match="reads no table"):
        pin_to_data_version("SELECT 1 AS x")


def test_the_embedded_snowflake_cannot_run_time_travel(warehouse):
    """Why the embedded warehouse says time_travel = False (fakesnow 0.12 on DuckDB)."""
    assert warehouse.time_travel is False
    with warehouse.connect() as conn, pytest.raises(Exception, match="time travel"):
        conn.cursor().execute(
            pin_to_data_version(FEATURES.sql),
            {**PARAMS, "data_version": "2026-04-01T00:00:00+00:00"},
        )


def test_slices_of_shards_partition_the_buckets():
    """Bucket b of shard s, slice k: every bucket exactly once, inside its shard."""
    shards, slices = 3, 4
    seen = {}
    for shard in range(shards):
        for k in range(slices):
            predicate = slice_predicate("id", shard, shards, k, slices)
            bucket = int(predicate.rsplit("=", 1)[1])
            assert bucket % shards == shard
            seen[bucket] = (shard, k)
    assert sorted(seen) == list(range(shards * slices))
    for bad in [(3, 3, 0, 1), (0, 1, 1, 1)]:
        with pytest.raises(ValueError):
            slice_predicate("id", *bad)
    parse(table_slice_query("EXTRACT_SHARD_1", "customer_id", 1, 2, 3, 4))
    parse(table_count_query("EXTRACT_SHARD_1", ["age", "tenure_days"]))


def test_the_shard_table_holds_the_pinned_query_of_one_shard():
    """The one statement that runs the feature query, as Snowflake parses it."""
    tree = parse(
        shard_table_statement(
            pin_to_data_version(FEATURES.sql), "customer_id", 1, 2, "EXTRACT_SHARD_AB"
        )
    )
    assert isinstance(tree, exp.Create)
    assert tree.args["kind"] == "TABLE" and tree.this.name == "EXTRACT_SHARD_AB"
    assert tree.find(exp.TemporaryProperty) is not None
    select = tree.expression
    assert "ABS(HASH(customer_id)) % 2 = 1" in select.args["where"].sql("snowflake")
    # the data version pins the query where it runs: in the table's creation
    assert "AT (TIMESTAMP =>" in select.sql("snowflake")
    assert shard_table_statement("SELECT 1 AS id;", "id", 0, 1, "T").endswith(
        "SELECT 1 AS id\n) AS features\nWHERE TRUE"
    )
    assert drop_table_statement("T") == "DROP TABLE IF EXISTS T"


@pytest.mark.parametrize("name", ["t; DROP TABLE x", "1abc", "a.b", '"quoted"', ""])
def test_table_names_that_are_not_plain_identifiers_are_refused(name):
    with pytest.raises(ValueError, match="not an unquoted Snowflake identifier"):
        shard_table_statement("SELECT 1 AS id", "id", 0, 1, name)
    with pytest.raises(ValueError, match="not an unquoted Snowflake identifier"):
        table_slice_query(name, "id", 0, 1, 0, 1)


def test_split_predicates_cover_each_bucket_once():
    predicates = split_predicates("id", 0.15, 0.15)
    hits = {s: 0 for s in predicates}
    for bucket in range(SPLIT_BUCKETS):
        for split, predicate in predicates.items():
            condition = predicate.replace(f"MOD(ABS(HASH(id)), {SPLIT_BUCKETS})", "b")
            if eval(condition.replace("AND", "and"), {"b": bucket}):  # noqa: S307
                hits[split] += 1
    assert hits == {"train": 7000, "validation": 1500, "test": 1500}


def copy_statement(**overrides):
    arguments = {
        "table": "EXTRACT_SHARD_0A1B",
        "schema": FEATURES.schema,
        "stage": "MLOPS.CHURN.FEATURES_STAGE",
        "path": ["e1a2", "features", "train", "part-algo-2"],
        "split_predicate": split_predicates("customer_id", 0.15, 0.15)["train"],
        "max_file_bytes": 256 * 1024 * 1024,
        **overrides,
    }
    return copy_into_statement(**arguments)


def test_copy_into_unloads_typed_parquet_to_the_stage():
    tree = parse(copy_statement())
    assert isinstance(tree, exp.Copy)
    assert (
        tree.this.sql() == "@MLOPS.CHURN.FEATURES_STAGE/e1a2/features/train/part-algo-2"
    )
    params = {p.this.name.upper(): p for p in tree.args["params"]}
    assert params["FILE_FORMAT"].sql("snowflake") == "FILE_FORMAT = (TYPE=PARQUET)"
    assert set(params) == {"FILE_FORMAT", "HEADER", "MAX_FILE_SIZE", "OVERWRITE"}
    (query,) = tree.args["files"]
    select = query.this
    names = [e.alias_or_name for e in select.expressions]
    assert names == FEATURES.schema.columns
    # features and label are cast in SQL: Parquet gets doubles, never decimals
    casts = {e.alias: e.this.to.sql("snowflake") for e in select.expressions[1:]}
    # (sqlglot spells Snowflake's 64-bit FLOAT as DOUBLE)
    assert set(casts.values()) == {"DOUBLE"}
    assert set(casts) == {*FEATURES.schema.feature_names, FEATURES.schema.label}
    where = select.args["where"].sql("snowflake")
    assert f"ABS(HASH(customer_id)) % {SPLIT_BUCKETS} >= 3000" in where  # train
    # the unload reads the shard's table (pinned when it was made), not the query
    assert [t.name for t in select.find_all(exp.Table)] == ["EXTRACT_SHARD_0A1B"]


def test_copy_into_refuses_a_stage_path_with_other_characters():
    with pytest.raises(ValueError, match="stage path part"):
        copy_statement(path=["x'; DROP TABLE t; --", "train"])


class _UnloadingConnection:
    """fakesnow cannot unload (COPY INTO @stage); this stands in for that one statement
    by counting what the statement's own query selects, so the rest runs for real."""

    def __init__(self, conn):
        self.conn = conn
        self.statements = []  # the unloads
        self.executed = []  # every statement

    def cursor(self):
        return _UnloadingCursor(self, self.conn.cursor())


class _UnloadingCursor:
    def __init__(self, owner, cursor):
        self.owner, self.cursor, self._rows = owner, cursor, None

    def execute(self, sql, params=None):
        self.owner.executed.append(sql)
        if not sql.startswith("COPY INTO"):
            self._rows = None
            return self.cursor.execute(sql, params)
        self.owner.statements.append(sql)
        (query,) = parse(sql).args["files"]
        self.cursor.execute(f"SELECT COUNT(*) FROM ({query.this.sql('snowflake')})")
        self._rows = [(self.cursor.fetchone()[0], 0, 0)]
        return self

    def fetchall(self):
        return self._rows if self._rows is not None else self.cursor.fetchall()

    def __getattr__(self, name):
        return getattr(self.cursor, name)


def test_unload_writes_each_split_of_each_shard_once(warehouse):
    from processing.extract import query_features

    with warehouse.connect() as conn:
        total = len(query_features(conn, FEATURES.sql, PARAMS))
        unloaded = []
        for shard in (0, 1):
            fake = _UnloadingConnection(conn)
            rows = unload_to_stage(
                fake,
                FEATURES.sql,
                PARAMS,
                FEATURES,
                "FEATURES_STAGE",
                {s: f"exec1/features/{s}" for s in ("train", "validation", "test")},
                f"part-algo-{shard + 1}",
                shard=shard,
                shards=2,
                validation_fraction=0.15,
                test_fraction=0.15,
                max_file_bytes=64 * 1024 * 1024,
            )
            assert len(fake.statements) == 3
            assert all(f"/part-algo-{shard + 1}\n" in s for s in fake.statements)
            # the feature query runs once per instance, into its shard's table; the
            # three unloads read that table
            body = FEATURES.sql.strip().rstrip(";").strip()
            (run,) = [s for s in fake.executed if body in s]
            assert run.startswith("CREATE TEMPORARY TABLE ")
            assert all(f"FROM {run.split()[3]}\n" in s for s in fake.statements)
            unloaded.append(rows)
    assert sum(sum(r.values()) for r in unloaded) == total
    assert all(r["train"] > r["validation"] > 0 for r in unloaded)


def test_the_query_hash_is_the_texts():
    assert query_sha256(FEATURES.sql) == query_sha256(FEATURES.sql)
    assert query_sha256(FEATURES.sql) != query_sha256(FEATURES.sql + " ")


def test_pinning_changes_nothing_but_the_tables_read_point(warehouse):
    """sqlglot's rewrite keeps the query's meaning: without its AT clauses it returns
    exactly what the team's text returns (run on the embedded Snowflake)."""
    from processing.extract import query_features

    text = re.sub(
        r"%\((\w+)\)s",
        lambda m: f"__param_{m.group(1)}__",
        pin_to_data_version(FEATURES.sql),
    )
    tree = sqlglot.parse_one(text, read="snowflake")
    for table in tree.find_all(exp.Table):
        table.set("when", None)
    unpinned = re.sub(r"\b__param_(\w+)__\b", r"%(\1)s", tree.sql("snowflake"))
    assert "AT (" not in unpinned
    with warehouse.connect() as conn:
        original = query_features(conn, FEATURES.sql, PARAMS)
        rewritten = query_features(conn, unpinned, PARAMS)
    assert len(original) > 1000
    assert original.equals(rewritten)


def test_copy_into_writes_where_the_steps_outputs_point(tmp_path):
    """The stage folder of each split is the step's output URI under the stage's URL
    (the artifact root), read from the job's processingjobconfig.json."""
    import json

    from processing.contract import ProcessingContract
    from processing.extract import _stage_paths

    root = "s3://mlops-dev-artifacts/churn"
    (tmp_path / "config").mkdir()
    outputs = [
        {"OutputName": s, "S3Output": {"S3Uri": f"{root}/e-42/features/{s}"}}
        for s in ("train", "validation", "test")
    ]
    (tmp_path / "config" / "processingjobconfig.json").write_text(
        json.dumps({"ProcessingOutputConfig": {"Outputs": outputs}})
    )
    contract = ProcessingContract.from_environment({"OPT_ML_ROOT": str(tmp_path)})
    assert _stage_paths(contract, root) == {
        s: f"e-42/features/{s}" for s in ("train", "validation", "test")
    }
    with pytest.raises(ValueError, match="is not under the stage's URL"):
        _stage_paths(contract, "s3://another-bucket/churn")
