"""Auth API routes for the proxies' browser sessions (see `teleport.auth.websessions`).

Only proxies call them, on behalf of the user named in the path. Reading or renewing a
session checks that user as stored now: a deleted, locked or expired user's session is
refused, and the proxy drops it. Logging out is not audited: Teleport has no such event.
"""

from __future__ import annotations

from typing import Any

from teleport.api.auth_models import WebSession, WebSessionCreate
from teleport.auth.api import PROXY, Call, route
from teleport.services.web_sessions import WebSessionRecord


def _answer(record: WebSessionRecord) -> WebSession:
    return WebSession.model_validate(record.model_dump())


@route("POST", "/v1/users/{name}/web/sessions", [PROXY])
async def create_web_session(call: Call) -> Any:
    body = await call.body(WebSessionCreate)
    return _answer(await call.auth.web.create(call.param("name"), body.password, body.otp_code,
                                              body.remote_addr))


@route("GET", "/v1/users/{name}/web/sessions/{id}", [PROXY])
async def get_web_session(call: Call) -> Any:
    return _answer(await call.auth.web.get(call.param("name"), call.param("id")))


@route("POST", "/v1/users/{name}/web/sessions/{id}/renew", [PROXY])
async def renew_web_session(call: Call) -> Any:
    return _answer(await call.auth.web.renew(call.param("name"), call.param("id")))


@route("DELETE", "/v1/users/{name}/web/sessions/{id}", [PROXY])
async def delete_web_session(call: Call) -> Any:
    await call.auth.web.delete(call.param("name"), call.param("id"))
    return {}
