"""Run a fakesnow HTTP server whose shared catalog has a folder's database files attached.

fakesnow 0.12's server attaches a ``FAKESNOW_DB_PATH`` file per session and cannot attach
the same file in a second session ("Unique file handle conflict"), so a pipeline whose
steps open several sessions fails against it. Attached once to the shared catalog, the
data is seen by every session, as it is on Snowflake.

    python -m tests.support.fakesnow_shared_server PORT DB_FOLDER
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import uvicorn

# the module, not the fakesnow.server() helper that fakesnow/__init__ exports
server = importlib.import_module("fakesnow.server")


def main(port: int, folder: Path) -> None:
    for db_file in sorted(folder.glob("*.db")):
        server.shared_fs.duck_conn.execute(
            f"ATTACH DATABASE '{db_file}' AS {db_file.stem.upper()}"
        )
    uvicorn.run(server.app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
