"""PAM for the node's sessions (`ssh_service.pam`): account check, session, environment.

As Teleport does, only the account and session stacks run (the certificate is the
authentication), for every shell, command and subsystem. Each session gets its own helper
process (`pamhelper.py`, ctypes over libpam) that opens the PAM session and holds it until the
session ends, for three reasons: a module that hangs can be killed with its whole process
tree after a bounded wait, without blocking the node's event loop; what modules do to their
process (limits, loginuid, signal handlers) stays out of the node; and if the node dies, the
helper's stdin closes and it still closes the session. What the modules set on the helper that a
shell inherits under sshd (limits, umask, loginuid, priority) comes back as `ProcessAttrs`, which
the session's child takes on before exec.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teleport.errors import AccessDenied
from teleport.events.emitter import AUTH
from teleport.srv.process import UNSET_LOGINUID, ProcessAttrs

if TYPE_CHECKING:
    from teleport.srv.session import NodeSession

log = logging.getLogger("teleport.node")

HELPER = Path(__file__).with_name("pamhelper.py")
#: How long the account and session stacks may take before the session is refused (a module
#: waiting on an unreachable directory server must not hold the user, or the node, forever).
OPEN_TIMEOUT_SECONDS = 10.0
#: How long closing may take before the helper and what it started are killed.
CLOSE_TIMEOUT_SECONDS = 10.0
#: The helper's whole environment: PAM modules see the PAM environment, never the node's.
HELPER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
#: The answer is one JSON line: environment and messages, bounded by the helper.
MAX_ANSWER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class PamService:
    """The node's PAM settings: which /etc/pam.d service its sessions go through."""

    service_name: str
    timeout: float = OPEN_TIMEOUT_SECONDS

    def warn_if_missing(self) -> None:
        """Say so at start when the service has no file: libpam would use `other` instead."""
        if not (Path("/etc/pam.d") / self.service_name).exists() and \
                not Path("/etc/pam.conf").exists():
            log.warning("PAM service %s has no file /etc/pam.d/%s: sessions go through the "
                        "'other' service", self.service_name, self.service_name)

    def begin(self, session: NodeSession) -> PamSession:
        """Open PAM in the background, then start the session or refuse it."""
        pam = PamSession(self, session.conn.node.spawn)
        session.conn.node.spawn(_open_then_start(session, pam), f"pam {session.sid}")
        return pam


@dataclass
class PamSession:
    """One session's PAM transaction, held open by its helper process."""

    service: PamService
    #: Runs the closing in the background, owned by the node (so its close() waits for it).
    spawn: Callable[[Coroutine[Any, Any, None], str], None]
    #: PAM's environment (pam_getenvlist) once open, for the session's child.
    env: dict[str, str] = field(default_factory=dict)
    #: What the modules said (pam_info, pam_error, pam_motd).
    messages: list[str] = field(default_factory=list)
    #: What the session modules set on their process (pam_limits, pam_umask, pam_loginuid).
    attrs: ProcessAttrs = field(default_factory=ProcessAttrs)
    proc: asyncio.subprocess.Process | None = None
    #: The session's child has started: client input goes to it, no longer held here.
    started: bool = False
    #: The session is over (or never started); PAM must close as soon as it is open.
    closed: bool = False
    _held: list[bytes] = field(default_factory=list)
    _held_eof: bool = False
    _released: bool = False

    def hold(self, session: NodeSession, data: bytes | None) -> bool:
        """Keep client input (None: end of file) that arrives before the child exists.

        The first piece pauses the channel, so the client's window, not our memory, holds the
        rest; asyncssh resumes reading right after `session_started`, so pausing sooner is undone.
        """
        if self.started:
            return False
        if data is None:
            self._held_eof = True
        else:
            self._held.append(data)
            if session.chan is not None:
                session.chan.pause_reading()
        return True

    def replay(self, session: NodeSession) -> None:
        """Hand what was held to the started session, then let input flow again."""
        self.started = True
        held, self._held = self._held, []
        for data in held:
            session.data_received(data, None)
        if self._held_eof:
            session.eof_received()
        if session.chan is not None:
            session.chan.resume_reading()

    async def open(self, login: str, env: dict[str, str], rhost: str) -> None:
        """Run the account stack and open the session; raise AccessDenied with PAM's reason."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", str(HELPER), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env=HELPER_ENV, cwd="/", start_new_session=True, limit=MAX_ANSWER_BYTES)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {"service": self.service.service_name, "login": login, "env": env,
                   "rhost": rhost, "tty": "ssh"}
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            line = await asyncio.wait_for(self.proc.stdout.readline(), self.service.timeout)
        except TimeoutError:
            self._kill()
            raise AccessDenied(f"PAM service {self.service.service_name} did not answer within "
                               f"{self.service.timeout:g}s: session refused") from None
        except (OSError, ValueError) as err:
            self._kill()
            raise AccessDenied(f"PAM failed: {err}") from None
        except asyncio.CancelledError:  # the node is stopping: nothing may hang on after it
            self._kill()
            raise
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self._kill()
            raise AccessDenied(f"PAM service {self.service.service_name} failed "
                               "(see the node's log)")
        self.messages = [str(m) for m in answer.get("messages", [])]
        if not answer.get("ok"):
            self._kill()
            detail = "; ".join(m.strip() for m in self.messages if m.strip())
            raise AccessDenied(str(answer.get("error", "PAM refused the session"))
                               + (f" ({detail})" if detail else ""))
        self.env = {str(k): str(v) for k, v in answer.get("env", {}).items()}
        self.attrs = parse_attrs(answer.get("process"))
        if self.closed:  # the session ended while PAM was opening
            self._release()

    def close(self) -> None:
        """End the PAM session once the session is over; never blocks the caller."""
        self.closed = True
        self._release()

    def _release(self) -> None:
        """Close the helper's stdin: it closes the PAM session and exits (killed if it hangs)."""
        if self._released or self.proc is None or self.proc.returncode is not None:
            return
        self._released = True
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.spawn(self._reap(), "pam close")

    async def _reap(self) -> None:
        # Cancelled (the node is stopping), the helper goes on closing the session on its own.
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("PAM service %s did not close a session within %gs: killed",
                        self.service.service_name, CLOSE_TIMEOUT_SECONDS)
            self._kill()
            await self.proc.wait()

    def _kill(self) -> None:
        """Kill the helper and every process it started: pam_exec's children leave its group."""
        if self.proc is not None and self.proc.returncode is None:
            kill_tree(self.proc.pid)


def parse_attrs(raw: Any) -> ProcessAttrs:
    """Read the helper's `process` answer, keeping only well-formed values this host knows."""
    if not isinstance(raw, dict):
        return ProcessAttrs()

    def number(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    limits = []
    raw_limits = raw.get("limits")
    for name, pair in (raw_limits.items() if isinstance(raw_limits, dict) else ()):
        which = getattr(resource, name, None) if str(name).startswith("RLIMIT_") else None
        if isinstance(which, int) and isinstance(pair, list) and len(pair) == 2 and \
                all(number(v) is not None for v in pair):
            limits.append((which, pair[0], pair[1]))
    umask = number(raw.get("umask"))
    loginuid = number(raw.get("loginuid"))
    nice = number(raw.get("nice"))
    return ProcessAttrs(
        limits=tuple(sorted(limits)),
        umask=umask if umask is not None and 0 <= umask <= 0o777 else None,
        loginuid=loginuid if loginuid is not None and 0 <= loginuid < UNSET_LOGINUID else None,
        nice=nice if nice is not None and -20 <= nice <= 19 else None)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants, frozen first so none escapes by forking."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    for child in reversed(_descendants(pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _descendants(root: int) -> list[int]:
    """Return the pids below root, parents before children (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                # the command name may hold spaces and parentheses: fields follow the last ')'
                ppid = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    queue = [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


async def _open_then_start(session: NodeSession, pam: PamSession) -> None:
    """Open PAM, then start the session with its environment; refuse it (audited) otherwise."""
    assert session.chan is not None
    identity = session.identity
    env = {"TELEPORT_USERNAME": identity.user, "TELEPORT_LOGIN": identity.login,
           "TELEPORT_ROLES": " ".join(identity.cert.roles)}
    rhost = str(session.chan.get_extra_info("peername")[0])
    try:
        await pam.open(identity.login, env, rhost)
    except AccessDenied as err:
        await session._audit(AUTH, success=False, error=str(err))
        if not pam.closed:
            session._abort(str(err))
        return
    if pam.closed:  # the client went away while PAM was opening
        return
    if pam.messages and session.chan.get_command() is None and \
            session.chan.get_subsystem() is None:
        # A shell shows what the session modules say (pam_motd); a command's output and a
        # subsystem's protocol (sftp) stay clean.
        text = "".join(m if m.endswith("\n") else m + "\n" for m in pam.messages)
        with contextlib.suppress(OSError):
            session.chan.write((text.replace("\n", "\r\n") if session.term else text).encode())
    session.session_started()
    pam.replay(session)
