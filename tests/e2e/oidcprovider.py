"""A real, certified OpenID Provider for the OIDC e2e tests: panva's `oidc-provider` on Node.js.

`scripts/install-oidc-provider` puts the pinned version into `.cache/oidc-provider`;
`tests/e2e/oidc_provider/provider.mjs` configures it from the test's JSON (clients, users and
their claims), listens on 127.0.0.1 port 0, and adds a login page of ours plus test-control
endpoints (key rotation, user replacement). Nothing on the product's side is mocked: discovery,
the authorization endpoint, PKCE, the token endpoint, ID token signing and the JWKS are the
provider's own.

    config = {
        "clients": [{"client_id": "teleport", "client_secret": "s3cret",
                     "redirect_uris": [f"https://127.0.0.1:{port}/v1/webapi/oidc/callback"]}],
        "users": [{"id": "alice", "password": "pw", "claims": {
            "email": "alice@example.com", "name": "Alice", "groups": ["admins"],
            "logins": ["root"]}}],
    }
    with OpenIDProvider(config) as idp:
        ...  # a connector with issuer_url=idp.issuer, scope ["groups", "logins"]
        landed = idp_login(browser, link, "alice", "pw")  # the callback URL, with code and state
        kid = idp.rotate_keys()                            # new ID tokens are signed by `kid`
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException

from tests.e2e.browser import WAIT

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "e2e" / "oidc_provider" / "provider.mjs"
MODULES = REPO / ".cache" / "oidc-provider" / "node_modules"
START_TIMEOUT = 20.0  # seconds; it starts in well under one
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

_running: dict[str, OpenIDProvider] = {}
_running_lock = threading.Lock()


class IdPLoginError(AssertionError):
    """The provider did not send the browser back to the client: the reason it showed."""


class OpenIDProvider:
    """One oidc-provider process, configured by `config` (see provider.mjs for every key):

    - `clients`: `[{"client_id", "client_secret", "redirect_uris", ...}]`, any other client
      metadata passed on (`token_endpoint_auth_method` defaults to `client_secret_basic`;
      `client_secret_post` must be asked for);
    - `users`: `[{"id", "password", "claims": {"email", "name", "groups", "logins", ...}}]`;
      one signs in with the id or the email; `sub` is the id;
    - `scopes`: extra `{"<scope>": ["<claim>", ...]}` besides openid, email, profile, groups and
      logins; `claims_in_id_token` (default true; false puts scope claims only at userinfo);
      `require_pkce` (default true, S256 only); `ttl` (e.g. `{"IdToken": 60}`, seconds).
    """

    def __init__(self, config: dict[str, Any], *, start_timeout: float = START_TIMEOUT) -> None:
        self.config = config
        self.start_timeout = start_timeout
        self.issuer = ""
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    def __enter__(self) -> OpenIDProvider:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Run node on provider.mjs and wait for its ready line; a clear error if it never comes."""
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            raise RuntimeError("Node.js is not installed: apt-get install nodejs npm "
                               "(scripts/test installs npm, which brings it)")
        if not (MODULES / "oidc-provider" / "package.json").is_file():
            raise RuntimeError(f"oidc-provider is missing at {MODULES.relative_to(REPO)}: run "
                               "scripts/install-oidc-provider (scripts/test does it)")
        self._dir = Path(tempfile.mkdtemp(prefix="oidc-provider-"))
        config_path = self._dir / "config.json"
        config_path.write_text(json.dumps(self.config))
        with open(self._dir / "stderr.log", "wb") as log:
            # stdin stays open: the provider exits when it closes, even if this process dies.
            self._proc = subprocess.Popen(
                [node, str(SCRIPT), str(config_path), str(MODULES)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, cwd=self._dir)
        try:
            ready = json.loads(self._ready_line())
            self.issuer, self.port = ready["issuer"], int(ready["port"])
        except BaseException:
            self.stop()
            raise
        with _running_lock:
            _running[self.issuer] = self

    def _ready_line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + self.start_timeout
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"oidc-provider was not ready within {self.start_timeout:g} s; "
                                   f"its stderr:\n{self.log}")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = self._proc.wait(5)
                    raise RuntimeError(f"oidc-provider exited with status {code} before it was "
                                       f"ready; its stderr:\n{self.log}")
                data += chunk
        return data.split(b"\n", 1)[0].decode()

    def stop(self) -> None:
        """End the provider (its own pid only) and remove its files; safe to call twice."""
        with _running_lock:
            _running.pop(self.issuer, None)
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()  # stdin's end makes the provider exit by itself
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def log(self) -> str:
        """What the provider wrote on stderr: its warnings, refused logins, grant errors."""
        if self._dir is None:
            return ""
        try:
            return (self._dir / "stderr.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.issuer}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with _opener.open(req, timeout=WAIT) as resp:
            return json.load(resp)

    def discovery(self) -> dict[str, Any]:
        """The provider's `/.well-known/openid-configuration` document."""
        doc: dict[str, Any] = self._call("GET", "/.well-known/openid-configuration")
        return doc

    def jwks(self) -> dict[str, Any]:
        """The JWKS the provider publishes now (`{"keys": [...]}`)."""
        keys: dict[str, Any] = self._call("GET", "/jwks")
        return keys

    def rotate_keys(self, *, keep_old: bool = False, publish: bool = True) -> str:
        """Sign new ID tokens with a fresh RSA key, first in the JWKS; return its `kid`.

        The old keys leave the JWKS unless `keep_old`. With `publish=False` the JWKS is left as
        it was, so new tokens carry a `kid` no published key has (a token from an unknown key).
        """
        answer = self._call("POST", "/test/rotate-keys", {"keep_old": keep_old, "publish": publish})
        kid: str = answer["kid"]
        return kid

    def set_users(self, users: list[dict[str, Any]]) -> None:
        """Replace the users and their claims (same shape as the config's `users`)."""
        self._call("POST", "/test/users", {"users": users})

    def events(self) -> list[dict[str, Any]]:
        """What browsers met at the provider, oldest first: `{"type": "form"|"refused"|"error"|
        "departure", ...}` (see provider.mjs)."""
        found: list[dict[str, Any]] = self._call("GET", "/test/events")["events"]
        return found

    def departures(self) -> list[str]:
        """Every URL the provider redirected a browser to outside itself, oldest first."""
        return [e["url"] for e in self.events() if e["type"] == "departure"]


# WebDriver waits for a pending navigation before (and after) each command, and the page the
# provider sends the browser to may never load (tsh's short-lived callback server). So the
# browser is only asked about pages known to be loaded, navigations start from a timer once the
# command has returned, and the rest of the login is followed through the provider's own events.
_LATER = 50  # ms
_NAVIGATE = "setTimeout(() => { location.href = arguments[0]; }, arguments[1]);"

_FORM = """
const form = document.getElementById('login');
if (!form || !location.pathname.startsWith('/interaction/' + arguments[0])
    || document.readyState !== 'complete') return null;
const error = document.getElementById('error');
return error ? error.textContent.trim() : '';
"""

_SUBMIT = """
document.getElementById('username').value = arguments[0];
document.getElementById('password').value = arguments[1];
setTimeout(() => document.getElementById('login').requestSubmit(), arguments[2]);
"""


def _page_text(driver: webdriver.Chrome) -> str:
    try:
        text: str = driver.execute_script(
            "return document.body ? document.body.innerText.trim().slice(0, 500) : ''")
        return f"{driver.current_url}: {text}"
    except WebDriverException as err:
        return f"(the page could not be read: {err.msg})"


def idp_login(driver: webdriver.Chrome, url: str, username: str, password: str, *,
              timeout: float = WAIT) -> str:
    """Open `url` (it must lead to a running OpenIDProvider), sign in, consent; return the URL
    the provider sent the browser to (the client's redirect_uri with `code` and `state`, or with
    `error`), as soon as it sent it: that page need not load.

    If the provider already has a session for this browser, no form is shown and the login
    completes at once. Raises IdPLoginError with the provider's message when it shows the form
    again (a wrong password) or an error page, or when the browser never gets through.
    """
    with _running_lock:
        providers = list(_running.values())
    if not providers:
        raise IdPLoginError("no OpenIDProvider is running")
    seen = {p.issuer: len(p.events()) for p in providers}
    try:
        driver.execute_script(_NAVIGATE, url, _LATER)
    except TimeoutException:  # WebDriver waited in vain for an earlier page; it gives up once
        driver.execute_script(_NAVIGATE, url, _LATER)
    deadline = time.monotonic() + timeout
    submitted = False
    while True:
        for p in providers:
            new = p.events()[seen[p.issuer]:]
            seen[p.issuer] += len(new)
            for event in new:
                if event["type"] == "departure":
                    return str(event["url"])
                if event["type"] == "error":
                    raise IdPLoginError(f"the provider answered {event['status']} at "
                                        f"{event['path']}: {_page_text(driver)}")
                if event["type"] == "refused":
                    raise IdPLoginError(event["error"])
                if event["type"] == "form":
                    if submitted:
                        raise IdPLoginError("the provider asked to sign in again")
                    _submit(driver, event["uid"], username, password, deadline)
                    submitted = True
        if time.monotonic() > deadline:
            raise IdPLoginError(f"the browser did not get through the provider within "
                                f"{timeout:g} s; it is at {_page_text(driver)}")
        time.sleep(0.05)


def _submit(driver: webdriver.Chrome, uid: str, username: str, password: str,
            deadline: float) -> None:
    """Fill and send the login form once the browser shows the one the provider served."""
    while driver.execute_script(_FORM, uid) is None:
        if time.monotonic() > deadline:
            raise IdPLoginError(f"the login form never showed; the browser is at "
                                f"{_page_text(driver)}")
        time.sleep(0.05)
    driver.execute_script(_SUBMIT, username, password, _LATER)
