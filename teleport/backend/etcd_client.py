"""etcd's v3 JSON gateway over aiohttp: requests with peer failover, auth tokens, error mapping.

etcd serves its gRPC API as JSON at `/v3/...` on the client port (keys and values base64), so
the backend needs no gRPC stack: TLS and client certificates are an ordinary ssl context, and a
watch is one streaming POST whose answer is one JSON object per line. Every transport failure
and etcd error becomes a teleport.errors kind here, and no password or value reaches a message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

from teleport.errors import (
    AccessDenied,
    ConnectionProblem,
    LimitExceeded,
    NotFound,
    TeleportError,
)

log = logging.getLogger("teleport.backend.etcd")

#: Seconds to wait for a TCP (and TLS) connection to one peer before trying the next.
DIAL_TIMEOUT = 2.0
#: Seconds one request may take once connected.
REQUEST_TIMEOUT = 10.0
#: Seconds a call keeps retrying across the peers before it raises ConnectionProblem.
RETRY_WINDOW = 5.0
#: The longest line of a watch stream (a batch of events, base64 in JSON).
MAX_WATCH_LINE = 1 << 30

# gRPC status codes etcd answers with, carried in the gateway's JSON `code`.
_INVALID_ARGUMENT, _NOT_FOUND, _PERMISSION_DENIED = 3, 5, 7
_RESOURCE_EXHAUSTED, _FAILED_PRECONDITION, _OUT_OF_RANGE = 8, 9, 11
_UNAVAILABLE, UNAUTHENTICATED = 14, 16


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


class Unreachable(Exception):
    """A peer could not be reached, or hung up without an answer; `sent` says whether the
    request may have been applied (so a non-idempotent call must not be retried)."""

    def __init__(self, reason: str, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


def describe(err: BaseException) -> str:
    """Say in one line why a connection failed, with a hint where the fix is a setting."""
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        return (f"its TLS certificate is not trusted ({err.certificate_error}); set tls_ca_file "
                "to the CA that signed it")
    if isinstance(err, aiohttp.ClientConnectorError):
        err = err.os_error
    if isinstance(err, ssl.SSLError) or "[SSL" in str(err):
        # aiohttp also reports an alert during the request as an OSError with errno 1.
        reason = getattr(err, "reason", None) or (err.args[-1] if err.args else err)
        reason = str(reason).replace("\n", " ")
        if "CERTIFICATE_REQUIRED" in reason or "BAD_CERTIFICATE" in reason:
            return ("the server requires a client certificate it trusts (set tls_cert_file and "
                    f"tls_key_file): TLS alert {reason}")
        return f"TLS failed: {reason}"
    if isinstance(err, OSError) and err.errno and not isinstance(err, TimeoutError):
        return os.strerror(err.errno).lower()
    text = str(err).replace("\n", " ").strip()
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(err, TimeoutError):
        return f"no answer within {DIAL_TIMEOUT:g}s (connect) or {REQUEST_TIMEOUT:g}s (request)"
    return text or type(err).__name__


class EtcdError(TeleportError):
    """Internal: an error answer from etcd, before it is mapped to a public kind."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.grpc_code = code


class GatewayClient:
    """POST JSON to etcd's gateway, failing over between peers and keeping an auth token each.

    Simple auth tokens are per member, so a token is fetched for each peer as it is used.
    """

    def __init__(self, peers: list[str], ssl_context: ssl.SSLContext | None,
                 username: str | None, password: str | None, prefix: str) -> None:
        self.peers = [p.rstrip("/") for p in peers]
        self._username = username
        self._password = password
        self._prefix = prefix
        self._current = 0
        self._tokens: dict[str, str] = {}
        connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else False,
                                         limit=0)
        self.session = aiohttp.ClientSession(
            connector=connector, json_serialize=json.dumps,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, sock_connect=DIAL_TIMEOUT))

    def peer_order(self) -> list[str]:
        """The peers to try, starting with the one that answered last."""
        n = len(self.peers)
        return [self.peers[(self._current + i) % n] for i in range(n)]

    def mark_good(self, url: str) -> None:
        self._current = self.peers.index(url)

    def unreachable(self, errors: Mapping[str, str]) -> ConnectionProblem:
        where = ", ".join(errors) or ", ".join(self.peers)
        reasons = sorted(set(errors.values()))
        return ConnectionProblem(f"etcd at {where} is unreachable: {'; '.join(reasons)}")

    async def call(self, path: str, body: dict[str, Any], *, idempotent: bool = True,
                   retry: bool = True) -> dict[str, Any]:
        """Send one request to the first peer that answers; retry briefly, then give up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (RETRY_WINDOW if retry else 0)
        errors: dict[str, str] = {}
        while True:
            for url in self.peer_order():
                try:
                    answer = await self._call_peer(url, path, body)
                except Unreachable as err:
                    if err.sent and not idempotent:
                        raise ConnectionProblem(
                            f"etcd at {url} failed during a write whose outcome is unknown: "
                            f"{err.reason}") from None
                    errors[url] = err.reason
                    continue
                self.mark_good(url)
                return answer
            if loop.time() >= deadline:
                raise self.unreachable(errors)
            await asyncio.sleep(0.2)

    async def _call_peer(self, url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in (1, 2):
            headers = await self.auth_headers(url)
            try:
                return await self._post(url, path, body, headers)
            except EtcdError as err:
                if err.grpc_code == UNAUTHENTICATED and attempt == 1 and self._username:
                    self.forget_token(url)
                    continue
                if err.grpc_code == _UNAVAILABLE:  # no leader, leader changed, timed out
                    raise Unreachable(str(err), sent=True) from None
                raise self.map_error(err) from None
        raise AssertionError("unreachable")

    def forget_token(self, url: str) -> None:
        """Drop a token etcd no longer knows (expired, or from before a restart)."""
        self._tokens.pop(url, None)

    async def auth_headers(self, url: str) -> dict[str, str]:
        """Return the Authorization header for url, logging in first when needed."""
        if not self._username:
            return {}
        token = self._tokens.get(url)
        if token is None:
            try:
                answer = await self._post(url, "/v3/auth/authenticate",
                                          {"name": self._username, "password": self._password},
                                          {})
            except EtcdError as err:
                if err.grpc_code == _FAILED_PRECONDITION:  # auth is not enabled on the server
                    log.warning("etcd at %s does not have authentication enabled; "
                                "connecting without logging in as %r", url, self._username)
                    answer = {}
                else:
                    raise self.map_error(err) from None
            token = self._tokens[url] = str(answer.get("token", ""))
        return {"Authorization": token} if token else {}

    async def _post(self, url: str, path: str, body: dict[str, Any],
                    headers: dict[str, str]) -> dict[str, Any]:
        if self.session.closed:
            raise ConnectionProblem("the etcd backend is closed")
        try:
            async with self.session.post(url + path, json=body, headers=headers) as response:
                raw = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, ssl.SSLError, OSError) as err:
            # Only a failed connect proves the request never reached etcd.
            connect_failed = isinstance(
                err, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
            raise Unreachable(describe(err), sent=not connect_failed) from None
        return parse_answer(url, status, raw)

    def map_error(self, err: EtcdError) -> TeleportError:
        """Turn an etcd error answer into our kind, naming the user, never the password."""
        code, text = err.grpc_code, str(err)
        if "authentication failed" in text:
            return AccessDenied(f"etcd refused user {self._username!r}: wrong user name or "
                                "password")
        if code == _PERMISSION_DENIED:
            who = f"user {self._username!r}" if self._username else "this client"
            return AccessDenied(f"etcd denied {who} access under {self._prefix!r}: {text}")
        if code == UNAUTHENTICATED or "user name is empty" in text:
            return AccessDenied(f"etcd requires a login: set username and password_file ({text})")
        if "request is too large" in text:
            return LimitExceeded("etcd refused a request as too large; raise the server's "
                                 "--max-request-bytes or store less")
        if code == _OUT_OF_RANGE:
            return LimitExceeded(f"etcd no longer has that revision: {text}")
        if code == _RESOURCE_EXHAUSTED:
            return LimitExceeded(f"etcd is out of resources: {text}")
        if code == _NOT_FOUND:
            return NotFound(f"etcd: {text}")
        return ConnectionProblem(f"etcd error: {text}")


def parse_answer(url: str, status: int, raw: bytes) -> dict[str, Any]:
    """Decode a gateway answer; an error object becomes EtcdError, a non-etcd answer
    Unreachable (so the next peer is tried)."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise Unreachable(f"it answered HTTP {status} without JSON; is it an etcd v3 client "
                          "URL?", sent=False) from None
    if not isinstance(data, dict):
        raise Unreachable(f"it answered HTTP {status} with unexpected JSON", sent=False)
    error = data.get("error")
    if error:
        if isinstance(error, dict):  # a watch stream wraps it once more
            data = error
        message = str(data.get("message") or data.get("error") or "")
        raise EtcdError(int(data.get("code") or data.get("grpc_code") or 2), message)
    return data
