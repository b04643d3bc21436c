"""Host UUIDs and the identities a process holds for each of its roles."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from teleport.auth.identity_file import IdentityFile
from teleport.auth.server import AuthServer
from teleport.errors import BadParameter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.utils.fs import write_secret


def load_or_create_host_uuid(data_dir: Path) -> str:
    """Return this host's UUID, kept in `data_dir/host_uuid` across restarts."""
    path = data_dir / "host_uuid"
    try:
        value = path.read_text().strip()
        uuid.UUID(value)
        return value
    except FileNotFoundError:
        pass
    except ValueError:
        raise BadParameter(f"{path} does not hold a UUID; remove it to get a new one") from None
    value = str(uuid.uuid4())
    write_secret(path, value + "\n")
    return value


async def issue_local_identity(auth: AuthServer, data_dir: Path, role: str, host_uuid: str,
                               nodename: str, addresses: list[str]) -> IdentityFile:
    """Issue and save an identity straight from the in-process auth server (no token needed)."""
    ssh_key = await asyncio.to_thread(sshkeys.generate_private_key, "ed25519")
    tls_key = await asyncio.to_thread(tlskeys.generate_tls_key)
    certs = await auth.certs.issue_host_certs(
        host_uuid=host_uuid, nodename=nodename, system_role=role,
        ssh_public_key=sshkeys.public_key_of(ssh_key),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=addresses)
    identity = IdentityFile.from_issued(role, host_uuid, ssh_key, tls_key, certs)
    identity.save(data_dir)
    return identity
