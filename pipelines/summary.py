"""What ``python -m pipelines.run`` prints after a local execution: the summary (its
steps, test metrics, the evaluation report, the gate's decision, the model package, the
endpoint, the predictions written back, the record) and the verdict that becomes the
exit code.

The step and property file names are the definition's constants, from
``pipelines.step_names``: importing this module imports neither the definition nor
pandas.
"""

from __future__ import annotations

import urllib.request
from typing import TYPE_CHECKING, Any

from pipelines.console import EXIT_FAILED, EXIT_OK, Console, location, show_step
from pipelines.step_names import (
    DEPLOY,
    EVALUATE,
    EVALUATION_REPORT,
    GATE,
    GATE_REPORT,
    REGISTER,
    WRITEBACK,
    WRITEBACK_REPORT,
)
from stack.config import Config
from stack.objectstore import ObjectStore, join_uri

if TYPE_CHECKING:
    from pipelines.local_runner import Execution

# the Evaluate step's output that holds report.html (as the definition names it)
EVALUATION_OUTPUT = "evaluation"


def summarise(
    config: Config,
    execution: Execution,
    seconds: float,
    console: Console,
    store: ObjectStore,
) -> None:
    """Print what ``execution`` did and made, a line (or JSON event) each; ``seconds``
    is the whole run's time, ``store`` where its reports are.
    """
    say = console.event
    say("summary", "")
    say(
        "summary",
        f"Pipeline {execution.pipeline_name}, execution {execution.execution_id}",
        pipeline=execution.pipeline_name,
        execution_id=execution.execution_id,
    )
    for step in execution.steps:
        # the failure was shown as it happened, and is again below the summary
        show_step(console, step, event="step_summary", with_reason=False)
    report = execution.property_files.get(EVALUATE, {}).get(EVALUATION_REPORT)
    if report:
        metrics = report["binary_classification_metrics"]
        shown = {
            k: metrics[k]["value"]
            for k in ("auc", "pr_auc", "log_loss", "f1")
            if k in metrics
        }
        say(
            "metrics",
            "Test metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()),
            metrics=shown,
        )
    evaluation = evaluation_report(execution)
    if evaluation:
        where = location(store, evaluation)
        say("evaluation_report", f"Evaluation report: {where}", report=where)
    gate = (execution.property_files.get(GATE, {}).get(GATE_REPORT) or {}).get("gate")
    if gate:
        say("gate", f"Gate: {gate['decision']} by the {gate['rule']}", gate=gate)
    _model_package(execution, console)
    _endpoint(execution, console)
    _predictions(config, execution, console)
    say(
        "summary",
        f"Execution record: {execution.directory}/execution.json "
        f"({seconds:.0f}s in all)",
        record=f"{execution.directory}/execution.json",
        seconds=round(seconds, 1),
    )


def verdict(execution: Execution, console: Console) -> int:
    """The execution's last line, "Succeeded" or the failed step and why; returns the
    exit code (0 succeeded, 1 otherwise).
    """
    fields = {"status": execution.status, "execution_id": execution.execution_id}
    if execution.status != "Succeeded":
        failed = execution.failed_step
        console.event(
            "execution",
            f"Failed: step {failed.name}: {failed.failure_reason}"
            if failed
            else f"Failed: the execution {execution.status.lower()}",
            failed_step=failed.name if failed else None,
            failure_reason=failed.failure_reason if failed else None,
            **fields,
        )
        return EXIT_FAILED
    console.event("execution", "Succeeded", **fields)
    return EXIT_OK


def evaluation_report(execution: Execution) -> str | None:
    """The URI of the report.html the Evaluate step wrote (its output folder's, also
    when the step was reused from an earlier execution), or None if it did not run.
    """
    job = execution.properties.get(EVALUATE) or {}
    outputs = job.get("ProcessingOutputConfig", {}).get("Outputs", [])
    for output in outputs:
        if output.get("OutputName") == EVALUATION_OUTPUT:
            return join_uri(output["S3Output"]["S3Uri"], "report.html")
    return None


def _model_package(execution: Execution, console: Console) -> None:
    register = execution.properties.get(REGISTER)
    if register:
        console.event(
            "model_package",
            f"Model package: {register['ModelPackageArn']} "
            f"(version {register['ModelPackageVersion']}, "
            f"{register['ModelApprovalStatus']})",
            **register,
        )


def _endpoint(execution: Execution, console: Console) -> None:
    deploy = execution.properties.get(DEPLOY)
    if deploy:
        ping = _ping(deploy["Url"])
        console.event(
            "endpoint",
            f"Endpoint: {deploy['EndpointName']} at {deploy['Url']} "
            f"(/ping {ping}); stop it with "
            "`python -m pipelines.endpoint stop`",
            endpoint=deploy["EndpointName"],
            url=deploy["Url"],
            ping=ping,
        )


def _predictions(config: Config, execution: Execution, console: Console) -> None:
    written: dict[str, Any] | None = execution.property_files.get(WRITEBACK, {}).get(
        WRITEBACK_REPORT
    )
    if written:
        table = (
            f"{config.snowflake.database}.{config.snowflake.schema_name}."
            f"{written['table']}"
        )
        console.event(
            "predictions",
            f"Predictions: {written['rows_scored']:,} new or changed rows scored "
            f"into {table} as of {written['as_of']} ({written['rows_inserted']:,} "
            f"inserted, {written['rows_updated']:,} updated, "
            f"{written['rows_unchanged']:,} unchanged, "
            f"{written.get('rows_deleted', 0):,} deleted: customers the data no "
            "longer has)",
            **{**written, "table": table},
        )


def _ping(url: str | None) -> str:
    if not url:
        return "n/a"
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:  # noqa: S310
            return str(response.status)
    except OSError as exc:
        return f"unreachable: {exc}"
