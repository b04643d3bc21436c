"""AWS clients are made one way, and botocore's errors become ours in one line."""

from __future__ import annotations

import pytest
from botocore import exceptions as bx

from teleport.errors import (
    AccessDenied,
    AlreadyExists,
    BadParameter,
    CompareFailed,
    ConnectionProblem,
    LimitExceeded,
    NotFound,
    TeleportError,
)
from teleport.utils import aws
from tests.cloud_servers import aws_env


def client_error(code: str, status: int, message: str = "it went\nwrong") -> bx.ClientError:
    return bx.ClientError({"Error": {"Code": code, "Message": message},
                           "ResponseMetadata": {"HTTPStatusCode": status}}, "PutItem")


@pytest.mark.parametrize("code, status, kind", [
    ("AccessDeniedException", 400, AccessDenied),
    ("UnrecognizedClientException", 400, AccessDenied),
    ("ThrottlingException", 400, LimitExceeded),
    ("ProvisionedThroughputExceededException", 400, LimitExceeded),
    ("ResourceNotFoundException", 400, NotFound),
    ("ResourceInUseException", 400, AlreadyExists),
    ("ConditionalCheckFailedException", 400, CompareFailed),
    ("ValidationException", 400, BadParameter),
    ("InternalServerError", 500, ConnectionProblem),
    ("ServiceUnavailable", 503, ConnectionProblem),
])
def test_client_errors_become_our_kinds(code: str, status: int,
                                        kind: type[TeleportError]) -> None:
    mapped = aws.map_error(client_error(code, status), "DynamoDB table 'events'")
    assert type(mapped) is kind
    assert str(mapped) == f"DynamoDB table 'events': {code}: it went wrong"


def test_transport_and_setup_errors_become_our_kinds() -> None:
    what = "S3 bucket 'b'"
    refused = aws.map_error(bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:9/"), what)
    assert isinstance(refused, ConnectionProblem) and "http://127.0.0.1:9/" in str(refused)
    assert isinstance(aws.map_error(bx.NoCredentialsError(), what), AccessDenied)
    assert isinstance(aws.map_error(bx.NoRegionError(), what), BadParameter)
    bug = KeyError("x")
    assert aws.map_error(bug, what) is bug
    assert aws.error_code(client_error("Throttling", 400)) == "Throttling"
    assert aws.error_code(bug) == ""


def test_errors_block_raises_ours_and_lets_others_through() -> None:
    with pytest.raises(LimitExceeded, match="^t: SlowDown: it went wrong$"):
        with aws.errors("t"):
            raise client_error("SlowDown", 503)
    with pytest.raises(KeyError):
        with aws.errors("t"):
            raise KeyError("x")


def test_a_long_message_is_cut() -> None:
    mapped = aws.map_error(client_error("ValidationException", 400, "x" * 5000), "t")
    assert len(str(mapped)) < 400


def test_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in aws_env().items():
        monkeypatch.setenv(name, value)
    made = aws.client("dynamodb", region=None, endpoint="http://127.0.0.1:9", fips=True)
    config = made.meta.config
    assert made.meta.region_name == "us-east-1"
    assert made.meta.endpoint_url == "http://127.0.0.1:9"
    assert (config.connect_timeout, config.read_timeout) == (aws.CONNECT_TIMEOUT,
                                                             aws.READ_TIMEOUT)
    assert config.retries == {"mode": "standard", "total_max_attempts": aws.MAX_ATTEMPTS}
    assert config.use_fips_endpoint is True
    fips = aws.client("dynamodb", region="us-west-2", endpoint=None, fips=True)
    assert fips.meta.endpoint_url == "https://dynamodb-fips.us-west-2.amazonaws.com"


@pytest.mark.parametrize("endpoint", ["127.0.0.1:8000", "ftp://host", "http://"])
def test_a_bad_endpoint_is_refused(endpoint: str) -> None:
    with pytest.raises(BadParameter, match="http:// or https://"):
        aws.client("s3", region="us-east-1", endpoint=endpoint)
