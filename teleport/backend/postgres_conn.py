"""PostgreSQL conn_string as current Teleport takes it: a libpq URL or key=value DSN.

Parsed once, so every message can name the server and user and none ever shows the password.
The backend and the audit log connect and map asyncpg's errors here, so they say the same things.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import os
import re
import shlex
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from teleport.errors import (
    AccessDenied,
    BadParameter,
    ConnectionProblem,
    LimitExceeded,
    TeleportError,
)

#: The one pgx pool setting (`pool_*`) we implement: it sizes our pool. asyncpg would send any
#: `pool_*` key as a server setting, which the server refuses; the other pgx ones
#: (pool_min_conns, pool_max_conn_lifetime, ...) are refused here by name rather than ignored.
_POOL_MAX_CONNS = "pool_max_conns"


@dataclasses.dataclass(frozen=True)
class Target:
    """Where and as whom to connect, parsed once from conn_string."""

    dsn: str = dataclasses.field(repr=False)
    #: host:port for messages; never the user's password.
    address: str
    user: str
    database: str
    max_conns: int
    secrets: tuple[str, ...] = dataclasses.field(repr=False)

    def scrub(self, text: str) -> str:
        """Remove the password from a message, in case a driver ever echoes the DSN."""
        for secret in self.secrets:
            text = text.replace(secret, "********")
        return text


def _keywords_to_url(conn_string: str) -> str:
    """Turn libpq's `host=... user=...` form into the URL form asyncpg reads."""
    try:
        words = shlex.split(conn_string)
    except ValueError as err:
        raise BadParameter(f"postgres conn_string cannot be parsed: {err}") from None
    params: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise BadParameter(
                "postgres conn_string must be a URL (postgresql://user@host:port/database)"
                " or key=value pairs")
        params[name.strip()] = value
    user = params.pop("user", "")
    password = params.pop("password", "")
    host = params.pop("host", "")
    port = params.pop("port", "")
    database = params.pop("dbname", "")
    netloc = ""
    if user:
        netloc = quote(user, safe="") + (":" + quote(password, safe="") if password else "") + "@"
    elif password:
        params["password"] = password
    if host.startswith("/"):
        params["host"] = host
        if port:
            params["port"] = port
    elif host:
        netloc += host + (f":{port}" if port else "")
    elif port:
        params["port"] = port
    return urlunsplit(("postgresql", netloc, "/" + quote(database, safe=""), urlencode(params), ""))


def parse_conn_string(conn_string: str) -> Target:
    """Check conn_string (a libpq URL or key=value DSN) and say where it points."""
    text = conn_string.strip()
    if not text:
        raise BadParameter("postgres conn_string is empty")
    if "://" not in text:
        text = _keywords_to_url(text)
    parts = urlsplit(text)
    if parts.scheme not in ("postgres", "postgresql"):
        raise BadParameter(
            f"postgres conn_string must start with postgresql://, not {parts.scheme}://")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    raw_user, _, raw_password = userinfo.partition(":")
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = dict(query)
    for name in options:
        if name.startswith("pool_") and name != _POOL_MAX_CONNS:
            raise BadParameter(
                f"postgres conn_string: {name} is not supported (of the pgx pool settings only"
                f" {_POOL_MAX_CONNS} is); remove it")
    max_conns = 10
    if "pool_max_conns" in options:
        try:
            max_conns = int(options["pool_max_conns"])
        except ValueError:
            max_conns = 0
        if max_conns < 1:
            raise BadParameter(
                f"postgres conn_string: pool_max_conns must be a positive number,"
                f" got {options['pool_max_conns']!r}")
    password = unquote(raw_password) or options.get("password", "")
    secrets = tuple(s for s in {password, raw_password, quote(password, safe="")} if s)
    address = hosts or options.get("host") or os.environ.get("PGHOST") or "localhost"
    if not address.startswith("/") and not re.search(r":\d+$", address):
        address += ":" + (options.get("port") or os.environ.get("PGPORT") or "5432")
    user = unquote(raw_user) or options.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    database = (unquote(parts.path.lstrip("/")) or options.get("dbname")
                or os.environ.get("PGDATABASE") or user)
    kept = urlencode([(k, v) for k, v in query if k != _POOL_MAX_CONNS])
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, kept, ""))
    target = Target(dsn, address, user, database, max_conns, secrets)
    return dataclasses.replace(target, address=target.scrub(address))


# --- connecting and errors --------------------------------------------------------------------

#: Seconds to establish a connection; open() fails after this when the server is unreachable.
CONNECT_TIMEOUT = 5.0
#: Seconds one statement may run; a silent network partition ends in ConnectionProblem.
COMMAND_TIMEOUT = 30.0

UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.TooManyConnectionsError,
)
#: Retried as a whole transaction: the server refused or lost it before anything was applied.
RETRYABLE = (*UNREACHABLE, asyncpg.exceptions.TransactionRollbackError)


def map_error(target: Target, err: BaseException, *, what: str = "postgres",
              setting: str = "conn_string") -> TeleportError:
    """Name the server, the user or the database and say what to do; never the password.

    `what` names the user of the server in messages, `setting` the option that points at it.
    """
    where = f"{what} at {target.address}"
    detail = " ".join(target.scrub(str(err) or type(err).__name__).split())
    if isinstance(err, TimeoutError) and not str(err):
        detail = f"no answer within {CONNECT_TIMEOUT:g}s"
    if isinstance(err, asyncpg.exceptions.InvalidAuthorizationSpecificationError):
        return AccessDenied(f"{where} refused user {target.user!r}: {detail}")
    if isinstance(err, asyncpg.exceptions.InsufficientPrivilegeError):
        return AccessDenied(f"{where}: user {target.user!r} lacks a privilege: {detail}")
    if isinstance(err, asyncpg.exceptions.InvalidCatalogNameError):
        return BadParameter(
            f"{where} has no database {target.database!r}; create it"
            f" (CREATE DATABASE {target.database} OWNER {target.user}) or fix {setting}")
    if isinstance(err, asyncpg.exceptions.DiskFullError):
        return LimitExceeded(f"{where}: the disk is full")
    if isinstance(err, UNREACHABLE):
        return ConnectionProblem(f"{where} is unreachable: {detail}")
    return ConnectionProblem(f"{where}: {detail}")


#: What connecting raises for a bad option on the URL: asyncpg refuses it (say, an unknown
#: sslmode), or the server refuses the setting asyncpg sent it (an unknown name or a bad value).
_MISCONFIGURED = (asyncpg.ClientConfigurationError, asyncpg.exceptions.UndefinedObjectError,
                  asyncpg.exceptions.InvalidParameterValueError)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release session reset (a round trip per call): no call of ours leaves
    session state behind, and asyncpg still rolls back a transaction left open."""


async def open_pool(target: Target, *, what: str = "postgres",
                    setting: str = "conn_string") -> asyncpg.Pool:
    """Connect a pool of up to target.max_conns, or raise one of our errors naming the server."""
    try:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
        async with asyncio.timeout(CONNECT_TIMEOUT * 2):
            pool: asyncpg.Pool = await asyncpg.create_pool(
                target.dsn, min_size=1, max_size=target.max_conns, timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT, reset=_keep_session)
    except TeleportError:
        raise
    except _MISCONFIGURED as err:
        raise BadParameter(f"{what} at {target.address}: {target.scrub(str(err))}; fix {setting}"
                           ) from None
    except Exception as err:
        raise map_error(target, err, what=what, setting=setting) from None
    return pool
