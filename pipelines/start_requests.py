"""StartPipelineExecution for the local runner: a job asks, the runner starts.

On SageMaker a job (the monitoring pipeline's Retrain) starts the training pipeline
with StartPipelineExecution, and the service runs that execution on its own. A local
job cannot run a pipeline itself (it has the image, not the runner's machine), so it
does what the API call does: it leaves a start request in the state folder, which the
local platform shares with it, and the command that runs the local pipeline starts
each request once its own execution has ended (``python -m monitoring pipeline
--run``). The request's token plays ClientRequestToken's part: the same token twice is
one request.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

FOLDER = "pipeline-starts"
_TOKEN = re.compile(r"^[A-Za-z0-9-]{1,128}$")


@dataclass(frozen=True)
class StartRequest:
    pipeline_name: str
    parameters: dict[str, str]
    description: str
    token: str


def request_start(state_dir: Path, request: StartRequest) -> Path:
    """Leave ``request`` for the local runner; returns where it lies."""
    if not _TOKEN.match(request.token):
        raise ValueError(f"{request.token!r} is not a request token")
    folder = state_dir / FOLDER / request.pipeline_name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{request.token}.json"
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(request), indent=2))
    partial.replace(path)
    return path


def take_requests(state_dir: Path, pipeline_name: str) -> list[StartRequest]:
    """The requests left for ``pipeline_name``, oldest first, removed as taken."""
    folder = state_dir / FOLDER / pipeline_name
    paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
    requests = []
    for path in paths:
        requests.append(StartRequest(**json.loads(path.read_text())))
        path.unlink()
    return requests
