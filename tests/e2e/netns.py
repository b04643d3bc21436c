"""Put a process where it can reach one address of this machine only: a network namespace.

For nodes behind NAT (issue 12): the test makes a namespace with `ip netns`, joined to the root
namespace by a veth pair on a private /30, with no default route. From inside, the only address
that answers is `host_addr`, the root side of the pair; `127.0.0.1` inside is the namespace's own
loopback, so a root server bound to 127.0.0.1 is out of reach. Hence the rule for tests: what the
node must reach binds `host_addr` (0.0.0.0 only if unavoidable, which exposes every port), what it
must not reach binds 127.0.0.1. The reverse holds too: the node's 127.0.0.1 listeners (SSH, diag)
cannot be dialled from the root namespace, only through the tunnel or from inside (`run`).

Needs root and iproute2 (`ip`); without them, or where `ip netns add` is refused (an
unprivileged container), the test is skipped with the reason. No /etc/netns files are needed.

Note for `tests.ports.listening_ports(pid)`: it reads /proc/net/tcp, which is the table of the
reader's namespace; a process inside sees its sockets in /proc/<pid>/net/tcp instead.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import BIN

#: Subnets come from here, one /30 per namespace. 10.213.57.0/24 is test_http_proxy.py's.
_POOL = ipaddress.IPv4Network("10.213.0.0/16")
_AVOID = ipaddress.IPv4Network("10.213.57.0/24")
_SUBNETS = [net for net in _POOL.subnets(new_prefix=30) if not net.subnet_of(_AVOID)]
#: Counts this process's namespaces: with the pid it makes names and subnets unique.
_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} exited {result.returncode}: "
                           f"{result.stderr.strip()}")
    return result


def _subnets_in_use() -> set[ipaddress.IPv4Network]:
    """Return the IPv4 networks of the root namespace's addresses and routes."""
    used: set[ipaddress.IPv4Network] = set()
    for line in _ip("-4", "-o", "addr", "show").stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            used.add(ipaddress.IPv4Interface(fields[fields.index("inet") + 1]).network)
    for line in _ip("-4", "route", "show").stdout.splitlines():
        with suppress(ValueError, IndexError):
            used.add(ipaddress.IPv4Network(line.split()[0], strict=False))
    return used


def _pick_subnet(n: int) -> ipaddress.IPv4Network:
    """Pick a free /30 for this process's n-th namespace.

    The start depends on the pid, so parallel runs start far apart, and any /30 already routed
    (another run's, or one left by a killed run) is passed over: two veths on one subnet would
    make the root namespace route replies to the wrong one.
    """
    used = _subnets_in_use()
    start = (os.getpid() * 64 + n) % len(_SUBNETS)
    for i in range(len(_SUBNETS)):
        net = _SUBNETS[(start + i) % len(_SUBNETS)]
        if not any(net.overlaps(other) for other in used):
            return net
    raise RuntimeError(f"no free /30 left in {_POOL}")


@dataclass
class IsolatedHost:
    """A network namespace that reaches the root namespace at host_addr only."""

    name: str
    #: The root side of the veth pair: where servers the namespace must reach listen.
    host_addr: str
    #: The namespace's side of the pair.
    ns_addr: str
    #: The veth end left in the root namespace (deleting it deletes both ends).
    host_link: str
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def run(self, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv inside the namespace; cleanup kills it.

        `ip netns exec` execs argv in place, so the Popen's pid is argv's own and signals reach it.
        """
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **popen_kwargs)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """Stop what run() started, then delete the namespace and the veth pair."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Anything still inside was started by those processes (no one else enters this
        # uniquely named namespace); left alive it would keep the namespace.
        for pid in _ip("netns", "pids", self.name, check=False).stdout.split():
            with suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _ip("link", "del", self.host_link, check=False)
        _ip("netns", "del", self.name, check=False)


def _skip_unless_possible() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("network namespaces need `ip` (Debian's iproute2; scripts/test installs it)")


@contextmanager
def isolated_host() -> Iterator[IsolatedHost]:
    """Yield a fresh namespace wired to the root namespace by a veth pair on a private /30.

    Skips the calling test when namespaces cannot be made here.
    """
    _skip_unless_possible()
    n = next(_counter)
    pid = os.getpid()
    name = f"e2e-{pid}-{n}"
    # Interface names have at most 15 characters: "v" + pid (<= 7 digits) + "-" + n + "h".
    host_link, ns_link = f"v{pid}-{n}h", f"v{pid}-{n}n"
    host_addr, ns_addr = (str(a) for a in _pick_subnet(n).hosts())
    added = _ip("netns", "add", name, check=False)
    if added.returncode != 0:
        pytest.skip(f"`ip netns add` refused here: {added.stderr.strip()}")
    host = IsolatedHost(name, host_addr, ns_addr, host_link)
    try:
        _ip("link", "add", host_link, "type", "veth", "peer", "name", ns_link)
        _ip("link", "set", ns_link, "netns", name)
        _ip("addr", "add", f"{host_addr}/30", "dev", host_link)
        _ip("link", "set", host_link, "up")
        _ip("-n", name, "addr", "add", f"{ns_addr}/30", "dev", ns_link)
        _ip("-n", name, "link", "set", ns_link, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield host
    finally:
        host.close()


def start_node_in(host: IsolatedHost, config: Path, log: Path, *args: str) -> subprocess.Popen[str]:
    """Start `teleport start -c config` inside host's namespace, appending its output to log.

    As cluster.start_node, for a config from cluster.write_node_config (whose 127.0.0.1 is the
    namespace's own loopback). The node reaches the cluster only at host.host_addr, so
    --auth-server (or auth_servers) must name a port that listens there. Cleanup of host stops it.
    """
    with open(log, "a") as out:
        return host.run([str(BIN / "teleport"), "start", "-c", str(config), *args],
                        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        text=True)
