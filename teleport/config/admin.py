"""What `tctl` needs of teleport.yaml (the data directory and the auth servers to call),
remembered per file content so that most calls read it without building the schema.

Validating teleport.yaml imports pydantic and builds the schema's models: ~110 ms, more than
everything else `tctl nodes ls` does. The first call after any change to the file (or to this
code) validates it whole, as `teleport start` does, so a mistake is the same one line; its two
answers are then kept in the user's cache folder (`$XDG_CACHE_HOME/teleport/config`, else
`~/.cache/...`, 0700) under the SHA-256 of the file's bytes, the `--data-dir` flag and a
fingerprint of this package's code. Later calls hash the file and read the entry. Nothing
secret is kept; a cache that cannot be read or written only costs the validation.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from teleport.config import DEFAULT_CONFIG_PATH
from teleport.utils.plain import Mismatch, convert

#: Entries written longer ago are removed when a new one is written (one in use is then
#: validated and written again).
STALE_AFTER = 30 * 24 * 3600.0


@dataclass(slots=True)
class AdminTarget:
    """Where the auth host's Admin identity is, and the auth servers `tctl` calls with it."""

    data_dir: str
    auth_addrs: list[str]


def admin_target(config_path: str | None, data_dir: str | None) -> AdminTarget:
    """Return what `tctl` needs from the config file it is given (else /etc/teleport.yaml if
    present, else the defaults) and its `--data-dir` flag; BadParameter names a mistake in
    the file."""
    path = Path(config_path) if config_path else DEFAULT_CONFIG_PATH
    content: bytes | None = None  # not kept: validation names the problem every time
    try:
        content = b"file:" + path.read_bytes()
    except FileNotFoundError:
        if not config_path:  # no /etc/teleport.yaml: the defaults
            content = f"none:{path}".encode()
    except OSError:
        pass
    entry = _entry_path(content, data_dir) if content is not None else None
    known = _read(entry) if entry is not None else None
    if known is not None:
        return known
    target = _validated(config_path, data_dir)
    if entry is not None:
        _write(entry, target)
    return target


def _validated(config_path: str | None, data_dir: str | None) -> AdminTarget:
    from teleport.config.runtime import StartFlags, load_config
    from teleport.utils.addr import HostPort

    config = load_config(StartFlags(config_path=config_path, data_dir=data_dir))
    if config.auth.enabled:
        listen = config.auth.listen_addr
        host = "127.0.0.1" if listen.host in ("0.0.0.0", "::", "") else listen.host
        addrs = [str(HostPort(host, listen.port))]
    else:
        addrs = [str(addr) for addr in config.auth_servers]
    return AdminTarget(data_dir=str(config.data_dir), auth_addrs=addrs)


def _cache_dir() -> Path | None:
    base = os.environ.get("XDG_CACHE_HOME") or (
        os.path.join(os.environ["HOME"], ".cache") if os.environ.get("HOME") else "")
    return Path(base, "teleport", "config") if base else None


def _entry_path(content: bytes, data_dir: str | None) -> Path | None:
    """The entry for this file content (or the path of a missing file) and flag."""
    folder = _cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256()
    for part in (_code_fingerprint(), b"" if data_dir is None else b"flag:" + data_dir.encode(),
                 content):
        digest.update(len(part).to_bytes(8, "big") + part)
    return folder / f"{digest.hexdigest()}.json"


def _code_fingerprint() -> bytes:
    """The version and this package's source files (name, size, mtime): a changed schema
    or default must not be answered from an entry the old code wrote."""
    from teleport import __version__

    here = Path(__file__).parent
    stats = sorted((e.name, st.st_size, st.st_mtime_ns)
                   for e in os.scandir(here) if e.name.endswith(".py") for st in [e.stat()])
    return f"{__version__}:{stats}".encode()


def _read(entry: Path) -> AdminTarget | None:
    try:
        target: AdminTarget = convert(json.loads(entry.read_bytes()), AdminTarget)
    except (OSError, ValueError, Mismatch):  # missing, unreadable or not ours: validate again
        return None
    return target


def _write(entry: Path, target: AdminTarget) -> None:
    from teleport.utils.fs import ensure_private_dir, write_secret

    try:
        folder = ensure_private_dir(entry.parent)
        write_secret(entry, json.dumps(asdict(target)))
        now = time.time()
        for old in os.scandir(folder):
            if now - old.stat().st_mtime > STALE_AFTER:
                os.unlink(old.path)
    except OSError:
        pass  # a read-only or full home: the next call validates again
