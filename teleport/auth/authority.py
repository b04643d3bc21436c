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
#: `teleport.ca_signature_algo` values that make RSA CAs (SHA-1 `ssh-rsa` is refused at load).
RSA_SIGNATURE_ALGOS = ("rsa-sha2-256", "rsa-sha2-512")


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
    for ca_type in CA_TYPES:
        try:
            await cas.get(ca_type, cluster)
            continue
        except NotFound:
            pass
        keys, alg = await new_keys(ca_type, cluster, clock, signature_algo)
        ca = CertAuthority(
            metadata=Metadata(name=cluster),
            spec=CertAuthoritySpec(type=ca_type, cluster_name=cluster, active_keys=keys,
                                   signing_alg=alg),
        )
        try:
            await cas.store(ca_type).create(ca)
        except AlreadyExists:
            pass


async def new_keys(ca_type: str, cluster: str, clock: Clock,
                   signature_algo: str | None) -> tuple[CAKeys, str]:
    """Generate a CA's key pair (a new CA, or the next one of a rotation) and name how it
    signs: RSA when `ca_signature_algo` asks for an RSA signature, else Ed25519 / ECDSA P-256."""
    rsa = signature_algo in RSA_SIGNATURE_ALGOS
    if ca_type == "tls":
        key, cert = await asyncio.to_thread(
            tlskeys.generate_tls_ca, cluster, algo="rsa" if rsa else "ecdsa", now=clock.now())
        keys = CAKeys(tls=[TLSKeyPair(cert=cert.decode(), key=key.decode())])
    else:
        private = await asyncio.to_thread(sshkeys.generate_private_key,
                                          "rsa" if rsa else "ed25519")
        keys = CAKeys(ssh=[SSHKeyPair(public_key=sshkeys.public_key_of(private),
                                      private_key=private.decode())])
    return keys, signing_alg(keys, signature_algo)


def signing_alg(keys: CAKeys, signature_algo: str | None) -> str:
    """Name how a key pair signs: an RSA SSH key with the configured RSA signature (SHA-512
    unless `ca_signature_algo` says SHA-256), the others by their type."""
    if keys.tls:
        return "rsa" if tlskeys.is_rsa_cert(keys.tls[0].cert.encode()) else "ecdsa-p256"
    if keys.ssh and keys.ssh[0].public_key.startswith("ssh-rsa "):
        return signature_algo if signature_algo in RSA_SIGNATURE_ALGOS else "rsa-sha2-512"
    return "ssh-ed25519"


def ssh_signer(ca: CertAuthority) -> bytes:
    """Return the active SSH private key of a CA."""
    return ca.spec.active_keys.ssh[0].private_key.encode()


def ssh_hash(ca: CertAuthority) -> sshkeys.RSAHash:
    """The hash an RSA CA signs with (`rsa-sha2-256` or, by default, `rsa-sha2-512`)."""
    return "sha256" if ca.spec.signing_alg == "rsa-sha2-256" else "sha512"


def tls_signer(ca: CertAuthority) -> tuple[bytes, bytes]:
    """Return the active (key, cert) of the TLS CA."""
    pair = ca.spec.active_keys.tls[0]
    return pair.key.encode(), pair.cert.encode()


#: A host's X.509 certificate (the auth server's serves the auth API): at most the year Mozilla's
#: TLS profiles allow. A running host renews it through its rotation follower two thirds into
#: its life (`service.rotation.RENEW_AT`); the SSH host certificate does not expire, as in Teleport.
HOST_TLS_CERT_TTL = timedelta(days=365)
