"""A round-robin TCP load balancer for tests of several proxies (issue 12), in a few lines of asyncio.

It behaves like haproxy in TCP mode with health checks: each new connection goes to the next
backend in turn, and a backend that refuses is passed over for the one after it. It runs its own
event loop in a thread because e2e tests are synchronous.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

#: How long a backend may take to accept before it counts as down (a refusal is instant).
CONNECT_TIMEOUT = 5.0


class RoundRobin:
    """Forward each connection to listen_host:port to the next backend that accepts it.

    backends may be changed between connections (assign a new list), e.g. to add proxies once
    their port-0 ports are known after the balancer's own port went into their public_addr.
    """

    def __init__(self, backends: list[tuple[str, int]], listen_host: str = "127.0.0.1") -> None:
        self.backends = list(backends)
        self.listen_host = listen_host
        #: The bound port, set by start().
        self.port = 0
        #: The backend each forwarded connection went to, in order (for assertions).
        self.chosen: list[tuple[str, int]] = []
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> RoundRobin:
        """Listen on port 0 of listen_host; return once the port is bound."""
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"balancer-{self.listen_host}")
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, self.listen_host, 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop listening, cut every forwarded connection and end the loop's thread."""
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None
        self._loop.close()

    def __enter__(self) -> RoundRobin:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Open a connection to the next backend in turn, passing over those that refuse."""
        backends = list(self.backends)
        if not backends:
            return None
        first = self._next % len(backends)
        self._next = first + 1
        for i in range(len(backends)):
            backend = backends[(first + i) % len(backends)]
            try:
                streams = await asyncio.wait_for(asyncio.open_connection(*backend),
                                                 CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                continue
            self.chosen.append(backend)
            return streams
        return None

    async def _handle(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            streams = await self._connect()
            if streams is None:  # every backend down: close, as haproxy does
                return
            backend_r, backend_w = streams
            try:
                await asyncio.gather(self._pipe(client_r, backend_w),
                                     self._pipe(backend_r, client_w))
            finally:
                backend_w.close()
        finally:
            client_w.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy reader to writer; pass the end of input on as a half close, a reset as a reset.

        Aborting on an error also ends the opposite copy, which reads from writer's socket.
        """
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            writer.transport.abort()
