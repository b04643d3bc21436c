"""tsh's one-shot HTTP server on 127.0.0.1 that a browser comes back to (`/callback`).

Single sign-on (`client.sso`) and the security-key browser flow (`client.keyflow`) both print a
link, then wait here for the browser to bring the answer. What is shared: listening on
127.0.0.1 port 0, answering only the exact address tsh printed (a page on another site that
resolves its name to 127.0.0.1, DNS rebinding, sends its own Host), text-only pages with a
`default-src 'none'` policy, only the first valid answer counting, and the timeout. What an
answer looks like is each flow's `_read`.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Mapping
from datetime import timedelta
from typing import Generic, Self, TypeVar

from aiohttp import web

from teleport.errors import AccessDenied, TeleportError
from teleport.utils.duration import format_duration

#: How long tsh waits for the browser to come back, as Teleport's tsh.
LOGIN_TIMEOUT = 180.0
#: The longest `?error=` message shown; the rest is cut.
MAX_ERROR = 300
#: Answers carry certificates or key attestations in the URL, longer than aiohttp's 8 KiB line.
_MAX_LINE = 64 * 1024
_CSP = "default-src 'none'"

T = TypeVar("T")


class NotOurs(Exception):
    """An answer not meant for this tsh (wrong key or state): refused, tsh keeps waiting."""


def page(title: str, message: str) -> str:
    """The small page the browser shows at the callback: text only, escaped, no script."""
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(message)}</p></body></html>")


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line[:MAX_ERROR] + ("..." if len(line) > MAX_ERROR else "")


class LocalCallback(Generic[T]):
    """Listen on 127.0.0.1 until the browser brings one valid answer to `/callback`.

    Use as an async context manager, then `wait()`. Subclasses say how an answer reads
    (`_read`: NotOurs keeps waiting, a TeleportError ends the login with its message) and may
    add routes (`_routes`).
    """

    #: What the browser shows once the answer is taken.
    done_message = "Login successful, you may close this window."
    done_title = "Login successful"

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._done: asyncio.Future[T] | None = None

    async def __aenter__(self) -> Self:
        self._done = asyncio.get_running_loop().create_future()
        app = web.Application()
        self._routes(app)
        app.router.add_get("/callback", self._callback)
        self._runner = web.AppRunner(app, access_log=None, max_line_size=_MAX_LINE,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening; a wait still pending fails."""
        if self._done is not None and not self._done.done():
            self._done.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def callback_url(self) -> str:
        """Where the browser comes back with the answer."""
        return f"http://127.0.0.1:{self._port}/callback"

    async def wait(self, within: float = LOGIN_TIMEOUT) -> T:
        """Wait for the first valid answer; AccessDenied with the flow's error, or on timeout."""
        assert self._done is not None, "use the callback server as an async context manager"
        try:
            async with asyncio.timeout(within):
                return await asyncio.shield(self._done)
        except TimeoutError:
            raise AccessDenied(f"timed out after {format_duration(timedelta(seconds=within))} "
                               "waiting for the browser; run the command again") from None

    def _routes(self, app: web.Application) -> None:
        """Add the flow's own routes (none by default)."""

    def _read(self, query: Mapping[str, str]) -> T:
        raise NotImplementedError

    def _answer(self, status: int, title: str, message: str) -> web.Response:
        return web.Response(status=status, text=page(title, message), content_type="text/html",
                            charset="utf-8",
                            headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-store",
                                     "Referrer-Policy": "no-referrer"})

    def _refuse_host(self, request: web.Request) -> web.Response | None:
        if request.host != f"127.0.0.1:{self._port}":
            return self._answer(400, "Wrong address", "Open the link tsh printed.")
        return None

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refuse_host(request)) is not None:
            return refused
        done = self._done
        assert done is not None
        if done.done():
            return self._answer(409, "Already finished",
                                "tsh has already finished; you may close this window.")
        try:
            answer = self._read(request.query)
        except NotOurs as err:
            return self._answer(400, "Refused", f"{err} tsh is still waiting for its own.")
        except TeleportError as err:
            done.set_exception(err)
            return self._answer(err.http_status if err.http_status >= 400 else 403,
                                "Failed", str(err))
        done.set_result(answer)
        return self._answer(200, self.done_title, self.done_message)
