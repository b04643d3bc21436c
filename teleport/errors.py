"""The error kinds every layer raises; the CLI and web API map them to messages and codes.

    TeleportError
    ├── NotFound            the named thing does not exist (or has expired)
    ├── AlreadyExists       create of something that is already there
    ├── CompareFailed       compare-and-swap saw a different value
    ├── BadParameter        input (config, flags, YAML, request body) is wrong
    ├── AccessDenied        authentication or authorization refused
    ├── ConnectionProblem   a peer could not be reached or hung up
    ├── LimitExceeded       a rate or connection limit was hit
    └── NotSupported        a driver or peer cannot do what was asked

Drivers (sqlite, aiohttp, asyncssh) map their own exceptions to these at the edge, so
that callers only ever catch this tree.
"""

from __future__ import annotations


class TeleportError(Exception):
    """Base of all errors with a message fit to show a user."""

    #: HTTP status the web and auth APIs answer with.
    http_status = 500
    #: Stable name used on the wire to rebuild the error on the other side.
    code = "internal"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message or self.code.replace("_", " ")


class NotFound(TeleportError):
    http_status = 404
    code = "not_found"


class AlreadyExists(TeleportError):
    http_status = 409
    code = "already_exists"


class CompareFailed(TeleportError):
    http_status = 412
    code = "compare_failed"


class BadParameter(TeleportError):
    http_status = 400
    code = "bad_parameter"


class AccessDenied(TeleportError):
    http_status = 403
    code = "access_denied"
    #: True once whoever refused has written the audit event, so the API edge does not again.
    audited = False

    def mark_audited(self) -> AccessDenied:
        self.audited = True
        return self


class ConnectionProblem(TeleportError):
    http_status = 502
    code = "connection_problem"


class LimitExceeded(TeleportError):
    http_status = 429
    code = "limit_exceeded"


class NotSupported(TeleportError):
    http_status = 501
    code = "not_supported"


_BY_CODE: dict[str, type[TeleportError]] = {
    cls.code: cls
    for cls in (NotFound, AlreadyExists, CompareFailed, BadParameter, AccessDenied,
                ConnectionProblem, LimitExceeded, NotSupported)
}


def from_wire(code: str, message: str) -> TeleportError:
    """Rebuild an error sent by a peer as `{"error": {"code", "message"}}`."""
    return _BY_CODE.get(code, TeleportError)(message)


def to_wire(err: TeleportError) -> dict[str, dict[str, str]]:
    """Encode an error for a JSON response body."""
    return {"error": {"code": err.code, "message": str(err)}}
