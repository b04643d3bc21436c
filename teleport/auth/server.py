"""The auth server: one part per concern, each built from the services it is handed.

`accounts` (users and signup), `logins` (password, OTP, lockout), `certs` (CAs and every
certificate), `hosts` (join tokens, joining, presence), `sessions` (recordings, live
sessions), `web` (the proxies' browser sessions), `resources` (roles, locks, connectors, and the one
store per kind behind the resource routes), `trusted_clusters` (both sides of trust between
clusters), `sso` (GitHub and OIDC logins) and `mfa`
(WebAuthn keys at signup, at login and as a user's own devices). Handlers in `teleport.auth.api` authorize
the caller (`teleport.rbac`) and then call one method of one part.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from teleport.auth import coherence, migrations, passwords, rotation
from teleport.auth.accounts import Accounts
from teleport.auth.bootstrap import init_lock, initialise
from teleport.auth.bootstrap import load as load_bootstrap
from teleport.auth.certs import CertIssuer
from teleport.auth.context import AuthContext, AuthSettings
from teleport.auth.hosts import Hosts
from teleport.auth.logins import LOGIN_POLICY, Logins
from teleport.auth.mfa import MFA
from teleport.auth.resources import Resources
from teleport.auth.rotation import Rotations
from teleport.auth.sessions import Sessions
from teleport.auth.sso import SSO
from teleport.auth.trustedclusters import TrustedClusters
from teleport.auth.websessions import WebSessions
from teleport.backend.base import Backend
from teleport.errors import TeleportError
from teleport.events import emitter as ev
from teleport.services.authorities import CAService
from teleport.services.connectors import ConnectorService
from teleport.services.live_sessions import LiveSessionService
from teleport.services.locks import LockService
from teleport.services.login_attempts import LoginAttemptService
from teleport.services.mfa_devices import MFADeviceService
from teleport.services.presence import PresenceService
from teleport.services.roles import RoleService
from teleport.services.sso_requests import SSORequestService
from teleport.services.tokens import TokenService
from teleport.services.users import UserService
from teleport.services.web_sessions import WebSessionService
from teleport.utils.clock import Clock

__all__ = ["AuthServer", "AuthSettings"]


log = logging.getLogger("teleport.auth")

class AuthServer:
    def __init__(self, backend: Backend, emitter: ev.Emitter, clock: Clock,
                 settings: AuthSettings) -> None:
        self.ctx = AuthContext(backend, emitter, clock, settings)
        presence = PresenceService(backend)
        tokens = TokenService(backend)
        attempts = LoginAttemptService(backend, LOGIN_POLICY)
        web_sessions = WebSessionService(backend)
        roles, locks = RoleService(backend), LockService(backend)
        connectors = ConnectorService(backend)
        self.accounts = Accounts(self.ctx, UserService(backend), tokens, attempts, web_sessions,
                                 check_roles=roles.require, locks=locks)
        self.certs = CertIssuer(self.ctx, CAService(backend), presence, self.accounts)
        self.rotations = Rotations(self.ctx, self.certs.cas)
        self.logins = Logins(self.ctx, self.accounts, attempts, self.certs)
        self.hosts = Hosts(self.ctx, tokens, presence, self.certs)
        self.sessions = Sessions(self.ctx, presence, LiveSessionService(backend))
        self.web = WebSessions(self.ctx, self.accounts, self.logins, self.certs, web_sessions)
        self.trusted_clusters = TrustedClusters(self.ctx, self.certs.cas, self.hosts, roles,
                                                locks)
        self.resources = Resources(self.ctx, roles, locks, self.accounts, self.hosts, self.certs,
                                   connectors, self.trusted_clusters)
        self.certs.roleset = self.resources.roleset  # certificates carry what the roles allow
        self.sso = SSO(self.ctx, connectors, SSORequestService(backend), self.accounts,
                       self.certs, self.web)
        devices = MFADeviceService(backend)
        self.accounts.mfa_devices = devices  # forgotten with their user, reset with it
        self.mfa = MFA(self.ctx, self.accounts, self.logins, attempts, self.web, devices)

    async def init(self, bootstrap: Path | None = None) -> None:
        """Create the cluster name and CAs on first start (from a `--bootstrap` backup when
        given and the backend is empty: `teleport.auth.bootstrap`); later starts load them,
        once the stored state is at this build's schema version (`teleport.auth.migrations`)."""
        plan = None
        if bootstrap is not None:  # checked whole before anything is written
            plan = load_bootstrap(bootstrap, self.settings.cluster_name,
                                  [t.token for t in self.settings.static_tokens])
        # Before anything reads a record: an older format is moved forward, a newer refused.
        await migrations.migrate(self.backend, lambda: init_lock(self.backend, self.clock))
        await initialise(self.backend, self.clock, plan, self.certs.init)
        await self.resources.init()  # the preset roles, before any user may name them
        # Ready before the first login, so even that one takes the time of any other.
        await asyncio.to_thread(passwords.dummy_hash)

    async def follow_changes(self) -> None:
        """Run for as long as the server does: changes other auth servers write to the shared
        backend reach what this one reuses between calls (`teleport.auth.coherence`)."""
        await coherence.follow_changes(self)

    async def rotate_when_due(self) -> None:
        """Run for as long as the server does: move automatic CA rotations to their next
        phase when the schedule says so (`teleport.auth.rotation`)."""
        failing = False
        while True:
            try:
                await self.rotations.advance_due()
                failing = False
            except TeleportError as err:  # the store is away: try again at the next tick
                if not failing:
                    log.warning("cannot advance CA rotations: %s", err)
                failing = True
            await asyncio.sleep(rotation.TICK)

    @property
    def backend(self) -> Backend:
        return self.ctx.backend

    @property
    def emitter(self) -> ev.Emitter:
        return self.ctx.emitter

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    @property
    def settings(self) -> AuthSettings:
        return self.ctx.settings

    @property
    def cluster_name(self) -> str:
        return self.ctx.cluster_name
