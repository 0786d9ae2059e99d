"""The summary ``python -m pipelines.run`` prints at the end of a local run."""

from __future__ import annotations

import io
import json
from pathlib import Path

from pipelines.console import Console
from pipelines.local_runner import Execution
from pipelines.summary import summarise
from stack.config import load_config
from stack.objectstore import LocalObjectStore

EVALUATE = {
    "ProcessingOutputConfig": {
        "Outputs": [
            {
                "OutputName": "evaluation",
                "S3Output": {"S3Uri": "s3://mlops-local/churn/e0/evaluation"},
            }
        ]
    }
}
REPORT = {"binary_classification_metrics": {"auc": {"value": 0.810411}}}


def summary(tmp_path: Path, log_format: str = "text", **fields) -> str:
    config = load_config("local", {"state_dir": str(tmp_path)}, environ={})
    execution = Execution(
        execution_id="e1",
        pipeline_name="churn-pipeline",
        parameters={},
        directory=str(tmp_path / "executions" / "e1"),
        status="Succeeded",
        **fields,
    )
    out = io.StringIO()
    console = Console(log_format, out=out)
    summarise(config, execution, 3.0, console, LocalObjectStore(tmp_path / "s3"))
    return out.getvalue()


def test_the_summary_names_the_evaluation_report_as_a_local_file(
    tmp_path: Path,
) -> None:
    printed = summary(
        tmp_path,
        properties={"Evaluate": EVALUATE},
        property_files={"Evaluate": {"EvaluationReport": REPORT}},
    )
    report = tmp_path.resolve() / "s3/mlops-local/churn/e0/evaluation/report.html"
    lines = printed.splitlines()
    assert "Test metrics: auc 0.8104" in lines
    assert f"Evaluation report: {report}" in lines
    assert lines.index(f"Evaluation report: {report}") == (
        lines.index("Test metrics: auc 0.8104") + 1
    )


def test_the_report_is_a_field_of_the_json_lines(tmp_path: Path) -> None:
    printed = summary(tmp_path, "json", properties={"Evaluate": EVALUATE})
    events = [json.loads(line) for line in printed.splitlines()]
    report = next(e for e in events if e["event"] == "evaluation_report")
    assert report["report"].endswith("/s3/mlops-local/churn/e0/evaluation/report.html")


def test_no_report_line_when_evaluate_did_not_run(tmp_path: Path) -> None:
    assert "Evaluation report" not in summary(tmp_path)
