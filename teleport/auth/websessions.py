"""Web sessions: a browser logs in through a proxy and the auth server keeps the session.

The login is `tsh login`'s (password, OTP, lockout, `user.login` audit, through `Logins`); the
auth server then makes the session's own key pairs and certificates, so the proxy can act as
the user, and stores them with the browser's secrets (`services.web_sessions`). Any proxy
serves any session, and deleting or locking the user ends them all (`Accounts`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from teleport.auth import access
from teleport.auth.accounts import Accounts
from teleport.auth.certs import DEFAULT_CERT_TTL, CertIssuer
from teleport.auth.context import AuthContext
from teleport.auth.logins import Logins
from teleport.errors import AccessDenied, NotFound
from teleport.events import emitter as ev
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.services.web_sessions import (
    WebSessionRecord,
    WebSessionService,
    idle_deadline,
    new_secret,
)
from teleport.types.resources import User


def _new_keys() -> tuple[bytes, bytes]:
    """Make the session's SSH and TLS private keys, of the kinds `tsh login` makes."""
    return sshkeys.generate_private_key("ed25519"), tlskeys.generate_tls_key()


class WebSessions:
    """Creates, renews and ends the browser sessions proxies serve."""

    def __init__(self, ctx: AuthContext, accounts: Accounts, logins: Logins, certs: CertIssuer,
                 store: WebSessionService) -> None:
        self.ctx = ctx
        self.accounts = accounts
        self.logins = logins
        self.certs = certs
        self.store = store

    async def create(self, username: str, password: str, otp_code: str,
                     remote_addr: str = "") -> WebSessionRecord:
        """Log a user in as `tsh login` does and store a new session with fresh certificates."""
        started = self.ctx.clock.now()
        user = await self.logins.counted(username, password, otp_code, remote_addr)
        return await self.start(user, method="local", remote_addr=remote_addr, started=started)

    async def start(self, user: User, *, method: str, remote_addr: str = "",
                    started: datetime | None = None,
                    audit: Mapping[str, Any] | None = None) -> WebSessionRecord:
        """Store a new session for a user already authenticated (a password, an SSO login,
        a WebAuthn key); `audit` adds fields to its `user.login` event (`mfa_device`)."""
        started = started or self.ctx.clock.now()
        username = user.metadata.name
        created = self.ctx.clock.now()
        ssh_key, tls_key = await asyncio.to_thread(_new_keys)
        certs = await self.certs.issue_user_certs(
            user, sshkeys.public_key_of(ssh_key), tlskeys.tls_public_key_pem(tls_key),
            DEFAULT_CERT_TTL)
        identity = tlskeys.identity_from_cert(certs.tls_cert.encode())
        expires = identity.expires or created + DEFAULT_CERT_TTL
        record = WebSessionRecord(
            id=new_secret(), user=username, created=created, expires=expires,
            idle_expires=idle_deadline(created, expires, self.store.idle_timeout),
            bearer_token=new_secret(), ssh_private_key=ssh_key.decode(), ssh_cert=certs.ssh_cert,
            tls_private_key=tls_key.decode(), tls_cert=certs.tls_cert,
            tls_ca_certs=certs.tls_ca_certs, host_ca_keys=certs.host_ca_keys,
            logins=list(identity.logins), roles=list(identity.roles))
        await self.store.create(record)
        # A deletion or lock that landed during the login ran its cleanup before this session
        # existed: look again, now that it is stored, and take it back. A deletion since the
        # login began refuses even if the name was created again meanwhile.
        try:
            await access.check_user(self.accounts, username, started)
        except AccessDenied:
            await self.store.delete(username, record.id)
            raise
        await self.ctx.audit(ev.USER_LOGIN, username, method=method, success=True,
                             addr_remote=remote_addr, **(audit or {}))
        return record

    async def get(self, username: str, session_id: str) -> WebSessionRecord:
        """Return a live session of a user who may still log in, or refuse."""
        await access.check_named_user(self.accounts, username)
        return await self.store.get(username, session_id, self.ctx.clock.now())

    async def renew(self, username: str, session_id: str) -> WebSessionRecord:
        """Keep a session alive another idle period, never past its certificates' end."""
        await self.get(username, session_id)
        return await self.store.renew(username, session_id, self.ctx.clock.now())

    async def delete(self, username: str, session_id: str) -> None:
        """Log out; a session already gone is fine (a second click, another proxy)."""
        try:
            await self.store.delete(username, session_id)
        except NotFound:
            pass  # a malformed id names no session: nothing to end
