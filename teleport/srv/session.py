"""One SSH session channel on the node: a login shell or a command, with or without a PTY."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import uuid
from typing import TYPE_CHECKING, Any

import asyncssh

from teleport.errors import AccessDenied, NotFound, TeleportError
from teleport.events.emitter import (
    AUTH,
    EXEC,
    RESIZE,
    SCP,
    SESSION_END,
    SESSION_START,
    SUBSYSTEM,
)
from teleport.srv.pam import PamSession
from teleport.srv.party import JOIN_ENV, LiveSession
from teleport.srv.process import (
    Child,
    OSLogin,
    Pty,
    accepted_env,
    login_env,
    lookup_login,
)
from teleport.srv.scp import parse_scp
from teleport.srv.sftp import SFTPAudit
from teleport.sshutils.auth import Identity
from teleport.sshutils.fdio import (
    PIPE_READ_SIZE,
    ChannelInput,
    FdReader,
    FdWriter,
    widen_pipe,
)
from teleport.sshutils.recorder import SessionRecorder
from teleport.sshutils.terminal import clamp_term_size

if TYPE_CHECKING:
    from teleport.srv.server import NodeConnection

log = logging.getLogger("teleport.node")

#: Output quiet for this long after the shell exited belongs to jobs it left behind.
EXIT_DRAIN_SECONDS = 1.0
#: How long a session that cannot be recorded has to end on its hang-up before it is killed.
UNRECORDED_GRACE_SECONDS = 2.0
#: Send buffer above which we stop reading the child's output until the client catches up.
SEND_HIGH_WATER = 256 * 1024


class NodeSession(asyncssh.SSHServerSession[bytes]):
    """Bridge one channel to one child process, flow-controlled in both directions."""

    def __init__(self, conn: NodeConnection, identity: Identity) -> None:
        self.conn = conn
        self.identity = identity
        self.sid = str(uuid.uuid4())
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.term: str | None = None
        self.size = (80, 24)
        self.command: str | None = None
        self.pty: Pty | None = None
        self.child: Child | None = None
        self.stdin: FdWriter | None = None
        #: Bytes the client sent to stdin: what an scp upload moved.
        self.received = 0
        self.readers: list[FdReader] = []
        self._fds: list[int] = []
        self.recorder: SessionRecorder | None = None
        #: The terminal this session owns, which others may join (PTY sessions only).
        self.live: LiveSession | None = None
        #: The other session this channel has joined instead of starting a shell.
        self.joined: LiveSession | None = None
        #: What this channel's `sftp` subsystem does, audited (teleport.srv.sftp).
        self.sftp: SFTPAudit | None = None
        #: This session's PAM transaction, when the node runs sessions through PAM.
        self.pam: PamSession | None = None

    # --- requests, before the session starts -------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan
        chan.set_write_buffer_limits(high=SEND_HIGH_WATER)

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int],
                      term_modes: Any) -> bool:
        if "pty" not in self.identity.permissions:
            return False
        self.term = term_type
        self.size = clamp_term_size(term_size[0], term_size[1])
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self.sftp = SFTPAudit(self._sftp_event)
        self.term = None  # a binary protocol: never through a terminal, never recorded as bytes
        return True

    def _sftp_event(self, event_type: str, fields: dict[str, Any]) -> None:
        self.conn.node.spawn(self._audit(event_type, **fields), f"sftp audit {self.sid}")

    # --- running --------------------------------------------------------------------------------

    def session_started(self) -> None:
        """Start the child now, synchronously, so no client data arrives before its stdin exists."""
        assert self.chan is not None
        for notice in self.conn.forwarding.take_notices():  # refused -A or -R, said once
            self.chan.write_stderr(f"teleport: {notice}\r\n".encode())
        if self.command is None and self.sftp is None and JOIN_ENV in self.chan.get_environment():
            self._join(self.chan.get_environment()[JOIN_ENV])
            return
        if self.pam is None and self.conn.node.pam is not None:
            # PAM first (teleport.srv.pam), off the loop; it calls back here once open.
            self.pam = self.conn.node.pam.begin(self)
            return
        try:
            login = lookup_login(self.identity.login)
            self._spawn(login)
        except Exception as err:
            if isinstance(err, TeleportError):
                message = str(err)
            elif isinstance(err, OSError):
                message = f"cannot start {self.identity.login}'s shell: {err.strerror or err}"
                log.warning("session %s of %s: %s", self.sid, self.identity.user, message)
            else:
                log.exception("session %s of %s failed to start", self.sid, self.identity.user)
                message = "the node could not start the session (see its log)"
            self._abort(message)
            return
        assert self.child is not None
        self.conn.node.children.add(self.child)
        self.conn.node.spawn(self._run(), f"session {self.sid}")

    def _abort(self, message: str) -> None:
        """Undo a session that failed to start: stop its child, release what it opened, say why."""
        assert self.chan is not None
        if self.child is not None:
            self.child.signal(signal.SIGKILL)
        if self.live is not None:
            self.conn.node.spawn(self.live.end(-signal.SIGKILL), f"abort {self.sid}")
        if self.recorder is not None:
            self.conn.node.spawn(self.recorder.close(), f"abort recording {self.sid}")
        self._cleanup()
        self.chan.write_stderr(f"teleport: {message}\r\n".encode())
        self.chan.exit(1)

    def _join(self, sid: str) -> None:
        """Attach this channel to a live session on this node (see `teleport.srv.party`)."""
        assert self.chan is not None
        try:
            live = self.conn.node.live.get(sid)
            if live is None:
                raise NotFound(f"session {sid} is not running on this node")
            live.join(self)
        except TeleportError as err:
            if isinstance(err, AccessDenied):  # every refusal is audited, with the rule
                self.conn.node.spawn(self.conn.node.audit(
                    AUTH, user=self.identity.user, login=self.identity.login, success=False,
                    error=str(err), sid=sid, addr_remote=self.conn.remote_addr()),
                    f"join refused {sid}")
            self.chan.write_stderr(f"teleport: {err}\r\n".encode())
            self.chan.exit(1)

    def _spawn(self, login: OSLogin) -> None:
        assert self.chan is not None
        env = self._env(login)
        shell = login.shell
        if self.sftp is not None:  # the server itself, as the login, not through its shell
            shell = self.sftp.start(login)
            argv = [os.path.basename(shell)]
        elif self.command is None:
            argv = ["-" + os.path.basename(shell)]  # a login shell reads the profile files
        else:
            argv = [os.path.basename(shell), "-c", self.command]
        if self.term is not None:
            self.pty = Pty(login, *self.size)
            env["SSH_TTY"] = self.pty.name
            self._fds.append(self.pty.master)
            try:
                self.child = Child(argv, executable=shell, login=login, env=env, stdin=self.pty.slave,
                                   stdout=self.pty.slave, stderr=self.pty.slave, tty=True,
                                   attrs=self.pam.attrs if self.pam is not None else None)
            finally:
                self.pty.close_slave()
            master = self.pty.master
            flow = ChannelInput(self.chan)
            self.stdin = FdWriter(master, pause=flow.pause, resume=flow.resume, close_fd=False)
            self.readers = [FdReader(master, self._output)]
            self._record()
            self.live = LiveSession(self)
        else:
            child_ends: list[int] = []  # closed here once the child has its copies
            in_w = -1
            try:
                in_r, in_w = os.pipe()
                child_ends.append(in_r)
                out_r, out_w = os.pipe()
                widen_pipe(out_r)
                self._fds.append(out_r)
                child_ends.append(out_w)
                err_r, err_w = os.pipe()
                self._fds.append(err_r)
                child_ends.append(err_w)
                self.child = Child(argv, executable=shell, login=login, env=env, stdin=in_r,
                                   stdout=out_w, stderr=err_w, tty=False,
                                   attrs=self.pam.attrs if self.pam is not None else None)
            except BaseException:
                if in_w >= 0:
                    os.close(in_w)
                raise
            finally:
                for fd in child_ends:
                    os.close(fd)
            flow = ChannelInput(self.chan)
            self.stdin = FdWriter(in_w, pause=flow.pause, resume=flow.resume)
            self.readers = [FdReader(out_r, self._output, PIPE_READ_SIZE),
                            FdReader(err_r, self._errors)]
        for reader in self.readers:
            reader.start()

    def _record(self) -> None:
        """Start recording this terminal session if the node records sessions."""
        node = self.conn.node
        if node.recordings is not None:
            self.recorder = node.recordings.start(
                self.sid, on_failure=self._recording_failed,
                user=self.identity.user, login=self.identity.login,
                server_id=node.server_id, server_hostname=node.nodename,
                size=f"{self.size[0]}:{self.size[1]}")

    def _recording_failed(self, reason: str) -> None:
        """End a session a sync mode cannot record: it does not go on unrecorded.

        A hang-up first, so the shell ends as when its terminal closes; what is still running
        after `UNRECORDED_GRACE_SECONDS` (a shell that ignores SIGHUP, `trap '' HUP`) is killed.
        """
        if self.chan is not None:
            with contextlib.suppress(OSError):
                self.chan.write_stderr(f"\r\nteleport: {reason}\r\n".encode())
        if self.child is not None:
            self.child.hang_up()
            self.conn.node.spawn(self._kill_unrecorded(self.child), f"unrecorded {self.sid}")

    @staticmethod
    async def _kill_unrecorded(child: Child) -> None:
        await asyncio.sleep(UNRECORDED_GRACE_SECONDS)
        child.signal(signal.SIGKILL)  # a no-op once it has exited

    def _env(self, login: OSLogin) -> dict[str, str]:
        assert self.chan is not None
        node = self.conn.node
        peer_host, peer_port = self.chan.get_extra_info("peername")[:2]
        local_host, local_port = self.chan.get_extra_info("sockname")[:2]
        env = login_env(login)
        if self.pam is not None:
            env.update(self.pam.env)  # as sshd: PAM's environment, under the client's and ours
        env.update(accepted_env(self.chan.get_environment()))
        if self.term is not None:
            env["TERM"] = self.term
        if (agent := self.conn.forwarding.agent_path) is not None:
            env["SSH_AUTH_SOCK"] = agent
        env.update({
            "SSH_CLIENT": f"{peer_host} {peer_port} {local_port}",
            "SSH_CONNECTION": f"{peer_host} {peer_port} {local_host} {local_port}",
            "SSH_TELEPORT_USER": self.identity.user,
            "SSH_SESSION_ID": self.sid,
            "SSH_SESSION_WEBPROXY_ADDR": node.proxy_addr(),
            "SSH_TELEPORT_HOST_UUID": node.server_id,
            "SSH_TELEPORT_CLUSTER_NAME": node.cluster_name,
        })
        return env

    async def _run(self) -> None:
        """Audit the start, wait for the child and its output, audit the end, report the exit."""
        assert self.child is not None and self.chan is not None
        if self.sftp is not None:
            await self._audit(SUBSYSTEM, name="sftp")
        elif self.command is None:
            await self._audit(SESSION_START)
        try:
            code = await self.child.wait()
        finally:
            self.conn.node.children.discard(self.child)
        await self._drain_output()
        self._cleanup()
        if self.recorder is not None:
            await self.recorder.close()
        if self.live is not None:
            await self.live.end(code)
        if self.sftp is not None:
            self.sftp.finish()
        elif self.command is None:
            await self._audit(SESSION_END)
        else:
            error = "" if code == 0 else \
                f"exit status {code}" if code > 0 else f"signal: {_signal_name(-code)}"
            await self._audit(EXEC, command=self.command, exitCode=code, exitError=error)
            scp = parse_scp(self.command)
            if scp is not None:
                moved = self.received if scp.action == "write" else sum(r.total for r in self.readers)
                await self._audit(SCP, path=scp.path, len=moved, action=scp.action)
        if code >= 0:
            self.chan.exit(code)
        else:
            self.chan.exit_with_signal(_signal_name(-code))

    async def _drain_output(self) -> None:
        """Forward output until it ends or goes quiet: jobs left behind may hold it open forever."""
        while pending := [r.done for r in self.readers if not r.done.done()]:
            before = sum(r.total for r in self.readers)
            await asyncio.wait(pending, timeout=EXIT_DRAIN_SECONDS)
            flowing = sum(r.total for r in self.readers) != before
            if not flowing and not any(r.paused for r in self.readers):
                return

    async def _audit(self, event_type: str, **fields: Any) -> None:
        assert self.chan is not None
        if self.pty is not None:
            fields["size"] = f"{self.size[0]}:{self.size[1]}"
        await self.conn.node.audit(event_type, user=self.identity.user, login=self.identity.login,
                                   sid=self.sid, addr_local=self.conn.local_addr(),
                                   addr_remote=self.conn.remote_addr(), **fields)

    # --- data both ways -------------------------------------------------------------------------

    def _output(self, data: bytes) -> None:
        if self.sftp is not None:
            self.sftp.from_server(data)
        if self.recorder is not None:
            self.recorder.output(data)
        self._send(data, None)
        if self.live is not None:
            self.live.output(data)

    def _errors(self, data: bytes) -> None:
        self._send(data, asyncssh.EXTENDED_DATA_STDERR)

    def _send(self, data: bytes, datatype: int | None) -> None:
        assert self.chan is not None
        try:
            self.chan.write(data, datatype)
        except (BrokenPipeError, OSError):
            for reader in self.readers:
                reader.close()

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.conn.touch()
        if self.pam is not None and self.pam.hold(self, data):  # until PAM has opened
            return
        if self.joined is not None:
            self.joined.input(data)
        elif self.stdin is not None:
            self.received += len(data)
            if self.sftp is not None:
                self.sftp.from_client(data)
            if self.recorder is not None:
                self.recorder.input(data)
            self.stdin.write(data)

    def eof_received(self) -> bool:
        if self.pam is not None and self.pam.hold(self, None):
            return True
        # A terminal has no end of file to pass on; a pipe closes once written out.
        if self.stdin is not None and self.pty is None:
            self.stdin.close_when_drained()
        return True

    def pause_writing(self) -> None:
        for reader in self.readers:
            reader.pause()

    def resume_writing(self) -> None:
        for reader in self.readers:
            reader.resume()

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self.pty is None or self.child is None or not self.child.running:
            return
        self.size = clamp_term_size(width, height)
        try:
            self.pty.resize(width, height, pixwidth, pixheight)
        except OSError as err:  # the terminal is closing; the session ends on its own
            log.debug("session %s: cannot resize: %s", self.sid, err)
            return
        if self.recorder is not None:
            self.recorder.resize(*self.size)
        self.conn.node.spawn(self._audit(RESIZE), f"resize {self.sid}")

    def signal_received(self, signal_name: str) -> None:
        signum = getattr(signal.Signals, "SIG" + signal_name, None)
        if self.child is not None and signum is not None:
            self.child.signal(signum)

    def break_received(self, msec: int) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The client is gone: hang up the child and stop moving its data."""
        if self.joined is not None:
            self.joined.leave(self)
        if self.child is not None:
            self.child.hang_up()
        self._cleanup()

    def _cleanup(self) -> None:
        for reader in self.readers:
            reader.close()
        if self.stdin is not None:
            self.stdin.close()
        if self.pty is not None:
            self.pty.close_slave()
        while self._fds:
            os.close(self._fds.pop())
        if self.pam is not None:
            self.pam.close()


def _signal_name(signum: int) -> str:
    """Name a signal as SSH's exit-signal does: `TERM`, `KILL`, ..."""
    try:
        return signal.Signals(signum).name.removeprefix("SIG")
    except ValueError:
        return str(signum)
