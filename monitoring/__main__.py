"""``python -m monitoring <command>``: the model-health commands.

check     judge recent data against the serving model's training baseline
retrain   start a new training execution on a violation or on schedule
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

COMMANDS = {
    "check": "monitoring.check",
    "retrain": "monitoring.retrain",
    "pipeline": "monitoring.pipeline",
}


def main(argv: Sequence[str] | None = None) -> int:
    import importlib

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    module = importlib.import_module(COMMANDS[args[0]])
    return int(module.main(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
