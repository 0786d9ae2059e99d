"""The next slice is fetched while the current one is written, and no further ahead.

A wrapper around the connection (the driver boundary) records when each slice's
query starts and ends and on which thread; the stream's per-slice log line marks a
slice written.
"""

import logging
import threading
import time

import pytest

from features import SchemaError, load_feature_set
from processing.extract import query_features
from processing.stream import SPLITS, SplitWriters, stream_features
from tests.processing.test_extract import PARAMS

FEATURES = load_feature_set("churn")


class TimelineConnection:
    """The connection, appending ('fetch', n) when the n-th slice query starts and
    counting the statements running at once."""

    def __init__(self, conn, events):
        self.conn, self.events = conn, events
        self.statements: list[str] = []
        self.running = 0
        self.most_running = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def cursor(self):
        return _TimelineCursor(self, self.conn.cursor())

    def __getattr__(self, name):
        return getattr(self.conn, name)


class _TimelineCursor:
    def __init__(self, owner, cursor):
        self.owner, self.cursor = owner, cursor

    def execute(self, sql, *args, **kwargs):
        owner = self.owner
        with owner._lock:
            owner.statements.append(sql)
            owner.running += 1
            owner.most_running = max(owner.most_running, owner.running)
            if sql.startswith("SELECT * FROM EXTRACT_SHARD_") and "LIMIT 0" not in sql:
                fetches = sum(1 for kind, _ in owner.events if kind == "fetch")
                owner.events.append(("fetch", fetches))
                owner.threads.add(threading.current_thread().name)
        try:
            return self.cursor.execute(sql, *args, **kwargs)
        finally:
            with owner._lock:
                owner.running -= 1

    def __getattr__(self, name):
        return getattr(self.cursor, name)


class _Written(logging.Handler):
    def __init__(self, events):
        super().__init__()
        self.events = events

    def emit(self, record):
        if record.msg.startswith("slice "):
            self.events.append(("written", record.args[0] - 1))


@pytest.fixture
def timeline():
    events: list[tuple[str, int]] = []
    handler = _Written(events)
    logger = logging.getLogger("processing.extract")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield events
    logger.removeHandler(handler)
    logger.setLevel(level)


class _OverlapProbe(SplitWriters):
    """Writers whose first write of slice n waits (up to 10 s) for slice n+1's query
    to start: with the next slice fetched ahead it starts at once; without, never."""

    def __init__(self, out, timeline, slices):
        super().__init__({s: out / s for s in SPLITS}, "part-t", 1000)
        self.timeline, self.slices = timeline, slices
        self.waited: set[int] = set()
        self.seen_ahead: list[bool] = []

    def write(self, split, table):
        slice_ = sum(1 for kind, _ in self.timeline if kind == "written")
        if slice_ not in self.waited and slice_ + 1 < self.slices:
            self.waited.add(slice_)
            deadline = time.monotonic() + 10
            while ("fetch", slice_ + 1) not in self.timeline:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            self.seen_ahead.append(("fetch", slice_ + 1) in self.timeline)
        super().write(split, table)


def test_the_next_slice_is_fetched_while_this_one_is_written_and_no_further(
    warehouse, tmp_path, timeline
):
    with warehouse.connect() as conn:
        rows = len(query_features(conn, FEATURES.sql, PARAMS))
        recorded = TimelineConnection(conn, timeline)
        slices = 5
        writers = _OverlapProbe(tmp_path, timeline, slices)
        result = stream_features(
            recorded,
            FEATURES.sql,
            PARAMS,
            FEATURES.schema,
            writers,
            slice_rows=-(-rows // slices),
        )
    assert result.slices == slices and result.total == rows
    # slice n+1 is asked for while slice n is being written ...
    assert writers.seen_ahead == [True] * (slices - 1)
    fetched = [n for kind, n in timeline if kind == "fetch"]
    assert fetched == list(range(slices))
    for n in range(1, slices):
        at = timeline.index(("fetch", n))
        written = {k for kind, k in timeline[:at] if kind == "written"}
        # ... and only once every slice before slice n is written: never two ahead
        assert written == set(range(n - 1))
    # one statement at a time on the connection, the slices' from a thread of
    # their own
    assert recorded.most_running == 1
    assert recorded.threads == {"extract-fetch_0"}


def test_a_bad_slice_fetched_ahead_fails_the_extract_and_leaves_nothing(
    warehouse, tmp_path, timeline
):
    """The last of four slices breaks the schema (a null in a non-nullable feature,
    seen only by the slice's own check): the extract fails when it reaches that
    slice, after the fetch thread is done; no file and no shard table is left."""
    columns = [
        "CASE WHEN MOD(ABS(HASH(customer_id)), 4) = 3 THEN NULL "
        "ELSE tenure_days END AS tenure_days"
        if name == "tenure_days"
        else name
        for name in FEATURES.schema.columns
    ]
    body = FEATURES.sql.strip().rstrip(";")
    broken = f"SELECT {', '.join(columns)} FROM (\n{body}\n) AS f"
    with warehouse.connect() as conn:
        rows = len(query_features(conn, FEATURES.sql, PARAMS))
        recorded = TimelineConnection(conn, timeline)
        writers = SplitWriters({s: tmp_path / s for s in SPLITS}, "part-t", 1000)
        with pytest.raises(SchemaError, match="tenure_days"):
            stream_features(
                recorded,
                broken,
                PARAMS,
                FEATURES.schema,
                writers,
                slice_rows=-(-rows // 4),
            )
        (table,) = {s.split()[3] for s in recorded.statements if "TEMPORARY" in s}
        assert recorded.statements[-1] == f"DROP TABLE IF EXISTS {table}"
    assert ("written", 2) in timeline and ("written", 3) not in timeline
    assert not any(tmp_path.rglob("*.parquet"))
    assert not [t for t in threading.enumerate() if t.name.startswith("extract-fetch")]
