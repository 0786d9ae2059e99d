"""What the image must run: every command any definition the project upserts names.

``python -m pipelines.entry_points [--env ENV]`` prints one command a line, as the
arguments that follow ``docker run IMAGE``: a Processing step's ContainerEntrypoint
(``python -m processing.extract``), ``train`` for a Training step that names none
(SageMaker runs ``docker run IMAGE train``), and ``serve`` for the model a
RegisterModel step registers on our image (``docker run IMAGE serve``). CI's image job
runs each with ``--help`` in the built image; the tests run each in the staged image.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from pipelines.process_gc import run_process
from stack.config import DEFAULT_ENV, Config, ConfigError, load_config

# A role for building dev/staging/prod definitions without the CD runner's settings:
# the commands do not depend on it, and nothing is sent.
PLACEHOLDER_ROLE = "arn:aws:iam::000000000000:role/entry-points"


def definitions(config: Config) -> list[dict[str, Any]]:
    """Every pipeline definition the project upserts for ``config``."""
    from monitoring.pipeline import build_monitor_definition
    from pipelines.definition import build_definition

    return [build_definition(config), build_monitor_definition(config)]


def commands(definition: dict[str, Any]) -> Iterator[list[str]]:
    """The commands ``definition``'s jobs run in the image, condition branches too."""
    for step in definition.get("Steps", []):
        arguments = step.get("Arguments", {})
        if step["Type"] == "Processing":
            entrypoint = arguments["AppSpecification"].get("ContainerEntrypoint")
            yield list(entrypoint) if entrypoint else []
        elif step["Type"] == "Training":
            entrypoint = arguments["AlgorithmSpecification"].get("ContainerEntrypoint")
            yield list(entrypoint) if entrypoint else ["train"]
        elif step["Type"] == "RegisterModel":
            yield ["serve"]  # a registered model's container: docker run IMAGE serve
        elif step["Type"] == "Condition":
            branches = arguments.get("IfSteps", []) + arguments.get("ElseSteps", [])
            yield from commands({"Steps": branches})


def entry_points(config: Config) -> list[list[str]]:
    """The distinct commands of every definition, in a stable order."""
    seen: dict[str, list[str]] = {}
    for definition in definitions(config):
        for command in commands(definition):
            seen.setdefault(" ".join(command), command)
    return [seen[key] for key in sorted(seen)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.entry_points",
        description="Print the commands the pipeline definitions run in the image.",
    )
    parser.add_argument(
        "--env", default=DEFAULT_ENV, help=f"{DEFAULT_ENV} (default) ... prod"
    )
    args = parser.parse_args(argv)
    try:
        overrides = {"aws.role_arn": PLACEHOLDER_ROLE} if args.env != "local" else {}
        config = load_config(args.env, overrides, environ={})
        for command in entry_points(config):
            print(" ".join(command))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run_process(main)
