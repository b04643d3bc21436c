"""What both HTTPS listeners share (auth API on 3025, proxy web API on 3080): read deadlines,
no server banner, JSON-only state changes, strict JSON bodies and one JSON error middleware.

Deadlines: aiohttp arms its keep-alive timer when a connection is accepted and again after each
answer, and drops the connection if the timer fires before a whole request head has arrived. So
its `keepalive_timeout` is at once the header deadline (Go's ReadHeaderTimeout) and the idle
deadline; it stays above aiohttp's client keep-alive (15 s), so that our own clients let idle
connections go before the server closes them under a request. A body is read under its own
deadline, since the keep-alive timer stops once a request head has arrived.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from teleport.errors import BadParameter, LimitExceeded, NotFound, TeleportError, to_wire
from teleport.types.codec import first_error

if TYPE_CHECKING:
    from teleport.api.listing_models import Listing

log = logging.getLogger(__name__)

#: Methods a cross-site form can send; they must declare a JSON body to be served.
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Deeper bodies are refused: no request of ours nests more than a few levels.
MAX_DEPTH = 32

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Deadlines:
    """Seconds a client may take to send a request head, and then a JSON body."""

    headers: float = 20.0
    body: float = 30.0


DEFAULT_DEADLINES = Deadlines()
DEADLINES = web.AppKey("deadlines", Deadlines)


def make_app(*, component: str, max_body: int, deadlines: Deadlines) -> web.Application:
    """Return an application whose every failure is a one-line JSON error and no banner.

    `component` names the log an internal error points to ("proxy", "auth server").
    """
    app = web.Application(client_max_size=max_body,
                          middlewares=[_json_errors(component, max_body)])
    app[DEADLINES] = deadlines
    app.on_response_prepare.append(_drop_banner)
    return app


def make_runner(app: web.Application) -> web.AppRunner:
    """Return a runner that closes connections whose request head is late (see module doc)."""
    return web.AppRunner(app, access_log=None, keepalive_timeout=app[DEADLINES].headers,
                         logger=_ProtocolLog(logging.getLogger("aiohttp.server"), {}))


async def serve_accepted(runner: web.AppRunner, sock: socket.socket,
                         ssl_context: ssl.SSLContext | None, handshake_timeout: float) -> bool:
    """Serve a connection accepted elsewhere (a port's multiplexer, which paces handshakes per
    source) as the runner's own, TLS handshake first; once TLS is up, whether the peer
    presented a client certificate the context verified. The runner's cleanup ends it too."""
    if runner.server is None:  # cleaned up already
        sock.close()
        return False
    try:
        transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
            runner.server, sock, ssl=ssl_context,
            ssl_handshake_timeout=handshake_timeout if ssl_context is not None else None)
    except OSError as err:  # a failed or late handshake (TLS errors and timeouts are OSErrors)
        log.debug("TLS handshake failed: %s", err)
        sock.close()
        return False
    return bool(transport.get_extra_info("peercert"))


def json_answer(answer: BaseModel | Sequence[BaseModel] | Listing | Sequence[Listing]
                ) -> web.Response:
    """Answer with a wire model or listing (or a list of them) as JSON."""
    return web.json_response(to_jsonable_python(answer))


def require_json(request: web.Request) -> None:
    """Refuse (415) a body not declared JSON, so a cross-site form post can never be served."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=f"{request.method} {request.rel_url.raw_path} needs Content-Type: application/json")


async def read_json(request: web.Request) -> dict[str, Any]:
    """Read a JSON object body within the body deadline; any flaw is a one-line BadParameter."""
    require_json(request)
    try:
        if request.content.is_eof():
            # The whole body came with the head (a small one nearly always does): reading it
            # cannot wait, so no deadline is armed (a timer per request, a heartbeat's each).
            raw = await request.read()
        else:
            deadline = request.config_dict[DEADLINES].body
            try:
                async with asyncio.timeout(deadline):
                    raw = await request.read()
            except TimeoutError:
                raise web.HTTPRequestTimeout(
                    text=f"request body not received within {deadline:g} s") from None
    except web.RequestPayloadError:
        raise BadParameter("request body is malformed") from None
    return parse_json_object(raw)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object, refusing deep nesting, NaN/Infinity and text that is not Unicode."""
    try:
        # As json.loads decodes bytes, with one decoder for all (loads made one per call).
        body = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except RecursionError:
        raise BadParameter("request body is nested too deeply") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, over-long integers, constants
        raise BadParameter("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadParameter("request body must be a JSON object")
    _check_values(body)
    return body


def parse_model(model: type[Model], body: dict[str, Any]) -> Model:
    """Validate a body against a request model; a wrong field is a 400 that names it."""
    try:
        return model.model_validate(body)
    except ValidationError as err:
        field, message = first_error(err, "body")
        raise BadParameter(f"missing or invalid field {field!r}: {message.lower()}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _check_values(body: Any) -> None:
    """Walk a decoded body without recursion: bound the depth, refuse lone surrogates."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadParameter("request body is nested too deeply")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _check_text(value)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadParameter("request body has text that is not valid Unicode") from None


async def _drop_banner(request: web.Request, response: web.StreamResponse) -> None:
    """Say nothing about the server software (aiohttp names itself and its version)."""
    response.headers.popall("Server", None)


def _json_errors(component: str, max_body: int) -> Any:
    @web.middleware
    async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer every failure as one-line JSON, never a traceback or aiohttp's text."""
        try:
            return await handler(request)
        except TeleportError as err:
            return web.json_response(to_wire(err), status=err.http_status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _http_error(request, exc, max_body)
        except ConnectionError as exc:
            # The client went away (mid-body, or mid-stream): nobody is left to answer, and it
            # is no fault of ours. Re-raised, aiohttp would log it as an error with a traceback.
            log.debug("%s: %s %s: client gone: %s", component, request.method,
                      request.rel_url.raw_path, exc)
            return web.Response(status=400)
        except Exception:
            log.exception("%s: %s %s failed", component, request.method, request.rel_url.raw_path)
            return web.json_response(
                to_wire(TeleportError(f"internal error, see the {component} log")), status=500)

    return json_errors


def _http_error(request: web.Request, exc: web.HTTPException, max_body: int) -> web.Response:
    where = f"{request.method} {request.rel_url.raw_path}"
    refused: TeleportError
    if exc.status == 404:
        refused = NotFound(f"{where}: not found")
    elif exc.status == 413:
        refused = LimitExceeded(f"request body is larger than {max_body // 1024} KiB")
    elif exc.status in (408, 415) and exc.text:
        refused = BadParameter(exc.text)
    else:
        refused = BadParameter(f"{where}: {exc.reason.lower()}")
    response = web.json_response(to_wire(refused), status=exc.status)
    if exc.status == 408:
        response.force_close()  # the rest of a late body is not worth waiting for
    return response


class _ProtocolLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, with a malformed request logged as one line, not a traceback.

    Garbage on the port (scanners, fuzzers, TLS to a plain port) is the client's fault: it gets
    a 400 and the log a line; a traceback is kept for real faults.
    """

    def exception(self, msg: object, *args: object, exc_info: Any = True,
                  **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            reason = " ".join(str(exc_info.message).split())[:200]
            self.logger.info("%s: bad HTTP request: %s", str(msg) % args, reason)
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


__all__ = ["DEADLINES", "DEFAULT_DEADLINES", "STATE_CHANGING", "Deadlines", "json_answer", "make_app", "make_runner",
           "parse_json_object", "parse_model", "read_json", "require_json",
           "serve_accepted"]
