"""The local GitHub server's own checks, with no product code: it must be as strict as GitHub.

The product's GitHub e2e tests trust this server to refuse what github.com refuses; each test
here names one refusal or one answer the product depends on.
"""

from __future__ import annotations

import asyncio
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

import aiohttp
import pytest
from selenium import webdriver

from tests.e2e.browser import wait_until
from tests.e2e.github_server import GitHubServer, GitHubUser, OAuthApp, github_authorize

pytestmark = pytest.mark.slow

CALLBACK = "https://proxy.example.com:3080/v1/webapi/github/callback"
APP = OAuthApp("client-1", "secret-1", CALLBACK)
OCTO = GitHubUser("octo", 1, "Octo Cat", "octo@example.com",
                  [("octocats", "admins"), ("octocats", "devs"), ("other-org", "ops")])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # let the 302 surface as an HTTPError so its Location can be read


_opener = urllib.request.build_opener(_NoRedirect)


@pytest.fixture
def github() -> Iterator[GitHubServer]:
    with GitHubServer([APP], [OCTO], team_page_size=2) as server:
        yield server


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _authorize_params(challenge: str, redirect_uri: str = CALLBACK) -> dict[str, str]:
    return {"client_id": APP.client_id, "redirect_uri": redirect_uri, "state": "st-123",
            "scope": "read:org", "code_challenge": challenge, "code_challenge_method": "S256"}


def _get(url: str) -> tuple[int, str]:
    try:
        with _opener.open(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _sign_in(github: GitHubServer, params: dict[str, str], login: str = "octo") -> str:
    """Submit the authorize form as a browser would; return the redirect's Location."""
    data = urllib.parse.urlencode({**params, "login": login, "authorize": "1"}).encode()
    with pytest.raises(urllib.error.HTTPError) as redirect:
        _opener.open(f"{github.endpoint_url}/login/oauth/authorize", data, timeout=5)
    assert redirect.value.code == 302, redirect.value
    return str(redirect.value.headers["Location"])


def _code(github: GitHubServer, redirect_uri: str = CALLBACK) -> tuple[str, str]:
    verifier, challenge = _pkce()
    location = _sign_in(github, _authorize_params(challenge, redirect_uri))
    return urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0], verifier


def _exchange(github: GitHubServer, fields: dict[str, str],
              accept_json: bool = True) -> tuple[int, str, str]:
    req = urllib.request.Request(f"{github.endpoint_url}/login/oauth/access_token",
                                 urllib.parse.urlencode(fields).encode())
    if accept_json:
        req.add_header("Accept", "application/json")
    with _opener.open(req, timeout=5) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read().decode()


def _token_fields(grant: str, verifier: str, **override: str) -> dict[str, str]:
    return {"client_id": APP.client_id, "client_secret": APP.client_secret, "code": grant,
            "redirect_uri": CALLBACK, "code_verifier": verifier, **override}


def test_authorize_page_redirects_with_code_and_state(github: GitHubServer) -> None:
    assert github.api_endpoint_url == github.endpoint_url + "/api/v3"
    _, challenge = _pkce()
    params = _authorize_params(challenge)
    status, page = _get(f"{github.endpoint_url}/login/oauth/authorize?"
                        + urllib.parse.urlencode(params))
    assert status == 200 and 'id="login_field"' in page and "Authorize Teleport" in page, page

    location = _sign_in(github, params)
    parts = urllib.parse.urlsplit(location)
    assert location.startswith(CALLBACK + "?"), location
    query = urllib.parse.parse_qs(parts.query)
    assert query["state"] == ["st-123"] and len(query["code"][0]) == 20, query

    sent = github.requests_to("/login/oauth/authorize", "GET")[0].query
    assert sent["scope"] == "read:org" and sent["code_challenge_method"] == "S256", sent

    # An unknown login gets the form back, not a code.
    data = urllib.parse.urlencode({**params, "login": "nobody", "authorize": "1"}).encode()
    with _opener.open(f"{github.endpoint_url}/login/oauth/authorize", data, timeout=5) as resp:
        assert "Incorrect username or password." in resp.read().decode()

    # Cancel sends the user back with GitHub's access_denied and the same state.
    data = urllib.parse.urlencode({**params, "login": "octo", "authorize": "0"}).encode()
    with pytest.raises(urllib.error.HTTPError) as denied:
        _opener.open(f"{github.endpoint_url}/login/oauth/authorize", data, timeout=5)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(denied.value.headers["Location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st-123"], query


def test_mismatched_redirect_uri_gets_the_error_page(github: GitHubServer) -> None:
    _, challenge = _pkce()
    for bad in ("https://proxy.example.com:3081/v1/webapi/github/callback",  # other port
                "http://proxy.example.com:3080/v1/webapi/github/callback",  # other scheme
                "https://evil.example.com:3080/v1/webapi/github/callback",  # other host
                "https://proxy.example.com:3080/v1/webapi/github/callbackx",  # not a sub-path
                "https://proxy.example.com:3080/v1/webapi/oidc/callback"):  # a sibling
        status, page = _get(f"{github.endpoint_url}/login/oauth/authorize?"
                            + urllib.parse.urlencode(_authorize_params(challenge, bad)))
        assert "redirect_uri_mismatch" in page and 'id="login_field"' not in page, (bad, page)
    # A sub-path is accepted, as GitHub does.
    status, page = _get(f"{github.endpoint_url}/login/oauth/authorize?" + urllib.parse.urlencode(
        _authorize_params(challenge, CALLBACK + "/sub")))
    assert status == 200 and 'id="login_field"' in page, page
    # PKCE is S256 or nothing: `plain` would let a stolen code be redeemed.
    status, page = _get(f"{github.endpoint_url}/login/oauth/authorize?" + urllib.parse.urlencode(
        {**_authorize_params(challenge), "code_challenge_method": "plain"}))
    assert "invalid_request" in page and 'id="login_field"' not in page, page
    # An unknown client_id gets GitHub's 404.
    status, _ = _get(f"{github.endpoint_url}/login/oauth/authorize?client_id=nope")
    assert status == 404


def test_token_exchange_needs_secret_verifier_and_redirect_uri(github: GitHubServer) -> None:
    code, verifier = _code(github)

    def error(**override: str) -> str:
        status, ctype, body = _exchange(github, _token_fields(code, verifier, **override))
        assert status == 200 and ctype.startswith("application/json"), (status, ctype)
        answer = json.loads(body)
        assert "access_token" not in answer and answer["error_uri"].startswith("https://"), answer
        return str(answer["error"])

    assert error(client_secret="wrong") == "incorrect_client_credentials"
    assert error(client_id="other") == "incorrect_client_credentials"
    assert error(code_verifier=_pkce()[0]) == "bad_verification_code"
    assert error(code_verifier="") == "bad_verification_code"
    assert error(redirect_uri=CALLBACK + "/sub") == "redirect_uri_mismatch"  # != the authorize one
    assert error(redirect_uri="") == "redirect_uri_mismatch"
    assert error(code="0" * 20) == "bad_verification_code"

    # Only now the right everything: a bearer token with the granted scope, as JSON.
    status, _, body = _exchange(github, _token_fields(code, verifier))
    answer = json.loads(body)
    assert answer["token_type"] == "bearer" and answer["scope"] == "read:org", answer
    assert answer["access_token"].startswith("gho_"), answer
    sent = github.requests_to("/login/oauth/access_token")[-1].form
    assert sent["code_verifier"] == verifier and sent["client_secret"] == APP.client_secret

    # The code is single use.
    assert error() == "bad_verification_code"

    # Authorized without a redirect_uri (the app's callback applies): another one is refused.
    verifier, challenge = _pkce()
    params = {k: v for k, v in _authorize_params(challenge).items() if k != "redirect_uri"}
    location = _sign_in(github, params)
    assert location.startswith(CALLBACK + "?"), location
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
    assert error(redirect_uri="https://proxy.example.com:3080/elsewhere") == "redirect_uri_mismatch"
    _, _, body = _exchange(github, _token_fields(code, verifier))
    assert json.loads(body)["token_type"] == "bearer", body


def test_token_answer_is_form_encoded_without_accept_json_and_codes_expire(
        github: GitHubServer) -> None:
    code, verifier = _code(github)
    _, ctype, body = _exchange(github, _token_fields(code, verifier), accept_json=False)
    assert ctype.startswith("application/x-www-form-urlencoded"), ctype
    answer = dict(urllib.parse.parse_qsl(body))
    assert answer["token_type"] == "bearer" and answer["access_token"].startswith("gho_"), body

    now = [1000.0]
    github.clock = lambda: now[0]
    code, verifier = _code(github)
    now[0] += 601  # past GitHub's 10 minutes
    _, _, body = _exchange(github, _token_fields(code, verifier), accept_json=False)
    assert dict(urllib.parse.parse_qsl(body))["error"] == "bad_verification_code", body


async def _get_json(session: aiohttp.ClientSession, url: str,
                    token: str | None) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = {"Accept": "application/vnd.github+json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with session.get(url, headers=headers) as resp:
        return resp.status, await resp.json(), resp


async def test_user_and_teams_paginate_and_bad_tokens_get_401(github: GitHubServer) -> None:
    code, verifier = await asyncio.to_thread(_code, github)
    _, _, body = await asyncio.to_thread(_exchange, github, _token_fields(code, verifier))
    token = json.loads(body)["access_token"]
    api = github.api_endpoint_url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        status, user, _ = await _get_json(session, f"{api}/user", token)
        assert status == 200, user
        assert (user["login"], user["id"], user["name"]) == ("octo", 1, "Octo Cat"), user

        # The product asks for 100 a page; the server's page size of 2 forces two pages.
        url: str | None = f"{api}/user/teams?per_page=100&page=1"
        pages: list[list[dict[str, Any]]] = []
        while url:
            status, teams, resp = await _get_json(session, url, token)
            assert status == 200, teams
            pages.append(teams)
            following = resp.links.get("next")
            url = str(following["url"]) if following else None
        assert [len(p) for p in pages] == [2, 1], pages
        got = [(t["organization"]["login"], t["slug"], t["name"]) for p in pages for t in p]
        assert got == [("octocats", "admins", "Admins"), ("octocats", "devs", "Devs"),
                       ("other-org", "ops", "Ops")], got

        # Memberships change while running.
        github.set_teams("octo", [("octocats", "admins")])
        status, teams, resp = await _get_json(session, f"{api}/user/teams?per_page=100", token)
        assert [t["slug"] for t in teams] == ["admins"] and "next" not in resp.links, teams

        # `token <t>` works as well; anything else is 401 Bad credentials.
        async with session.get(f"{api}/user", headers={"Authorization": f"token {token}"}) as r:
            assert r.status == 200
        for bad in ("gho_" + "x" * 36, token + "x"):
            status, answer, _ = await _get_json(session, f"{api}/user/teams", bad)
            assert status == 401 and answer["message"] == "Bad credentials", answer
        status, answer, _ = await _get_json(session, f"{api}/user", None)
        assert status == 401, answer
        github.remove_user("octo")  # a deleted account's tokens die with it
        status, answer, _ = await _get_json(session, f"{api}/user", token)
        assert status == 401 and answer["message"] == "Bad credentials", answer
        github.add_user(OCTO)
        status, answer, _ = await _get_json(session, f"{api}/user", token)
        assert status == 200, answer
        github.revoke_tokens()
        status, answer, _ = await _get_json(session, f"{api}/user", token)
        assert status == 401 and answer["message"] == "Bad credentials", answer

    # A token granted without read:org cannot list teams, as on GitHub.
    verifier, challenge = _pkce()
    params = {**_authorize_params(challenge), "scope": ""}
    location = await asyncio.to_thread(_sign_in, github, params)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
    _, _, body = await asyncio.to_thread(_exchange, github, _token_fields(code, verifier))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        status, answer, _ = await _get_json(session, f"{api}/user/teams",
                                            json.loads(body)["access_token"])
    assert status == 403 and "read:org" in answer["message"], answer


class _Callback(BaseHTTPRequestHandler):
    """Stands in for the product's callback, remembering the query it got."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = b"<!doctype html><title>done</title><p>callback reached</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def test_browser_signs_in_and_reaches_the_callback(github: GitHubServer,
                                                   browser: webdriver.Chrome) -> None:
    callback = HTTPServer(("127.0.0.1", 0), type("H", (_Callback,), {"seen": []}))
    thread = threading.Thread(target=callback.serve_forever, daemon=True)
    thread.start()
    try:
        target = f"http://127.0.0.1:{callback.server_address[1]}/callback"
        github.add_app(OAuthApp("client-2", "secret-2", target, name="Local Teleport"))
        _, challenge = _pkce()
        url = f"{github.endpoint_url}/login/oauth/authorize?" + urllib.parse.urlencode(
            {**_authorize_params(challenge, target), "client_id": "client-2"})

        with pytest.raises(AssertionError, match="Incorrect username or password"):
            github_authorize(browser, url, "nobody")

        location = github_authorize(browser, url, "octo")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
        assert location.startswith(target + "?") and query["state"] == ["st-123"], location
        seen: list[str] = callback.RequestHandlerClass.seen  # type: ignore[attr-defined]
        wait_until(browser, lambda d: bool(seen), "the browser never reached the callback")
        assert urllib.parse.parse_qs(urllib.parse.urlsplit(seen[0]).query)["code"] == query["code"]

        bad = url.replace(urllib.parse.quote(target, safe=""),
                          urllib.parse.quote(target + "x", safe=""))
        with pytest.raises(AssertionError, match="redirect_uri_mismatch"):
            github_authorize(browser, bad, "octo")
    finally:
        callback.shutdown()
        callback.server_close()
