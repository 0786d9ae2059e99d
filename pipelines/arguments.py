"""The options the command-line tools share, declared once with their help.

- the options a CLI with subcommands takes before or after the subcommand
  (``add_global_options``: ``--env``, ``--state-dir``, ``--log-format``);
- ``--env``, and the options that override one configuration key each (``--role-arn``,
  ``--region``, ``--bucket``, ``--image-uri``; the local run's ``--customers``,
  ``--state-dir``, ``--port``): ``config_overrides(args)`` turns those a parser has
  into ``load_config``'s overrides;
- ``--log-format`` and ``--verbose``: how a command prints its lines and its errors;
- the parsers of the values ``--param NAME=VALUE``, ``--tags KEY=VALUE,...`` and of
  positive durations.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.console import FORMATS, UsageError

Parser = argparse.ArgumentParser | argparse._ArgumentGroup

# An option every subcommand of a CLI takes (add_global_options): its flags and
# add_argument's keywords.
Option = tuple[Sequence[str], Mapping[str, Any]]
ENV_OPTION: Option = (
    ("--env",),
    {"help": "local (default), test, dev, staging or prod"},
)
STATE_DIR_OPTION: Option = (
    ("--state-dir",),
    {"help": "the local state folder (state_dir)"},
)
LOG_FORMAT_OPTION: Option = (
    ("--log-format",),
    {"choices": FORMATS, "default": "text", "help": "text (default) or json lines"},
)


@dataclass(frozen=True)
class Setting:
    """An option that overrides one configuration key."""

    flag: str
    key: str
    help: str
    type: Callable[[str], Any] = str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: Parser) -> None:
        parser.add_argument(self.flag, type=self.type, help=self.help)


ROLE_ARN = Setting(
    "--role-arn", "aws.role_arn", "pipeline execution role (aws.role_arn)"
)
REGION = Setting("--region", "aws.region", "AWS region (aws.region)")
BUCKET = Setting("--bucket", "aws.bucket", "artifact bucket (aws.bucket)")
IMAGE_URI = Setting(
    "--image-uri", "sagemaker.image_uri", "our image in ECR (sagemaker.image_uri)"
)
CUSTOMERS = Setting(
    "--customers", "demo.customers", "demo data size (demo.customers)", int
)
STATE_DIR = Setting(
    "--state-dir", "state_dir", "where the embedded stack keeps its state"
)
PORT = Setting(
    "--port", "local_endpoint.port", "local endpoint port (local_endpoint.port)", int
)
SETTINGS = (ROLE_ARN, REGION, BUCKET, IMAGE_URI, CUSTOMERS, STATE_DIR, PORT)


def add_global_options(
    parser: argparse.ArgumentParser,
    commands: Iterable[argparse.ArgumentParser],
    options: Iterable[Option],
) -> None:
    """Add ``options`` to ``parser`` and to each of its subcommands' parsers, so they
    may come before or after the subcommand (``--env dev list``, ``list --env dev``).

    The subcommands' copies default to "not given": argparse lets a subcommand's
    defaults overwrite what was parsed before it, which would drop ``--env dev list``'s
    value.
    """
    commands = list(commands)
    for flags, keywords in options:
        parser.add_argument(*flags, **keywords)
        for command in commands:
            command.add_argument(*flags, **{**keywords, "default": argparse.SUPPRESS})


def add_options(parser: Parser, *options: Option) -> None:
    for flags, keywords in options:
        parser.add_argument(*flags, **keywords)


def add_environment(parser: Parser) -> None:
    """``--env``: the configuration environment (local by default)."""
    add_options(parser, ENV_OPTION)


def add_settings(parser: Parser, *settings: Setting) -> None:
    for setting in settings:
        setting.add_to(parser)


def add_local_run(parser: argparse.ArgumentParser) -> None:
    """The "local run" group: demo data size, state folder, endpoint port."""
    add_settings(parser.add_argument_group("local run"), CUSTOMERS, STATE_DIR, PORT)


def add_output(parser: Parser) -> None:
    """``--log-format`` (text, or JSON lines for CD logs) and ``--verbose``."""
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text for people (default), json lines for CD logs",
    )
    parser.add_argument("--verbose", action="store_true", help="tracebacks on errors")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``load_config``'s overrides from the settings options ``args`` has (None where
    one was not given: the configuration's value stands).
    """
    return {s.key: getattr(args, s.dest) for s in SETTINGS if hasattr(args, s.dest)}


def parameters_from(pairs: Sequence[str]) -> dict[str, str]:
    """``--param NAME=VALUE`` values, by name; UsageError for one that is not."""
    parameters = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--param expects NAME=VALUE, got {pair!r}")
        parameters[name] = value
    return parameters


def tags_from(values: Sequence[str]) -> dict[str, str]:
    """``--tags KEY=VALUE[,KEY=VALUE]`` values (repeatable), by key."""
    tags: dict[str, str] = {}
    for value in values:
        for pair in filter(None, (p.strip() for p in value.split(","))):
            key, sep, tag_value = pair.partition("=")
            if not sep:
                raise UsageError(f"--tags expects KEY=VALUE pairs, got {pair!r}")
            tags[key.strip()] = tag_value.strip()
    return tags


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value
