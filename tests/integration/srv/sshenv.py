"""CAs, host identities, user certificates and SSH clients for the node and proxy tests."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncssh

from teleport.events.emitter import MemoryEmitter
from teleport.keys.ssh import generate_private_key, public_key_of, sign_host_cert, sign_user_cert
from teleport.srv import NodeServer
from teleport.types.roles import Role

CLUSTER = "example.com"
NODENAME = "node1"
CLIENT_TIMEOUT = 30.0


@dataclass(frozen=True)
class UserCreds:
    key: bytes
    cert: str
    key_path: Path
    cert_path: Path

    def client_keys(self) -> list[tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]]:
        return [(asyncssh.import_private_key(self.key), asyncssh.import_certificate(self.cert))]


class Trust:
    """One cluster's user and host CAs, with files for OpenSSH under a temp dir."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.user_ca = generate_private_key()
        self.host_ca = generate_private_key()
        self.known_hosts = tmp / "known_hosts"
        self.known_hosts.write_text(f"@cert-authority * {public_key_of(self.host_ca)}\n")
        self._count = 0

    def user_cas(self) -> list[str]:
        return [public_key_of(self.user_ca)]

    def host_identity(self, nodename: str, role: str = "Node", *, cluster: str = CLUSTER,
                      valid_before: datetime | None = None) -> tuple[bytes, str, str]:
        """Return a host key, its certificate and the host UUID.

        cluster (the certificate's authority extension) and valid_before make the wrong ones
        the tunnel tests offer: another cluster's, an expired one.
        """
        key = generate_private_key()
        host_uuid = str(uuid.uuid4())
        cert = sign_host_cert(self.host_ca, public_key_of(key), host_uuid=host_uuid,
                              nodename=nodename, cluster=cluster, system_role=role,
                              principals=[host_uuid, f"{host_uuid}.{cluster}", nodename,
                                          "localhost", "127.0.0.1"], valid_before=valid_before)
        return key, cert, host_uuid

    def host_cas(self) -> list[str]:
        return [public_key_of(self.host_ca)]

    def user(self, logins: Sequence[str] = ("root",), *, name: str = "alice",
             ca: bytes | None = None, valid_for: timedelta = timedelta(hours=1),
             port_forwarding: bool = True, pty: bool = True) -> UserCreds:
        """Issue a user certificate; a negative valid_for makes one that has expired."""
        self._count += 1
        now = datetime.now(timezone.utc)
        key = generate_private_key()
        after = min(now, now + valid_for) - timedelta(hours=2)
        cert = sign_user_cert(ca or self.user_ca, public_key_of(key), key_id=name,
                              principals=list(logins), valid_after=after,
                              valid_before=now + valid_for, roles=["access"],
                              traits={"logins": list(logins)},
                              permit_port_forwarding=port_forwarding, permit_pty=pty)
        key_path = self.tmp / f"user{self._count}"
        key_path.write_bytes(key)
        key_path.chmod(0o600)
        cert_path = self.tmp / f"user{self._count}-cert.pub"
        cert_path.write_text(cert + "\n")
        return UserCreds(key, cert, key_path, cert_path)

    def bare_key(self) -> Path:
        """Write a key with no certificate next to it (OpenSSH would pick up `-cert.pub`)."""
        path = self.tmp / "bare"
        path.write_bytes(generate_private_key())
        path.chmod(0o600)
        return path

    def ssh_config(self, creds: UserCreds | None, *, key_path: Path | None = None) -> Path:
        """Write an ssh_config for these credentials; -J passes -F, not -o, to the jump ssh."""
        self._count += 1
        lines = ["Host *", "  StrictHostKeyChecking yes", f"  UserKnownHostsFile {self.known_hosts}",
                 "  GlobalKnownHostsFile /dev/null", "  BatchMode yes", "  IdentitiesOnly yes",
                 "  IdentityAgent none", "  ConnectTimeout 10"]
        if creds is not None:
            lines += [f"  IdentityFile {creds.key_path}", f"  CertificateFile {creds.cert_path}"]
        if key_path is not None:
            lines += [f"  IdentityFile {key_path}"]
        path = self.tmp / f"ssh_config{self._count}"
        path.write_text("\n".join(lines) + "\n")
        return path

    def ssh(self, creds: UserCreds | None, port: int, login: str, *args: str,
            key_path: Path | None = None, host: str = "127.0.0.1") -> list[str]:
        """Return an OpenSSH command line that trusts only our host CA."""
        config = self.ssh_config(creds, key_path=key_path)
        return ["ssh", "-F", str(config), "-p", str(port), f"{login}@{host}", *args]

    async def connect(self, creds: UserCreds, port: int, login: str, *,
                      host: str = "127.0.0.1", **kwargs: Any) -> asyncssh.SSHClientConnection:
        """Open an asyncssh connection that trusts only our host CA."""
        options: dict[str, Any] = {
            "username": login, "client_keys": creds.client_keys(),
            "known_hosts": ([], [asyncssh.import_public_key(public_key_of(self.host_ca))], []),
            "agent_path": None, "config": None, "preferred_auth": ["publickey"]}
        options.update(kwargs)
        return await asyncssh.connect(host, port, **options)


def make_node(trust: Trust, emitter: MemoryEmitter, nodename: str = NODENAME,
              labels: dict[str, str] | None = None,
              roles: Mapping[str, Role] | None = None) -> NodeServer:
    """A node; with `roles` it judges logins and joins by them (as fetched from the auth
    server), without them by the certificate's principals only."""
    key, cert, host_uuid = trust.host_identity(nodename)
    node_labels = labels if labels is not None else {"env": "test"}
    return NodeServer(host_private_key=key, host_cert=cert, trusted_user_cas=trust.user_cas,
                      cluster_name=CLUSTER, server_id=host_uuid, nodename=nodename,
                      labels=lambda: node_labels, emitter=emitter,
                      proxy_addr=lambda: "proxy.example.com:3080",
                      roles=(lambda: roles) if roles is not None else None)


async def run(argv: Sequence[str], stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run a client to completion; return exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), CLIENT_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def rss_bytes() -> int:
    """Return this process's resident set size from /proc, without psutil."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def peak_rss_while(coro: Any, interval: float = 0.02) -> tuple[Any, int]:
    """Run a coroutine while sampling RSS; return its result and the peak growth in bytes."""
    base = rss_bytes()
    peak = base
    task = asyncio.ensure_future(coro)
    while not task.done():
        peak = max(peak, rss_bytes())
        await asyncio.wait([task], timeout=interval)
    return task.result(), peak - base


async def read_until(proc: asyncssh.SSHClientProcess[str], text: str) -> str:
    """Read a session's output until text shows up; fail if it ends first or takes 10 s."""
    seen = ""
    while text not in seen:
        chunk = await asyncio.wait_for(proc.stdout.read(4096), 10)
        if not chunk:
            raise AssertionError(f"session ended before {text!r}; got {seen!r}")
        seen += chunk
    return seen


def is_root() -> bool:
    return os.geteuid() == 0
