"""Password hashing and one-time-code parsing for local users: pure functions, no I/O.

bcrypt reads at most 72 bytes (bcrypt 5 refuses more), while the manual allows passwords of up
to 128 characters, i.e. up to 512 bytes of UTF-8. A longer password is first reduced to
base64(SHA-256), 44 bytes, at both hashing and checking; shorter ones go in unchanged, so the
hashes stored before this rule keep working.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re

import bcrypt

from teleport.errors import BadParameter

MIN_PASSWORD_LEN = 6
MAX_PASSWORD_LEN = 128
#: The cost of every password hash, and of the hash unknown users are checked against.
BCRYPT_ROUNDS = 12
BCRYPT_MAX_BYTES = 72
OTP_DIGITS = 6
_OTP_RE = re.compile(rf"[0-9]{{{OTP_DIGITS}}}", re.ASCII)


def utf8(text: str, what: str) -> bytes:
    """Encode text, refusing a lone surrogate (JSON allows `\\ud800`, UTF-8 does not)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadParameter(f"{what} is not valid Unicode text") from None


def check_password_policy(password: str) -> None:
    """Refuse a new password that is too short, too long or not valid text."""
    if not MIN_PASSWORD_LEN <= len(password) <= MAX_PASSWORD_LEN:
        raise BadParameter(
            f"password must be between {MIN_PASSWORD_LEN} and {MAX_PASSWORD_LEN} characters")
    utf8(password, "password")


def _bcrypt_input(password: str) -> bytes:
    data = utf8(password, "password")
    if len(data) > BCRYPT_MAX_BYTES:
        data = base64.b64encode(hashlib.sha256(data).digest())
    return data


def hash_password(password: str) -> bytes:
    """Hash a password at BCRYPT_ROUNDS; slow on purpose, run it in a thread."""
    return bcrypt.hashpw(_bcrypt_input(password), bcrypt.gensalt(rounds=BCRYPT_ROUNDS))


def password_matches(password: str, hashed: bytes) -> bool:
    """Check a password against a stored hash; slow on purpose, run it in a thread."""
    try:
        return bcrypt.checkpw(_bcrypt_input(password), hashed)
    except ValueError:  # a damaged stored hash: never a match
        return False


@functools.cache
def dummy_hash() -> bytes:
    """A hash at the real cost, computed once on first use (not on import: it takes ~0.25 s).

    Unknown users are checked against it, so they take as long as real ones.
    """
    return bcrypt.hashpw(b"teleport-dummy-password", bcrypt.gensalt(rounds=BCRYPT_ROUNDS))


def bcrypt_cost(hashed: bytes) -> int:
    """Read the cost from a `$2b$12$...` hash."""
    return int(hashed.split(b"$")[2])


def normalize_otp(code: str) -> str | None:
    """Return the code if it is exactly six ASCII digits, else None.

    pyotp compares after NFKC normalisation, so fullwidth or mathematical digits would match a
    code; the used-code record must hold the one spelling that is checked.
    """
    return code if _OTP_RE.fullmatch(code) else None
