"""A host's or admin's credentials on disk: keys, certificates and the CAs it trusts.

Stored as `data_dir/identity/<role>.json` (0600 in a 0700 folder) so that a restart needs
no token and `tctl` on the auth host can use the Admin identity.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from teleport.errors import BadParameter, NotFound
from teleport.utils.fs import ensure_private_dir, write_secret

if TYPE_CHECKING:
    from teleport.api.auth_models import IssuedCerts


@dataclass(frozen=True)
class IdentityFile:
    role: str
    host_uuid: str
    ssh_private_key: str
    ssh_cert: str
    tls_private_key: str
    tls_cert: str
    tls_ca_certs: list[str]
    host_ca_keys: list[str] = field(default_factory=list)
    user_ca_keys: list[str] = field(default_factory=list)
    #: The cluster named in tls_cert, kept beside it so that `tctl` need not parse X.509
    #: (cryptography's import) to know it; "" in files written before it was kept.
    cluster: str = ""

    @classmethod
    def from_issued(cls, role: str, host_uuid: str, ssh_private_key: bytes, tls_private_key: bytes,
                    certs: IssuedCerts) -> IdentityFile:
        """Pair freshly generated keys with what the auth server signed for them."""
        from teleport.keys.tls import identity_from_cert

        return cls(role=role, host_uuid=host_uuid, ssh_private_key=ssh_private_key.decode(),
                   ssh_cert=certs.ssh_cert, tls_private_key=tls_private_key.decode(),
                   tls_cert=certs.tls_cert, tls_ca_certs=certs.tls_ca_certs,
                   host_ca_keys=certs.host_ca_keys, user_ca_keys=certs.user_ca_keys,
                   cluster=identity_from_cert(certs.tls_cert.encode()).cluster)

    def cluster_name(self) -> str:
        """The cluster this identity belongs to, as its certificate says."""
        if self.cluster:
            return self.cluster
        from teleport.keys.tls import identity_from_cert

        return identity_from_cert(self.tls_cert.encode()).cluster

    def save(self, data_dir: Path) -> Path:
        folder = ensure_private_dir(data_dir / "identity")
        return write_secret(folder / f"{self.role.lower()}.json", json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, data_dir: Path, role: str) -> IdentityFile:
        path = data_dir / "identity" / f"{role.lower()}.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(f"no {role} identity in {path.parent}") from None
        except PermissionError:
            raise BadParameter(f"cannot read {path}: permission denied (run as root?)") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadParameter(f"{path} is corrupt; remove it to join the cluster again") from None
        try:
            return cls(**data)
        except TypeError:
            raise BadParameter(f"{path} is corrupt; remove it to join the cluster again") from None
