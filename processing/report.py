"""The evaluation report: PNG plots and one self-contained HTML page.

The page inlines every plot as a base64 ``data:`` URI, so it opens from S3, an MLflow
artifact view or a mail attachment without the PNG files beside it. matplotlib runs
on its non-interactive ``Agg`` backend (no display in a processing container).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

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
    """The report as one HTML page with the plots inlined."""
    m = report["binary_classification_metrics"]
    e = report["evaluation"]
    rows = [
        ("ROC AUC", m["auc"]["value"]),
        ("PR AUC", m["pr_auc"]["value"]),
        ("Log loss", m["log_loss"]["value"]),
        ("Brier score", m["brier_score"]["value"]),
        (f"Precision @ {e['decision_threshold']:g}", m["precision"]["value"]),
        (f"Recall @ {e['decision_threshold']:g}", m["recall"]["value"]),
        (f"F1 @ {e['decision_threshold']:g}", m["f1"]["value"]),
        ("Accuracy", m["accuracy"]["value"]),
        ("Lift in the top decile", m["lift_top_decile"]["value"]),
        ("Expected calibration error", m["expected_calibration_error"]["value"]),
    ]
    metric_rows = "\n".join(
        f"<tr><th>{html.escape(name)}</th><td>{value:.4f}</td></tr>"
        for name, value in rows
    )
    gate = report.get("gate")
    gate_html = ""
    if gate:
        verdict = "REGISTER" if gate["decision"] == "register" else "REJECT"
        champion = (
            f"{gate['champion_auc']:.4f} (version {gate['champion_version']})"
            if gate.get("champion_auc") is not None
            else "none"
        )
        gate_html = f"""
<h2>Registration gate: <span class="{gate["decision"]}">{verdict}</span></h2>
<p class="rule">{html.escape(gate["rule"])}</p>
<table>
<tr><th>Challenger AUC</th><td>{gate["challenger_auc"]:.4f}</td></tr>
<tr><th>Champion AUC (same test split)</th><td>{html.escape(champion)}</td></tr>
<tr><th>Absolute threshold</th><td>{gate["auc_threshold"]:.4f}</td></tr>
<tr><th>Tolerance vs champion</th><td>{gate["champion_tolerance"]:.4f}</td></tr>
</table>"""
    images = "\n".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(path.read_bytes()).decode()}"></figure>'
        for name, path in plots.items()
    )
    extract = report.get("extract") or {}
    data_rows = [
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
    data_html = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in data_rows
    )
    calibration_html = _calibration_html(report)
    buffer = io.StringIO()
    buffer.write(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Churn model evaluation</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.75em; text-align: left; }}
th {{ background: #f4f4f4; }}
figure {{ display: inline-block; margin: 0.5em; }}
.register {{ color: #13702b; }} .reject {{ color: #b00020; }}
.rule {{ font-size: 1.1em; }}
</style></head><body>
<h1>Churn model evaluation</h1>
{gate_html}
<h2>Metrics on the test split</h2>
<table>{metric_rows}</table>
<h2>Data</h2>
<table>{data_html}</table>
{calibration_html}
<h2>Plots</h2>
{images}
</body></html>
""")
    return buffer.getvalue()


def _calibration_html(report: Mapping[str, Any]) -> str:
    """What SCORE is, and the booster's scores against SCORE: ECE, AUC, mean, and
    the reliability deciles.
    """
    calibration = report["calibration"]
    if "before" not in calibration:  # an Evaluate report from before calibration
        return ""
    before, after = calibration["before"], calibration["after"]
    score = calibration["score"]
    rate = report["evaluation"]["positive_rate"]
    summary = "\n".join(
        f"<tr><th>{html.escape(name)}</th><td>{before[key]:.4f}</td>"
        f"<td>{after[key]:.4f}</td></tr>"
        for name, key in (
            ("Expected calibration error", "expected_calibration_error"),
            ("ROC AUC", "auc"),
            (f"Mean score (churn rate {rate:.4f})", "mean_score"),
        )
    )
    deciles = "\n".join(
        f"<tr><td>{b['bin']}</td><td>{b['count']}</td>"
        f"<td>{b['mean_predicted']:.4f}</td><td>{a['mean_predicted']:.4f}</td>"
        f"<td>{a['observed_rate']:.4f}</td></tr>"
        for b, a in zip(before["bins"], after["bins"], strict=True)
    )
    return f"""
<h2>Calibration</h2>
<p>SCORE: {html.escape(score)}.</p>
<table><tr><th></th><th>Booster, before calibration</th><th>SCORE</th></tr>
{summary}</table>
<table><tr><th>Decile of score</th><th>Rows</th><th>Mean booster score</th>
<th>Mean SCORE</th><th>Observed churn rate</th></tr>
{deciles}</table>"""
