"""pipelines.smoke: the deployment's last check accepts a scoring endpoint only."""

import io
import json

import pytest

from pipelines.smoke import SmokeError, smoke_test
from stack.endpoints import EndpointInfo


class FakeEndpoints:
    """The EndpointDeployer surface smoke_test uses, answering a fixed body."""

    def __init__(self, status="InService", answer=None, exists=True):
        self.status, self.answer, self.exists = status, answer, exists
        self.requests = []

    def describe(self, name):
        if not self.exists:
            return None
        return EndpointInfo(
            name=name, config_name="c", model_name="m", status=self.status
        )

    def runtime_client(self):
        return self

    def invoke_endpoint(self, **request):
        self.requests.append(request)
        return {"Body": io.BytesIO(json.dumps(self.answer).encode())}


def test_a_scoring_endpoint_passes_with_the_snowflake_format():
    endpoints = FakeEndpoints(answer={"data": [[0, 0.25]]})
    assert smoke_test(endpoints, "churn-endpoint-dev", 3) == 0.25
    (request,) = endpoints.requests
    assert json.loads(request["Body"]) == {"data": [[0, 0.0, 0.0, 0.0]]}


@pytest.mark.parametrize(
    ("endpoints", "reason"),
    [
        (FakeEndpoints(exists=False), "does not exist"),
        (FakeEndpoints(status="Updating"), "is Updating, not InService"),
        (FakeEndpoints(answer={"predictions": [0.2]}), "answered"),
        (FakeEndpoints(answer={"data": [[0, 1.5]]}), "for row 0"),
        (FakeEndpoints(answer={"data": [[1, 0.5]]}), "for row 0"),
    ],
)
def test_anything_else_fails_and_says_why(endpoints, reason):
    with pytest.raises(SmokeError, match=reason):
        smoke_test(endpoints, "churn-endpoint-dev", 3)
