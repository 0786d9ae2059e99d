"""``run-pipeline`` and ``get-pipeline-definition`` with the flags of the AWS SageMaker
Projects template, so CodeBuild and Harness specs written for it keep working:

  run-pipeline --module-name pipelines.definition --role-arn ARN \\
      --kwargs '{"region": "...", "default_bucket": "...", "pipeline_name": "..."}' \\
      --tags '[{"Key": "team", "Value": "ml"}]' --description "..."
  get-pipeline-definition --module-name pipelines.definition --file-name pipeline.json

Like the template, ``run-pipeline`` upserts the pipeline, starts it and waits for the
end (2 hours, polling every minute), then prints every step. The template's kwargs map
onto our configuration; ``env`` in kwargs (else ``MLOPS_ENV``, else ``dev``) picks the
environment. Exit codes as in ``pipelines.run``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

from pipelines.console import EXIT_USAGE, Console, UsageError
from pipelines.process_gc import run_process
from pipelines.upsert import UpsertRequest, check_tags, upsert_and_report
from pipelines.validation import InvalidDefinition
from stack.config import DEFAULT_AWS_ENV, ConfigError, load_config

MODULE = "pipelines.definition"
# The template's get_pipeline keyword arguments -> our configuration keys.
KWARGS = {
    "region": "aws.region",
    "role": "aws.role_arn",
    "default_bucket": "aws.bucket",
    "pipeline_name": "sagemaker.pipeline_name",
    "model_package_group_name": "sagemaker.model_package_group",
    "base_job_prefix": "aws.prefix",
    "image_uri": "sagemaker.image_uri",
}
# Passed by some versions of the template; SageMaker Projects tags carry them instead.
IGNORED_KWARGS = {
    "sagemaker_project_arn",
    "sagemaker_project_name",
    "sagemaker_project_id",
}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n",
        "--module-name",
        dest="module_name",
        required=True,
        help=f"the pipeline module ({MODULE})",
    )
    parser.add_argument(
        "-kwargs",
        "--kwargs",
        dest="kwargs",
        default=None,
        help="JSON object of get_pipeline keyword arguments",
    )


def run_pipeline(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run-pipeline",
        description="Create or update, run and wait for the pipeline.",
    )
    _common(parser)
    parser.add_argument("-role-arn", "--role-arn", dest="role_arn", required=True)
    parser.add_argument(
        "-tags",
        "--tags",
        dest="tags",
        default=None,
        help='JSON list of {"Key": ..., "Value": ...}',
    )
    parser.add_argument(
        "-description", "--description", dest="description", default=None
    )
    args = parser.parse_args(argv)
    console = Console()
    try:
        config = _config(args.module_name, args.kwargs, args.role_arn)
        request = UpsertRequest(
            tags=_tags(args.tags),
            description=args.description,
            start=True,
            wait=True,
            wait_timeout=7200,
            poll_interval=60,
        )
        return upsert_and_report(config, console, request)
    except (UsageError, ConfigError, InvalidDefinition) as exc:
        console.error(str(exc), exit_code=EXIT_USAGE)
        return EXIT_USAGE


def get_pipeline_definition(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="get-pipeline-definition",
        description="Write the pipeline definition JSON.",
    )
    _common(parser)
    parser.add_argument(
        "-f",
        "--file-name",
        dest="file_name",
        default=None,
        help="write it here (default: print it)",
    )
    args = parser.parse_args(argv)
    console = Console()
    try:
        from pipelines.definition import build_definition

        config = _config(args.module_name, args.kwargs, None)
        text = json.dumps(build_definition(config), indent=2, sort_keys=True)
    except (UsageError, ConfigError, InvalidDefinition) as exc:
        console.error(str(exc), exit_code=EXIT_USAGE)
        return EXIT_USAGE
    if args.file_name:
        with open(args.file_name, "w") as handle:
            handle.write(text + "\n")
    else:
        print(text)
    return 0


def _config(module: str, kwargs_text: str | None, role_arn: str | None) -> Any:
    if module != MODULE:
        raise UsageError(
            f"--module-name {module!r}: this project's pipeline is {MODULE}"
        )
    try:
        kwargs = json.loads(kwargs_text) if kwargs_text else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"--kwargs is not JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise UsageError("--kwargs must be a JSON object")
    env = kwargs.pop("env", None) or os.environ.get("MLOPS_ENV") or DEFAULT_AWS_ENV
    unknown = sorted(set(kwargs) - set(KWARGS) - IGNORED_KWARGS)
    if unknown:
        raise UsageError(
            f"--kwargs has unknown key(s) {', '.join(unknown)}; "
            f"known: env, {', '.join(sorted(KWARGS))}"
        )
    overrides = {KWARGS[k]: v for k, v in kwargs.items() if k in KWARGS}
    if role_arn:
        overrides["aws.role_arn"] = role_arn
    return load_config(env, overrides)


def _tags(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        tags = {str(t["Key"]): str(t["Value"]) for t in json.loads(text)}
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise UsageError(
            f'--tags must be a JSON list of {{"Key": ..., "Value": ...}}: {exc}'
        ) from None
    return check_tags(tags)


if __name__ == "__main__":
    run_process(run_pipeline)
