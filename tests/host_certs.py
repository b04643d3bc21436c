"""Read the host certificate an SSH server presents, as a new client sees it."""

from __future__ import annotations

import contextlib

import asyncssh


async def host_ca(port: int, host: str = "127.0.0.1") -> str:
    """The CA key (`<type> <base64>`) that signed the host certificate the SSH server on port
    presents to a new client (our servers speak after the client: asyncssh, not ssh-keyscan)."""
    seen: list[str] = []

    class Probe(asyncssh.SSHClient):
        def validate_host_ca_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
            seen.append(key.export_public_key().decode())
            return True

    with contextlib.suppress(asyncssh.PermissionDenied):  # its certificate was all we wanted
        conn = await asyncssh.connect(
            host, port, username="probe", client_factory=Probe, known_hosts=([], [], []),
            server_host_key_algs=["ssh-ed25519-cert-v01@openssh.com"], client_keys=[],
            agent_path=None, config=None, preferred_auth=["publickey"])
        conn.close()
    assert seen, f"no host certificate from port {port}"
    return " ".join(seen[0].split()[:2])
