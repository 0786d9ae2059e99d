"""The host contract of a multi-instance training job and each host's share of rows."""

import json

import numpy as np
import pandas as pd
import pytest

from training.contract import TrainingContract
from training.distributed import Cluster, ClusterError, share


def frame(ids) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ids, "x": np.arange(len(ids))})


def test_the_shares_are_disjoint_complete_and_balanced():
    whole = frame(np.arange(10_000))
    shares = [share(whole, "customer_id", rank, 3) for rank in range(3)]
    ids = [set(s["customer_id"]) for s in shares]
    assert sum(len(s) for s in ids) == 10_000 and set().union(*ids) == set(
        range(10_000)
    )
    assert all(3000 < len(s) < 3700 for s in ids)
    assert share(whole, "customer_id", 0, 1) is whole


def test_a_share_does_not_depend_on_files_or_order():
    """Every host gets its rows whether the channel holds one file or many."""
    whole = frame(np.arange(2000))
    one_file = set(share(whole, "customer_id", 1, 2)["customer_id"])
    files = [whole.iloc[i::3].iloc[::-1] for i in range(3)]
    many_files = set().union(
        *(set(share(f, "customer_id", 1, 2)["customer_id"]) for f in files)
    )
    assert one_file == many_files


def test_the_leader_is_the_first_host_in_natural_order():
    hosts = [f"algo-{i}" for i in (10, 2, 1, 3, 4, 5, 6, 7, 8, 9, 11)]
    cluster = Cluster.of(hosts, "algo-10")
    assert cluster.hosts[:3] == ("algo-1", "algo-2", "algo-3")
    assert cluster.leader == "algo-1" and cluster.rank == 9 and cluster.size == 11
    assert Cluster.of(hosts, "algo-1").is_leader and not cluster.is_leader


def test_a_current_host_outside_the_hosts_is_refused():
    with pytest.raises(ClusterError, match="'algo-3' is not among the job's hosts"):
        Cluster.of(["algo-1", "algo-2"], "algo-3")


def test_the_contract_reads_the_hosts_from_resourceconfig_and_sm_variables(tmp_path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]})
    )
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {"train": {"S3DistributionType": "ShardedByS3Key"}, "validation": {}}
        )
    )
    contract = TrainingContract.from_environment({"OPT_ML_ROOT": str(tmp_path)})
    assert contract.current_host == "algo-2" and contract.hosts == ("algo-1", "algo-2")
    assert contract.distribution == {
        "train": "ShardedByS3Key",
        "validation": "FullyReplicated",
    }
    # a toolkit's SM_HOSTS/SM_CURRENT_HOST win; the local fallback's addresses too
    toolkit = TrainingContract.from_environment(
        {
            "OPT_ML_ROOT": str(tmp_path),
            "SM_HOSTS": '["algo-1", "algo-2", "algo-3"]',
            "SM_CURRENT_HOST": "algo-3",
            "MLOPS_HOST_ADDRESSES": '{"algo-1": "127.5.6.1"}',
        }
    )
    assert toolkit.hosts == ("algo-1", "algo-2", "algo-3")
    assert toolkit.current_host == "algo-3"
    assert toolkit.address_of("algo-1") == "127.5.6.1"
    assert toolkit.address_of("localhost").startswith("127.")  # by name otherwise
