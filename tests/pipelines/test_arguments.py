"""The options the CLIs share (``pipelines.arguments``): the configuration they
override, and the values they parse.
"""

from __future__ import annotations

import argparse

import pytest

from pipelines.arguments import (
    IMAGE_URI,
    ROLE_ARN,
    add_local_run,
    add_settings,
    config_overrides,
    parameters_from,
    positive_seconds,
    tags_from,
)
from pipelines.console import UsageError


def test_overrides_name_the_keys_of_the_options_the_parser_has() -> None:
    parser = argparse.ArgumentParser()
    add_settings(parser, ROLE_ARN, IMAGE_URI)
    add_local_run(parser)
    args = parser.parse_args(["--role-arn", "arn:role", "--port", "8081"])
    assert config_overrides(args) == {
        "aws.role_arn": "arn:role",
        "sagemaker.image_uri": None,
        "demo.customers": None,
        "state_dir": None,
        "local_endpoint.port": 8081,
    }


def test_a_parameter_without_a_name_or_a_value_is_refused() -> None:
    assert parameters_from(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    for pair in ("novalue", "=1"):
        with pytest.raises(UsageError, match="NAME=VALUE"):
            parameters_from([pair])


def test_tags_are_pairs_separated_by_commas_and_a_pair_needs_a_value() -> None:
    assert tags_from(["team=ml, cost=42", "owner = me"]) == {
        "team": "ml",
        "cost": "42",
        "owner": "me",
    }
    with pytest.raises(UsageError, match="KEY=VALUE"):
        tags_from(["team"])


@pytest.mark.parametrize("text", ["0", "-1", "soon"])
def test_seconds_must_be_a_positive_number(text: str) -> None:
    assert positive_seconds("2.5") == 2.5
    with pytest.raises(argparse.ArgumentTypeError):
        positive_seconds(text)
