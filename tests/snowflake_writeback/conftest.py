from pathlib import Path

import pytest

from features import load_feature_set
from snowflake.sagemaker_predictions.procedure import ProcedureSettings
from snowflake.sagemaker_predictions.procedure_code import (
    ProcedureCode,
    build_procedure_code,
)
from stack.config import load_config


@pytest.fixture(scope="session")
def procedure_code(tmp_path_factory) -> ProcedureCode:
    """The scoring procedure's code as a deploy builds it (dev settings)."""
    settings = ProcedureSettings.from_config(
        load_config("dev", environ={}), load_feature_set("churn")
    )
    return build_procedure_code(settings, Path(tmp_path_factory.mktemp("code")))
