"""In-flight single sign-on logins (`/sso/requests/<state>`): kept 10 minutes, taken once.

The `state` sent to the identity provider names the record; the callback takes it with one
atomic delete, so a replayed or forged `state` finds nothing, and two callbacks racing for one
login cannot both win.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from teleport.backend.base import Backend, Item, key
from teleport.errors import NotFound

#: How long a user has to finish signing in at the provider.
REQUEST_TTL = timedelta(minutes=10)


class SSORequest(BaseModel):
    """What the callback must know about the login it completes; never leaves the auth server."""

    model_config = ConfigDict(frozen=True, extra="forbid", cache_strings=False)

    state: str
    kind: Literal["github", "oidc"]
    connector: str
    #: `console` (tsh: certificates for its keys) or `web` (a browser session).
    flow: Literal["console", "web"]
    #: The connector redirect URL sent to the provider (the callback must arrive there).
    redirect_uri: str
    code_verifier: str
    nonce: str = ""
    client_redirect_url: str = ""
    secret_key: str = ""
    ssh_pub_key: str = ""
    tls_pub_key: str = ""
    cert_ttl_seconds: float = 0.0
    #: SHA-256 of the browser's SSO cookie (web flow): the callback must come from that browser.
    csrf_hash: str = ""
    created: datetime


class SSORequestService:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def _key(self, state: str) -> bytes:
        if not state or "/" in state:
            raise NotFound("no such login request")
        return key("sso", "requests", state)

    async def create(self, request: SSORequest) -> None:
        await self.backend.create(Item(key=self._key(request.state),
                                       value=request.model_dump_json().encode(),
                                       expires=request.created + REQUEST_TTL))

    async def take(self, state: str) -> SSORequest:
        """Return the request and delete it in one step; NotFound if unknown, used or expired."""
        item = await self.backend.get(self._key(state))
        await self.backend.delete(item.key)  # NotFound when another callback took it first
        return SSORequest.model_validate_json(item.value)
