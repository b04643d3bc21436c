"""The OpenID Provider harness on its own, with no product code: the product's OIDC e2e tests
trust it to behave as a real provider (discovery, PKCE, the code flow, signed ID tokens with the
configured claims, key rotation, refused passwords)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet
from selenium import webdriver

from tests.e2e.oidcprovider import IdPLoginError, OpenIDProvider, idp_login

pytestmark = pytest.mark.slow

CLIENT_ID = "teleport"
CLIENT_SECRET = "s3cret-of-the-client"
ALICE_CLAIMS = {"email": "alice@example.com", "email_verified": True, "name": "Alice Admin",
                "groups": ["admins", "devs"], "logins": ["root", "alice"]}
SCOPE = "openid email profile groups logins"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # let the redirect surface as an HTTPError so its Location can be read


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


class Catcher:
    """The client's redirect_uri: a tiny HTTP server on 127.0.0.1:0 recording each query."""

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        self.arrived = threading.Event()
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == "/callback":  # not the browser's /favicon.ico
                    catcher.queries.append(dict(urllib.parse.parse_qsl(query)))
                    catcher.arrived.set()
                body = b"caught"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def catcher() -> Iterator[Catcher]:
    c = Catcher()
    yield c
    c.close()


@pytest.fixture(scope="module")
def idp(catcher: Catcher) -> Iterator[OpenIDProvider]:
    config = {
        "clients": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                     "redirect_uris": [catcher.url]}],
        "users": [{"id": "alice", "password": "correct horse", "claims": ALICE_CLAIMS}],
    }
    with OpenIDProvider(config) as provider:
        yield provider


def _authorize_url(idp: OpenIDProvider, redirect_uri: str) -> tuple[str, str, str, str]:
    """A PKCE authorization request; returns (url, state, nonce, verifier)."""
    state, nonce, verifier = (secrets.token_urlsafe(16), secrets.token_urlsafe(16),
                              secrets.token_urlsafe(48))
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({
        "client_id": CLIENT_ID, "redirect_uri": redirect_uri, "response_type": "code",
        "scope": SCOPE, "state": state, "nonce": nonce, "code_challenge": challenge,
        "code_challenge_method": "S256"})
    return f"{idp.discovery()['authorization_endpoint']}?{query}", state, nonce, verifier


def _exchange(idp: OpenIDProvider, code: str, redirect_uri: str, verifier: str) -> dict[str, Any]:
    """The token request a confidential client makes (client_secret_basic)."""
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    form = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": redirect_uri, "code_verifier": verifier})
    req = urllib.request.Request(idp.discovery()["token_endpoint"], data=form.encode(),
                                 headers={"Authorization": f"Basic {basic}"})
    try:
        with _opener.open(req, timeout=10) as resp:
            answer: dict[str, Any] = json.load(resp)
            return answer
    except urllib.error.HTTPError as err:
        answer = json.load(err)
        return answer


def _login(idp: OpenIDProvider, catcher: Catcher, browser: webdriver.Chrome,
           password: str = "correct horse") -> jwt.Token:
    """A browser login through the code flow with PKCE; the ID token, verified against the JWKS."""
    url, state, nonce, verifier = _authorize_url(idp, catcher.url)
    catcher.arrived.clear()
    landed = idp_login(browser, url, "alice", password)
    assert landed.startswith(catcher.url + "?"), landed
    assert catcher.arrived.wait(10), "the browser never reached the redirect_uri"
    query = catcher.queries[-1]
    assert query["state"] == state
    assert query["iss"] == idp.issuer
    answer = _exchange(idp, query["code"], catcher.url, verifier)
    assert "id_token" in answer, answer
    token = jwt.decode(answer["id_token"], KeySet.import_key_set(idp.jwks()),  # type: ignore[arg-type]
                       algorithms=["RS256"])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": idp.issuer}, aud={"essential": True, "value": CLIENT_ID},
        nonce={"essential": True, "value": nonce}, sub={"essential": True, "value": "alice"},
        exp={"essential": True}).validate(token.claims)
    return token


def test_discovery_and_pkce_required(idp: OpenIDProvider, catcher: Catcher) -> None:
    doc = idp.discovery()
    assert doc["issuer"] == idp.issuer == f"http://127.0.0.1:{idp.port}"
    assert doc["jwks_uri"] == f"{idp.issuer}/jwks"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert {"openid", "email", "profile", "groups", "logins"} <= set(doc["scopes_supported"])
    assert [k["kty"] for k in idp.jwks()["keys"]] == ["RSA"]
    # An authorization request without PKCE goes back to the client with an error.
    query = urllib.parse.urlencode({"client_id": CLIENT_ID, "redirect_uri": catcher.url,
                                    "response_type": "code", "scope": "openid", "state": "s1"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        _opener.open(f"{doc['authorization_endpoint']}?{query}", timeout=10)
    location = caught.value.headers["Location"]
    assert location.startswith(catcher.url + "?"), location
    back = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert back["error"] == "invalid_request" and "PKCE" in back["error_description"]
    assert back["state"] == "s1"


def test_login_claims_and_key_rotation(idp: OpenIDProvider, catcher: Catcher,
                                       browser: webdriver.Chrome) -> None:
    token = _login(idp, catcher, browser)
    for claim, value in ALICE_CLAIMS.items():
        assert token.claims[claim] == value, claim
    first_kid = token.header["kid"]
    # A code is good once.
    assert _exchange(idp, catcher.queries[-1]["code"], catcher.url, "x" * 43)["error"] == \
        "invalid_grant"

    # After a rotation new ID tokens carry the new kid, the only one left in the JWKS. The
    # browser's provider session skips the form; claims changed meanwhile show up.
    new_kid = idp.rotate_keys()
    assert new_kid != first_kid
    assert [k["kid"] for k in idp.jwks()["keys"]] == [new_kid]
    idp.set_users([{"id": "alice", "password": "correct horse",
                    "claims": {**ALICE_CLAIMS, "groups": ["auditors"]}}])
    token = _login(idp, catcher, browser)
    assert token.header["kid"] == new_kid
    assert token.claims["groups"] == ["auditors"]

    # Kept old keys stay published after the new one; an unpublished key signs unknown kids.
    kept = idp.rotate_keys(keep_old=True)
    assert [k["kid"] for k in idp.jwks()["keys"]] == [kept, new_kid]
    hidden = idp.rotate_keys(publish=False)
    assert [k["kid"] for k in idp.jwks()["keys"]] == [kept, new_kid]
    with pytest.raises(InvalidKeyIdError, match=hidden):
        _login(idp, catcher, browser)


def test_wrong_password_does_not_complete(idp: OpenIDProvider, catcher: Catcher,
                                          browser: webdriver.Chrome) -> None:
    url, _, _, _ = _authorize_url(idp, catcher.url)
    before = len(idp.departures())
    with pytest.raises(IdPLoginError, match="Invalid username or password"):
        idp_login(browser, url, "alice", "wrong horse")
    assert len(idp.departures()) == before
    assert browser.current_url.startswith(idp.issuer + "/interaction/")
    assert "login refused" in idp.log
    # The same form then accepts the right password.
    assert idp_login(browser, browser.current_url, "alice", "correct horse").startswith(
        catcher.url + "?")
