import tarfile
import urllib.request

import numpy as np
import pandas as pd
import pytest

from features import FeatureSchema
from stack.endpoints import EndpointError, LocalEndpoints
from stack.objectstore import LocalObjectStore
from stack.registry import LocalModelRegistry
from tests.conftest import free_port
from training.hyperparameters import DEFAULTS
from training.train import save_model, train_model

SCHEMA = FeatureSchema.from_dict(
    {"entity_id": "id", "label": "y", "features": [{"name": "x1"}, {"name": "x2"}]}
)


@pytest.fixture
def deployer(tmp_path):
    store = LocalObjectStore(tmp_path / "s3")
    registry = LocalModelRegistry(tmp_path / "registry", "us-east-1")
    endpoints = LocalEndpoints(
        tmp_path / "endpoints", store, registry, port=free_port(), startup_timeout=60
    )
    yield endpoints
    endpoints.stop("ep")


def model_archive(tmp_path, name, broken=False):
    rng = np.random.default_rng(0)

    def data(n):
        x1 = rng.normal(size=n)
        return pd.DataFrame(
            {
                "id": range(n),
                "x1": x1,
                "x2": rng.normal(size=n),
                "y": (x1 > 0).astype(int),
            }
        )

    folder = tmp_path / name
    save_model(
        train_model(data(300), data(100), SCHEMA, {**DEFAULTS, "num_round": 5}), folder
    )
    if broken:
        (folder / "model.json").write_text("{not a model")
    archive = tmp_path / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in folder.iterdir():
            tar.add(path, arcname=path.name)
    return archive


def register(deployer, archive, status="Approved"):
    uri = f"s3://bucket/models/{archive.name}"
    deployer.store.upload_file(archive, uri)
    return deployer.registry.register(
        {
            "ModelPackageGroupName": "g",
            "ModelApprovalStatus": status,
            "InferenceSpecification": {
                "Containers": [{"Image": "img", "ModelDataUrl": uri}]
            },
        }
    )


def deploy(deployer, package, config_name):
    model = deployer.create_model({"Containers": [{"ModelPackageName": package.arn}]})
    deployer.create_endpoint_config(
        {
            "EndpointConfigName": config_name,
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model}],
        }
    )
    return deployer.create_or_update_endpoint(
        {"EndpointName": "ep", "EndpointConfigName": config_name}
    )


def ping(url):
    with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
        return response.status


def test_deploy_update_and_stop(deployer, tmp_path):
    first = deploy(deployer, register(deployer, model_archive(tmp_path, "m1")), "c1")
    assert first.status == "InService" and ping(first.url) == 200
    second = deploy(deployer, register(deployer, model_archive(tmp_path, "m2")), "c2")
    assert second.pid != first.pid and ping(second.url) == 200
    assert deployer.describe("ep").config_name == "c2"
    assert deployer.stop("ep")
    assert deployer.describe("ep").status == "Stopped"
    with pytest.raises(OSError):
        ping(second.url)


def test_a_model_that_cannot_load_leaves_the_serving_one_in_place(deployer, tmp_path):
    good = deploy(deployer, register(deployer, model_archive(tmp_path, "good")), "c1")
    broken = register(deployer, model_archive(tmp_path, "bad", broken=True))
    with pytest.raises(EndpointError, match="cannot be served"):
        deploy(deployer, broken, "c2")
    assert deployer.describe("ep").pid == good.pid and ping(good.url) == 200


@pytest.mark.parametrize("status", ["PendingManualApproval", "Rejected"])
def test_only_approved_packages_are_deployed(deployer, tmp_path, status):
    package = register(deployer, model_archive(tmp_path, "m"), status=status)
    with pytest.raises(EndpointError, match=f"is {status}; only an Approved package"):
        deployer.create_model({"Containers": [{"ModelPackageName": package.arn}]})


def test_a_busy_port_is_reported(deployer, tmp_path):
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", deployer.port))
        squatter.listen()
        with pytest.raises(EndpointError, match="is in use by another program"):
            deploy(deployer, register(deployer, model_archive(tmp_path, "m")), "c1")
