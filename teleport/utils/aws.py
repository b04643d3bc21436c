"""Make AWS clients one way (S3, DynamoDB) and turn botocore's errors into ours.

Every store reaches AWS, or a compatible server given as `endpoint`, with credentials from the
standard chain (environment, shared files, instance role), never from our configuration. The
timeouts are short and retries few: an auth server whose store is down should say so in
seconds, not hang an emit or a login for minutes. boto3 is imported only when a client is made,
so the CLIs that never touch AWS do not pay for importing it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

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

log = logging.getLogger("teleport.aws")

CONNECT_TIMEOUT = 2.0
#: Per socket read: long enough for S3 to finish a large multipart upload, short for a dead peer.
READ_TIMEOUT = 30.0
#: Attempts in all, first one included (botocore's "standard" mode backs off with jitter).
MAX_ATTEMPTS = 3
#: One connection per worker thread of asyncio.to_thread, so none is opened and thrown away.
MAX_POOL = 32
_MAX_MESSAGE = 300

_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
                     "InvalidClientTokenId", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                     "InvalidSignatureException", "ExpiredToken", "ExpiredTokenException",
                     "MissingAuthenticationTokenException", "AuthFailure"})
_THROTTLED = frozenset({"ThrottlingException", "Throttling", "ProvisionedThroughputExceededException",
                        "RequestLimitExceeded", "SlowDown", "TooManyRequestsException",
                        "LimitExceededException", "RequestThrottled"})
_NOT_FOUND = frozenset({"ResourceNotFoundException", "NoSuchBucket", "NoSuchKey", "NotFound",
                        "TableNotFoundException"})
_EXISTS = frozenset({"ResourceInUseException", "BucketAlreadyOwnedByYou", "TableAlreadyExistsException"})
_CONFLICT = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException",
                       "PreconditionFailed"})


def client(service: str, *, region: str | None, endpoint: str | None, fips: bool = False,
           path_style: bool = False, verify: bool = True) -> Any:
    """Return a boto3 client for service; region None means the AWS chain's default.

    path_style addresses S3 buckets in the path (most S3-compatible servers need it); verify
    False skips the endpoint's TLS certificate check (a test server's self-signed one).

    Raises BadParameter for a bad endpoint or region, or when no region is set anywhere.
    """
    import boto3
    from botocore.config import Config

    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadParameter(f"AWS endpoint {endpoint!r} must be an http:// or https:// URL")
    config = Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                    retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
                    max_pool_connections=MAX_POOL, use_fips_endpoint=fips,
                    s3={"addressing_style": "path" if path_style else "auto"})
    with errors(f"AWS {service} client"):
        # A session of its own: boto3's default session is not safe to share between threads.
        session = boto3.session.Session()
        made = session.client(service, region_name=region or None, endpoint_url=endpoint,
                              config=config, verify=verify)
    if not made.meta.region_name:
        raise BadParameter(f"no AWS region for {service}: set region in the URI or AWS_REGION")
    return made


def map_error(err: Exception, what: str) -> Exception:
    """Return our error kind for a botocore error, a one-line message starting with what;
    any other exception is returned unchanged.

    Throttling becomes LimitExceeded; a refused or timed-out connection and a server error
    ConnectionProblem; a failed condition CompareFailed; a missing table or bucket NotFound;
    a table being made or already there AlreadyExists.
    """
    from botocore import exceptions as bx

    if isinstance(err, bx.ClientError):
        code = error_code(err)
        info = err.response.get("Error", {})
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = info.get("Message") or f"HTTP {status} without an AWS error (is the endpoint right?)"
        detail = _one_line(f"{code}: {message}")
        kind: type[TeleportError]
        if code in _DENIED or status == 403:
            kind = AccessDenied
        elif code in _THROTTLED or status == 429:
            kind = LimitExceeded
        elif code in _NOT_FOUND or status == 404:
            kind = NotFound
        elif code in _EXISTS:
            kind = AlreadyExists
        elif code in _CONFLICT or status == 412:
            kind = CompareFailed
        elif 400 <= status < 500:
            kind = BadParameter
        else:
            kind = ConnectionProblem
        return kind(f"{what}: {detail}")
    if isinstance(err, (bx.NoCredentialsError, bx.PartialCredentialsError,
                        bx.CredentialRetrievalError)):
        return AccessDenied(f"{what}: no usable AWS credentials ({_one_line(str(err))}); set "
                            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or use an instance role")
    if isinstance(err, bx.NoRegionError):
        return BadParameter(f"{what}: no AWS region: set region in the URI or AWS_REGION")
    if isinstance(err, (bx.ParamValidationError, bx.ValidationError,
                        bx.InvalidEndpointConfigurationError)):
        return BadParameter(f"{what}: {_one_line(str(err))}")
    if isinstance(err, bx.BotoCoreError):
        return ConnectionProblem(f"{what}: {_one_line(str(err))}")
    return err


@contextmanager
def errors(what: str) -> Iterator[None]:
    """Raise botocore's errors inside the block as ours (see map_error)."""
    try:
        yield
    except Exception as err:
        mapped = map_error(err, what)
        if mapped is err:
            raise
        raise mapped from None


def error_code(err: BaseException) -> str:
    """Return the AWS error code of a ClientError (`ResourceInUseException`), else ""."""
    response = getattr(err, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 3] + "..."


async def ensure_ttl(call: Callable[..., Awaitable[Any]], table: str, attribute: str,
                     what: str, unless: str) -> None:
    """Turn on DynamoDB's TTL on attribute unless it is on (or being turned on) already.

    call runs one client call (`await call("describe_time_to_live", TableName=...)`); a TTL on
    another attribute, or being turned off, is logged with unless (what then stays) and left
    alone: it is the table owner's choice. Two servers turning it on at once both succeed.
    """
    for attempt in range(2):
        answer = await call("describe_time_to_live", TableName=table)
        ttl = answer.get("TimeToLiveDescription", {})
        status, name = ttl.get("TimeToLiveStatus"), ttl.get("AttributeName")
        if status in ("ENABLED", "ENABLING", "DISABLING"):
            if status == "DISABLING" or name != attribute:
                log.warning("%s: TTL is %s on %r, not on %r: %s", what, status.lower(), name,
                            attribute, unless)
            return
        try:
            await call("update_time_to_live", TableName=table,
                       TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute})
            return
        except BadParameter:
            if attempt:  # not another server's update racing ours: a real refusal
                raise
