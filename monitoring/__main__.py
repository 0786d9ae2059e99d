"""``python -m monitoring <command>``: the model-health commands.

check     judge recent data against the serving model's training baseline
retrain   start a new training execution on a violation or on schedule
pipeline  the monitoring pipeline (DriftCheck -> CheckDrift -> Retrain)

Each command has its own options (``python -m monitoring check -h``); ``--env`` and
``--state-dir`` may also come before the command (``python -m monitoring --env dev
check``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pipelines.arguments import ENV_OPTION, STATE_DIR_OPTION
from pipelines.process_gc import run_process

COMMANDS = {
    "check": "monitoring.check",
    "retrain": "monitoring.retrain",
    "pipeline": "monitoring.pipeline",
}
# every command takes these: given before the command, they are passed on to it
GLOBAL_OPTIONS = (ENV_OPTION, STATE_DIR_OPTION)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flags, keywords in GLOBAL_OPTIONS:
        parser.add_argument(*flags, **{**keywords, "default": argparse.SUPPRESS})
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument(
        "arguments",
        nargs=argparse.REMAINDER,
        help="the command's own options (python -m monitoring COMMAND -h)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import importlib

    args = _parser().parse_args(argv)
    given = vars(args)
    before = [
        part
        for flags, _ in GLOBAL_OPTIONS
        if (dest := flags[0].lstrip("-").replace("-", "_")) in given
        for part in (flags[0], given[dest])
    ]
    module = importlib.import_module(COMMANDS[args.command])
    # after the command, an option given again wins, as with the other CLIs
    return int(module.main([*before, *args.arguments]))


if __name__ == "__main__":
    run_process(main)
