"""Resources (`kind`/`version`/`metadata`/`spec`) as frozen typed models with a YAML round trip."""

from teleport.types.resource import ZERO_TIME, Metadata, Resource
from teleport.types.resources import (
    CertAuthority,
    CertAuthoritySpec,
    ClusterName,
    ProvisionToken,
    Server,
    ServerSpec,
    SSHKeyPair,
    TLSKeyPair,
    User,
    UserSpec,
    UserToken,
)

__all__ = [
    "ZERO_TIME", "CertAuthority", "CertAuthoritySpec", "ClusterName", "Metadata", "ProvisionToken",
    "Resource", "SSHKeyPair", "Server", "ServerSpec", "TLSKeyPair", "User", "UserSpec", "UserToken",
]
