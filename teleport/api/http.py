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
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, overload

from teleport.api import h1, proxydial, proxyenv
from teleport.errors import ConnectionProblem, TeleportError, from_wire
from teleport.types.shapes import AuditEvent, ResourceJSON
from teleport.utils import plain
from teleport.utils.addr import HostPort, parse_addr

if TYPE_CHECKING:  # pydantic loads with the first answer to validate: a CA refresh that gets
    # a 304 (`tsh ssh`) needs none of it
    from pydantic import BaseModel, TypeAdapter

T = TypeVar("T")

#: A request body: a model, or a resource or audit event in its JSON form.
Body: TypeAlias = "BaseModel | ResourceJSON | AuditEvent | None"
#: What the transport (`h1`), ssl and the OS raise when a peer cannot be reached, hangs up or
#: is too slow (`ssl.SSLError` and h1's errors are `OSError`s).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, OSError)
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
        self._timeout = h1.Timeouts(total=timeout, connect=connect_timeout, read=None)
        # Replays can be long: only connecting and each read are bounded.
        self._stream_timeout = h1.Timeouts(total=None, connect=connect_timeout, read=timeout)
        self._describe = describe or _describe
        #: Put before the problems of all addresses when none answered ("": the problems alone).
        self._unreachable = f"cannot reach the {peer}: " if unreachable is None else unreachable
        self._pool: h1.Pool | None = None
        #: Where each address leads with the current TLS context (pooled connections by it).
        self._dests: dict[str, h1.Destination] = {}
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

        Connections are pooled by context, so no pooled connection of the old context is
        used again; idle ones are closed now.
        """
        self._ssl = ssl_context
        self._dests.clear()
        if self._pool is not None:
            self._pool.drop_idle()

    async def close(self) -> None:
        """Close pooled connections."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()

    @overload
    async def call(self, method: str, path: str, body: Body = None,
                   *, answer: type[T]) -> T: ...

    @overload
    async def call(self, method: str, path: str, body: Body = None,
                   *, answer: None = None) -> Any: ...

    async def call(self, method: str, path: str, body: Body = None,
                   *, answer: type[T] | None = None) -> Any:
        """Send a JSON request; return the JSON answer, validated as `answer` when given."""
        payload = body if isinstance(body, dict | None) else body.model_dump(mode="json")
        addr, resp = await self._open(
            method, path, json_body=None if payload is None else json.dumps(payload).encode())
        async with resp:
            raw = await self._read(addr, method, path, resp)
        data = self._decode(addr, method, path, resp, raw)
        return data if answer is None else self._validate(addr, method, path, data, answer)

    async def get_if_changed(self, path: str, etag: str) -> tuple[str, Any] | None:
        """GET a JSON answer unless the server says it still has the entity tag the caller
        kept from the last one (HTTP 304): None then, and nothing to read or decode. An answer
        comes with its tag ("" when the server gives none)."""
        addr, resp = await self._open("GET", path,
                                      headers=[("If-None-Match", etag)] if etag else [])
        async with resp:
            raw = await self._read(addr, "GET", path, resp)
        if resp.status == 304:
            return None
        return resp.headers.get("etag", ""), self._decode(addr, "GET", path, resp, raw)

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
                async for piece in resp.iter_any():
                    yield piece
            except TRANSPORT_ERRORS as exc:
                raise ConnectionProblem(
                    f"{self.peer} {addr} broke off its answer to {method} {_path(path)} "
                    f"mid-stream: {one_line(exc)}") from None

    # --- one request, one answer ------------------------------------------------------------

    async def _open(self, method: str, path: str, *, json_body: bytes | None = None,
                    headers: list[tuple[str, str]] | None = None,
                    data: BodyFactory | None = None, streamed: bool = False,
                    idle: float | None = None) -> tuple[str, h1.Response]:
        """Return the first answer's head; only a failure before it tries the next address."""
        timeout = self._stream_timeout if streamed else self._timeout
        if idle is not None:
            timeout = h1.Timeouts(total=None, connect=timeout.connect, read=idle)
        if self._pool is None:
            self._pool = h1.Pool()
        headers = [*(headers or []),
                   *([("Content-Type", "application/json")] if json_body is not None else [])]
        problems: list[str] = []
        for addr in self._order():
            try:
                resp = await self._pool.request(
                    self._destination(addr), method, path, headers=headers,
                    body=json_body if data is None else data(), timeouts=timeout)
            except ConnectionProblem as err:  # the HTTP proxy's refusal, named by proxydial
                problems.append(str(err))
                continue
            except TRANSPORT_ERRORS as exc:
                problems.append(self._describe(addr, exc))
                continue
            self.preferred = addr
            return addr, resp
        raise ConnectionProblem(self._unreachable + "; ".join(problems))

    def _destination(self, addr: str) -> h1.Destination:
        dest = self._dests.get(addr)
        if dest is None:
            host, port = parse_addr(addr, 443)
            if addr not in self._proxies:
                self._proxies[addr] = proxyenv.proxy_for(host, port, self._proxy_env)
            dest = self._dests[addr] = h1.Destination(
                host, port, self._ssl, self.server_hostname,
                _tunnel(self._proxies[addr], host, port))
        return dest

    async def _read(self, addr: str, method: str, path: str,
                    resp: h1.Response) -> bytes:
        try:
            return await resp.read()
        except TRANSPORT_ERRORS as exc:
            raise ConnectionProblem(f"{self.peer} {addr} broke off its answer to {method} "
                                    f"{_path(path)}: {one_line(exc)}") from None

    def _decode(self, addr: str, method: str, path: str, resp: h1.Response,
                raw: bytes) -> Any:
        if resp.status >= 400:
            raise self._refusal(addr, method, path, resp, raw)
        try:
            return json.loads(raw) if raw else None
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            raise ConnectionProblem(
                f"HTTP {resp.status} from {addr}: the answer to {method} {_path(path)} is not "
                f"JSON ({_quote(raw)}): is it a Teleport {self.peer}?") from None

    def _refusal(self, addr: str, method: str, path: str, resp: h1.Response,
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
            return plain.convert(data, answer) if plain.is_plain(answer) else _model(data, answer)
        except plain.Mismatch as err:
            raise ConnectionProblem(
                f"{self.peer} {addr} sent an unexpected answer to {method} {_path(path)}: "
                f"{err}") from None


def _model(data: Any, answer: type[T]) -> T:
    """Validate a pydantic answer; its first error becomes a Mismatch."""
    from pydantic import ValidationError

    try:
        return _adapter(answer).validate_python(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise plain.Mismatch(".".join(str(p) for p in first["loc"]),
                             first["msg"].lower()) from None


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(model: type[T]) -> TypeAdapter[T]:
    from pydantic import TypeAdapter

    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(model)
    return adapter


def _tunnel(proxy: proxyenv.ProxyURL | None, host: str,
            port: int) -> Callable[[], Awaitable[object]] | None:
    """Open the TCP connection through the HTTP proxy (CONNECT), when there is one."""
    if proxy is None:
        return None
    return lambda: proxydial.open_tunnel(proxy, host, port)


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
