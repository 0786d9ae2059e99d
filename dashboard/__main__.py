"""``python -m dashboard [--env ENV] [--port N] [--state-dir DIR]``: the dashboard.

Checks the configuration first (a bad one exits 2 before anything starts), then
becomes Streamlit serving on 127.0.0.1, headless and without usage statistics, until
interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.arguments import ENV_OPTION, STATE_DIR_OPTION, add_options
from pipelines.console import EXIT_USAGE
from stack.config import ConfigError, load_config

HOST = "127.0.0.1"
APP = Path(__file__).with_name("app.py")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dashboard",
        description="Serve the model health dashboard (Streamlit) on 127.0.0.1.",
    )
    add_options(parser, ENV_OPTION)
    parser.add_argument("--port", type=int, default=8501, help="default 8501")
    add_options(parser, STATE_DIR_OPTION)
    return parser


def streamlit_command(port: int) -> list[str]:
    """The ``streamlit run`` command line, with every option we rely on spelled out."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", HOST,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip


def child_environment(env: str, state_dir: str | None) -> dict[str, str]:
    """The Streamlit process's environment: ours, with the chosen configuration
    (read again there by ``load_config``, as ``MLOPS_ENV`` and ``MLOPS_STATE_DIR``).
    """
    child = dict(os.environ)
    child["MLOPS_ENV"] = env
    if state_dir:
        child["MLOPS_STATE_DIR"] = str(Path(state_dir).resolve())
    return child


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.port <= 65535:
        print(f"error: --port {args.port} is not a TCP port", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(args.env, {"state_dir": args.state_dir})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"Dashboard ({config.env}) on http://{HOST}:{args.port}; Ctrl-C stops it",
        flush=True,
    )
    # Streamlit replaces this process, so signals (Ctrl-C, a supervisor's SIGTERM)
    # reach the server itself and nothing is left behind
    command = streamlit_command(args.port)
    environment = child_environment(config.env, args.state_dir)
    os.execve(command[0], command, environment)  # noqa: S606 (fixed argv, no shell)


if __name__ == "__main__":
    sys.exit(main())
