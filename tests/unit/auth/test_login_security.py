"""Logins under attack: parallel guessing, replayed codes, unknown names, odd input, signups.

Real AuthServers over the memory or sqlite backend with a fake clock; no network.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import bcrypt
import pyotp
import pytest

from teleport.auth import passwords
from teleport.auth.logins import INVALID_LOGIN
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.sqlite import SqliteBackend
from teleport.errors import AccessDenied, BadParameter, NotFound
from teleport.events.emitter import MemoryEmitter
from teleport.types.resource import ZERO_TIME
from teleport.types.resources import User
from teleport.utils.clock import FakeClock

PASSWORD = "correct horse"
WRONG = "wrong password"
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
MATH_BOLD = str.maketrans("0123456789", "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗")


def _clock(auth: AuthServer) -> FakeClock:
    assert isinstance(auth.clock, FakeClock)
    return auth.clock


def _events(auth: AuthServer) -> MemoryEmitter:
    assert isinstance(auth.emitter, MemoryEmitter)
    return auth.emitter


async def _signup(auth: AuthServer, name: str = "joe", password: str = PASSWORD) -> pyotp.TOTP:
    token = await auth.accounts.create_user_signup(name, [name], [], created_by="admin")
    totp = pyotp.TOTP((await auth.accounts.get_signup_info(token.metadata.name)).otp_secret)
    await auth.accounts.complete_signup(token.metadata.name, password, totp.at(auth.clock.now()))
    return totp


def _fresh_code(auth: AuthServer, totp: pyotp.TOTP) -> str:
    """A code never used before: step the clock one 30 s window, so no test fails on a replay."""
    _clock(auth).advance(timedelta(seconds=30))
    return totp.at(auth.clock.now())


async def _attempt(auth: AuthServer, password: str, code: str, name: str = "joe") -> str:
    """Return 'ok' or the refusal's message."""
    try:
        await auth.logins.authenticate(name, password, code)
    except AccessDenied as err:
        return str(err)
    return "ok"


async def _update_user(auth: AuthServer, name: str, **spec: object) -> None:
    user = await auth.accounts.get_user(name)
    await auth.accounts.upsert_user(user.model_copy(update={"spec": user.spec.model_copy(update=spec)}))


# --- finding 2: lockout under concurrency ---------------------------------------------------------

async def test_hundred_parallel_attempts_let_nothing_in_after_five_failures(auth: AuthServer) -> None:
    totp = await _signup(auth)
    code = _fresh_code(auth, totp)
    # 99 wrong passwords; the right password with a valid, unused code is attempt 60.
    attempts = [(PASSWORD if i == 59 else f"{WRONG} {i}", code) for i in range(100)]
    results = await asyncio.gather(*(_attempt(auth, pw, c) for pw, c in attempts))
    assert "ok" not in results
    assert "locked" in results[59]
    assert results.count(INVALID_LOGIN) == 5  # only five passwords were ever checked
    assert all("locked" in r for r in results[5:])
    failures = [e["error"] for e in _events(auth).of_type("auth")]
    assert sum(e.startswith(INVALID_LOGIN) for e in failures) == 5
    # The lock holds for the right password until it expires, then the user gets in.
    assert "locked" in await _attempt(auth, PASSWORD, _fresh_code(auth, totp))
    _clock(auth).advance(timedelta(minutes=20))
    assert await _attempt(auth, PASSWORD, _fresh_code(auth, totp)) == "ok"


async def test_auth_servers_sharing_a_backend_agree_on_the_lock(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "sqlite.db"
    backends = [await SqliteBackend.open(path, clock) for _ in range(2)]
    try:
        servers = [AuthServer(b, MemoryEmitter(), clock, AuthSettings(cluster_name="example.com"))
                   for b in backends]
        for server in servers:
            await server.init()
        totp = await _signup(servers[0])
        code = _fresh_code(servers[0], totp)
        # Attempts alternate between the two servers; the right password is attempt 60.
        results = await asyncio.gather(*(
            _attempt(servers[i % 2], PASSWORD if i == 59 else f"{WRONG} {i}", code)
            for i in range(100)))
        assert "ok" not in results
        assert results.count(INVALID_LOGIN) == 5
        assert "locked" in await _attempt(servers[1], PASSWORD, _fresh_code(servers[1], totp))
    finally:
        for backend in backends:
            await backend.close()


async def test_a_success_resets_the_count_and_failures_leave_status_visible(auth: AuthServer) -> None:
    totp = await _signup(auth)
    for _ in range(4):
        assert await _attempt(auth, WRONG, "000000") == INVALID_LOGIN
    assert await _attempt(auth, PASSWORD, _fresh_code(auth, totp)) == "ok"
    for _ in range(4):
        assert await _attempt(auth, WRONG, "000000") == INVALID_LOGIN
    assert not (await auth.accounts.get_user("joe")).spec.status.is_locked
    assert await _attempt(auth, WRONG, "000000") == INVALID_LOGIN
    status = (await auth.accounts.get_user("joe")).spec.status
    assert status.is_locked and status.lock_expires == auth.clock.now() + timedelta(minutes=20)
    # An administrator unlocking the user ends the lockout at once.
    await _update_user(auth, "joe", status=status.model_copy(update={"is_locked": False}))
    assert await _attempt(auth, PASSWORD, _fresh_code(auth, totp)) == "ok"


# --- finding 3: one spelling of a code ------------------------------------------------------------

async def test_used_code_replayed_in_other_digits_is_refused(auth: AuthServer) -> None:
    totp = await _signup(auth)
    code = _fresh_code(auth, totp)
    assert await _attempt(auth, PASSWORD, code) == "ok"
    for spelling in (code.translate(FULLWIDTH), code.translate(MATH_BOLD)):
        assert await _attempt(auth, PASSWORD, spelling) == INVALID_LOGIN
    # Not a lockout or a wrong password: the next code works.
    assert await _attempt(auth, PASSWORD, _fresh_code(auth, totp)) == "ok"


async def test_codes_other_than_six_ascii_digits_are_refused(auth: AuthServer) -> None:
    totp = await _signup(auth)
    code = _fresh_code(auth, totp)
    # Four refusals: a fifth would lock the user.
    for spelling in (code.translate(FULLWIDTH), f" {code}", f"{code}\n", f"0{code}"):
        assert await _attempt(auth, PASSWORD, spelling) == INVALID_LOGIN
    assert await _attempt(auth, PASSWORD, code) == "ok"  # unspent by the refusals above


async def test_signup_refuses_other_digits_and_used_codes(auth: AuthServer) -> None:
    token = await auth.accounts.create_user_signup("ann", [], [], created_by="admin")
    totp = pyotp.TOTP((await auth.accounts.get_signup_info(token.metadata.name)).otp_secret)
    code = totp.at(auth.clock.now())
    with pytest.raises(AccessDenied, match="one-time password"):
        await auth.accounts.complete_signup(token.metadata.name, PASSWORD, code.translate(FULLWIDTH))
    # A code already recorded as used for this user is refused, and the token still works.
    await auth.accounts.users.mark_totp_used("ann", code, auth.clock.now() + timedelta(minutes=3))
    with pytest.raises(AccessDenied, match="already used"):
        await auth.accounts.complete_signup(token.metadata.name, PASSWORD, code)
    await auth.accounts.complete_signup(token.metadata.name, PASSWORD, _fresh_code(auth, totp))


# --- finding 6: unknown names look like known ones ------------------------------------------------

async def test_unknown_and_known_names_get_the_same_answers(auth: AuthServer) -> None:
    await _signup(auth)
    known = [await _attempt(auth, WRONG, "000000", name="joe") for _ in range(7)]
    unknown = [await _attempt(auth, WRONG, "000000", name="ghost") for _ in range(7)]
    assert known == unknown
    assert known[:5] == [INVALID_LOGIN] * 5 and "locked" in known[5]
    errors = {name: [e["error"] for e in _events(auth).of_type("auth") if e["user"] == name]
              for name in ("joe", "ghost")}
    assert errors["joe"] == errors["ghost"]


async def test_dummy_hash_costs_what_a_real_hash_costs(auth: AuthServer) -> None:
    await _signup(auth)
    real = await auth.accounts.users.get_password_hash("joe")
    assert passwords.bcrypt_cost(passwords.dummy_hash()) == passwords.bcrypt_cost(real) == 12


def test_importing_the_auth_server_computes_no_hash() -> None:
    probe = ("import teleport.auth.server, teleport.auth.passwords as p; "
             "assert p.dummy_hash.cache_info().currsize == 0")
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


# --- finding 12: expiry and locks without an end --------------------------------------------------

async def test_expired_user_can_neither_log_in_nor_sign_up(auth: AuthServer) -> None:
    totp = await _signup(auth)
    await _update_user(auth, "joe", expires=auth.clock.now() + timedelta(hours=1))
    assert await _attempt(auth, PASSWORD, _fresh_code(auth, totp)) == "ok"
    _clock(auth).advance(timedelta(hours=1))
    assert await _attempt(auth, PASSWORD, _fresh_code(auth, totp)) == INVALID_LOGIN
    token = await auth.accounts.create_user_signup("ann", [], [], created_by="admin")
    await _update_user(auth, "ann", expires=auth.clock.now() - timedelta(seconds=1))
    secret = (await auth.accounts.get_signup_info(token.metadata.name)).otp_secret
    with pytest.raises(AccessDenied, match="expired"):
        await auth.accounts.complete_signup(token.metadata.name, PASSWORD,
                                   pyotp.TOTP(secret).at(auth.clock.now()))


async def test_is_locked_without_lock_expires_locks_until_unlocked(auth: AuthServer) -> None:
    totp = await _signup(auth)
    user = await auth.accounts.get_user("joe")
    locked = user.spec.status.model_copy(update={"is_locked": True, "lock_expires": ZERO_TIME,
                                                 "locked_message": "on leave"})
    await _update_user(auth, "joe", status=locked)
    assert "locked" in await _attempt(auth, PASSWORD, _fresh_code(auth, totp))
    _clock(auth).advance(timedelta(days=365))
    assert "on leave" in await _attempt(auth, PASSWORD, _fresh_code(auth, totp))
    await _update_user(auth, "joe", status=locked.model_copy(update={"is_locked": False}))
    assert await _attempt(auth, PASSWORD, _fresh_code(auth, totp)) == "ok"


# --- finding 14a: one token, one password ---------------------------------------------------------

async def test_two_signups_with_one_token_set_exactly_one_password(auth: AuthServer) -> None:
    token = await auth.accounts.create_user_signup("ann", [], [], created_by="admin")
    totp = pyotp.TOTP((await auth.accounts.get_signup_info(token.metadata.name)).otp_secret)
    now = auth.clock.now()
    # Two different codes, both valid now (the current and the previous window).
    tries = [("first password", totp.at(now)), ("second password", totp.at(now - timedelta(seconds=30)))]
    results = await asyncio.gather(
        *(auth.accounts.complete_signup(token.metadata.name, pw, code) for pw, code in tries),
        return_exceptions=True)
    won = [pw for (pw, _), r in zip(tries, results, strict=True) if isinstance(r, User)]
    lost = [pw for (pw, _), r in zip(tries, results, strict=True) if isinstance(r, NotFound)]
    assert len(won) == 1 and len(lost) == 1, results
    stored = await auth.accounts.users.get_password_hash("ann")
    assert passwords.password_matches(won[0], stored)
    assert not passwords.password_matches(lost[0], stored)


# --- finding 11a: long passwords and text that is not Unicode -----------------------------------

async def test_passwords_up_to_128_characters_of_any_script_work(auth: AuthServer) -> None:
    longest = "é" * 128  # 256 bytes of UTF-8, far past bcrypt's 72
    totp = await _signup(auth, "joe", longest)
    assert await _attempt(auth, longest, _fresh_code(auth, totp)) == "ok"
    assert await _attempt(auth, longest[:-1] + "e", _fresh_code(auth, totp)) == INVALID_LOGIN
    token = await auth.accounts.create_user_signup("ann", [], [], created_by="admin")
    with pytest.raises(BadParameter, match="between 6 and 128"):
        await auth.accounts.complete_signup(token.metadata.name, "x" * 129, "000000")


def test_hashes_of_short_passwords_made_before_keep_working() -> None:
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4))
    assert passwords.password_matches(PASSWORD, legacy)
    assert not passwords.password_matches(WRONG, legacy)


async def test_lone_surrogates_are_bad_parameters(auth: AuthServer) -> None:
    totp = await _signup(auth)
    with pytest.raises(BadParameter, match="password is not valid Unicode"):
        await auth.logins.authenticate("joe", "pass\ud800word", _fresh_code(auth, totp))
    with pytest.raises(BadParameter, match="user name is not valid Unicode"):
        await auth.logins.authenticate("jo\ud800e", PASSWORD, _fresh_code(auth, totp))
    with pytest.raises(BadParameter, match="user name is not valid Unicode"):
        await auth.accounts.create_user_signup("\ud800", [], [], created_by="admin")
    token = await auth.accounts.create_user_signup("ann", [], [], created_by="admin")
    with pytest.raises(BadParameter, match="password is not valid Unicode"):
        await auth.accounts.complete_signup(token.metadata.name, "\udfff" * 8, "000000")
