"""The recording proxy (`auth_service.session_recording: proxy`): terminate SSH here and record.

In this mode a `direct-tcpip` channel or `proxy:` subsystem to a node is not spliced to the
node's port. The channel is spliced to one end of a socket pair instead, and on the other end
the proxy serves SSH itself: it shows the user a short-lived host certificate for the node's
names (from the auth server, which signs only for registered nodes), authenticates the user's
certificate as the node would, then logs in to the node with a short-lived copy of that
certificate for its own key and relays each session: terminal, environment, command, window
changes, data and exit status. Terminal sessions are recorded here and uploaded like a node's;
the node, seeing the same mode, records nothing and still audits the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, cast

import asyncssh

from teleport.config import sshalgos
from teleport.config.modes import records_at
from teleport.config.sshalgos import SSHAlgorithms
from teleport.errors import TeleportError
from teleport.events.emitter import PORT_FORWARD, Emitter, make_event
from teleport.sshutils import clientconn
from teleport.sshutils.auth import (
    CertAuthConnection,
    CertAuthServer,
    CertChecker,
    RevocationCheck,
    key_line,
    never_revoked,
)
from teleport.sshutils.flow import SESSION_PKTSIZE, WINDOW
from teleport.sshutils.listener import server_options
from teleport.sshutils.monitor import watch
from teleport.sshutils.recorder import Recordings, SessionRecorder
from teleport.sshutils.splice import ChannelSplice, SpliceTCPSession, _TCPSide
from teleport.sshutils.terminal import MAX_PIXELS, clamp_term_size
from teleport.types.resources import Server
from teleport.utils.clock import Clock
from teleport.utils.supervisor import Supervisor

log = logging.getLogger("teleport.proxy")

#: A node's host certificate is reused for this long (it is valid for five minutes).
HOST_CERT_REUSE = 180.0
#: Environment passed on to the node, as the node itself would accept it.
_ENV_PREFIXES = ("LC_",)
_ENV_NAMES = ("LANG", "TERM")


class ProxyCertSource(Protocol):
    """What the recording proxy needs from the auth client."""

    async def node_cert_for_proxy(self, node_id: str, public_key: str) -> str: ...

    async def user_cert_for_proxy(self, cert: str, public_key: str) -> str: ...


class RecordingProxy:
    """Serve SSH at the proxy for sessions recorded here."""

    def __init__(self, *, auth: ProxyCertSource, recordings: Recordings,
                 resolve_node: Callable[[str, int], Awaitable[Server]],
                 dial_node: Callable[[Server, tuple[str, int]], Awaitable[socket.socket]],
                 trusted_user_cas: Callable[[], Sequence[str]],
                 trusted_host_cas: Callable[[], Sequence[str]], emitter: Emitter,
                 clock: Clock, revoked: RevocationCheck | None = None,
                 algorithms: SSHAlgorithms = sshalgos.DEFAULT) -> None:
        self.auth = auth
        #: Offered to the user and to the node (teleport.yaml's `kex_algos`, ...).
        self.algorithms = algorithms
        self.recordings = recordings
        self.resolve_node = resolve_node
        #: A connected socket to the node: its address, or a channel on its reverse tunnel.
        self.dial_node = dial_node
        self.trusted_host_cas = trusted_host_cas
        self.checker = CertChecker(trusted_cas=trusted_user_cas, emitter=emitter, clock=clock,
                                   check_login=True, revoked=revoked or never_revoked)
        self._host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._host_certs: dict[str, tuple[str, float]] = {}
        #: Owns the relayed connections' work; an async context manager for that reason.
        self.tasks = Supervisor("recording proxy")

    async def __aenter__(self) -> RecordingProxy:
        await self.tasks.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel what relayed connections still run; nothing of ours is left afterwards."""
        await self.tasks.close()

    def active(self) -> bool:
        """Tell whether sessions are recorded at the proxy, as the auth server last said."""
        return records_at(self.recordings.mode) == "proxy"

    async def _host_cert(self, node_id: str) -> str:
        cached = self._host_certs.get(node_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        public = self._host_key.export_public_key().decode().strip()
        cert = await self.auth.node_cert_for_proxy(node_id, public)
        self._host_certs[node_id] = (cert, time.monotonic() + HOST_CERT_REUSE)
        return cert

    async def open(self, host: str, port: int) -> SpliceTCPSession:
        """Return a direct-tcpip session whose far end is an SSH server here, for the node."""
        splice = ChannelSplice()
        await self.attach(splice, host, port)
        return SpliceTCPSession(splice)

    async def attach(self, splice: ChannelSplice, host: str, port: int) -> None:
        """Connect a splice's far end to an SSH server here, standing in for the node."""
        node = await self.resolve_node(host, port)
        cert = await self._host_cert(node.metadata.name)
        options = server_options(host_private_key=self._host_key.export_private_key(),
                                 host_cert=cert, server_factory=lambda: RelayConnection(self, node),
                                 algorithms=self.algorithms)
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            await loop.create_connection(lambda: _RelayAuthConnection(loop, options), sock=ours)
            await loop.create_connection(lambda: _TCPSide(splice), sock=theirs)
        except BaseException:
            ours.close()
            theirs.close()
            raise


class _RelayAuthConnection(CertAuthConnection):
    """Keep the certificate the user proved, to have the auth server re-issue it for us."""

    async def validate_public_key(self, username: str, key_data: bytes,
                                  msg: bytes, signature: bytes) -> bool:
        ok = await super().validate_public_key(username, key_data, msg, signature)
        if ok and msg:
            cast(RelayConnection, self.get_owner()).presented = key_line(key_data)
        return ok


class RelayConnection(CertAuthServer):
    """The user's SSH connection, terminated at the proxy, and its one connection to the node."""

    def __init__(self, proxy: RecordingProxy, node: Server) -> None:
        super().__init__(proxy.checker)
        self.proxy = proxy
        self.node = node
        self.presented = ""
        self._upstream: asyncio.Future[asyncssh.SSHClientConnection] | None = None
        self._connecting: asyncio.Task[None] | None = None
        #: Refused `-R` and `-A` requests, told on the next session's stderr (they get no reason).
        self.notices: list[str] = []

    def auth_completed(self) -> None:
        # The user's own certificate is checked here: the node sees only our short-lived copy.
        self.spawn(watch(self, self.proxy.recordings.session_policy, self.checker.clock),
                   "monitor")

    def session_requested(self) -> tuple[asyncssh.SSHServerChannel[bytes], RelaySession]:
        assert self.conn is not None
        self.check_refusal()
        return self.conn.create_server_channel(encoding=None), RelaySession(self)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> bool:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
            "port forwarding is not available while sessions are recorded at the proxy")

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        """Refuse `-R`: its connections would start here, not on the node (not relayed yet)."""
        self._refuse(f"{listen_host}:{listen_port}", "remote port forwarding")
        return False

    async def agent_forwarding_requested(self) -> bool:
        """Refuse `-A`: the proxy logs in to the node with its own key (not relayed yet)."""
        self._refuse("agent", "agent forwarding")
        return False

    def _refuse(self, addr: str, what: str) -> None:
        reason = f"{what} is not available while sessions are recorded at the proxy"
        self.notices.append(reason)
        if self.identity is not None:
            event = make_event(PORT_FORWARD, self.checker.clock, user=self.identity.user,
                               login=self.identity.login, addr=addr, success=False, error=reason,
                               addr_remote=self.remote_addr(), addr_local=self.local_addr())
            self.spawn(self._emit(event), "audit port")

    async def _emit(self, event: dict[str, Any]) -> None:
        try:
            await self.checker.emitter.emit(event)
        except TeleportError as err:
            log.warning("cannot record port event: %s", err)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run this connection's work as a task of the recording proxy."""
        self.proxy.tasks.spawn(coro, f"{name} {self.node.spec.hostname}")

    def upstream(self) -> Awaitable[asyncssh.SSHClientConnection]:
        """Log in to the node as the user, once per connection."""
        if self._upstream is None:
            self._upstream = asyncio.get_running_loop().create_future()
            self._connecting = self.proxy.tasks.spawn(self._connect_into(self._upstream),
                                                      f"relay login {self.node.spec.hostname}")
        return asyncio.shield(self._upstream)

    async def _connect_into(self, result: asyncio.Future[asyncssh.SSHClientConnection]) -> None:
        """Hand the login's outcome to every session waiting for it; close it if none is left."""
        try:
            conn = await self._connect()
        except Exception as err:
            if not result.done():
                result.set_exception(err)
                result.exception()  # retrieved: sessions that wait for it report it themselves
            return
        except asyncio.CancelledError:
            result.cancel()
            raise
        if result.done():  # the user hung up meanwhile
            conn.close()
        else:
            result.set_result(conn)

    async def _connect(self) -> asyncssh.SSHClientConnection:
        assert self.identity is not None
        key = asyncssh.generate_private_key("ssh-ed25519")
        cert = await self.proxy.auth.user_cert_for_proxy(
            self.presented, key.export_public_key().decode().strip())
        host_cas = [asyncssh.import_public_key(k) for k in self.proxy.trusted_host_cas()]
        options = asyncssh.SSHClientConnectionOptions(
            username=self.identity.login, client_keys=[(key, asyncssh.import_certificate(cert))],
            known_hosts=([], host_cas, []), host_key_alias=self.node.metadata.name,
            agent_path=None, config=None, connect_timeout=15, preferred_auth=["publickey"],
            window=WINDOW, max_pktsize=SESSION_PKTSIZE,
            **sshalgos.asyncssh_kwargs(self.proxy.algorithms, "client"))
        sock = await self.proxy.dial_node(self.node, self.peer())  # the user's address too
        # As tsh's hops: no empty MSG_IGNORE per packet, a loop turn's packets in one write.
        return await clientconn.connect(self.node.metadata.name, 22, options=options, sock=sock)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        upstream = self._upstream
        if upstream is None:
            return
        if upstream.done() and not upstream.cancelled() and upstream.exception() is None:
            upstream.result().close()
        else:
            upstream.cancel()
            if self._connecting is not None:
                self._connecting.cancel()


def _clamped(cols: int, rows: int, px_width: int, px_height: int) -> tuple[int, int, int, int]:
    """Bound a window size as the node does, so the recording holds the size the node used."""
    return (*clamp_term_size(cols, rows), min(px_width, MAX_PIXELS), min(px_height, MAX_PIXELS))


def _accepted_env(env: Any) -> dict[bytes | str, bytes | str]:
    return {k: v for k, v in dict(env).items()
            if isinstance(k, str) and isinstance(v, str)
            and (k in _ENV_NAMES or k.startswith(_ENV_PREFIXES))}


class RelaySession(asyncssh.SSHServerSession[bytes]):
    """One session channel from the user, relayed to a session channel on the node."""

    def __init__(self, conn: RelayConnection) -> None:
        self.conn = conn
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.upstream: asyncssh.SSHClientChannel[bytes] | None = None
        self.term: str | None = None
        self.size: tuple[int, int, int, int] = (80, 24, 0, 0)
        self.modes: Any = {}
        self.command: str | None = None
        self.subsystem: str | None = None
        self.recorder: SessionRecorder | None = None
        self.status: int | None = None
        self.signal: tuple[str, bool, str, str] | None = None
        self._early: list[bytes] = []
        self._eof = False
        self._done = False

    # --- the user's side ----------------------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int],
                      term_modes: Any) -> bool:
        self.term, self.size, self.modes = term_type, _clamped(*term_size), term_modes
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self.subsystem = subsystem
        return True

    def session_started(self) -> None:
        assert self.chan is not None
        for notice in self.conn.notices:
            self.chan.write_stderr(f"teleport: {notice}\r\n".encode())
        self.conn.notices.clear()
        self.conn.spawn(self._start(), "relay session")

    async def _start(self) -> None:
        assert self.chan is not None and self.conn.identity is not None
        node = self.conn.node
        try:
            upstream = await self.conn.upstream()
            chan, _ = await upstream.create_session(
                lambda: UpstreamSession(self), self.command, subsystem=self.subsystem,
                env=_accepted_env(self.chan.get_environment()), term_type=self.term,
                term_size=self.size if self.term else None,
                term_modes=self.modes if self.term else None, encoding=None)
        except (asyncssh.Error, OSError, TeleportError) as err:
            reason = getattr(err, "reason", "") or str(err) or type(err).__name__
            if isinstance(err, asyncssh.PermissionDenied):
                reason = f"access denied to {self.conn.identity.login}"
            log.info("cannot relay session to %s: %s", node.spec.hostname, reason)
            self._fail(f"teleport: cannot reach {node.spec.hostname}: {reason}\r\n")
            return
        except asyncio.CancelledError:
            return
        if self._done:
            chan.close()
            return
        self.upstream = chan
        if self.term is not None:
            self.recorder = self.conn.proxy.recordings.start(
                str(uuid.uuid4()), on_failure=self._recording_failed,
                user=self.conn.identity.user, login=self.conn.identity.login,
                server_id=node.metadata.name, server_hostname=node.spec.hostname,
                size=f"{self.size[0]}:{self.size[1]}")
        for data in self._early:
            self._input(data)
        self._early.clear()
        if self._eof:
            chan.write_eof()

    def _recording_failed(self, reason: str) -> None:
        """End a session a sync mode cannot record: it does not go on unrecorded."""
        if self.upstream is not None:
            self.upstream.close()
        self._fail(f"\r\nteleport: {reason}\r\n")

    def _fail(self, message: str) -> None:
        if self.chan is None or self._done:
            return
        with contextlib.suppress(OSError):
            self.chan.write_stderr(message.encode())
            self.chan.exit(1)

    def _input(self, data: bytes) -> None:
        assert self.upstream is not None
        if self.recorder is not None:
            self.recorder.input(data)
        self.upstream.write(data)

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self.upstream is None:
            self._early.append(data)
        else:
            self._input(data)

    def eof_received(self) -> bool:
        self._eof = True
        if self.upstream is not None:
            self.upstream.write_eof()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int,
                              pixheight: int) -> None:
        self.size = _clamped(width, height, pixwidth, pixheight)
        if self.upstream is not None:
            self.upstream.change_terminal_size(*self.size)
        if self.recorder is not None:
            self.recorder.resize(*self.size[:2])

    def signal_received(self, signal: str) -> None:
        if self.upstream is not None:
            self.upstream.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self.upstream is not None:
            self.upstream.send_break(msec)
        return True

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._done = True
        if self.upstream is not None:
            self.upstream.close()
        self._close_recorder()

    def _close_recorder(self) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            self.conn.spawn(recorder.close(), "finish recording")

    # --- the node's side ----------------------------------------------------------------------

    def output(self, data: bytes, datatype: int | None) -> None:
        if self.chan is None or self._done:
            return
        if self.recorder is not None:
            self.recorder.output(data)
        try:
            if datatype == asyncssh.EXTENDED_DATA_STDERR:
                self.chan.write_stderr(data)
            else:
                self.chan.write(data)
        except OSError:
            pass

    def finish(self) -> None:
        """The node closed the session: pass its exit status on and close the channel."""
        self._close_recorder()
        if self.chan is None or self._done:
            return
        with contextlib.suppress(OSError):
            if self.signal is not None:
                self.chan.exit_with_signal(*self.signal)
            elif self.status is not None:
                self.chan.exit(self.status)
            else:
                self.chan.close()


class UpstreamSession(asyncssh.SSHClientSession[bytes]):
    """The node's side of a relayed session."""

    def __init__(self, relay: RelaySession) -> None:
        self.relay = relay

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.relay.output(data, datatype)

    def eof_received(self) -> bool:
        if self.relay.chan is not None and not self.relay._done:
            with contextlib.suppress(OSError):
                self.relay.chan.write_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.relay.status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.relay.signal = (signal, core_dumped, msg, lang)

    def pause_writing(self) -> None:
        if self.relay.chan is not None:
            self.relay.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.relay.chan is not None:
            self.relay.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.finish()

