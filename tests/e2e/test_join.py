"""`tsh sessions ls` and `tsh join` with the real CLIs: an admin shares joe's live terminal."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pyotp

from tests.e2e.cluster import BIN, NODENAME, Cluster
from tests.e2e.test_interactive import Terminal, open_session


def _user(cluster: Cluster, name: str, roles: str) -> dict[str, str]:
    """Sign up and log in a user with its own TELEPORT_HOME; return the environment to run as it."""
    out = cluster.tctl("users", "add", name, "root", f"--roles={roles}").stdout
    token = next(w for w in out.split() if "/web/newuser/" in w).rsplit("/", 1)[1]
    totp = pyotp.TOTP(cluster.web("GET", f"/webapi/users/password/token/{token}")["otp_secret"])
    password = f"{name}'s password"
    cluster.web("PUT", "/webapi/users/password/token",
                {"token": token, "password": password, "second_factor_token": totp.now()})
    env = {**os.environ, **cluster.env, "TELEPORT_HOME": str(cluster.root / f"tsh-{name}"),
           "TERM": "xterm"}
    _tsh(env, "login", f"--proxy={cluster.web_addr}", f"--user={name}", "--insecure",
         input=f"{password}\n{totp.at(time.time() + 30)}\n")
    return env


def _tsh(env: dict[str, str], *args: str, input: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BIN / "tsh"), *args], input=input, capture_output=True, text=True,
                            env=env, timeout=30, stdin=None if input is not None else subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"tsh {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def _wait_for(what: str, check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return result


def _row(env: dict[str, str], sid: str) -> str:
    listing = _tsh(env, "sessions", "ls").stdout
    return next((line for line in listing.splitlines() if sid in line), "")


def test_admin_joins_a_live_session_and_others_are_refused(cluster: Cluster,
                                                            joe: dict[str, Any]) -> None:
    ann = _user(cluster, "ann", "admin")
    eve = _user(cluster, "eve", "access")
    joe_env = {**os.environ, **cluster.env, "TERM": "xterm"}
    owner, sid = open_session([str(BIN / "tsh"), "ssh", f"root@{NODENAME}"], joe_env)
    joiner: Terminal | None = None
    try:
        row = _wait_for("joe's session to be listed", lambda: _row(joe_env, sid))
        assert "joe" in row and NODENAME in row and "root" in row
        assert _row(eve, sid) == ""
        refused = _tsh(eve, "join", sid, check=False)
        assert refused.returncode != 0 and "may not join" in refused.stderr

        joiner = Terminal([str(BIN / "tsh"), "join", sid], ann)
        _wait_for("ann to be a party", lambda: "joe, ann" in _row(ann, sid))
        owner.type("echo from-owner-$((40+2))\n")
        joiner.expect("from-owner-42")
        joiner.type("echo from-joiner-$((50+5))\n")
        owner.expect("from-joiner-55")
        owner.type("exit\n")
    finally:
        assert owner.close() == 0
        if joiner is not None:
            assert joiner.close() == 0

    def joined_and_left() -> list[dict[str, Any]]:
        events = [e for e in cluster.audit_events()
                  if e.get("sid") == sid and e["event"] in ("session.join", "session.leave")]
        return events if len(events) == 2 else []

    join, leave = _wait_for("session.join and session.leave", joined_and_left)
    assert (join["event"], leave["event"]) == ("session.join", "session.leave")
    assert join["user"] == leave["user"] == "ann"
    assert join["server_id"] and join["addr.remote"] and join["namespace"] == "default"
    _wait_for("the session to be unlisted", lambda: _row(joe_env, sid) == "")


def test_join_needs_a_session_id(cluster: Cluster, joe: dict[str, Any]) -> None:
    result = cluster.tsh("join", "not-a-session", check=False)
    assert result.returncode != 0 and "invalid session id" in result.stderr
