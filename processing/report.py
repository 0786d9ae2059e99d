"""The evaluation report: PNG plots and one self-contained HTML page.

The page inlines every plot as a base64 ``data:`` URI, so it opens from S3, an MLflow
artifact view or a mail attachment without the PNG files beside it. matplotlib runs
on its non-interactive ``Agg`` backend (no display in a processing container). The
page's markup is ``templates/evaluation.html.j2``, rendered by Jinja2 with autoescape.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from processing.html_pages import load_template

if TYPE_CHECKING:
    import jinja2

PLOTS = ("roc", "precision_recall", "calibration", "feature_importance", "confusion")


def write_plots(
    labels: np.ndarray,
    scores: np.ndarray,
    report: Mapping[str, Any],
    importance: Mapping[str, float],
    directory: Path,
) -> dict[str, Path]:
    """One PNG per plot in ``PLOTS``; returns name → path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from sklearn import metrics

    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    m = report["binary_classification_metrics"]

    def save(name: str, fig: Any) -> None:
        fig.tight_layout()
        paths[name] = directory / f"{name}.png"
        fig.savefig(paths[name], dpi=90)
        plt.close(fig)

    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot(fpr, tpr, label=f"model (AUC {m['auc']['value']:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC")
    ax.legend(loc="lower right")
    save("roc", fig)

    precision, recall, _ = metrics.precision_recall_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot(recall, precision, label=f"model (PR AUC {m['pr_auc']['value']:.3f})")
    ax.axhline(labels.mean(), ls="--", color="grey", label="base rate")
    ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall")
    ax.legend(loc="upper right")
    save("precision_recall", fig)

    calibration = report["calibration"]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    for key, name, style in (
        ("before", "booster before calibration", "s:"),
        ("after", "SCORE, calibrated", "o-"),
    ):
        bins = calibration[key]["bins"]
        ax.plot(
            [b["mean_predicted"] for b in bins],
            [b["observed_rate"] for b in bins],
            style,
            label=f"{name} (ECE {calibration[key]['expected_calibration_error']:.3f})",
        )
    ax.set(
        xlabel="Mean predicted probability",
        ylabel="Observed churn rate",
        title="Reliability (deciles of score)",
    )
    ax.legend(loc="upper left")
    save("calibration", fig)

    ranked = sorted(importance.items(), key=lambda kv: kv[1])[-20:]
    fig, ax = plt.subplots(figsize=(6, 0.3 * max(len(ranked), 4) + 1))
    ax.barh([k for k, _ in ranked], [v for _, v in ranked])
    ax.set(xlabel="Total gain", title="Feature importance (top 20)")
    save("feature_importance", fig)

    matrix = np.array(
        [[m["confusion_matrix"][a][b] for b in "01"] for a in "01"], dtype=int
    )
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour)
    threshold = report["evaluation"]["decision_threshold"]
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["stays", "churns"],
        yticklabels=["stays", "churns"],
        xlabel="Predicted",
        ylabel="Actual",
        title=f"Confusion matrix (threshold {threshold:g})",
    )
    save("confusion", fig)
    return paths


def render_html(report: Mapping[str, Any], plots: Mapping[str, Path]) -> str:
    """The report as one HTML page with the plots inlined, from
    ``templates/evaluation.html.j2`` with autoescape: a feature set's name or a gate
    rule cannot inject markup.
    """
    m = report["binary_classification_metrics"]
    e = report["evaluation"]
    threshold = f"{e['decision_threshold']:g}"
    metrics = [
        ("ROC AUC", m["auc"]["value"]),
        ("PR AUC", m["pr_auc"]["value"]),
        ("Log loss", m["log_loss"]["value"]),
        ("Brier score", m["brier_score"]["value"]),
        (f"Precision @ {threshold}", m["precision"]["value"]),
        (f"Recall @ {threshold}", m["recall"]["value"]),
        (f"F1 @ {threshold}", m["f1"]["value"]),
        ("Accuracy", m["accuracy"]["value"]),
        ("Lift in the top decile", m["lift_top_decile"]["value"]),
        ("Expected calibration error", m["expected_calibration_error"]["value"]),
    ]
    gate = report.get("gate") or None
    champion = (
        f"{gate['champion_auc']:.4f} (version {gate['champion_version']})"
        if gate and gate.get("champion_auc") is not None
        else "none"
    )
    extract = report.get("extract") or {}
    data = [
        ("Test rows", e["rows"]),
        ("Test positive rate", f"{e['positive_rate']:.4f}"),
        ("Feature set", extract.get("feature_set", "")),
        ("As of", (extract.get("parameters") or {}).get("as_of", "")),
        (
            "Data version",
            ", ".join(
                str((v or {}).get("timestamp", ""))
                for v in (extract.get("data_versions") or {}).values()
            ),
        ),
        ("Query SHA-256", extract.get("query_sha256", "")),
    ]
    return _template("evaluation.html.j2").render(
        gate=gate,
        champion=champion,
        metrics=metrics,
        data=data,
        calibration=_calibration(report),
        plots=[
            (name, base64.b64encode(path.read_bytes()).decode())
            for name, path in plots.items()
        ],
    )


def _calibration(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """What SCORE is, and the booster's scores against SCORE: ECE, AUC, mean, and
    the reliability deciles; None for an Evaluate report from before calibration.
    """
    calibration = report["calibration"]
    if "before" not in calibration:
        return None
    before, after = calibration["before"], calibration["after"]
    rate = report["evaluation"]["positive_rate"]
    return {
        "score": calibration["score"],
        "summary": [
            (name, before[key], after[key])
            for name, key in (
                ("Expected calibration error", "expected_calibration_error"),
                ("ROC AUC", "auc"),
                (f"Mean score (churn rate {rate:.4f})", "mean_score"),
            )
        ],
        "deciles": list(zip(before["bins"], after["bins"], strict=True)),
    }


@cache
def _template(name: str) -> jinja2.Template:
    """A template of ``templates/`` (``processing.html_pages``)."""
    return load_template(Path(__file__).parent / "templates", name)
