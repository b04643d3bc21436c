"""PostgreSQL conn_string as current Teleport takes it: a libpq URL or key=value DSN.

Parsed once, so every message can name the server and user and none ever shows the password.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
import shlex
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from teleport.errors import BadParameter

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
