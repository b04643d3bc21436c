"""Auth API routes of second factors (see `teleport.auth.mfa`).

Signup and logins with a key are the proxies' (the browser talks to a proxy, which relays);
a user's own devices are the user's: their certificate (tsh, or the proxy acting with a web
session's certificate) names them, and nobody else's devices are reachable.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from teleport.api.auth_models import WebSession
from teleport.api.mfa_models import (
    MFALoginBegin,
    MFALoginCerts,
    MFALoginCertsAnswer,
    MFALoginFinish,
    MFARegisterBegin,
    MFARegisterFinish,
    MFASignupComplete,
    WebauthnChallenge,
)
from teleport.auth.api import PROXY, USER, Call, route
from teleport.auth.mfa import UserKeys
from teleport.errors import AccessDenied, BadParameter
from teleport.services.web_sessions import WebSessionRecord
from teleport.types.codec import to_dict
from teleport.utils.duration import parse_duration


def _options(options_json: str | None) -> WebauthnChallenge:
    return WebauthnChallenge(webauthn_public_key=json.loads(options_json) if options_json else None)


def _session(record: WebSessionRecord) -> WebSession:
    return WebSession.model_validate(record.model_dump())


def _keys(body: MFALoginCerts) -> UserKeys:
    ttl = parse_duration(body.ttl) if body.ttl else None
    if ttl is not None and ttl <= timedelta(0):
        raise BadParameter(f"ttl must be positive, got {body.ttl!r}")
    return UserKeys(body.ssh_public_key, body.tls_public_key.encode(), ttl)


def _own(call: Call) -> str:
    """The user named in the path, who must be the caller: devices are one's own."""
    name = call.param("name")
    if call.identity.username != name:
        raise AccessDenied(f"user {call.identity.username!r} may not manage the MFA devices "
                           f"of {name!r}")
    return name


# --- signup (the proxy relays the signup page) --------------------------------------------------

@route("POST", "/v1/signup/{token}/webauthn/register", [PROXY])
async def signup_register_challenge(call: Call) -> Any:
    return _options(await call.auth.mfa.signup_challenge(call.param("token")))


@route("POST", "/v1/signup/{token}/complete/mfa", [PROXY])
async def complete_signup_mfa(call: Call) -> Any:
    body = await call.body(MFASignupComplete)
    user = await call.auth.mfa.complete_signup(
        call.param("token"), body.password, body.otp_code or "", body.webauthn_response,
        body.device_name, body.remote_addr)
    return to_dict(user)


# --- logins -------------------------------------------------------------------------------------

@route("POST", "/v1/users/{name}/webauthn/login/begin", [PROXY])
async def webauthn_login_begin(call: Call) -> Any:
    body = await call.body(MFALoginBegin)
    return _options(await call.auth.mfa.begin_login(call.param("name"), body.password,
                                                    body.remote_addr))


@route("POST", "/v1/users/{name}/webauthn/web/sessions", [PROXY])
async def webauthn_login_finish(call: Call) -> Any:
    body = await call.body(MFALoginFinish)
    return _session(await call.auth.mfa.finish_login(call.param("name"), body.webauthn_response,
                                                     body.remote_addr))


@route("POST", "/v1/users/{name}/webauthn/ssh/authenticate", [PROXY])
async def webauthn_login_certs(call: Call) -> Any:
    """`tsh login` with a key after the password: certificates instead of a web session."""
    body = await call.body(MFALoginCerts)
    name = call.param("name")
    certs = await call.auth.mfa.finish_login_certs(name, body.webauthn_response, _keys(body),
                                                   body.remote_addr)
    return MFALoginCertsAnswer(username=name, certs=certs)


@route("POST", "/v1/webauthn/passwordless/begin", [PROXY])
async def passwordless_begin(call: Call) -> Any:
    return _options(await call.auth.mfa.begin_passwordless())


@route("POST", "/v1/webauthn/passwordless/web/sessions", [PROXY])
async def passwordless_finish(call: Call) -> Any:
    body = await call.body(MFALoginFinish)
    return _session(await call.auth.mfa.finish_passwordless(body.webauthn_response,
                                                            body.remote_addr))


@route("POST", "/v1/webauthn/passwordless/ssh/authenticate", [PROXY])
async def passwordless_certs(call: Call) -> Any:
    """`tsh login --auth=passwordless`: the key's user handle names the user."""
    body = await call.body(MFALoginCerts)
    who, certs = await call.auth.mfa.finish_passwordless_certs(body.webauthn_response,
                                                               _keys(body), body.remote_addr)
    return MFALoginCertsAnswer(username=who, certs=certs)


# --- a user's own devices -----------------------------------------------------------------------

@route("GET", "/v1/users/{name}/mfa/devices", [USER])
async def list_mfa_devices(call: Call) -> Any:
    return await call.auth.mfa.list_devices(_own(call))


@route("POST", "/v1/users/{name}/mfa/devices/register", [USER])
async def mfa_register_challenge(call: Call) -> Any:
    body = await call.body(MFARegisterBegin)
    return _options(await call.auth.mfa.add_challenge(_own(call), body.passwordless))


@route("POST", "/v1/users/{name}/mfa/devices", [USER])
async def add_mfa_device(call: Call) -> Any:
    body = await call.body(MFARegisterFinish)
    return await call.auth.mfa.add_device(_own(call), body.name, body.webauthn_response,
                                          body.remote_addr)


@route("DELETE", "/v1/users/{name}/mfa/devices/{device}", [USER])
async def delete_mfa_device(call: Call) -> Any:
    await call.auth.mfa.remove_device(_own(call), call.param("device"),
                                      call.request.query.get("remote_addr", ""))
    return {}
