"""tsh's single sign-on callback: a real server on 127.0.0.1, hit with a real HTTP client."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from teleport.api.web_models import AuthSettingsAnswer, SSOConnectorInfo, SSOLoginResponse
from teleport.cli.tsh import _parser
from teleport.client.sso import CallbackServer, choose_connector
from teleport.errors import AccessDenied, BadParameter

PROVIDER = "https://idp.example.com/authorize?client_id=tele&state=abc"
#: PEM-sized fields, so the sealed answer is longer than aiohttp's default 8 KiB request line.
_BLOB = "A" * 2500


def _answer(username: str = "alice@example.com") -> SSOLoginResponse:
    return SSOLoginResponse(cert="ssh-ed25519-cert-v01@openssh.com " + _BLOB, tls_cert=_BLOB,
                            host_signers=["ssh-rsa " + _BLOB], user_ca_keys=["ssh-rsa AAAA"],
                            trusted_ca=[_BLOB], cluster_name="example", username=username)


def _seal(key: bytes, answer: SSOLoginResponse) -> str:
    nonce = os.urandom(12)
    data = nonce + AESGCM(key).encrypt(nonce, answer.model_dump_json().encode(), None)
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
async def server() -> AsyncIterator[CallbackServer]:
    async with CallbackServer() as srv:
        srv.redirect_to(PROVIDER)
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _callback(http: aiohttp.ClientSession, server: CallbackServer,
                    **query: str) -> tuple[int, str]:
    async with http.get(server.callback_url, params=query, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def test_the_printed_link_redirects_to_the_provider(
        server: CallbackServer, http: aiohttp.ClientSession) -> None:
    assert server.login_url.startswith(f"http://127.0.0.1:{server.port}/")
    assert len(server.login_url.rsplit("/", 1)[1]) == 32  # a uuid4, hex
    async with http.get(server.login_url, allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == PROVIDER
    async with http.get(f"http://127.0.0.1:{server.port}/other", allow_redirects=False) as resp:
        assert resp.status == 404


async def test_a_sealed_answer_completes_the_login(
        server: CallbackServer, http: aiohttp.ClientSession) -> None:
    waiting = asyncio.create_task(server.wait(5))
    status, page = await _callback(http, server, response=_seal(server.secret_key, _answer()))
    assert status == 200
    assert "Login successful, you may close this window" in page
    assert "<script" not in page
    assert await waiting == _answer()


async def test_the_auth_servers_seal_opens_here(
        server: CallbackServer, http: aiohttp.ClientSession) -> None:
    """The contract's format, as the auth server writes it (`teleport.auth.sso.seal`)."""
    from teleport.auth.sso import seal

    sealed = seal(server.secret_key_b64, _answer().model_dump_json().encode())
    status, _ = await _callback(http, server, response=sealed)
    assert status == 200
    assert (await server.wait(5)).username == "alice@example.com"


@pytest.mark.parametrize("tamper", ["flip", "other-key", "garbage", "empty"])
async def test_an_answer_that_does_not_open_is_refused_and_tsh_keeps_waiting(
        server: CallbackServer, http: aiohttp.ClientSession, tamper: str) -> None:
    good = _seal(server.secret_key, _answer())
    bad = {"flip": good[:40] + ("B" if good[40] != "B" else "C") + good[41:],
           "other-key": _seal(os.urandom(32), _answer("mallory")),
           "garbage": "not base64 at all!", "empty": ""}[tamper]
    waiting = asyncio.create_task(server.wait(5))
    status, page = await _callback(http, server, response=bad)
    assert status == 400
    assert "could not be decrypted" in page
    await asyncio.sleep(0.05)
    assert not waiting.done()
    status, _ = await _callback(http, server, response=good)
    assert status == 200
    assert (await waiting).username == "alice@example.com"


async def test_an_error_ends_the_login_with_its_message(
        server: CallbackServer, http: aiohttp.ClientSession) -> None:
    waiting = asyncio.create_task(server.wait(5))
    status, page = await _callback(http, server,
                                   error="claim groups maps to no role <script>x</script>\nsecond")
    assert status == 403
    assert "&lt;script&gt;" in page and "<script>" not in page
    with pytest.raises(AccessDenied) as err:
        await waiting
    assert str(err.value) == "claim groups maps to no role <script>x</script> second"


async def test_only_the_first_answer_counts(
        server: CallbackServer, http: aiohttp.ClientSession) -> None:
    status, _ = await _callback(http, server, response=_seal(server.secret_key, _answer()))
    assert status == 200
    for later in ({"response": _seal(server.secret_key, _answer("bob"))}, {"error": "late"}):
        status, page = await _callback(http, server, **later)
        assert status == 409
        assert "already finished" in page
    assert (await server.wait(1)).username == "alice@example.com"


async def test_the_wait_times_out(server: CallbackServer) -> None:
    with pytest.raises(AccessDenied, match="timed out .* waiting for the browser"):
        await server.wait(0.2)


async def test_another_host_name_is_refused(
        server: CallbackServer, http: aiohttp.ClientSession) -> None:
    """A rebinding site's page reaches 127.0.0.1 under its own name: nothing is served to it."""
    sealed = _seal(server.secret_key, _answer())
    async with http.get(server.callback_url, params={"response": sealed},
                        headers={"Host": f"evil.example:{server.port}"}) as resp:
        assert resp.status == 400
    async with http.get(server.login_url, headers={"Host": "evil.example"},
                        allow_redirects=False) as resp:
        assert resp.status == 400
    with pytest.raises(AccessDenied, match="timed out"):
        await server.wait(0.1)


async def test_it_listens_on_ipv4_loopback_only(server: CallbackServer) -> None:
    assert server.callback_url == f"http://127.0.0.1:{server.port}/callback"
    with pytest.raises(OSError):
        await asyncio.open_connection("::1", server.port)


# --- which connector `--auth` names -------------------------------------------------------------

GH = SSOConnectorInfo(kind="github", name="gh", display="GitHub")
OKTA = SSOConnectorInfo(kind="oidc", name="okta")
AUTH0 = SSOConnectorInfo(kind="oidc", name="auth0")


def _settings(type_: str = "local", name: str = "",
              connectors: tuple[SSOConnectorInfo, ...] = (GH, OKTA, AUTH0)) -> AuthSettingsAnswer:
    return AuthSettingsAnswer(type=type_, connector_name=name, connectors=list(connectors))


@pytest.mark.parametrize(("auth", "settings", "expected"), [
    ("local", _settings("oidc", "okta"), None),
    (None, _settings(), None),
    (None, _settings("oidc", "auth0"), AUTH0),
    (None, _settings("github"), GH),
    ("github", _settings(), GH),
    ("oidc", _settings(), OKTA),
    ("oidc", _settings("oidc", "auth0"), AUTH0),
    ("oidc", _settings("github", "gh"), OKTA),
    ("auth0", _settings(), AUTH0),
    ("gh", _settings("oidc", "okta"), GH),
])
def test_auth_picks_the_connector(auth: str | None, settings: AuthSettingsAnswer,
                                  expected: SSOConnectorInfo | None) -> None:
    assert choose_connector(auth, settings) == expected


@pytest.mark.parametrize(("auth", "settings", "message"), [
    ("okat", _settings(), "unknown --auth 'okat' (use local or one of: gh (github), okta (oidc), "
                          "auth0 (oidc))"),
    ("github", _settings(connectors=(OKTA,)), "the cluster has no github connector"),
    ("oidc", _settings(connectors=()), "the cluster has only local logins"),
    (None, _settings("oidc"), "names no connector: pass --auth=<name>"),
    (None, _settings("saml"), "the cluster uses saml logins, which tsh does not support"),
])
def test_an_unknown_auth_is_one_line_naming_the_choices(
        auth: str | None, settings: AuthSettingsAnswer, message: str) -> None:
    with pytest.raises(BadParameter) as err:
        choose_connector(auth, settings)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


# --- the command line ---------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "auth", "browser"), [
    (["login", "--proxy=p", "--auth=github", "--browser=none"], "github", "none"),
    (["--auth=okta", "login", "--proxy=p"], "okta", None),
    (["--browser=none", "login", "--auth=local"], "local", "none"),
    (["login", "--proxy=p"], None, None),
])
def test_login_takes_auth_and_browser(argv: list[str], auth: str | None,
                                      browser: str | None) -> None:
    args = _parser(argv).parse_args(argv)
    assert (args.command, args.auth, args.browser) == ("login", auth, browser)


def test_browser_takes_only_none(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser(["login", "--browser=firefox"]).parse_args(["login", "--browser=firefox"])
    assert exited.value.code == 2
    assert "invalid choice: 'firefox'" in capsys.readouterr().err


def test_tsh_loads_the_callback_server_only_for_single_sign_on() -> None:
    code = ('import sys, teleport.cli.tsh; '
            'bad = [m for m in ("aiohttp.web", "teleport.client.sso") if m in sys.modules]; '
            'assert not bad, bad')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
