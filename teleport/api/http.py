"""The one HTTP client path of ours: send, move to the next address, map every failure.

As httpx's `map_httpcore_exceptions` wraps both the request and the body iterator, every call
of the auth client, the web client and joining goes through `HTTPClient`, which turns transport
failures, timeouts, answers that are not a Teleport server's (aiohttp's plain-text 404, 405 or
500 of something else on the port), bodies that are not JSON and streams broken mid-way into
the error tree. Callers catch only `TeleportError`.

Addresses are tried in order, starting with the one that answered last (a failover sticks).
A request moves on to the next address only while no answer has arrived: once a server has
answered, its answer (or its failure to finish it) is final. So a replay already partly handed
to the caller is never started again on another server (no duplicate), and a break is a
`ConnectionProblem` (no silent truncation).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

import aiohttp
from pydantic import BaseModel, TypeAdapter, ValidationError

from teleport.api import proxydial, proxyenv
from teleport.api.auth_models import AuditEvent, ResourceJSON
from teleport.errors import ConnectionProblem, TeleportError, from_wire
from teleport.utils.addr import HostPort, parse_addr

T = TypeVar("T")

#: A request body: a model, or a resource or audit event in its JSON form.
Body = BaseModel | ResourceJSON | AuditEvent | None
#: What aiohttp, ssl and the OS raise when a peer cannot be reached, hangs up or is too slow.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError,
                                                    ssl.SSLError, OSError)
#: How much of an answer that is not ours is quoted in the error.
_QUOTE = 160

#: Turns (address, transport exception) into one line naming the problem.
Describe = Callable[[str, BaseException], str]
#: A fresh body for each attempt (a stream can be read only once).
BodyFactory = Callable[[], AsyncIterable[bytes]]


class HTTPClient:
    """Send requests to the first of `addrs` that answers; map everything to the error tree.

    `peer` names the server in messages ("auth server", "proxy"). `server_hostname` is the TLS
    name every connection must prove (the auth server's), whatever the address dialled.
    `proxy_env` (default `os.environ`) names the HTTP CONNECT proxy (`HTTPS_PROXY`, `NO_PROXY`,
    see `proxyenv`); TLS, its name check and pinning run end to end through the tunnel.
    """

    def __init__(self, addrs: Sequence[HostPort | str], ssl_context: ssl.SSLContext, *,
                 peer: str, timeout: float = 30.0, connect_timeout: float = 5.0,
                 server_hostname: str | None = None, describe: Describe | None = None,
                 unreachable: str | None = None,
                 proxy_env: Mapping[str, str] | None = None) -> None:
        if not addrs:
            raise ConnectionProblem(f"no {peer} address configured")
        self.addrs = [str(a) for a in addrs]
        self._proxy_env = proxy_env
        #: The HTTP proxy for each address (None: direct); `addrs` may change (failover lists).
        self._proxies: dict[str, proxyenv.ProxyURL | None] = {}
        self.peer = peer
        self.server_hostname = server_hostname
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        # Replays can be long: only connecting and each read are bounded.
        self._stream_timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout,
                                                     sock_read=timeout)
        self._describe = describe or _describe
        #: Put before the problems of all addresses when none answered ("": the problems alone).
        self._unreachable = f"cannot reach the {peer}: " if unreachable is None else unreachable
        self._session: aiohttp.ClientSession | None = None
        #: The address that answered last: tried first, so after a failover every call does
        #: not wait on the dead server first (a connect timeout, for a host that is gone).
        self.preferred: str | None = None

    def _order(self) -> list[str]:
        """Return the addresses to try: the one that answered last first, then the rest."""
        first = self.preferred
        if first is None or first not in self.addrs:
            return list(self.addrs)
        return [first, *(a for a in self.addrs if a != first)]

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context new connections are made with."""
        return self._ssl

    def set_ssl_context(self, ssl_context: ssl.SSLContext) -> None:
        """Make new connections with another context (another certificate or trusted CAs, as
        a CA rotation needs); requests under way, watch streams too, finish on theirs.

        Each request names the context, and aiohttp pools connections by it, so no pooled
        connection of the old context is used again; idle ones close on their keep-alive.
        """
        self._ssl = ssl_context

    async def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @overload
    async def call(self, method: str, path: str, body: Body = None,
                   *, answer: type[T]) -> T: ...

    @overload
    async def call(self, method: str, path: str, body: Body = None,
                   *, answer: None = None) -> Any: ...

    async def call(self, method: str, path: str, body: Body = None,
                   *, answer: type[T] | None = None) -> Any:
        """Send a JSON request; return the JSON answer, validated as `answer` when given."""
        payload = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
        addr, resp = await self._open(method, path, json_body=payload)
        async with resp:
            raw = await self._read(addr, method, path, resp)
        data = self._decode(addr, method, path, resp, raw)
        return data if answer is None else self._validate(addr, method, path, data, answer)

    async def upload(self, method: str, path: str, pieces: BodyFactory, *,
                     answer: type[T], streamed: bool = False) -> T:
        """Send a raw streamed body (a recording part); each attempt reads it from the start.

        streamed: the body is produced while it is sent (a sync recording), so only connecting
        and reading the answer are bounded in time, not the whole request.
        """
        addr, resp = await self._open(method, path, data=pieces, streamed=streamed)
        async with resp:
            raw = await self._read(addr, method, path, resp)
        return self._validate(addr, method, path, self._decode(addr, method, path, resp, raw),
                              answer)

    async def stream(self, method: str, path: str, *,
                     idle: float | None = None) -> AsyncGenerator[bytes]:
        """Yield an answer's body as it arrives; a break after the first byte is final.

        `idle` replaces the client's timeout as the longest silence between two pieces (a watch
        stream is quiet between its pings for longer than a call may take).
        """
        addr, resp = await self._open(method, path, streamed=True, idle=idle)
        async with resp:
            if resp.status >= 400:
                raw = await self._read(addr, method, path, resp)
                raise self._refusal(addr, method, path, resp, raw)
            try:
                async for piece in resp.content.iter_any():
                    yield piece
            except TRANSPORT_ERRORS as exc:
                raise ConnectionProblem(
                    f"{self.peer} {addr} broke off its answer to {method} {_path(path)} "
                    f"mid-stream: {one_line(exc)}") from None

    # --- one request, one answer ------------------------------------------------------------

    async def _open(self, method: str, path: str, *, json_body: Any = None,
                    data: BodyFactory | None = None, streamed: bool = False,
                    idle: float | None = None) -> tuple[str, aiohttp.ClientResponse]:
        """Return the first answer's head; only a failure before it tries the next address."""
        timeout = self._stream_timeout if streamed else self._timeout
        if idle is not None:
            timeout = aiohttp.ClientTimeout(total=None, connect=timeout.connect, sock_read=idle)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl))
        problems: list[str] = []
        for addr in self._order():
            if addr not in self._proxies:
                self._proxies[addr] = _proxy_for(addr, self._proxy_env)
            proxy = self._proxies[addr]
            try:
                resp = await self._session.request(
                    method, f"https://{addr}{path}", json=json_body,
                    data=data() if data is not None else None,
                    timeout=timeout, ssl=self._ssl,
                    server_hostname=self.server_hostname,
                    proxy=proxy.url if proxy else None, proxy_auth=_basic_auth(proxy))
            except TRANSPORT_ERRORS as exc:
                problems.append(_describe_proxy(addr, proxy, exc) or self._describe(addr, exc))
                continue
            self.preferred = addr
            return addr, resp
        raise ConnectionProblem(self._unreachable + "; ".join(problems))

    async def _read(self, addr: str, method: str, path: str,
                    resp: aiohttp.ClientResponse) -> bytes:
        try:
            return await resp.read()
        except TRANSPORT_ERRORS as exc:
            raise ConnectionProblem(f"{self.peer} {addr} broke off its answer to {method} "
                                    f"{_path(path)}: {one_line(exc)}") from None

    def _decode(self, addr: str, method: str, path: str, resp: aiohttp.ClientResponse,
                raw: bytes) -> Any:
        if resp.status >= 400:
            raise self._refusal(addr, method, path, resp, raw)
        try:
            return json.loads(raw) if raw else None
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            raise ConnectionProblem(
                f"HTTP {resp.status} from {addr}: the answer to {method} {_path(path)} is not "
                f"JSON ({_quote(raw)}): is it a Teleport {self.peer}?") from None

    def _refusal(self, addr: str, method: str, path: str, resp: aiohttp.ClientResponse,
                 raw: bytes) -> TeleportError:
        """Rebuild a Teleport error answer; anything else names the status and the server."""
        try:
            err = json.loads(raw).get("error")
        except (ValueError, AttributeError):
            err = None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return from_wire(str(err.get("code", "")), one_line(err["message"]))
        return ConnectionProblem(
            f"HTTP {resp.status} from {addr}: {resp.reason or 'error'} for {method} "
            f"{_path(path)} ({_quote(raw)}): is it a Teleport {self.peer}?")

    def _validate(self, addr: str, method: str, path: str, data: Any, answer: type[T]) -> T:
        try:
            return _adapter(answer).validate_python(data)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "body"
            raise ConnectionProblem(
                f"{self.peer} {addr} sent an unexpected answer to {method} {_path(path)}: "
                f"{field}: {first['msg'].lower()}") from None


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(model: type[T]) -> TypeAdapter[T]:
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(model)
    return adapter


def _proxy_for(addr: str, env: Mapping[str, str] | None) -> proxyenv.ProxyURL | None:
    host, port = parse_addr(addr, 443)
    return proxyenv.proxy_for(host, port, env)


def _basic_auth(proxy: proxyenv.ProxyURL | None) -> aiohttp.BasicAuth | None:
    if proxy is None or proxy.username is None:
        return None
    return aiohttp.BasicAuth(proxy.username, proxy.password or "")


def _describe_proxy(addr: str, proxy: proxyenv.ProxyURL | None,
                    exc: BaseException) -> str | None:
    """Name the HTTP proxy when it, not the server behind it, failed."""
    if proxy is None:
        return None
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return (f"HTTP proxy {proxy} refused CONNECT {addr}: "
                f"'{exc.status} {one_line(exc.message)}'{proxydial.auth_hint(proxy, exc.status)}")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"cannot reach HTTP proxy {proxy} ({proxy.source}): {one_line(exc.os_error)}"
    return None


def _describe(addr: str, exc: BaseException) -> str:
    return f"{addr}: {one_line(exc)}"


def _path(path: str) -> str:
    """Drop the query: it may name a user, and says nothing about which route failed."""
    return path.split("?", 1)[0]


def _quote(raw: bytes) -> str:
    text = one_line(raw[:_QUOTE * 2].decode("utf-8", "replace")) if raw else ""
    return repr(text[:_QUOTE]) if text else "empty body"


def one_line(value: object) -> str:
    """Return an exception or text as one line, naming the type when it says nothing."""
    return " ".join(str(value).split()) or type(value).__name__


__all__ = ["TRANSPORT_ERRORS", "HTTPClient", "one_line"]
