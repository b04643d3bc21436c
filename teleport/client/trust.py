"""What tsh trusts follows the cluster's CA rotations, from the proxy's public CA records
(`GET /webapi/authorities`, no login needed):

- known_hosts gets every trusted host CA key (both during a rotation), so `tsh ssh` and stock
  OpenSSH through `tsh config` accept nodes and proxies whichever CA signed their certificate;
  `tsh ssh` also refreshes it when a host certificate is not trusted yet, and tries again.
- the CA file (`certs.pem`) gets every trusted TLS CA certificate.
- when the user's own certificate comes from a key the rotation is about to drop, one line says
  to log in again (and when it was dropped already, that this is why access is refused).

The records come with an entity tag, kept with the warnings they gave for this login
(`authorities.json` beside the keys): while the proxy answers that they did not change, a
command neither reads nor decodes them, nor builds the CA models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teleport.client.profile import Profile, known_host_keys, leaf_host_keys, write_known_hosts
from teleport.client.webapi import WebClient
from teleport.errors import TeleportError
from teleport.utils.fs import write_secret

if TYPE_CHECKING:
    from teleport.types.resources import CertAuthority

log = logging.getLogger("teleport.client")
#: How long a command waits at its end for the refresh it started with it.
FINISH_WITHIN = 3.0


async def fetch_authorities(profile: Profile) -> dict[str, CertAuthority]:
    """The cluster's public CA records, by type, from the profile's proxy (and its leaves'
    host and TLS CAs under `host:<leaf>` and `tls:<leaf>`)."""
    got = await _fetch(profile, "")
    assert got is not None  # no tag asked about: the records come
    return got[1]


async def _fetch(profile: Profile, etag: str) -> tuple[str, dict[str, CertAuthority]] | None:
    """`fetch_authorities` with their entity tag; None when they still have `etag`."""
    async with WebClient.for_profile(profile, present_cert=False) as web:
        got = await web.authorities(etag)
    if got is None:
        return None
    etag, cas = got
    own: dict[str, CertAuthority] = {ca.spec.type: ca for ca in cas
                                     if ca.spec.cluster_name == profile.cluster}
    leaves = {f"{ca.spec.type}:{ca.spec.cluster_name}": ca for ca in cas
              if ca.spec.cluster_name != profile.cluster and ca.spec.type in ("host", "tls")}
    return etag, {**own, **leaves}


async def refresh_host_cas(profile: Profile) -> bool:
    """Bring known_hosts up to the cluster's host CA keys; tell whether anything changed."""
    try:
        cas = await fetch_authorities(profile)
    except TeleportError as err:
        log.debug("cannot refresh the cluster's CAs: %s", err)
        return False
    return _apply(profile, cas)


def _apply(profile: Profile, cas: dict[str, CertAuthority]) -> bool:
    changed = False
    host = cas.get("host")
    leaves = {name.removeprefix("host:"): [_key(k) for k in ca.trusted_ssh_public_keys()]
              for name, ca in cas.items() if name.startswith("host:")}
    if host is not None:
        keys = [_key(k) for k in host.trusted_ssh_public_keys()]
        if keys and (keys != known_host_keys(profile) or leaves != leaf_host_keys(profile)):
            write_known_hosts(profile, keys, leaves)
            changed = True
    tls = cas.get("tls")
    if tls is not None and tls.trusted_tls_certs():
        pem = "".join(tls.trusted_tls_certs())
        with contextlib.suppress(FileNotFoundError):
            if profile.ca_path.read_text() != pem:
                write_secret(profile.ca_path, pem)
                changed = True
    return changed


def certificate_warnings(profile: Profile, cas: dict[str, CertAuthority]) -> list[str]:
    """Say when the login's certificates come from a key a rotation drops (or dropped)."""
    from teleport.keys.ssh import parse_cert
    from teleport.keys.tls import issued_by

    user, tls = cas.get("user"), cas.get("tls")
    if user is not None:
        with contextlib.suppress(TeleportError):
            signer = _key(parse_cert(profile.ssh_cert()).signature_key)
            active = [_key(k.public_key) for k in user.spec.active_keys.ssh]
            extra = [_key(k.public_key) for k in user.spec.additional_trusted_keys.ssh]
            if line := _judge("SSH", signer in active, signer in extra, user):
                return [line]
    if tls is not None:
        with contextlib.suppress(OSError, TeleportError):
            cert = profile.tls_cert_path.read_bytes()
            active_pems = [k.cert.encode() for k in tls.spec.active_keys.tls]
            extra_pems = [k.cert.encode() for k in tls.spec.additional_trusted_keys.tls]
            if line := _judge("TLS", issued_by(cert, active_pems), issued_by(cert, extra_pems), tls):
                return [line]
    return []


def _key(line: str) -> str:
    return " ".join(line.split()[:2])


def _judge(kind: str, by_active: bool, by_extra: bool, ca: CertAuthority) -> str:
    rotation = ca.spec.rotation
    if not by_active and not by_extra:
        return (f"Your {kind} certificate was issued by a {ca.spec.type} CA this cluster no "
                "longer trusts (it was rotated): run 'tsh login' to get a new one.")
    if by_extra and not by_active and rotation.phase != "init":
        ends = rotation.ends()
        when = f" at {ends:%Y-%m-%d %H:%M:%S} UTC" if ends is not None else ""
        return (f"Your {kind} certificate was issued by the {ca.spec.type} CA that is being "
                f"rotated out; it stops working{when}: run 'tsh login' to get a new one.")
    return ""


@contextlib.asynccontextmanager
async def following(profile: Profile) -> AsyncIterator[None]:
    """Refresh trust next to a command that reaches the cluster, and print the warnings at its
    end: known_hosts is current for the next `ssh`, and the user hears about a rotation."""
    import asyncio

    async def refresh() -> list[str]:
        login = _login_digest(profile)
        kept = _load_kept(profile)
        got = await _fetch(profile, kept.get("etag", "") if kept.get("login") == login else "")
        if got is None:
            return [str(line) for line in kept.get("warnings", [])]
        etag, cas = got
        _apply(profile, cas)
        warnings = certificate_warnings(profile, cas)
        if etag:
            write_secret(_kept_path(profile),
                         json.dumps({"etag": etag, "login": login, "warnings": warnings}))
        return warnings

    task = asyncio.create_task(refresh())
    try:
        yield
    finally:
        warnings: list[str] = []
        try:
            warnings = await asyncio.wait_for(asyncio.shield(task), FINISH_WITHIN)
        except (TeleportError, TimeoutError) as err:
            task.cancel()
            log.debug("cannot refresh the cluster's CAs: %s", err)
        for line in warnings:
            print(line, file=sys.stderr, flush=True)


def _kept_path(profile: Profile) -> Path:
    return profile.key_dir / "authorities.json"


def _load_kept(profile: Profile) -> dict[str, Any]:
    """The tag of the CA records last applied, for which login, and the warnings they gave."""
    try:
        kept = json.loads(_kept_path(profile).read_bytes())
    except (OSError, ValueError):
        return {}
    return kept if isinstance(kept, dict) else {}


def _login_digest(profile: Profile) -> str:
    """Which certificates the kept warnings are about: a new login judges its own."""
    digest = hashlib.sha256()
    for path in (profile.cert_path, profile.tls_cert_path):
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
    return digest.hexdigest()
