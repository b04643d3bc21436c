"""Start a login's shell or command on this host, as that OS user, with or without a PTY."""

from __future__ import annotations

import asyncio
import fcntl
import grp
import json
import os
import pwd
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Mapping
from dataclasses import dataclass

from teleport.errors import AccessDenied, NotFound
from teleport.sshutils.terminal import MAX_PIXELS, clamp_term_size

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Client `env` requests we honour; anything else could change how the login's shell behaves.
ACCEPTED_ENV_PREFIXES = ("LC_",)
ACCEPTED_ENV = frozenset({"LANG", "TERM"})
@dataclass(frozen=True)
class OSLogin:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str


def lookup_login(login: str) -> OSLogin:
    """Return the OS account to run as, or raise with the message the user will see."""
    try:
        pw = pwd.getpwnam(login)
    except KeyError:
        raise NotFound(f"cannot run as {login}: no such user on this node") from None
    if os.geteuid() != 0 and pw.pw_uid != os.geteuid():
        raise AccessDenied(f"cannot run as {login}: node is not running as root")
    return OSLogin(name=pw.pw_name, uid=pw.pw_uid, gid=pw.pw_gid,
                   groups=tuple(os.getgrouplist(pw.pw_name, pw.pw_gid)),
                   home=pw.pw_dir or "/", shell=pw.pw_shell or "/bin/sh")


def login_env(login: OSLogin) -> dict[str, str]:
    """Return the environment every session of this login starts from."""
    return {"USER": login.name, "LOGNAME": login.name, "HOME": login.home,
            "SHELL": login.shell, "PATH": DEFAULT_PATH}


def accepted_env(requested: Mapping[str, str]) -> dict[str, str]:
    """Keep only the locale and terminal variables a client asked for."""
    return {k: v for k, v in requested.items()
            if k in ACCEPTED_ENV or k.startswith(ACCEPTED_ENV_PREFIXES)}


class Pty:
    """A pseudo-terminal pair; the master stays with us, the slave goes to the child."""

    def __init__(self, login: OSLogin, cols: int, rows: int) -> None:
        self.master, self.slave = os.openpty()
        try:
            self.name = os.ttyname(self.slave)
            if os.geteuid() == 0:
                # As sshd does: the terminal belongs to the user, writable by the tty group only.
                try:
                    tty_gid = grp.getgrnam("tty").gr_gid
                except KeyError:
                    tty_gid = login.gid
                os.chown(self.name, login.uid, tty_gid)
                os.chmod(self.name, 0o620)
            self.resize(cols, rows)
        except BaseException:
            # Nobody else holds these yet: a half-made terminal must not outlive the failure.
            self.close()
            raise

    def resize(self, cols: int, rows: int, px_width: int = 0, px_height: int = 0) -> None:
        """Set the window size (clamped); the kernel sends SIGWINCH to the foreground job."""
        cols, rows = clamp_term_size(cols, rows)
        size = struct.pack("HHHH", rows, cols, min(max(px_width, 0), MAX_PIXELS),
                           min(max(px_height, 0), MAX_PIXELS))
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)

    def close_slave(self) -> None:
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1

    def close(self) -> None:
        """Close both ends (the session closes the master itself once it is running)."""
        self.close_slave()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


#: /proc/self/loginuid's "not set" value ((uid_t)-1).
UNSET_LOGINUID = 4294967295


@dataclass(frozen=True)
class ProcessAttrs:
    """What PAM's session modules set on their own process, for the session's child to get too.

    pam_limits, pam_umask and pam_loginuid act on the process that opens the session (under
    sshd, the one that then becomes the shell); ours is a helper, so it reports what they
    changed and the child takes it on before exec. Only changes: the node's own values reach
    the child by inheritance anyway.
    """

    #: (RLIMIT_* number, soft, hard) for each limit PAM changed.
    limits: tuple[tuple[int, int, int], ...] = ()
    umask: int | None = None
    #: The audit login uid pam_loginuid set, None if it set none.
    loginuid: int | None = None
    #: The priority pam_limits' `priority` item set.
    nice: int | None = None

    @property
    def needs_privilege(self) -> bool:
        """Raising a hard limit, the loginuid or the priority needs root: done before the drop."""
        return bool(self.limits) or self.loginuid is not None or self.nice is not None


#: The child's first program when it must change identity before exec (teleport.srv.enter).
ENTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "enter.py")


def enter_argv(argv: list[str], executable: str, login: OSLogin, *, switch: bool, tty: bool,
               attrs: ProcessAttrs, env: Mapping[str, str]) -> list[str]:
    """The argv that starts `argv` through `teleport.srv.enter`, which switches in the child."""
    spec: dict[str, object] = {"login": login.name, "tty": tty, "lc_ctype": "LC_CTYPE" in env}
    if switch:
        spec.update(uid=login.uid, gid=login.gid, groups=list(login.groups))
    if attrs.limits:
        spec["limits"] = [list(limit) for limit in attrs.limits]
    if attrs.nice is not None:
        spec["nice"] = attrs.nice
    if attrs.loginuid is not None:
        spec["loginuid"] = attrs.loginuid
    return [sys.executable, "-I", "-S", ENTER, json.dumps(spec), executable, *argv]


def _already(login: OSLogin) -> bool:
    """Tell whether this process already runs with the login's uid, gid and groups.

    Then the child needs no switch, so it is started directly rather than through
    `teleport.srv.enter` (saving that program's start, ~10 ms of the child's own time).
    """
    return (os.getuid() == os.geteuid() == login.uid and os.getgid() == os.getegid() == login.gid
            and {*os.getgroups(), login.gid} == {*login.groups, login.gid})


class Child:
    """A started shell or command in its own session (process group = pid)."""

    def __init__(self, argv: list[str], *, executable: str, login: OSLogin,
                 env: Mapping[str, str], stdin: int, stdout: int, stderr: int,
                 tty: bool, attrs: ProcessAttrs | None = None) -> None:
        switch = os.geteuid() == 0 and not _already(login)
        attrs = attrs or ProcessAttrs()
        cwd = login.home if os.path.isdir(login.home) else "/"
        if switch or tty or attrs.needs_privilege:
            # Never a uid, gid, groups or preexec_fn for Popen: any of them makes CPython fork
            # the node instead of vfork (10-75 ms with the loop and the GIL held, for every
            # session); the switch happens in the child, in teleport.srv.enter.
            argv = enter_argv(argv, executable, login, switch=switch, tty=tty, attrs=attrs,
                              env=env)
            executable = sys.executable
        self.proc = subprocess.Popen(
            argv, executable=executable, stdin=stdin, stdout=stdout, stderr=stderr,
            env=dict(env), cwd=cwd, start_new_session=True, close_fds=True,
            umask=-1 if attrs.umask is None else attrs.umask)
        self.pid = self.proc.pid
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        # A pidfd turns "child exited" into a readable fd on any event loop, with no SIGCHLD
        # handler or watcher thread, and it cannot be confused by pid reuse.
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except BaseException:
            # Out of descriptors: a child we cannot watch must not run on unaccounted for.
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait()
            raise
        self._loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        if self.proc.poll() is None:
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._exited.set_result(self.proc.returncode)

    async def wait(self) -> int:
        """Return the exit code, or minus the signal number that ended the process."""
        return await asyncio.shield(self._exited)

    @property
    def running(self) -> bool:
        return not self._exited.done()

    def signal(self, signum: int) -> None:
        """Deliver a signal to the child's whole process group."""
        if self.running:
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                pass

    def hang_up(self) -> None:
        """Tell the session its user is gone, as closing a terminal does."""
        self.signal(signal.SIGHUP)
