"""Scale-out benchmark (issue 18): the pipeline's own jobs with 1 and 2 instances, run
as the local runner runs them, with the speed-up of 2 over 1 read within one run.

    .venv/bin/python -m benchmarks.scaleout                # 750k demo customers
    .venv/bin/python -m benchmarks.scaleout --quick        # 3,000 customers, seconds
    .venv/bin/python -m benchmarks.scaleout --customers 2000000 --rounds 200
    .venv/bin/python -m benchmarks.scaleout --json out.json

The demo generator (``datagen``) seeds ``--customers`` customers into DuckDB files,
which a fakesnow server (in this process, ``fakesnow.server``) serves to the jobs
through the real connector. Each job is the pipeline definition's own step, resolved
as the local runner resolves it and started by ``pipelines.local_jobs`` from the
staged image: a process per instance under SageMaker's container contract.

Sections (``SECTIONS``, in order; each prints its table and returns its results):

  extract  the Extract processing job with ProcessingInstanceCount 1 and 2: wall
           time, and the feature query's runs on the warehouse, counted at the
           server per session (one session per instance) with the extract
           benchmark's counting connection, next to what the code before the
           query ran once per instance would have run: ``slices + 2`` per instance
           (its columns, its count, each slice), from each instance's manifest.
  train    the Train job with TrainingInstanceCount 1 and 2 on the 2-instance
           Extract's output, exactly ``--rounds`` rounds each (early stopping off,
           so every run does the same work): one host with the threads the code
           gives it, two hosts as the code runs them, and two hosts with the job's
           CPUs split between them (``SM_NUM_CPUS``), the fair comparison on one
           machine.
  tuning   the Tune step (a hyperparameter tuning job, pipelines.local_tuning) with
           MaxParallelTrainingJobs 1 and 2 for the same ``--trials`` trials: the
           Random strategy with one seed, so both runs train the same trials, each
           exactly ``--rounds`` rounds (num_round taken out of the ranges, early
           stopping off); one trial at a time with every CPU against two at a time
           with the CPUs split between them (``SM_NUM_CPUS``).

The load average is printed at the start and the end: the cores are shared.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.extract import CountingConnection, free_port
from pipelines.expressions import EvaluationContext, resolve
from stack.objectstore import LocalObjectStore, join_uri

DEFAULT_CUSTOMERS = 750_000
QUICK_CUSTOMERS = 3_000
DEFAULT_ROUNDS = 100
QUICK_ROUNDS = 10
DEFAULT_TRIALS = 4
QUICK_TRIALS = 2
SEED = 7
# what Preflight's report would give Extract's --data-fingerprint (recorded only)
FINGERPRINT = "scaleout-benchmark"


@dataclass
class Bench:
    """What every section shares: the data, the resolved definition's steps, where
    jobs run, the server's sessions, and what one section leaves for the next."""

    customers: int
    rounds: int
    trials: int
    overrides: dict[str, Any]  # the test configuration's, for other definitions
    definition: dict[str, Any]
    work_dir: Path
    store: Any  # stack.objectstore.LocalObjectStore
    container: Any  # pipelines.local_jobs.Container
    sessions: list[CountingConnection]
    environment: dict[str, str]  # added to every job's request Environment
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Section:
    title: str
    lines: list[str]
    results: list[dict[str, Any]]


def extract_section(bench: Bench) -> Section:
    """The Extract job with 1 and 2 instances over the same data."""
    runs = [_run_extract(bench, instances) for instances in (1, 2)]
    one, two = runs
    bench.outputs["Extract"] = two.properties
    lines = [
        f"{'instances':>9} {'rows':>10} {'seconds':>8} {'rows/s':>9} "
        f"{'slices':>8} {'query runs before':>17} {'query runs now':>14}"
    ]
    for run in runs:
        lines.append(
            f"{run.instances:>9} {run.rows:>10,} {run.seconds:>8.2f} "
            f"{run.rows / run.seconds:>9,.0f} {_per_instance(run.slices):>8} "
            f"{_per_instance(run.runs_before):>17} {_per_instance(run.runs_now):>14}"
        )
    lines += [
        "",
        f"speed-up, 2 instances vs 1: {one.seconds / two.seconds:.2f}x",
        "query runs per extraction (all instances): "
        f"before {sum(one.runs_before)} -> now {sum(one.runs_now)} with 1 instance, "
        f"before {sum(two.runs_before)} -> now {sum(two.runs_now)} with 2",
        "(before: slices + 2 per instance, as the code ran it before issue 18; "
        "now: counted at the server)",
    ]
    results = [
        {
            "case": f"extract@{run.instances}",
            "seconds": round(run.seconds, 3),
            "rows": run.rows,
            "query_runs": sum(run.runs_now),
            "query_runs_before": sum(run.runs_before),
        }
        for run in runs
    ]
    results.append(
        {"case": "extract 2 vs 1", "speedup": round(one.seconds / two.seconds, 3)}
    )
    title = (
        f"Extract with ProcessingInstanceCount 1 and 2 ({bench.customers:,} "
        "customers, fakesnow server, connector route)"
    )
    return Section(title, lines, results)


def train_section(bench: Bench) -> Section:
    """The Train job with 1 and 2 instances on the Extract section's output."""
    threads = os.cpu_count() or 1
    split = max(threads // 2, 1)
    _create_mlflow_store(bench)
    runs = [
        _run_train(bench, 1, None, f"1 host, {threads} threads (the code's default)"),
        _run_train(bench, 2, None, f"2 hosts, {threads} threads each (the code's)"),
        _run_train(bench, 2, split, f"2 hosts, {split} thread each (CPUs split)"),
    ]
    one, as_is, fair = runs
    lines = [
        f"{'case':44} {'train rows':>10} {'seconds':>8} {'val AUC':>8} "
        f"{'x vs 1 host':>11}"
    ]
    for run in runs:
        lines.append(
            f"{run.label:44} {run.train_rows:>10,} {run.seconds:>8.2f} "
            f"{run.auc:>8.4f} {one.seconds / run.seconds:>10.2f}x"
        )
    lines += [
        "",
        f"speed-up, 2 hosts vs 1, CPUs split (the fair one here): "
        f"{one.seconds / fair.seconds:.2f}x",
        f"speed-up, 2 hosts vs 1, as the code runs them: "
        f"{one.seconds / as_is.seconds:.2f}x",
        f"(each host's threads: SM_NUM_CPUS, else os.cpu_count() = {threads}, "
        "training.contract; the local runner sets no SM_NUM_CPUS, so its hosts "
        "share the cores)",
    ]
    results = [
        {
            "case": f"train@{run.instances}" + ("-split" if run.cpus else ""),
            "seconds": round(run.seconds, 3),
            "train_rows": run.train_rows,
            "validation_auc": round(run.auc, 5),
        }
        for run in runs
    ]
    results += [
        {"case": "train 2 vs 1 split", "speedup": round(one.seconds / fair.seconds, 3)},
        {"case": "train 2 vs 1", "speedup": round(one.seconds / as_is.seconds, 3)},
    ]
    title = (
        f"Train with TrainingInstanceCount 1 and 2 ({one.train_rows:,} train rows "
        f"from {bench.customers:,} customers, {bench.rounds} rounds)"
    )
    return Section(title, lines, results)


def tuning_section(bench: Bench) -> Section:
    """The Tune step with 1 and 2 parallel trials for the same trials."""
    threads = os.cpu_count() or 1
    split = max(threads // 2, 1)
    _create_mlflow_store(bench)
    runs = [
        _run_tuning(bench, 1, None, f"1 at a time, {threads} threads each"),
        _run_tuning(bench, 2, split, f"2 at a time, {split} thread each (CPUs split)"),
    ]
    one, two = runs
    same = one.trials == two.trials
    lines = [
        f"{'case':40} {'trials':>6} {'seconds':>8} {'best val AUC':>12} {'x vs 1':>7}"
    ]
    for run in runs:
        lines.append(
            f"{run.label:40} {len(run.trials):>6} {run.seconds:>8.2f} "
            f"{run.best:>12.4f} {one.seconds / run.seconds:>6.2f}x"
        )
    lines += [
        "",
        f"speed-up, 2 parallel trials vs 1: {one.seconds / two.seconds:.2f}x",
        "the same trials in both runs (Random, one seed): "
        + ("yes" if same else "NO: the comparison is off"),
    ]
    results = [
        {
            "case": f"tuning@{run.parallel}",
            "seconds": round(run.seconds, 3),
            "trials": len(run.trials),
            "best_validation_auc": round(run.best, 5),
        }
        for run in runs
    ]
    results.append(
        {
            "case": "tuning 2 vs 1",
            "speedup": round(one.seconds / two.seconds, 3),
            "same_trials": same,
        }
    )
    title = (
        f"Tune with MaxParallelTrainingJobs 1 and 2 ({bench.trials} trials of "
        f"{bench.rounds} rounds on the 2-instance Extract's output)"
    )
    return Section(title, lines, results)


# The sections, in the order they run; a section may use what an earlier one left in
# ``Bench.outputs`` (train and tuning read the 2-instance Extract's output).
SECTIONS: dict[str, Callable[[Bench], Section]] = {
    "extract": extract_section,
    "train": train_section,
    "tuning": tuning_section,
}


# ---------------------------------------------------------------- the jobs


@dataclass
class _ExtractRun:
    instances: int
    seconds: float
    rows: int
    slices: list[int]
    runs_now: list[int]
    properties: dict[str, Any]

    @property
    def runs_before(self) -> list[int]:
        # the feature query ran for the columns (LIMIT 0), the count and each slice
        return [slices + 2 for slices in self.slices]


@dataclass
class _TrainRun:
    label: str
    instances: int
    cpus: int | None
    seconds: float
    train_rows: int
    auc: float


def _run_extract(bench: Bench, instances: int) -> _ExtractRun:
    from pipelines.local_jobs import run_processing_job

    request = _request(
        bench,
        "Extract",
        f"extract-{instances}",
        {"ProcessingInstanceCount": instances},
        property_files={
            "Preflight": {"PreflightReport": {"data": {"fingerprint": FINGERPRINT}}}
        },
    )
    first_session = len(bench.sessions)
    started = time.perf_counter()
    result = run_processing_job(
        f"scaleout-extract-{instances}",
        request,
        bench.work_dir / f"extract-{instances}",
        bench.store,
        bench.container,
    )
    seconds = time.perf_counter() - started
    train_uri = next(
        o["S3Output"]["S3Uri"]
        for o in request["ProcessingOutputConfig"]["Outputs"]
        if o["OutputName"] == "train"
    )
    manifests = [
        json.loads(
            bench.store.read_bytes(join_uri(train_uri, f"manifest-algo-{i}.json"))
        )
        for i in range(1, instances + 1)
    ]
    return _ExtractRun(
        instances,
        seconds,
        sum(m["rows_total"] for m in manifests),
        [m["slices"] for m in manifests],
        [s.executions for s in bench.sessions[first_session:]],
        result.properties,
    )


def _run_train(bench: Bench, instances: int, cpus: int | None, label: str) -> _TrainRun:
    from pipelines.local_jobs import run_training_job

    name = f"train-{instances}" + (f"-{cpus}cpu" if cpus else "")
    request = _request(
        bench,
        "Train",
        name,
        {"TrainingInstanceCount": instances, "NumRound": bench.rounds},
        steps={"Extract": bench.outputs["Extract"]},
    )
    # the same number of rounds in every run: early stopping could end them apart
    request["HyperParameters"]["early_stopping_rounds"] = str(bench.rounds)
    if cpus:
        request["Environment"]["SM_NUM_CPUS"] = str(cpus)
    started = time.perf_counter()
    result = run_training_job(
        f"scaleout-{name}", request, bench.work_dir / name, bench.store, bench.container
    )
    seconds = time.perf_counter() - started
    archive = bench.store.read_bytes(
        result.properties["ModelArtifacts"]["S3ModelArtifacts"]
    )
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("metadata.json")
        metadata = json.loads(member.read()) if member else {}
    return _TrainRun(
        label,
        instances,
        cpus,
        seconds,
        int(metadata["train_rows"]),
        float(metadata["best_validation_auc"]),
    )


@dataclass
class _TuningRun:
    label: str
    parallel: int
    seconds: float
    best: float
    trials: list[dict[str, str]]  # each trial's searched values, in trial order


def _run_tuning(
    bench: Bench, parallel: int, cpus: int | None, label: str
) -> _TuningRun:
    from pipelines.local_jobs import run_training_job
    from pipelines.local_tuning import run_tuning_job

    name = f"tune-{parallel}"
    request = _request(
        bench,
        "Tune",
        name,
        {
            "MaxNumberOfTrainingJobs": bench.trials,
            "MaxParallelTrainingJobs": parallel,
        },
        steps={"Extract": bench.outputs["Extract"]},
        definition=_tuning_definition(bench),
    )
    config = request["HyperParameterTuningJobConfig"]
    ranges = config["ParameterRanges"]
    # the same work in every trial: num_round fixed, no early stopping
    ranges["IntegerParameterRanges"] = [
        r for r in ranges["IntegerParameterRanges"] if r["Name"] != "num_round"
    ]
    job = request["TrainingJobDefinition"]
    job["StaticHyperParameters"].update(
        num_round=str(bench.rounds), early_stopping_rounds=str(bench.rounds)
    )
    job["Environment"] = {**job.get("Environment", {}), **bench.environment}
    if cpus:
        job["Environment"]["SM_NUM_CPUS"] = str(cpus)
    started = time.perf_counter()
    result = run_tuning_job(
        f"scaleout-{name}",
        request,
        bench.work_dir / name,
        lambda trial, trial_request, folder: run_training_job(
            trial, trial_request, folder, bench.store, bench.container
        ),
    )
    seconds = time.perf_counter() - started
    best = result.properties["BestTrainingJob"]
    return _TuningRun(
        label,
        parallel,
        seconds,
        float(best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]),
        [t.tuned for t in sorted(result.trials, key=lambda t: t.name[-12:-9])],
    )


def _tuning_definition(bench: Bench) -> dict[str, Any]:
    """The definition with a Tune step (Random search: the same trials whatever the
    parallelism), built once."""
    if "tuning_definition" not in bench.outputs:
        from pipelines.definition import build_definition
        from stack.config import load_config

        overrides = {
            **bench.overrides,
            "training.tuning.enabled": True,
            "training.tuning.strategy": "Random",
        }
        config = load_config("test", overrides, environ={})
        bench.outputs["tuning_definition"] = build_definition(config)
    definition: dict[str, Any] = bench.outputs["tuning_definition"]
    return definition


def _create_mlflow_store(bench: Bench) -> None:
    """Create the Train step's MLflow store before the timed jobs: the first job to
    log would otherwise spend seconds creating its tables, which the others do not."""
    import mlflow

    steps = {"Extract": bench.outputs["Extract"]}
    train = _request(bench, "Train", "mlflow", {}, steps=steps)
    uri = train["Environment"]["MLFLOW_TRACKING_URI"]
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()


def _request(
    bench: Bench,
    step_name: str,
    execution_id: str,
    parameters: dict[str, Any],
    steps: dict[str, Any] | None = None,
    property_files: dict[str, Any] | None = None,
    definition: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The definition's step ``step_name`` resolved as the local runner resolves it."""
    from pipelines.local_runner import bind_parameters

    steps_of = (definition or bench.definition)["Steps"]
    (step,) = [s for s in steps_of if s["Name"] == step_name]
    context = EvaluationContext(
        parameters=bind_parameters(definition or bench.definition, parameters),
        execution={"PipelineExecutionId": execution_id, "PipelineName": "scaleout"},
        steps=steps or {},
        property_files=property_files or {},
    )
    request: dict[str, Any] = resolve(step["Arguments"], context)
    if step["Type"] != "Tuning":  # a tuning job's is its TrainingJobDefinition's
        request["Environment"] = {**request.get("Environment", {}), **bench.environment}
    return request


def _per_instance(values: list[int]) -> str:
    return "+".join(str(v) for v in values)


# ---------------------------------------------------------------- the stage


def _query_marker(sql: str) -> str:
    """The feature query's text after its last bound parameter: the connector binds
    parameters into the text it sends, so this tail is what every statement that
    runs the query carries, verbatim."""
    return re.split(r"%\(\w+\)s", sql)[-1].strip()


@contextlib.contextmanager
def _served_warehouse(
    folder: Path, marker: str
) -> Iterator[tuple[int, list[CountingConnection]]]:
    """A fakesnow server over the DuckDB files in ``folder``; its port, and each
    session's connection counting the statements that embed ``marker``.

    Attached to the server's shared catalog, the files are seen by every session, as
    Snowflake's tables are (fakesnow cannot attach one file in two sessions).
    """
    import uvicorn

    # the module, not the fakesnow.server() helper that fakesnow/__init__ exports
    server: Any = importlib.import_module("fakesnow.server")
    counted: list[CountingConnection] = []

    class CountedSessions(dict[str, Any]):
        def __setitem__(self, token: str, conn: Any) -> None:
            counted.append(CountingConnection(conn, marker))
            super().__setitem__(token, counted[-1])

    for db_file in sorted(folder.glob("*.db")):
        server.shared_fs.duck_conn.execute(
            f"ATTACH DATABASE '{db_file}' AS {db_file.stem.upper()}"
        )
    server.sessions = CountedSessions()
    server.logger.setLevel(logging.WARNING)  # a line per session login otherwise
    port = free_port()
    uvicorn_server = uvicorn.Server(
        uvicorn.Config(server.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=uvicorn_server.run, name="fakesnow", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uvicorn_server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fakesnow server did not start")
        time.sleep(0.1)
    try:
        yield port, counted
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=30)


def _seed(folder: Path, customers: int) -> None:
    from datagen.seed import ensure_demo_data
    from stack.warehouse import EmbeddedWarehouse

    ensure_demo_data(EmbeddedWarehouse(folder, "MLOPS", "CHURN"), customers, SEED)


def _bench(
    root: Path, args: argparse.Namespace, port: int, sessions: list[Any]
) -> Bench:
    from pipelines.definition import build_definition
    from pipelines.image import stage_image
    from pipelines.local_jobs import Container, Platform
    from pipelines.local_runner import platform_variables
    from stack.config import load_config

    state = root / "state"
    state.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {
        "state_dir": str(state),
        "snowflake.port": port,
        # the defaults of the test environment are short for a large extract
        "snowflake.login_timeout": 60,
        "snowflake.network_timeout": 1800,
    }
    if args.slice_rows:
        overrides["extract.slice_rows"] = args.slice_rows
    config = load_config("test", overrides, environ={})
    staging = time.perf_counter()
    image = stage_image(root / "images")
    print(f"staged the image in {time.perf_counter() - staging:.1f} s", flush=True)
    platform = Platform(
        platform_variables(config), shared=(state,), region=config.aws.region
    )
    return Bench(
        customers=args.customers,
        rounds=args.rounds,
        trials=args.trials,
        overrides=overrides,
        definition=build_definition(config),
        work_dir=root / "jobs",
        store=LocalObjectStore(root / "s3"),
        container=Container(image, platform),
        sessions=sessions,
        # the fakesnow server takes any password, and the connector refuses none; a
        # pipeline's job reads it by reference (snowflake.secret_arn) instead
        environment={"MLOPS_SNOWFLAKE__PASSWORD": "fakesnow"},  # noqa: S105
    )


# ---------------------------------------------------------------- the command


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min) on {os.cpu_count()} CPUs"


def _run(root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Seed (or reuse) the data under ``root``, serve it, run the sections."""
    from features import load_feature_set

    for stale in ("jobs", "state", "s3"):
        shutil.rmtree(root / stale, ignore_errors=True)
    seeding = time.perf_counter()
    _seed(root / "snowflake", args.customers)
    print(
        f"seeded {args.customers:,} demo customers in "
        f"{time.perf_counter() - seeding:.1f} s",
        flush=True,
    )
    marker = _query_marker(load_feature_set("churn").sql)
    results: list[dict[str, Any]] = []
    with _served_warehouse(root / "snowflake", marker) as (port, sessions):
        bench = _bench(root, args, port, sessions)
        for name in args.sections:
            section = SECTIONS[name](bench)
            print(f"\n== {section.title}", flush=True)
            print("\n".join(section.lines), flush=True)
            results += section.results
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout")
    parser.add_argument(
        "--customers",
        type=int,
        default=None,
        help=f"demo customers to seed (default {DEFAULT_CUSTOMERS:,}; "
        f"--quick {QUICK_CUSTOMERS:,})",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"boosting rounds per training job (default {DEFAULT_ROUNDS})",
    )
    parser.add_argument(
        "--slice-rows", type=int, default=None, help="extract.slice_rows for Extract"
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=None,
        help=f"training jobs per tuning run (default {DEFAULT_TRIALS}; "
        f"--quick {QUICK_TRIALS})",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument(
        "--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS)
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the seeded data (reused at the same size), the jobs' folders and "
        "logs here (default: a temporary folder)",
    )
    args = parser.parse_args(argv)
    args.customers = args.customers or (
        QUICK_CUSTOMERS if args.quick else DEFAULT_CUSTOMERS
    )
    args.rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    args.trials = args.trials or (QUICK_TRIALS if args.quick else DEFAULT_TRIALS)
    for reader in ("train", "tuning"):
        if reader in args.sections and "extract" not in args.sections:
            parser.error(f"the {reader} section reads the extract section's output")
    if args.quick and not args.slice_rows:
        args.slice_rows = 500  # several slices, as at the full size

    print(f"load average at start: {_load()}", flush=True)
    started = time.perf_counter()
    if args.workdir:
        results = _run(args.workdir, args)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
            results = _run(Path(tmp), args)
    print(f"\nload average at end: {_load()}")
    print(f"whole benchmark: {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "scaleout",
                    "customers": args.customers,
                    "rounds": args.rounds,
                    "results": results,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
