"""XGBoost's own distributed training across the hosts of one SageMaker training job.

SageMaker starts our image on every host of a job with ``InstanceCount`` N and writes
each one's ``/opt/ml/input/config/resourceconfig.json`` (``current_host``, ``hosts``:
``algo-1`` ... ``algo-N``); the hosts resolve each other by those names. From that
contract alone (``SM_HOSTS``/``SM_CURRENT_HOST`` win where a toolkit sets them):

- the leader is the first host in natural order (``algo-1``); it starts XGBoost's
  tracker (``xgboost.tracker.RabitTracker``) on its own address and ``TRACKER_PORT``;
- every host, the leader included, joins the ``xgboost.collective`` communicator
  through that tracker, with its rank fixed by its place in the host order;
- each host trains on its share of the rows (``share``: a hash of the entity id, so a
  share exists whether the channel holds one file or many), and the histograms,
  label counts, metrics and statistics are all-reduced, so every host grows the same
  trees; only the leader writes the model (``training.train.main``).

One host (the default) runs none of this: no tracker, no communicator.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger("training.distributed")

DEFAULT_INSTANCE_COUNT = 1
# The TrainingInstanceCount domain's bound (pipelines.parameters). Every host reads
# the whole channels and keeps its share (see ``share``), so N hosts download N
# copies: past a few dozen hosts that costs more than the all-reduce saves on the
# data sizes this pipeline targets. Raise it together with a sharded channel.
MAX_INSTANCE_COUNT = 20
# The port of the leader's tracker, the one AWS's own XGBoost container uses. Fixed,
# as every host must know it without asking; the local runner gives each job's hosts
# addresses of their own, so two jobs on one machine do not meet on it.
TRACKER_PORT = 9099
# Seconds the tracker waits for every host to join (and to leave), and a collective
# operation waits for its peers: a host that died is an error, not a hang.
TIMEOUT_SECONDS = 300


class ClusterError(ValueError):
    """The host contract is inconsistent (the current host is not among the hosts)."""


def _natural(host: str) -> tuple[str, int]:
    match = re.fullmatch(r"(.*?)(\d+)", host)
    return (match.group(1), int(match.group(2))) if match else (host, -1)


@dataclass(frozen=True)
class Cluster:
    """The hosts of a training job, in natural order (``algo-2`` before ``algo-10``),
    and which of them this one is.
    """

    hosts: tuple[str, ...]
    current_host: str

    @classmethod
    def of(cls, hosts: Sequence[str], current_host: str) -> Cluster:
        ordered = tuple(sorted(set(hosts), key=_natural))
        if current_host not in ordered:
            raise ClusterError(
                f"the current host {current_host!r} is not among the job's hosts "
                f"{', '.join(ordered)} (resourceconfig.json or SM_HOSTS)"
            )
        return cls(ordered, current_host)

    @property
    def size(self) -> int:
        return len(self.hosts)

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def leader(self) -> str:
        return self.hosts[0]

    @property
    def is_leader(self) -> bool:
        return self.current_host == self.leader


def share(frame: pd.DataFrame, entity_id: str, rank: int, size: int) -> pd.DataFrame:
    """The rows of ``frame`` that belong to host ``rank`` of ``size``: those whose
    entity id hashes to ``rank`` modulo ``size``.

    By entity, not by file or row position: every host gets a share whatever number
    of files the channel holds (one per Extract instance), the shares are disjoint and
    cover every row, and a host's share does not depend on how the rows are ordered
    or split into files. pandas' hash is seeded with a fixed key, so every host
    computes the same buckets.
    """
    if size == 1:
        return frame
    buckets = pd.util.hash_pandas_object(frame[entity_id], index=False).to_numpy()
    return frame[buckets % np.uint64(size) == np.uint64(rank)].reset_index(drop=True)


def allreduce_sum(values: np.ndarray) -> np.ndarray:
    """``values`` summed over the hosts (themselves when there is one host)."""
    return _allreduce(values, "SUM")


def allreduce_max(values: np.ndarray) -> np.ndarray:
    return _allreduce(values, "MAX")


def allreduce_min(values: np.ndarray) -> np.ndarray:
    return _allreduce(values, "MIN")


def _allreduce(values: np.ndarray, op: str) -> np.ndarray:
    from xgboost import collective

    if not collective.is_distributed():
        return values
    return collective.allreduce(np.ascontiguousarray(values), collective.Op[op])


def world() -> tuple[int, int]:
    """This process's rank and the number of hosts it trains with."""
    from xgboost import collective

    if not collective.is_distributed():
        return 0, 1
    return collective.get_rank(), collective.get_world_size()


@contextlib.contextmanager
def communicator(
    cluster: Cluster,
    leader_address: str,
    port: int = TRACKER_PORT,
    timeout: int = TIMEOUT_SECONDS,
) -> Iterator[None]:
    """Join XGBoost's communicator with the other hosts for the block (nothing with
    one host). The leader starts the tracker on ``leader_address``; every host
    reaches it there. A host that fails inside the block signals its peers, so they
    stop with an error instead of waiting for it.
    """
    if cluster.size == 1:
        yield
        return
    from xgboost import collective
    from xgboost.tracker import RabitTracker

    tracker = None
    if cluster.is_leader:
        tracker = RabitTracker(
            n_workers=cluster.size,
            host_ip=leader_address,
            port=port,
            sortby="task",
            timeout=timeout,
        )
        tracker.start()
        log.info("tracker for %d hosts on %s:%d", cluster.size, leader_address, port)
    # the tracker ranks the hosts by task id: zero-padded, they sort in host order
    task_id = f"{cluster.rank:05d}-{cluster.current_host}"
    try:
        with collective.CommunicatorContext(
            dmlc_communicator="rabit",
            dmlc_tracker_uri=leader_address,
            dmlc_tracker_port=port,
            dmlc_task_id=task_id,
            dmlc_timeout=timeout,
        ):
            if collective.get_rank() != cluster.rank:
                raise ClusterError(
                    f"{cluster.current_host} got rank {collective.get_rank()} from "
                    f"the tracker, expected {cluster.rank}"
                )
            try:
                yield
            except BaseException:
                collective.signal_error()
                raise
    except BaseException:
        # the job fails: no waiting for the tracker to see every host leave
        if tracker is not None:
            _free(tracker)
        raise
    if tracker is not None:
        tracker.wait_for(timeout)


def _free(tracker: object) -> None:
    from xgboost.core import XGBoostError

    with contextlib.suppress(XGBoostError):
        tracker.free()  # type: ignore[attr-defined]
