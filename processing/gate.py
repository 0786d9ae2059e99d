"""The registration gate: the absolute AUC rule and the champion/challenger rule.

A challenger is registered only if its test AUC is at least the absolute threshold AND
it is not worse than the champion (the newest Approved package of the model package
group) by more than the tolerance, both scored on the same test split here. With no
champion, the absolute rule alone decides. The decision and the rule that decided go
into ``evaluation.json`` (``gate``), where the pipeline's condition step reads them.

In the pipeline this runs as a step of its own, ``python -m processing.gate``, after
Evaluate: Evaluate's metrics depend only on the model and the test split, so that step
is cached and needs no network, whereas the champion can change between two executions
with the same arguments, so the Gate step is never cached and reads the registry. It
writes ``evaluation.json`` (Evaluate's report plus ``gate``, and ``tracking``: the
MLflow run of this execution, ``processing.tracking``), ``report.html`` with the
verdict, and the plots, under its own output.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.channels import read_split
from inference import artifact
from inference.model import load_model
from pipelines.process_gc import run_process
from pipelines.spec import (
    EXECUTION_ID,
    Input,
    Output,
    Parameter,
    ProcessingSpec,
    PropertyFile,
    Setting,
    StepOutput,
    python_module,
)
from pipelines.step_names import EVALUATE, EXTRACT, GATE, GATE_REPORT
from processing.contract import ProcessingContract, log_first_read
from processing.evaluate import REPORT_FILE, evaluate
from processing.report import PLOTS, render_html
from processing.tracking import log_gate_run

if TYPE_CHECKING:
    import pandas as pd

    from stack.objectstore import ObjectStore
    from stack.registry import ModelPackage, ModelRegistry

log = logging.getLogger("processing.gate")

REGISTER, REJECT = "register", "reject"

EVALUATION_DIR, TEST_DIR = "/opt/ml/processing/evaluation", "/opt/ml/processing/test"
OUTPUT_DIR = "/opt/ml/processing/gate"

# The gate reads the registry and its verdict depends on the current champion, which
# can change between executions with the same arguments: a step of its own, never
# cached, so that Evaluate (model and test split only) can be.
SPEC = ProcessingSpec(
    name=GATE,
    command=python_module("processing.gate"),
    inputs=(
        Input("evaluation", StepOutput(EVALUATE, "evaluation"), EVALUATION_DIR),
        Input("test", StepOutput(EXTRACT, "test"), TEST_DIR),
    ),
    outputs=(Output("gate", OUTPUT_DIR),),
    arguments=(
        "--auc-threshold",
        Parameter("AucThreshold", text=True),
        "--champion-tolerance",
        Parameter("ChampionTolerance", text=True),
        "--model-package-group",
        Setting("sagemaker.model_package_group"),
        # the MLflow run it records belongs to this execution; never cached, so a
        # per-execution argument costs no cache hit
        "--execution-id",
        EXECUTION_ID,
    ),
    # its report is Evaluate's with the verdict added, under the same file name
    property_files=(PropertyFile(GATE_REPORT, "gate", REPORT_FILE),),
    # it reads the registry (MLOPS_ENV names the configuration that says which one)
    # for the champion, and logs the evaluation and its verdict in a run of this
    # execution, a child of the training run
    sections=("resources", "aws"),
    tracking=True,
)


@dataclass(frozen=True)
class Champion:
    arn: str
    version: int
    auc: float | None  # None: it could not be scored on this split
    error: str | None = None


def decide(
    challenger_auc: float,
    auc_threshold: float,
    tolerance: float,
    champion: Champion | None,
) -> dict[str, Any]:
    """The gate's decision, the numbers it used and the rule that decided, in words."""
    result: dict[str, Any] = {
        "challenger_auc": challenger_auc,
        "auc_threshold": auc_threshold,
        "champion_tolerance": tolerance,
        "champion_arn": champion.arn if champion else None,
        "champion_version": champion.version if champion else None,
        "champion_auc": champion.auc if champion else None,
    }
    if challenger_auc < auc_threshold:
        decision, rule = (
            REJECT,
            f"absolute rule: test AUC {challenger_auc:.4f} is below the threshold "
            f"{auc_threshold:.4f}",
        )
    elif champion is None:
        decision, rule = (
            REGISTER,
            f"absolute rule only (no Approved champion yet): test AUC "
            f"{challenger_auc:.4f} >= threshold {auc_threshold:.4f}",
        )
    elif champion.auc is None:
        decision, rule = (
            REGISTER,
            f"absolute rule only: champion version {champion.version} could not be "
            f"scored on this test split ({champion.error}); test AUC "
            f"{challenger_auc:.4f} >= threshold {auc_threshold:.4f}",
        )
    elif challenger_auc < champion.auc - tolerance:
        decision, rule = (
            REJECT,
            f"champion rule: test AUC {challenger_auc:.4f} is worse than champion "
            f"version {champion.version}'s {champion.auc:.4f} on the same test split "
            f"by {champion.auc - challenger_auc:.4f}, more than the tolerance "
            f"{tolerance:.4f}",
        )
    else:
        decision, rule = (
            REGISTER,
            f"champion rule: test AUC {challenger_auc:.4f} vs champion version "
            f"{champion.version}'s {champion.auc:.4f} on the same test split is "
            f"within the tolerance {tolerance:.4f}, and >= threshold "
            f"{auc_threshold:.4f}",
        )
    result.update(decision=decision, passed=int(decision == REGISTER), rule=rule)
    return result


def score_champion(
    registry: ModelRegistry,
    store: ObjectStore,
    group: str,
    read_test: Callable[[], pd.DataFrame],
    auc_of: Callable[[Path, pd.DataFrame], float],
) -> Champion | None:
    """The newest Approved package of ``group`` scored on the test split (None if
    none; ``read_test`` reads the split, only when there is a champion).

    ``auc_of(model_dir, test)`` scores an unpacked model folder. A champion that cannot
    be loaded or scored (say its feature schema differs) is reported with the reason.
    """
    package: ModelPackage | None = registry.latest_approved(group)
    if package is None:
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / artifact.ARCHIVE
            store.download_file(package.model_data_url, archive)
            auc = auc_of(artifact.unpack(archive, Path(tmp) / "model"), read_test())
    except Exception as exc:  # reported in the gate's rule, never hidden
        log.warning("champion %s could not be scored: %s", package.arn, exc)
        return Champion(
            package.arn, package.version, None, f"{type(exc).__name__}: {exc}"
        )
    log.info("champion version %d scores AUC %.4f", package.version, auc)
    return Champion(package.arn, package.version, auc)


@dataclass
class GateSettings:
    auc_threshold: float
    champion_tolerance: float
    model_package_group: str | None = None
    registry: ModelRegistry | None = None
    store: ObjectStore | None = None

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The options ``from_args`` reads."""
        parser.add_argument("--auc-threshold", type=float, required=True)
        parser.add_argument("--champion-tolerance", type=float, default=0.0)
        parser.add_argument(
            "--model-package-group",
            default=None,
            help="compare with this group's newest Approved package (the champion)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GateSettings:
        """From ``--auc-threshold``, ``--champion-tolerance`` and
        ``--model-package-group``: with a group, the champion is looked up in the
        registry the job's configuration names (its request's Environment).
        """
        settings = cls(args.auc_threshold, args.champion_tolerance)
        if args.model_package_group:
            from stack.config import load_job_config
            from stack.resources import build_resources

            resources = build_resources(load_job_config())
            settings.model_package_group = args.model_package_group
            settings.registry, settings.store = resources.registry, resources.store
        return settings


def judge(
    report: dict[str, Any],
    read_test: Callable[[], pd.DataFrame],
    threshold: float,
    gate: GateSettings,
) -> dict[str, Any]:
    """The gate's verdict on the challenger in ``report``: its test AUC against the
    absolute threshold and against the champion scored here on the same test split
    (``read_test`` reads it, only when there is a champion).
    """
    challenger_auc = report["binary_classification_metrics"]["auc"]["value"]
    champion = None
    if gate.model_package_group and gate.registry and gate.store:

        def auc_of(folder: Path, frame: pd.DataFrame) -> float:
            # load_model imports XGBoost (with scikit-learn and SciPy: 2-3 s) only
            # here, for a champion
            metrics = evaluate(load_model(folder), frame, threshold)
            return float(metrics["binary_classification_metrics"]["auc"]["value"])

        champion = score_champion(
            gate.registry,
            gate.store,
            gate.model_package_group,
            read_test,
            auc_of,
        )
    return decide(challenger_auc, gate.auc_threshold, gate.champion_tolerance, champion)


def run_gate(
    evaluation: Path, test_dir: Path, output: Path, settings: GateSettings
) -> dict[str, Any]:
    """Judge the model Evaluate reported on in ``evaluation`` (its folder): write
    the report with the verdict (``gate``), ``report.html`` and the plots into
    ``output``; return the report. The test split is read only to score a champion.
    """
    report = json.loads((evaluation / "evaluation.json").read_text())
    threshold = float(report["evaluation"]["decision_threshold"])
    report["gate"] = judge(report, lambda: read_split(test_dir), threshold, settings)
    output.mkdir(parents=True, exist_ok=True)
    if (evaluation / "plots").is_dir():
        shutil.copytree(evaluation / "plots", output / "plots", dirs_exist_ok=True)
    plots = {
        name: output / "plots" / f"{name}.png"
        for name in PLOTS
        if (output / "plots" / f"{name}.png").exists()
    }
    (output / "report.html").write_text(render_html(report, plots))
    (output / "evaluation.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """The Gate step: Evaluate's report in, the report with the gate's verdict out."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="processing.gate")
    parser.add_argument("--evaluation-dir", default=EVALUATION_DIR)
    parser.add_argument("--test-dir", default=TEST_DIR)
    parser.add_argument("--output-dir", default=OUTPUT_DIR)
    parser.add_argument(
        "--execution-id", default="manual", help="the pipeline execution judging"
    )
    GateSettings.add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    contract = ProcessingContract.from_environment()
    try:
        evaluation = contract.path(args.evaluation_dir)
        log_first_read(log, f"the evaluation in {evaluation}")
        output = contract.path(args.output_dir)
        report = run_gate(
            evaluation,
            contract.path(args.test_dir),
            output,
            GateSettings.from_args(args),
        )
        # this execution's MLflow run; Register puts its id on the package
        report["tracking"] = {
            "run_id": log_gate_run(report, output, args.execution_id),
            "training_run_id": report["model"].get("mlflow_run_id", "none"),
        }
        (output / "evaluation.json").write_text(json.dumps(report, indent=2))
    except Exception as exc:
        contract.fail(f"gate failed: {type(exc).__name__}: {exc}")
        log.exception("gate failed")
        return 1
    log.info("gate: %s (%s)", report["gate"]["decision"], report["gate"]["rule"])
    return 0


if __name__ == "__main__":
    run_process(main)
