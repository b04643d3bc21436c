"""The SSH algorithms every SSH server and client of ours offers, and what teleport.yaml may choose.

One place for both: `teleport.ciphers`, `teleport.kex_algos` and `teleport.mac_algos` (Teleport's
names) are checked here at load, and `asyncssh_kwargs` turns the chosen set into the keyword
arguments of every asyncssh server and client (node, proxy, reverse tunnels, the proxy's client
side toward nodes, `tsh`). It lives in `config` (not `sshutils`) because the loader validates
with it and may not import a higher layer.

The defaults are what ssh-audit passes without a `[fail]`: post-quantum and X25519 key exchange,
AEAD ciphers, encrypt-then-MAC SHA-2 MACs, no SHA-1 host key or signature. asyncssh adds the
strict-kex markers (`kex-strict-s-v00@openssh.com` / `-c-`) and `ext-info-*` itself. An admin may
choose other names asyncssh supports, SHA-1 ones included (`diffie-hellman-group14-sha1`,
`hmac-sha1`) for an old client they must serve; names in `BROKEN` are refused whatever the admin
says, since no policy needs them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from teleport.errors import BadParameter

#: Key exchange: hybrid ML-KEM (post-quantum) first, then X25519 under both its names.
KEX_ALGOS = ("mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org")
#: AES-GCM first: hardware-accelerated and measured fastest; ChaCha20 for CPUs without AES-NI.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com")
#: Encrypt-then-MAC only (used with a non-AEAD cipher an admin chose; AEAD ciphers carry theirs).
MAC_ALGOS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")
#: Signatures accepted and made (user authentication, host keys): the key types our CAs and
#: tsh make (Ed25519, RSA with `ca_signature_algo`), no SHA-1 `ssh-rsa`, no NIST-curve ECDSA
#: (SSH keys here never are; ssh-audit fails a client that offers it).
SIGNATURE_ALGOS = ("ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256")
#: Host keys offered and accepted: our hosts present certificates; the plain forms are for a
#: client that does not know certificates (it checks the key itself). No `ssh-rsa[-cert-v01]`.
HOST_KEY_ALGOS = (*(f"{alg}-cert-v01@openssh.com" for alg in SIGNATURE_ALGOS), *SIGNATURE_ALGOS)

#: Names refused even when listed: no encryption or integrity, broken ciphers (RC4, 64-bit
#: blocks), MD5, truncated or 64-bit tags, 1024-bit groups, and GSS key exchange (no Kerberos here).
BROKEN = re.compile(r"none|arcfour.*|3des-.*|blowfish-.*|cast128-.*|seed-.*|hmac-md5.*|.*-96(-etm@openssh\.com)?"
                    r"|umac-64.*|diffie-hellman-group1-sha1|diffie-hellman-group-exchange-sha1"
                    r"|rsa1024-sha1|gss-.*")

Kind = Literal["kex_algos", "ciphers", "mac_algos"]


def _supported(kind: Kind) -> set[str]:
    """What asyncssh implements: imported only for a config that names algorithms, so `tsh`
    and `tctl`, which load the config package, do not pay for asyncssh (and bcrypt) at start."""
    from asyncssh.encryption import get_encryption_algs
    from asyncssh.kex import get_kex_algs
    from asyncssh.mac import get_mac_algs

    algs = {"kex_algos": get_kex_algs, "ciphers": get_encryption_algs, "mac_algos": get_mac_algs}
    return {alg.decode() for alg in algs[kind]()}


@dataclass(frozen=True)
class SSHAlgorithms:
    """The chosen algorithm set, in order of preference."""

    kex_algos: tuple[str, ...] = KEX_ALGOS
    ciphers: tuple[str, ...] = CIPHERS
    mac_algos: tuple[str, ...] = MAC_ALGOS


DEFAULT = SSHAlgorithms()


def check(kind: Kind, names: Sequence[str]) -> tuple[str, ...]:
    """Return the names of one teleport.yaml list, or refuse an unknown, broken or empty one."""
    if not names:
        raise BadParameter("must name at least one algorithm (leave the key out for the defaults)")
    supported = _supported(kind)
    for name in names:
        if BROKEN.fullmatch(name):
            raise BadParameter(f"{name} is refused as insecure")
        if name not in supported:
            raise BadParameter(f"unknown algorithm {name!r} (supported, besides the refused "
                               f"ones: {', '.join(sorted(n for n in supported if not BROKEN.fullmatch(n)))})")
    return tuple(dict.fromkeys(names))


def asyncssh_kwargs(algorithms: SSHAlgorithms, side: Literal["server", "client"]) -> dict[str, Any]:
    """Return the asyncssh connection options that make a server or client use `algorithms`.

    A server's host key algorithms come from its keys, not from an option: `host_key_algorithms`
    filters them (teleport.sshutils.listener).
    """
    kwargs: dict[str, Any] = {
        "kex_algs": list(algorithms.kex_algos), "encryption_algs": list(algorithms.ciphers),
        "mac_algs": list(algorithms.mac_algos), "compression_algs": ["none"],
        "signature_algs": list(SIGNATURE_ALGOS)}
    if side == "client":
        kwargs["server_host_key_algs"] = list(HOST_KEY_ALGOS)
    return kwargs


def host_key_algorithms(offered: Sequence[bytes]) -> list[bytes]:
    """Keep the host key algorithms of a key (and its certificate) that are in `HOST_KEY_ALGOS`."""
    return [alg for alg in offered if alg.decode() in HOST_KEY_ALGOS]


__all__ = ["BROKEN", "CIPHERS", "DEFAULT", "HOST_KEY_ALGOS", "KEX_ALGOS", "MAC_ALGOS",
           "SIGNATURE_ALGOS", "SSHAlgorithms", "asyncssh_kwargs", "check", "host_key_algorithms"]
