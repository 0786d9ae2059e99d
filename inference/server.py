"""The serving container's HTTP server: SageMaker's hosting contract.

  GET  /ping                              200 once the model is loaded
  POST /invocations                       score a batch (see inference.codec)
  POST /endpoints/{name}/invocations      the same, at the SageMaker runtime API's path,
                                          so boto3's ``sagemaker-runtime`` client works
                                          against a local endpoint unchanged

Run it as ``python -m inference.server --model-dir DIR --port 8080 [--workers N]``. The
same module is what ``docker run IMAGE serve`` starts in our image. This process only
holds the port and supervises the workers, so it imports neither numpy nor XGBoost;
each worker (``inference.worker``) loads the model once and serves HTTP/1.1 itself
(httptools on uvloop) with one OpenMP thread.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from inference.supervisor import Generation, Supervisor


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the model: a supervisor process holding the port and ``--workers``
    worker processes that each load the model once (see ``inference.supervisor``).
    """
    parser = argparse.ArgumentParser(prog="inference.server")
    parser.add_argument(
        "--model-dir", default=os.environ.get("SM_MODEL_DIR", "/opt/ml/model")
    )
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a container listens on all
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", 8080))
    )
    parser.add_argument(
        "--workers",
        type=int,
        # SageMaker's convention for the number of model server workers.
        default=int(
            os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", 0) or os.cpu_count() or 1
        ),
    )
    parser.add_argument("--endpoint-name", default=None)
    parser.add_argument("--variant-name", default="AllTraffic")
    parser.add_argument(
        "--control-file",
        type=Path,
        default=None,
        help="JSON {model_dir, variant_name, request}: read at start and on SIGHUP",
    )
    parser.add_argument(
        "--status-file",
        type=Path,
        default=None,
        help="where the outcome of each (re)load is written",
    )
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=None,
        help="seconds a client has to send a whole request (default 30)",
    )
    parser.add_argument(
        "--small-batch-rows",
        type=int,
        default=None,
        help="batches of at most this many rows are scored by Treelite's GTIL, "
        "larger ones by XGBoost, with identical scores (default "
        "inference.scorer.SMALL_BATCH_ROWS, measured; 0 turns the fast path off)",
    )
    parser.add_argument(
        "--data-capture-config",
        default=None,
        help="capture requests and responses: a DataCaptureConfig as JSON",
    )
    parser.add_argument(
        "--data-capture-dir",
        type=Path,
        default=None,
        help="the local folder that stands for its DestinationS3Uri",
    )
    parser.add_argument(
        "--data-capture-flush-seconds",
        type=float,
        default=1.0,
        help="how often each worker writes what it captured (and on shutdown)",
    )
    parser.add_argument(
        "--data-capture-max-mb",
        type=float,
        default=None,
        help="the most the endpoint's capture folder keeps (default 1024)",
    )
    parser.add_argument(
        "--data-capture-retention-hours",
        type=float,
        default=None,
        help="how long a capture file is kept after its last record (default 168)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.small_batch_rows is not None and args.small_batch_rows < 0:
        parser.error("--small-batch-rows must be 0 or more")
    for bound in ("max_mb", "retention_hours"):
        value = getattr(args, f"data_capture_{bound}")
        if value is not None and not value > 0:
            parser.error(f"--data-capture-{bound.replace('_', '-')} must be positive")
    capture_config = None
    if args.data_capture_config:
        if args.data_capture_dir is None:
            parser.error("--data-capture-config needs --data-capture-dir")
        try:
            capture_config = json.loads(args.data_capture_config)
        except ValueError as exc:
            parser.error(f"--data-capture-config is not JSON: {exc}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    supervisor = Supervisor(
        host=args.host,
        port=args.port,
        workers=args.workers,
        initial=Generation(
            model_dir=str(args.model_dir),
            variant_name=args.variant_name,
            endpoint_name=args.endpoint_name,
            data_capture_config=capture_config,
            data_capture_dir=str(args.data_capture_dir)
            if capture_config is not None
            else None,
            data_capture_flush_seconds=args.data_capture_flush_seconds,
            data_capture_max_mb=args.data_capture_max_mb,
            data_capture_retention_hours=args.data_capture_retention_hours,
        ),
        control_file=args.control_file,
        status_file=args.status_file,
        startup_timeout=args.startup_timeout,
        read_timeout=args.read_timeout,
        small_batch_rows=args.small_batch_rows,
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
