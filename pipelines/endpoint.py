"""``python -m pipelines.endpoint {status,stop}``: manage the local endpoint process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stack.config import ConfigError, load_config
from stack.endpoints import LocalEndpoints
from stack.resources import build_resources


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.endpoint")
    parser.add_argument("action", choices=["status", "stop"])
    parser.add_argument("--env", default=None)
    parser.add_argument("--state-dir", default=None)
    parser.add_argument(
        "--name", default=None, help="endpoint name (default: configured)"
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.env, {"state_dir": args.state_dir})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    endpoints = build_resources(config).endpoints
    if not isinstance(endpoints, LocalEndpoints):
        print(
            f"error: the {config.env} environment has no local endpoint",
            file=sys.stderr,
        )
        return 2
    names = [args.name] if args.name else [e.name for e in endpoints.list_endpoints()]
    if not names:
        print("no local endpoints")
        return 0
    for name in names:
        if args.action == "stop":
            print(f"{name}: {'stopped' if endpoints.stop(name) else 'was not running'}")
        else:
            info = endpoints.describe(name)
            if info is None:
                print(f"{name}: unknown")
            else:
                print(
                    f"{name}: {info.status} {info.url or ''} pid={info.pid} "
                    f"model={info.model_name}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
