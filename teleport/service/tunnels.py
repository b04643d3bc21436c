"""The node's reverse tunnels: one to every proxy, the node's only way in and to the auth API.

A node that joined through a proxy's web port opens no port. It dials the proxy's tunnel
address (through an HTTP CONNECT proxy when the environment names one), and keeps one tunnel
per proxy (`TunnelPool`): behind a round-robin balancer each dial lands on some proxy, and the
pool dials again until every proxy the auth server lists has a tunnel (one that lands on a
proxy it already has is closed). A tunnel that drops is dialled again with exponential
backoff and full jitter. Users reach the node's SSH server through any tunnel; the node's
own auth API calls go to a loopback relay (`AuthLoopback`) that opens a channel to the auth
server on any live tunnel, so heartbeats stop, and the node is listed offline, when every
tunnel is down.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncssh

from teleport.api import proxydial
from teleport.api.http import HTTPClient
from teleport.api.web_models import WebPing
from teleport.errors import BadParameter, ConnectionProblem, NotFound, TeleportError
from teleport.keys.tlsconfig import unverified_client_context
from teleport.metrics import TUNNEL_AGENTS
from teleport.sshutils import reversetunnel
from teleport.sshutils.reversetunnel import (
    AUTH_TARGET,
    NODE_LISTEN,
    TunnelClientConnection,
    TunnelCredentials,
)
from teleport.sshutils.splice import ChannelSplice, SpliceTCPSession
from teleport.utils.addr import HostPort, parse_addr
from teleport.utils.clock import Clock
from teleport.utils.supervisor import Supervisor
from teleport.utils.waits import wait_event

log = logging.getLogger("teleport.reversetunnel")

#: Full-jitter backoff between failed dials: a random wait in [0, min(CAP, BASE * 2**attempt)].
BACKOFF_BASE = 0.5
BACKOFF_CAP = 15.0
#: How often the pool asks the auth server which proxies exist.
PROXY_REFRESH = 5.0
#: How long an auth API call waits for a tunnel when none is up.
AUTH_WAIT = 4.0  # under the auth client's 5 s connect timeout
#: How long a proxy may take to accept the node's forward request.
FORWARD_TIMEOUT = 15.0
#: The tunnel port when a proxy's ping does not say (Teleport's default).
DEFAULT_TUNNEL_PORT = 3024


async def ping_proxy(addr: HostPort, wait: float = 10.0) -> WebPing:
    """Return the ping of the proxy whose web port is addr; raise why not (an HTTP proxy's
    refusal included, so the node's warning names it and its answer).

    Unverified TLS: the answer only says where the tunnel listens, and the tunnel itself
    accepts nothing but a proxy certificate of the cluster's host CA.
    """
    http = HTTPClient([addr], unverified_client_context(), peer="proxy", timeout=wait)
    try:
        return await http.call("GET", "/webapi/ping", answer=WebPing)
    finally:
        await http.close()


async def is_proxy(addr: HostPort, wait: float = 10.0) -> bool:
    """Tell a proxy's web port from an auth server's API port; raise when neither answers.

    Only an answer decides: an auth server says it has no `/webapi/ping` (NotFound). A timeout
    or an HTTP proxy's refusal raises, so a host never mistakes a proxy for an auth server
    and keeps addresses it cannot reach.
    """
    try:
        await ping_proxy(addr, wait)
    except NotFound:
        return False
    return True


async def tunnel_addr(proxy: HostPort) -> HostPort:
    """Ask the proxy at proxy (its web address) where its reverse tunnels listen."""
    try:
        ping = await ping_proxy(proxy)
    except TeleportError as err:
        raise ConnectionProblem(f"proxy {proxy} did not answer its ping: {err}") from None
    announced = ping.proxy.ssh.tunnel_public_addr
    if not announced:
        return HostPort(proxy.host, DEFAULT_TUNNEL_PORT)
    return parse_addr(announced, DEFAULT_TUNNEL_PORT)


class TunnelState(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class TunnelEvent(enum.StrEnum):
    DIAL = "dial"
    UP = "up"
    DOWN = "down"


_TRANSITIONS = {
    (TunnelState.DISCONNECTED, TunnelEvent.DIAL): TunnelState.CONNECTING,
    (TunnelState.CONNECTING, TunnelEvent.UP): TunnelState.CONNECTED,
    (TunnelState.CONNECTING, TunnelEvent.DOWN): TunnelState.DISCONNECTED,
    (TunnelState.CONNECTED, TunnelEvent.DOWN): TunnelState.DISCONNECTED,
}


def transition(state: TunnelState, event: TunnelEvent) -> TunnelState:
    """The one way a tunnel's state changes; anything else is a bug, said loudly."""
    try:
        return _TRANSITIONS[state, event]
    except KeyError:
        raise BadParameter(f"a {state} tunnel cannot go {event}") from None


def backoff(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before dial number `attempt` (0 first) after failures: full jitter."""
    return rand() * min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 30))


@dataclass
class Tunnel:
    """One dial and, once up, its connection to one proxy; counted by state while it lives."""

    state: TunnelState = TunnelState.DISCONNECTED
    conn: TunnelClientConnection | None = None
    proxy_uuid: str = ""

    def __post_init__(self) -> None:
        TUNNEL_AGENTS.labels(self.state.value).inc()

    def move(self, event: TunnelEvent) -> None:
        before = self.state
        self.state = transition(self.state, event)
        TUNNEL_AGENTS.labels(before.value).dec()
        TUNNEL_AGENTS.labels(self.state.value).inc()

    def end(self) -> None:
        """Go down (from wherever it is) and stop being counted: it is forgotten."""
        self.move(TunnelEvent.DOWN)
        TUNNEL_AGENTS.labels(self.state.value).dec()
        if self.conn is not None:
            self.conn.close()


class TunnelPool:
    """Keep a tunnel to every proxy; an async context manager whose `run` is supervised."""

    def __init__(self, locate: Callable[[], Awaitable[HostPort]], creds: TunnelCredentials,
                 clock: Clock,
                 serve_ssh: Callable[[socket.socket, tuple[str, int]], Awaitable[None]],
                 on_change: Callable[[int], None] | None = None,
                 listen: tuple[str, int] = NODE_LISTEN) -> None:
        #: What the proxies are asked to forward to us: a node's SSH server, or a leaf
        #: cluster's dialler (`teleport.sshutils.clusterdial.CLUSTER_LISTEN`).
        self.listen = listen
        #: Where to dial (the proxy's ping says), asked first and again after a failed dial.
        self.locate = locate
        self.addr: HostPort | None = None
        self.creds = creds
        self.clock = clock
        self.serve_ssh = serve_ssh
        #: Told the number of connected tunnels whenever it changes (readiness).
        self.on_change = on_change
        #: Connected tunnels by proxy host UUID.
        self.tunnels: dict[str, Tunnel] = {}
        #: The proxies the auth server lists; empty until first learned (then: want one).
        self.proxies: set[str] = set()
        self._changed = asyncio.Event()
        #: Set while at least one tunnel is up.
        self._up = asyncio.Event()
        #: Owns each tunnel's watcher (and the loopback relay's channel opens).
        self.tasks = Supervisor("reverse tunnels")
        for state in TunnelState:
            TUNNEL_AGENTS.labels(state.value)

    async def __aenter__(self) -> TunnelPool:
        await self.tasks.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def connected(self) -> list[TunnelClientConnection]:
        return [t.conn for t in self.tunnels.values() if t.conn is not None]

    def set_proxies(self, uuids: set[str]) -> None:
        """What the auth server says exists; a change wakes the dialler."""
        if uuids != self.proxies:
            self.proxies = uuids
            self._changed.set()

    def _missing(self) -> bool:
        if not self.tunnels:
            return True
        return bool(self.proxies - set(self.tunnels))

    async def run(self) -> None:
        """Dial until every known proxy has a tunnel, then wait for a change; forever."""
        attempt = 0
        while True:
            if not self._missing():
                self._changed.clear()
                await wait_event(self._changed, PROXY_REFRESH)
                continue
            if attempt:
                await asyncio.sleep(backoff(attempt))
            tunnel = Tunnel()
            tunnel.move(TunnelEvent.DIAL)
            try:
                tunnel.conn = await self._dial()
                tunnel.proxy_uuid = tunnel.conn.proxy_uuid
            except (OSError, TimeoutError, asyncssh.Error, TeleportError) as err:
                tunnel.end()
                log.warning("cannot open a reverse tunnel to %s: %s", self.addr or "the proxy",
                            str(err) or type(err).__name__)
                self.addr = None
                attempt += 1
                continue
            if tunnel.proxy_uuid in self.tunnels:
                # The balancer sent us to a proxy we already have: try again shortly.
                log.debug("landed on proxy %s again; %d of %d proxies have a tunnel",
                          tunnel.proxy_uuid, len(self.tunnels), len(self.proxies))
                tunnel.end()
                attempt += 1
                continue
            try:
                await asyncio.wait_for(tunnel.conn.create_server(self._accept, *self.listen),
                                       FORWARD_TIMEOUT)
            except (asyncssh.Error, OSError, TimeoutError) as err:
                log.warning("proxy %s refused to forward to this node: %s", tunnel.proxy_uuid,
                            str(err) or type(err).__name__)
                tunnel.end()
                attempt += 1
                continue
            attempt = 0
            tunnel.move(TunnelEvent.UP)
            self.tunnels[tunnel.proxy_uuid] = tunnel
            log.info("reverse tunnel to proxy %s via %s is up", tunnel.proxy_uuid, self.addr)
            self._notify()
            self.tasks.spawn(self._watch(tunnel), f"reverse tunnel {tunnel.proxy_uuid}")

    async def _dial(self) -> TunnelClientConnection:
        # Asked once, and again after a failed dial: a ping per dial would take a balancer
        # turn each time, so a round-robin balancer would send every dial to the same proxy.
        if self.addr is None:
            self.addr = await self.locate()
        host, port = self.addr.host, self.addr.port
        sock = await proxydial.dial_any(host, port)
        return await reversetunnel.connect(sock, self.creds, host=host, port=port,
                                           now=self.clock.now)

    async def _watch(self, tunnel: Tunnel) -> None:
        """Forget a tunnel once it closes and wake the dialler."""
        assert tunnel.conn is not None
        try:
            await tunnel.conn.wait_closed()
        finally:
            if self.tunnels.get(tunnel.proxy_uuid) is tunnel:
                del self.tunnels[tunnel.proxy_uuid]
            tunnel.end()
            log.warning("reverse tunnel to proxy %s is down", tunnel.proxy_uuid)
            self._notify()
            self._changed.set()

    def _notify(self) -> None:
        if self.tunnels:
            self._up.set()
        else:
            self._up.clear()
        if self.on_change is not None:
            self.on_change(len(self.tunnels))

    async def _accept(self, orig_host: str, orig_port: int) -> SpliceTCPSession:
        """Serve SSH on a channel the proxy opened for a user: the node's server, no port."""
        splice = ChannelSplice()
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        try:
            await self.serve_ssh(ours, (orig_host, orig_port))
        except BaseException:
            ours.close()
            theirs.close()
            raise
        await splice.attach(theirs)
        return SpliceTCPSession(splice)

    async def open_to_auth(self, splice: ChannelSplice) -> None:
        """Open a channel to the auth API on a live tunnel and splice it; abort when none.

        A call made while no tunnel is up (the first heartbeat at start, one after a proxy
        restart) waits a little for one rather than failing at once.
        """
        await wait_event(self._up, AUTH_WAIT)
        conns = self.connected()
        random.shuffle(conns)
        for conn in conns:
            try:
                await conn.create_connection(lambda: SpliceTCPSession(splice), *AUTH_TARGET)
                return
            except (asyncssh.Error, OSError) as err:
                log.debug("proxy refused a channel to the auth server: %s", err)
        splice.abort()

    async def close(self) -> None:
        for tunnel in list(self.tunnels.values()):
            if tunnel.conn is not None:
                tunnel.conn.close()
        await self.tasks.close()


class AuthLoopback:
    """A loopback port whose connections reach the auth API over the node's tunnels.

    The node's auth client (`teleport.api.http.HTTPClient`, mutual TLS checked against the
    auth server's name) dials it like any auth address; the TLS runs inside the channel, so
    neither this relay nor the proxy can read or alter it.
    """

    def __init__(self, pool: TunnelPool) -> None:
        self.pool = pool
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> AuthLoopback:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()

    @property
    def addr(self) -> HostPort:
        assert self._server is not None
        return HostPort("127.0.0.1", int(self._server.sockets[0].getsockname()[1]))

    def _accept(self) -> asyncio.Protocol:
        splice = ChannelSplice()

        def opened() -> None:
            if self.pool.tasks.spawn(self.pool.open_to_auth(splice), "auth relay") is None:
                splice.abort()  # closing down

        return splice.tcp_protocol(opened)
