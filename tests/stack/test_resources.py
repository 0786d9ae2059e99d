"""stack.resources: what build_resources makes, and when."""

from __future__ import annotations

import os

import pytest
from moto import mock_aws

from pipelines import rollback, smoke
from stack.config import load_config
from stack.resources import build_resources
from stack.warehouse import WarehouseUnavailable


@pytest.fixture
def no_snowflake(aws_credentials, monkeypatch):
    """An AWS environment's settings with nothing about Snowflake, as a CD step that
    only talks to SageMaker has them; moto answers AWS.
    """
    for name in [n for n in os.environ if n.startswith("MLOPS_")]:
        monkeypatch.delenv(name)
    with mock_aws():
        yield


def test_snowflake_is_made_only_when_a_command_uses_it(no_snowflake):
    resources = build_resources(load_config("staging"))

    assert resources.endpoints.describe("churn-endpoint-staging") is None
    with pytest.raises(WarehouseUnavailable, match="snowflake.account is not set"):
        resources.warehouse  # noqa: B018 (the first use builds it)


@pytest.mark.parametrize(
    ("command", "argv"),
    [(smoke.main, ["--env", "staging"]), (rollback.main, ["--env", "staging"])],
)
def test_the_endpoint_commands_need_no_snowflake_settings(
    no_snowflake, capsys, command, argv
):
    # exit 1 on the endpoint's state (moto has none), not 2 on configuration
    assert command(argv) == 1
    err = capsys.readouterr().err
    assert "endpoint churn-endpoint-staging does not exist" in err
    assert "snowflake" not in err
