"""OIDC logins through the real auth API, against an issuer the test controls byte for byte.

The e2e tests log in through a certified provider (oidc-provider); a well-behaved provider
cannot send a token with the wrong audience, nonce or key. This issuer can: it serves discovery,
keys and a token endpoint, and each test decides what the ID token says. Every refusal must be
one clear line, sent to tsh's callback as `error=`, and audited as a failed `user.login`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from teleport.api.auth_models import SSOCallback, SSOLoginStart
from teleport.api.web_models import SSOLoginResponse
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied, BadParameter
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.types.codec import from_dict
from teleport.types.registry import KINDS_REGISTRY
from teleport.types.resource import Metadata
from teleport.types.resources import User, UserSpec
from teleport.utils.clock import FakeClock
from tests.integration.auth.test_web_sessions import Api
from tests.integration.auth_api import serve_auth_api

CALLBACK = "https://proxy.test:3080/v1/webapi/oidc/callback"
TSH = "http://127.0.0.1:40111/callback"
CLIENT_ID = "teleport-test"
CLIENT_SECRET = "s3cret-of-the-client"

Claims = dict[str, Any]


@dataclass
class Issuer:
    """Discovery, JWKS and a token endpoint whose ID token each test writes (`mint`)."""

    url: str = ""
    keys: list[RSAKey] = field(default_factory=lambda: [RSAKey.generate_key(
        2048, parameters={"kid": "k1"})])
    #: Makes the ID token from the login's nonce: tests replace it to misbehave.
    mint: Callable[[str], str] | None = None
    #: The nonce of the authorization request the browser would have carried.
    nonce: str = ""
    #: Every token request's form and Authorization header.
    token_requests: list[tuple[dict[str, str], str]] = field(default_factory=list)
    jwks_fetches: int = 0

    def claims(self, **changes: Any) -> Claims:
        now = int(time.time())
        return {"iss": self.url, "sub": "ann-1", "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                "nonce": self.nonce, "email": "ann@example.com", "groups": ["dev"],
                "logins": ["ann", "ubuntu"], **changes}

    def sign(self, claims: Claims, key: RSAKey | None = None) -> str:
        key = key or self.keys[0]
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)

    def app(self) -> web.Application:
        app = web.Application()

        async def discovery(_: web.Request) -> web.Response:
            return web.json_response({
                "issuer": self.url, "authorization_endpoint": self.url + "/auth",
                "token_endpoint": self.url + "/token", "jwks_uri": self.url + "/jwks"})

        async def jwks(_: web.Request) -> web.Response:
            self.jwks_fetches += 1
            return web.json_response({"keys": [k.as_dict(private=False) for k in self.keys]})

        async def token(request: web.Request) -> web.Response:
            form = {k: str(v) for k, v in (await request.post()).items()}
            self.token_requests.append((form, request.headers.get("Authorization", "")))
            if form.get("code") != "good-code":
                return web.json_response({"error": "invalid_grant",
                                          "error_description": "grant request is invalid"},
                                         status=400)
            mint = self.mint or (lambda nonce: self.sign(self.claims()))
            return web.json_response({"access_token": "at", "token_type": "Bearer",
                                      "id_token": mint(self.nonce)})

        app.router.add_get("/.well-known/openid-configuration", discovery)
        app.router.add_get("/jwks", jwks)
        app.router.add_post("/token", token)
        return app


@dataclass
class Env:
    api: Api
    proxy: AuthClient
    issuer: Issuer

    async def start(self, flow: str = "console", **extra: Any) -> tuple[str, dict[str, str]]:
        """Start a login; return (the secret key, the authorization request's parameters)."""
        key = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        body: dict[str, Any] = {"connector_id": "corp", "flow": flow, "proxy_host": "proxy.test:3080"}
        if flow == "console":
            body |= {"client_redirect_url": TSH, "secret_key": key,
                     "ssh_pub_key": sshkeys.public_key_of(sshkeys.generate_private_key()),
                     "tls_pub_key": tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()).decode()}
        else:
            body |= {"csrf_hash": hashlib.sha256(b"browser-cookie").hexdigest()}
        started = await self.proxy.start_sso_login("oidc", SSOLoginStart(**(body | extra)))
        params = {k: v[0] for k, v in parse_qs(urlsplit(started.redirect_url).query).items()}
        assert params["state"] == started.state
        self.issuer.nonce = params["nonce"]
        return key, params

    async def finish(self, state: str, code: str = "good-code", callback: str = CALLBACK,
                     csrf: str = "") -> str:
        done = await self.proxy.complete_sso_login("oidc", SSOCallback(
            query={"code": code, "state": state}, callback_url=callback, csrf=csrf,
            remote_addr="198.51.100.7"))
        return done.client_redirect_url

    async def refused(self, message: str, **kwargs: Any) -> None:
        """A console login whose callback must send tsh `error=<message>`, audited."""
        _, params = await self.start()
        redirect = await self.finish(params["state"], **kwargs)
        query = parse_qs(urlsplit(redirect).query)
        assert redirect.startswith(TSH + "?") and "response" not in query, redirect
        assert message in query["error"][0], query["error"][0]
        failure = self.api.emitter.of_type("user.login")[-1]
        assert failure["success"] is False and failure["method"] == "oidc"
        assert message in failure["error"]
        assert CLIENT_SECRET not in json.dumps(self.api.emitter.events)


def open_sealed(key: str, redirect: str) -> SSOLoginResponse:
    sealed = parse_qs(urlsplit(redirect).query)["response"][0]
    raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    plain = AESGCM(base64.urlsafe_b64decode(key + "=")).decrypt(raw[:12], raw[12:], None)
    return SSOLoginResponse.model_validate_json(plain)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    issuer = Issuer()
    runner = web.AppRunner(issuer.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    issuer.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    clock = FakeClock(datetime.now(timezone.utc))
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(clock), emitter, clock, AuthSettings(cluster_name="sso.test"))
    await auth.init()
    connector = from_dict({"kind": "oidc", "version": "v3", "metadata": {"name": "corp"}, "spec": {
        "issuer_url": issuer.url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "redirect_url": CALLBACK, "claims_to_roles": [
            {"claim": "groups", "value": "dev", "roles": ["access"]}]}})
    await auth.resources.store(KINDS_REGISTRY["oidc"]).create(connector, "admin")
    auth_runner, addr = await serve_auth_api(auth)
    api = Api(auth, clock, emitter, addr)
    try:
        async with await api.client("Proxy", "proxy-1") as proxy:
            yield Env(api, proxy, issuer)
    finally:
        await auth_runner.cleanup()
        await runner.cleanup()


async def test_a_console_login_yields_sealed_certificates_for_the_mapped_roles_and_claims(
        env: Env) -> None:
    key, params = await env.start()
    assert params["scope"] == "openid email"
    assert params["redirect_uri"] == CALLBACK and params["code_challenge_method"] == "S256"
    answer = open_sealed(key, await env.finish(params["state"]))
    assert answer.username == "ann@example.com" and answer.cluster_name == "sso.test"
    identity = tlskeys.identity_from_cert(answer.tls_cert.encode())
    assert identity.roles == ("access",) and set(identity.logins) == {"ann", "ubuntu"}
    # PKCE: the verifier sent with the code is the one behind the authorization's challenge;
    # the client authenticates with its secret (client_secret_basic).
    form, authorization = env.issuer.token_requests[-1]
    digest = hashlib.sha256(form["code_verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == params["code_challenge"]
    assert base64.b64decode(authorization.split()[1]).decode() == f"{CLIENT_ID}:{CLIENT_SECRET}"
    user = await env.api.auth.accounts.get_user("ann@example.com")
    assert user.spec.created_by.connector is not None
    assert user.spec.created_by.connector.id == "corp"
    assert user.metadata.expires is not None  # a temporary user, gone with its certificates
    login = env.api.emitter.of_type("user.login")[-1]
    assert login["success"] is True and login["method"] == "oidc" and login["user"] == user.name


async def test_a_replayed_or_forged_state_is_refused_and_audited(env: Env) -> None:
    _, params = await env.start()
    await env.finish(params["state"])
    for state in (params["state"], "forged-state"):
        with pytest.raises(AccessDenied, match="unknown, used or expired"):
            await env.finish(state)
        assert env.api.emitter.of_type("user.login")[-1]["success"] is False


async def test_wrong_nonce_audience_issuer_or_expiry_are_refused(env: Env) -> None:
    issuer = env.issuer
    cases: list[tuple[Callable[[str], str], str]] = [
        (lambda nonce: issuer.sign(issuer.claims(nonce="another")), "nonce is not this login's"),
        (lambda nonce: issuer.sign(issuer.claims(aud="someone-else")), "audience"),
        (lambda nonce: issuer.sign(issuer.claims(aud=[CLIENT_ID, "x"], azp="x")),
         "several audiences"),
        (lambda nonce: issuer.sign(issuer.claims(iss="https://evil.example")), "issuer"),
        (lambda nonce: issuer.sign(issuer.claims(exp=int(time.time()) - 3600)), "expired"),
    ]
    for mint, message in cases:
        issuer.mint = mint
        await env.refused(message)


async def test_a_token_signed_by_an_unknown_key_or_with_a_symmetric_algorithm_is_refused(
        env: Env) -> None:
    issuer = env.issuer
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k1"})  # the same kid, another key
    issuer.mint = lambda nonce: issuer.sign(issuer.claims(), stranger)
    await env.refused("signature does not verify")
    unknown = RSAKey.generate_key(2048, parameters={"kid": "k9"})
    issuer.mint = lambda nonce: issuer.sign(issuer.claims(), unknown)
    await env.refused("signature does not verify")
    hmac_key = OctKey.import_key(CLIENT_SECRET.encode() * 2)
    issuer.mint = lambda nonce: jwt.encode({"alg": "HS256"}, issuer.claims(), hmac_key)
    await env.refused("signature does not verify")
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    issuer.mint = lambda nonce: unsigned + "." + base64.urlsafe_b64encode(
        json.dumps(issuer.claims()).encode()).rstrip(b"=").decode() + "."
    await env.refused("signature does not verify")


async def test_keys_are_fetched_again_when_the_provider_rotates(env: Env) -> None:
    key, params = await env.start()
    open_sealed(key, await env.finish(params["state"]))
    fetches = env.issuer.jwks_fetches
    env.issuer.keys.insert(0, RSAKey.generate_key(2048, parameters={"kid": "k2"}))
    env.issuer.keys.pop()  # the old key is gone from the JWKS
    key, params = await env.start()
    assert open_sealed(key, await env.finish(params["state"])).username == "ann@example.com"
    assert env.issuer.jwks_fetches == fetches + 1


async def test_a_bad_code_a_wrong_callback_and_unmapped_claims_are_refused(env: Env) -> None:
    await env.refused("the OIDC provider refused the code", code="stolen-code")
    await env.refused("arrived at https://other.test/v1/webapi/oidc/callback",
                      callback="https://other.test/v1/webapi/oidc/callback")
    issuer = env.issuer
    issuer.mint = lambda nonce: issuer.sign(issuer.claims(groups=["sales"]))
    await env.refused("no claims_to_roles mapping")


async def test_an_sso_login_never_takes_over_a_local_user(env: Env) -> None:
    local = User(metadata=Metadata(name="ann@example.com"), spec=UserSpec(roles=["access"]))
    await env.api.auth.accounts.upsert_user(local, actor="admin")
    await env.refused("already exists and was not made by oidc connector 'corp'")
    assert (await env.api.auth.accounts.get_user("ann@example.com")).spec.created_by.connector \
        is None


async def test_a_web_login_must_come_back_to_the_browser_that_started_it(env: Env) -> None:
    _, params = await env.start("web")
    with pytest.raises(AccessDenied, match="started in another browser"):
        await env.finish(params["state"], csrf="another-cookie")
    _, params = await env.start("web")
    done = await env.proxy.complete_sso_login("oidc", SSOCallback(
        query={"code": "good-code", "state": params["state"]}, callback_url=CALLBACK,
        csrf="browser-cookie"))
    assert done.web_session is not None and done.web_session.user == "ann@example.com"
    assert done.web_session.roles == ["access"]


async def test_tshs_answer_may_only_go_to_a_loopback_callback(env: Env) -> None:
    for url in ("https://evil.example/callback", "http://127.0.0.1:9/elsewhere",
                "http://127.0.0.1/callback", "http://localhost.evil.example:80/callback"):
        with pytest.raises(BadParameter, match="tsh's local callback"):
            await env.start(client_redirect_url=url)
