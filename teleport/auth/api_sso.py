"""Auth API routes of single sign-on (see `teleport.auth.sso`): only proxies call them.

A proxy relays a user's start of a GitHub or OIDC login and, later, what the provider sent
back to its callback; the auth server keeps the login's secrets (state, PKCE verifier, nonce,
tsh's answer key) and never hands them to the proxy.
"""

from __future__ import annotations

from typing import Any

from teleport.api.auth_models import SSOCallback, SSOLoginStart
from teleport.auth.api import PROXY, Call, route
from teleport.errors import NotFound
from teleport.types.connectors import CONNECTOR_KINDS


def _kind(call: Call) -> str:
    kind = call.param("kind")
    if kind not in CONNECTOR_KINDS:
        raise NotFound(f"no single sign-on of kind {kind!r}: use github or oidc")
    return kind


@route("POST", "/v1/sso/{kind}/requests", [PROXY])
async def start_sso_login(call: Call) -> Any:
    return await call.auth.sso.start(_kind(call), await call.body(SSOLoginStart))


@route("POST", "/v1/sso/{kind}/callback", [PROXY])
async def complete_sso_login(call: Call) -> Any:
    return await call.auth.sso.callback(_kind(call), await call.body(SSOCallback))
