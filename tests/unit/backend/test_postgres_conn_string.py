"""conn_string as current Teleport takes it: a libpq URL or key=value DSN, pgx pool settings."""

from __future__ import annotations

import pytest

from teleport.backend.postgres_conn import parse_conn_string
from teleport.errors import BadParameter


def test_url_with_pool_setting_and_password() -> None:
    target = parse_conn_string(
        "postgresql://teleport:s%40cret@db.example.com/teleport_backend"
        "?sslmode=verify-full&pool_max_conns=20")
    # pgx's pool setting sizes our pool and is not sent to the server as a setting.
    assert target.dsn == "postgresql://teleport:s%40cret@db.example.com/teleport_backend?sslmode=verify-full"
    assert (target.address, target.user, target.database, target.max_conns) == (
        "db.example.com:5432", "teleport", "teleport_backend", 20)
    assert "s@cret" not in repr(target)
    assert target.scrub("failed for s@cret and s%40cret") == "failed for ******** and ********"


def test_keyword_dsn() -> None:
    target = parse_conn_string("host=db port=6432 user=u password='a b' dbname=x sslmode=require")
    assert target.dsn == "postgresql://u:a%20b@db:6432/x?sslmode=require"
    assert (target.address, target.user, target.database) == ("db:6432", "u", "x")


@pytest.mark.parametrize("bad", ["", "mysql://u@h/db", "not a dsn",
                                 "postgresql://u@h/db?pool_max_conns=0"])
def test_bad_conn_string_is_bad_parameter(bad: str) -> None:
    with pytest.raises(BadParameter, match="conn_string"):
        parse_conn_string(bad)


@pytest.mark.parametrize("conn_string", [
    "postgresql://u@h/db?pool_max_conns=5&pool_min_conns=2",
    "host=h user=u dbname=db pool_max_conn_lifetime=1h",
])
def test_pool_setting_we_do_not_implement_is_refused_by_name(conn_string: str) -> None:
    # Accepting a pgx pool setting and silently not applying it would mislead the operator.
    name = conn_string.rsplit("&", 1)[-1].rsplit(" ", 1)[-1].split("=")[0]
    with pytest.raises(BadParameter) as raised:
        parse_conn_string(conn_string)
    message = str(raised.value)
    assert name in message and "\n" not in message
