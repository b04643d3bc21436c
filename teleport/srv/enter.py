"""Enter a session's identity, then exec its shell: the first program of a child that needs it.

Run by `teleport.srv.process.Child` as `python -I -S enter.py SPEC EXECUTABLE ARGV...` when the
child needs what only a forked child can do before exec (a user switch, a controlling
terminal, PAM's limits, priority and login uid). Done here, in the child's own process, the
node starts every child with vfork: a fork of a 100+ MiB node holds its event loop (and the
GIL) for 10-75 ms, so a burst of non-root or terminal logins stalled every other session.

Standard library only, no `site`: it runs before the shell, once per session. SPEC is JSON:
login, uid/gid/groups (absent: no switch), tty, limits [[RLIMIT_*, soft, hard]...], nice,
loginuid, lc_ctype (whether LC_CTYPE was in the session's environment: Python's locale
coercion adds it in a C locale, and the shell must get the environment it was given).
On failure it writes one `teleport: ...` line to stderr (the session's) and exits 1.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import sys
import termios
from typing import Any


def enter(spec: dict[str, Any]) -> None:
    """Take on PAM's attributes while still privileged, drop to the login, take the terminal."""
    for number, soft, hard in spec.get("limits", ()):
        resource.setrlimit(number, (soft, hard))
    if spec.get("nice") is not None:
        os.setpriority(os.PRIO_PROCESS, 0, spec["nice"])
    if spec.get("loginuid") is not None:
        try:
            fd = os.open("/proc/self/loginuid", os.O_WRONLY)
            try:
                os.write(fd, str(spec["loginuid"]).encode())
            finally:
                os.close(fd)
        except OSError:
            pass  # a kernel without audit support; pam_loginuid tolerated the same
    if spec.get("uid") is not None:  # the order Popen uses: groups, gid, uid
        os.setgroups(spec["groups"])
        os.setregid(spec["gid"], spec["gid"])
        os.setreuid(spec["uid"], spec["uid"])
    if spec.get("tty"):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the PTY on stdin; Popen made us session leader


def main(argv: list[str]) -> None:
    spec = json.loads(argv[1])
    executable, args = argv[2], argv[3:]
    env = dict(os.environ)
    if not spec.get("lc_ctype"):
        env.pop("LC_CTYPE", None)
    try:
        enter(spec)
    except OSError:
        fail(f"cannot start {spec['login']}'s session with the limits, priority and login uid "
             "PAM set (see the node's PAM setup)" if spec.get("limits") or spec.get("nice")
             is not None or spec.get("loginuid") is not None
             else f"cannot start {spec['login']}'s session: cannot switch to the login")
    try:
        os.execve(executable, args, env)
    except OSError as err:
        fail(f"cannot start {spec['login']}'s shell: {err.strerror or err}")


def fail(message: str) -> None:
    os.write(2, f"teleport: {message}\r\n".encode())
    os._exit(1)


if __name__ == "__main__":
    main(sys.argv)
