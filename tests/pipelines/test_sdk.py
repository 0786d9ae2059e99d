"""The SDK loader's two speed-ups keep the SDK's behaviour (pipelines.sdk)."""

from __future__ import annotations

import jsonschema
import pytest

from pipelines.sdk import load_sdk


@pytest.fixture(scope="module")
def sdk():
    return load_sdk("us-east-1")


def test_an_invalid_sdk_config_is_still_refused_on_every_check(sdk):
    from sagemaker.core.config import config
    from sagemaker.core.helper import session_helper

    bad = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": "not an object"}}
    for validate in (
        config.validate_sagemaker_config,
        session_helper.validate_sagemaker_config,
    ):
        for _ in range(2):  # the memo keeps only configs that passed
            with pytest.raises(jsonschema.ValidationError):
                validate(bad)
    config.validate_sagemaker_config({"SchemaVersion": "1.0"})  # a valid one passes


def test_the_steps_client_builds_no_session_but_keeps_the_method_names(sdk):
    from sagemaker.core.local.local_session import LocalSagemakerClient
    from sagemaker.mlops.workflow import steps

    client = steps.LocalSagemakerClient()
    assert isinstance(client, LocalSagemakerClient)
    assert not hasattr(client, "sagemaker_session")  # __init__ made nothing
    assert client.create_processing_job.__name__ == "create_processing_job"
    assert client.create_transform_job.__name__ == "create_transform_job"
