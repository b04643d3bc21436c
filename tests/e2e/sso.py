"""What the single sign-on e2e tests share: `tsh login --auth=... --browser=none` driven from a test.

tsh prints the link a user would open; the test hands it to a headless browser that signs in at
the provider (a local GitHub-speaking server, or a real OpenID Provider), and tsh finishes by
itself once the browser reaches its local callback.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

from tests.e2e.cluster import BIN, Cluster

LINK = re.compile(r"^ (http://127\.0\.0\.1:\d+/\S+)$")


def wait_for_connector(cluster: Cluster, name: str, timeout: float = 15) -> None:
    """Wait until the proxy's ping lists a connector (its copy is refreshed every 5 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(c["name"] == name for c in cluster.web("GET", "/webapi/ping")["auth"]["connectors"]):
            return
        time.sleep(0.2)
    raise AssertionError(f"the proxy's ping never listed connector {name!r}")


def tsh_following_link(cluster: Cluster, args: list[str], link: re.Pattern[str],
                       answer: Callable[[str], Any], *, stdin: str = "",
                       timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run tsh with `args`, hand the first printed line matching `link` (its group 1) to
    `answer` (what a person does with it in a browser), return tsh's result; stdout holds the
    link and tsh's report."""
    proc = subprocess.Popen(
        [str(BIN / "tsh"), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, **cluster.env})
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        proc.stdin = None  # closed: communicate() must not flush it
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if match := link.match(line.rstrip("\n")):
                answer(match.group(1))
                break
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines) + out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def tsh_sso_login(cluster: Cluster, auth: str | None, sign_in: Callable[[str], Any],
                  *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `tsh login [--auth=<auth>] --browser=none` and sign in at the link it prints. No
    auth: the cluster's default."""
    flags = [f"--auth={auth}"] if auth is not None else []
    return tsh_following_link(
        cluster, ["login", f"--proxy={cluster.web_addr}", *flags, "--browser=none", "--insecure",
                  *extra], LINK, sign_in, timeout=timeout)


def logins_of(cluster: Cluster, user: str, **fields: Any) -> list[dict[str, Any]]:
    """The cluster's `user.login` events for user (or all failures when user is "")."""
    return [e for e in cluster.audit_events() if e.get("event") == "user.login"
            and e.get("user", "") == user and all(e.get(k) == v for k, v in fields.items())]
