"""Markdown for the CI run's job summary, from the jobs' results and their artifacts.

  NEEDS='<toJSON(needs)>' python3 scripts/ci_summary.py ARTIFACTS_DIR

Standard library only: the summary job runs it without the project's set-up. It reads
what the other jobs uploaded (one folder per artifact): JUnit and coverage XML from the
tests, bandit and pip-audit JSON, the built distributions, the pipeline definitions and
the benchmark comparison. Anything missing is shown as missing, never invented.
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET  # noqa: S405  - our own CI's files
from pathlib import Path


def job_results(needs_json: str) -> list[str]:
    needs = json.loads(needs_json or "{}")
    lines = ["| job | result |", "|---|---|"]
    lines += [f"| {name} | {info.get('result', '?')} |" for name, info in needs.items()]
    return lines


def tests(artifacts: Path) -> list[str]:
    lines = []
    for folder in sorted(artifacts.glob("test-reports-*")):
        python = folder.name.removeprefix("test-reports-")
        junit, coverage = folder / "junit.xml", folder / "coverage.xml"
        counts = "no junit.xml"
        if junit.exists():
            root = ET.parse(junit).getroot()  # noqa: S314
            suite = root if root.tag == "testsuite" else root.find("testsuite")
            if suite is not None:
                a = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors")}
                skipped = int(suite.get("skipped", 0))
                counts = (
                    f"{a['tests'] - a['failures'] - a['errors'] - skipped} passed, "
                    f"{a['failures'] + a['errors']} failed, {skipped} skipped"
                )
        rate = "no coverage.xml"
        if coverage.exists():
            line_rate = ET.parse(coverage).getroot().get("line-rate")  # noqa: S314
            rate = f"{float(line_rate or 0):.1%} of lines"
        lines.append(f"- Python {python}: {counts}; coverage {rate}")
    return lines or ["- no test reports"]


def security(artifacts: Path) -> list[str]:
    folder = artifacts / "security-reports"
    lines = []
    bandit = folder / "bandit.json"
    if bandit.exists():
        totals = json.loads(bandit.read_text())["metrics"]["_totals"]
        by_severity = ", ".join(
            f"{level.lower()} {int(totals.get(f'SEVERITY.{level}', 0))}"
            for level in ("HIGH", "MEDIUM", "LOW")
        )
        lines.append(f"- bandit: {by_severity}")
    audit = folder / "pip-audit.json"
    if audit.exists():
        dependencies = json.loads(audit.read_text()).get("dependencies", [])
        vulnerable = [d for d in dependencies if d.get("vulns")]
        lines.append(
            f"- pip-audit: {len(dependencies)} locked packages, "
            f"{len(vulnerable)} with known vulnerabilities"
            + "".join(f"\n  - {d['name']} {d.get('version', '')}" for d in vulnerable)
        )
    return lines or ["- no security reports"]


def build(artifacts: Path) -> list[str]:
    files = sorted(p.name for p in (artifacts / "dist").glob("*"))
    return [f"- `{name}`" for name in files] or ["- no distributions"]


def definitions(artifacts: Path) -> list[str]:
    lines = []
    for path in sorted(artifacts.glob("definition-*/*.json")):
        document = json.loads(path.read_text())
        steps = [step["Name"] for step in _steps(document.get("Steps", []))]
        lines.append(f"- {path.stem}: {len(steps)} steps ({', '.join(steps)})")
    return lines or ["- no definitions"]


def _steps(steps: list) -> list:
    """Steps in document order, the branches of condition steps included."""
    found = []
    for step in steps:
        found.append(step)
        arguments = step.get("Arguments", {})
        if step.get("Type") == "Condition":
            found += _steps(
                arguments.get("IfSteps", []) + arguments.get("ElseSteps", [])
            )
    return found


def benchmarks(artifacts: Path) -> list[str]:
    table = artifacts / "benchmarks" / "comparison.md"
    if table.exists():
        return [table.read_text().rstrip()]
    return ["- not run (main only) or no comparison"]


def summary(artifacts: Path, needs_json: str) -> str:
    sections = [
        ("Jobs", job_results(needs_json)),
        ("Tests", tests(artifacts)),
        ("Security", security(artifacts)),
        ("Package", build(artifacts)),
        ("Pipeline definitions", definitions(artifacts)),
        ("Benchmarks against benchmarks/baseline", benchmarks(artifacts)),
    ]
    return "\n".join(
        f"### {title}\n\n" + "\n".join(body) + "\n" for title, body in sections
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: ci_summary.py ARTIFACTS_DIR", file=sys.stderr)
        return 2
    print(summary(Path(argv[0]), os.environ.get("NEEDS", "{}")), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
