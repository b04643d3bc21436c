"""Open the backend `teleport.storage` names: sqlite in the data dir, etcd, PostgreSQL or
DynamoDB.

The drivers take plain settings (the backend layer does not know the config's models); this is
where the config's keys become them, and where the files they name are read, so a missing one
is one line naming the key rather than a driver's error.
"""

from __future__ import annotations

from pathlib import Path

from teleport.backend.base import Backend
from teleport.backend.sqlite import SqliteBackend
from teleport.config.schema import Storage
from teleport.errors import AccessDenied, BadParameter
from teleport.utils.clock import Clock
from teleport.utils.fs import ensure_private_dir


def _readable(key: str, path: Path | None) -> Path | None:
    if path is not None and not Path(path).is_file():
        raise BadParameter(f"storage.{key}: cannot read {path}: no such file")
    return path


def _password(path: Path | None) -> str | None:
    """The first line of password_file (a trailing newline is not part of the password)."""
    if path is None:
        return None
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not text"
        raise BadParameter(f"storage.password_file: cannot read {path}: {reason}") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise BadParameter(f"storage.password_file: {path} is empty")
    return password


async def open_backend(storage: Storage, data_dir: Path, clock: Clock) -> Backend:
    """Open (and on first use create) the cluster state's store; errors are one line.

    A store that refuses our credentials is a setting to fix, like a missing file: BadParameter
    (exit 2). One that cannot be reached stays ConnectionProblem (exit 1: try again later).
    """
    try:
        return await _open(storage, data_dir, clock)
    except AccessDenied as err:
        raise BadParameter(str(err)) from None


async def _open(storage: Storage, data_dir: Path, clock: Clock) -> Backend:
    if storage.type == "etcd":
        cert = _readable("tls_cert_file", storage.tls_cert_file)
        key = _readable("tls_key_file", storage.tls_key_file)
        ca = _readable("tls_ca_file", storage.tls_ca_file)
        password = _password(storage.password_file)
        from teleport.backend.etcd import EtcdBackend, EtcdSettings

        settings = EtcdSettings(
            peers=list(storage.peers), prefix=storage.prefix,
            tls_cert_file=cert, tls_key_file=key, tls_ca_file=ca,
            username=storage.username, password=password, insecure=storage.insecure,
            max_client_msg_size=storage.etcd_max_client_msg_size_bytes)
        return await EtcdBackend.open(settings, clock)
    if storage.type == "postgresql":
        from teleport.backend.postgres import PostgresBackend

        return await PostgresBackend.open(storage.conn_string or "", clock)
    if storage.type == "dynamodb":
        from teleport.backend.dynamodb import DynamoBackend, DynamoSettings

        return await DynamoBackend.open(DynamoSettings(
            table_name=storage.table_name or "", region=storage.region,
            endpoint=storage.endpoint, continuous_backups=storage.continuous_backups,
            billing_mode=storage.billing_mode, read_capacity_units=storage.read_capacity_units,
            write_capacity_units=storage.write_capacity_units), clock)
    path = Path(storage.path) if storage.path else data_dir / "backend"
    return await SqliteBackend.open(ensure_private_dir(path) / "sqlite.db", clock=clock)
