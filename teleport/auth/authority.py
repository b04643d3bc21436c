"""Create the cluster's name and its three CAs on first start, and sign with them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Literal

from teleport.errors import AlreadyExists, NotFound
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.services.authorities import CAService
from teleport.types.resource import Metadata
from teleport.types.resources import (
    CAKeys,
    CertAuthority,
    CertAuthoritySpec,
    ClusterName,
    ClusterNameSpec,
    SSHKeyPair,
    TLSKeyPair,
)
from teleport.utils.clock import Clock

CA_TYPES: tuple[Literal["user", "host", "tls"], ...] = ("user", "host", "tls")


async def ensure_cluster_name(cas: CAService, wanted: str | None) -> str:
    """Return the stored cluster name, creating it (configured, else a UUID) on first start."""
    try:
        existing = await cas.cluster_names.get("name")
    except NotFound:
        name = wanted or str(uuid.uuid4())
        record = ClusterName(metadata=Metadata(name="name"),
                             spec=ClusterNameSpec(cluster_name=name, cluster_id=str(uuid.uuid4())))
        try:
            await cas.cluster_names.create(record)
            return name
        except AlreadyExists:  # another auth server won the race
            existing = await cas.cluster_names.get("name")
    return existing.spec.cluster_name


async def ensure_authorities(cas: CAService, cluster: str, clock: Clock,
                             signature_algo: str | None) -> None:
    """Create whichever of the user, host and TLS CAs does not exist yet."""
    rsa = signature_algo == "rsa-sha2-512"
    for ca_type in CA_TYPES:
        try:
            await cas.get(ca_type, cluster)
            continue
        except NotFound:
            pass
        if ca_type == "tls":
            key, cert = await asyncio.to_thread(
                tlskeys.generate_tls_ca, cluster, algo="rsa" if rsa else "ecdsa", now=clock.now())
            keys = CAKeys(tls=[TLSKeyPair(cert=cert.decode(), key=key.decode())])
            alg = "rsa" if rsa else "ecdsa-p256"
        else:
            private = await asyncio.to_thread(sshkeys.generate_private_key, "rsa" if rsa else "ed25519")
            keys = CAKeys(ssh=[SSHKeyPair(public_key=sshkeys.public_key_of(private),
                                          private_key=private.decode())])
            alg = "rsa-sha2-512" if rsa else "ssh-ed25519"
        ca = CertAuthority(
            metadata=Metadata(name=cluster),
            spec=CertAuthoritySpec(type=ca_type, cluster_name=cluster, active_keys=keys,
                                   signing_alg=alg),
        )
        try:
            await cas.store(ca_type).create(ca)
        except AlreadyExists:
            pass


def ssh_signer(ca: CertAuthority) -> bytes:
    """Return the active SSH private key of a CA."""
    return ca.spec.active_keys.ssh[0].private_key.encode()


def tls_signer(ca: CertAuthority) -> tuple[bytes, bytes]:
    """Return the active (key, cert) of the TLS CA."""
    pair = ca.spec.active_keys.tls[0]
    return pair.key.encode(), pair.cert.encode()


HOST_CERT_TTL = timedelta(days=365 * 10)
