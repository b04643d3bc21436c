"""The proxy's HTTPS certificates on disk: the configured key pairs, watched, or a kept self-signed one.

With `proxy_service.https_keypairs` the proxy serves those files and reads them again when they
change (a renewal by certbot or cert-manager needs no restart): a changed set that does not load
is logged and the old certificates stay. Without, it serves a self-signed certificate for its
public name, kept in `data_dir` so `tsh`'s pin survives restarts, and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from teleport.errors import BadParameter
from teleport.keys import tls as tlskeys
from teleport.utils.clock import Clock
from teleport.utils.fs import write_secret

log = logging.getLogger("teleport.proxy")

#: How often the configured files are checked for a change.
RELOAD_INTERVAL = 5.0
KeyPair = tuple[bytes, bytes]
Paths = Sequence[tuple[Path, Path]]


def read_keypairs(paths: Paths) -> list[KeyPair]:
    """Read each configured (key file, cert file) pair, or raise BadParameter naming the file."""
    pairs = []
    for key_file, cert_file in paths:
        try:
            pairs.append((Path(key_file).read_bytes(), Path(cert_file).read_bytes()))
        except OSError as err:
            raise BadParameter(f"cannot read https keypair {err.filename}: {err.strerror}") from None
    return pairs


def stamp(paths: Paths) -> tuple[tuple[int, int, int], ...]:
    """Return what tells a changed file: inode, size and modification time of each."""
    stamps = []
    for pair in paths:
        for path in pair:
            try:
                st = os.stat(path)
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                stamps.append((0, 0, 0))
    return tuple(stamps)


async def self_signed(host: str, clock: Clock, data_dir: Path) -> KeyPair:
    """Return the self-signed pair kept in data_dir, made again if it no longer fits host.

    It survives restarts (as Teleport's `webproxy_cert.pem` does): `tsh login --insecure` pins
    the certificate it was shown, so a new one on every start would lock every user out.
    """
    key_path, cert_path = data_dir / "webproxy_key.pem", data_dir / "webproxy_cert.pem"
    try:
        key_pem, cert_pem = key_path.read_bytes(), cert_path.read_bytes()
        if tlskeys.self_signed_cert_fits(cert_pem, host, now=clock.now()):
            return key_pem, cert_pem
    except (OSError, BadParameter):
        pass
    key_pem, cert_pem = await asyncio.to_thread(tlskeys.self_signed_web_cert, [host],
                                                now=clock.now())
    write_secret(key_path, key_pem)
    write_secret(cert_path, cert_pem, mode=0o644)
    return key_pem, cert_pem


async def watch(paths: Paths, apply: Callable[[list[KeyPair]], None],
                interval: float = RELOAD_INTERVAL) -> None:
    """Hand `apply` the key pairs again whenever their files change; forever."""
    seen = stamp(paths)
    while True:
        await asyncio.sleep(interval)
        now = stamp(paths)
        if now == seen:
            continue
        seen = now
        try:
            apply(read_keypairs(paths))
        except BadParameter as err:
            log.error("https_keypairs changed but cannot be used, still serving the previous "
                      "certificates: %s", err)
            continue
        log.info("https_keypairs changed: serving the new certificates to new connections")


__all__ = ["RELOAD_INTERVAL", "read_keypairs", "self_signed", "stamp", "watch"]
