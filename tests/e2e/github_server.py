"""A local server that speaks GitHub's OAuth endpoints and the REST calls our connector makes.

github.com cannot be reached from CI, so e2e tests point a `kind: github` connector's
`endpoint_url` and `api_endpoint_url` at this server, exactly as a GitHub Enterprise customer
points them at their own host (`https://host` and `https://host/api/v3`). It is strict where
GitHub is (redirect URIs, single-use codes, PKCE, the client secret, bearer tokens, token scopes)
so that a product bug shows up here as it would against GitHub, and it records every request so
tests can assert what the product sent.

The stdlib HTTP server runs on its own thread: nothing here shares the test's event loop, so
both sync tests and async ones (and the product's processes) can talk to it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import itertools
import json
import re
import secrets
import string
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selenium import webdriver

from tests.e2e.browser import WAIT

API_PREFIX = "/api/v3"  # GitHub Enterprise serves its REST API under the web host's /api/v3
CODE_TTL = 600.0  # seconds: GitHub's authorization codes expire after 10 minutes
DOCS = "https://docs.github.com"
_TOKEN_ERRORS = f"{DOCS}/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"
_AUTHZ_ERRORS = f"{DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/"
#: Scopes that let an OAuth token list the user's teams (GitHub's docs for `GET /user/teams`).
TEAM_SCOPES = frozenset({"read:org", "write:org", "admin:org", "user", "repo"})
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")


@dataclass(frozen=True)
class OAuthApp:
    """A registered OAuth app: GitHub accepts a redirect_uri equal to `callback_url` or under it."""

    client_id: str
    client_secret: str
    callback_url: str
    name: str = "Teleport"


@dataclass
class GitHubUser:
    """A GitHub account; `teams` are (organization login, team slug) pairs."""

    login: str
    id: int
    name: str = ""
    email: str | None = None
    teams: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it (header names lower-case, first value per key)."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class _Grant:
    client_id: str
    login: str
    redirect_uri: str | None  # as given to /authorize; None when the app's callback was used
    scope: str
    challenge: str
    issued: float


@dataclass(frozen=True)
class _Token:
    client_id: str
    login: str
    scope: str


@dataclass(frozen=True)
class _Outcome:
    """What one submitted authorize form led to: a redirect, or the form again with an error."""

    location: str | None
    error: str | None


def redirect_allowed(callback_url: str, redirect_uri: str) -> bool:
    """GitHub's rule, strictly: same scheme, host and port; the path equal to or under the callback's."""
    cb, ru = urllib.parse.urlsplit(callback_url), urllib.parse.urlsplit(redirect_uri)
    if (cb.scheme, cb.netloc) != (ru.scheme, ru.netloc) or ru.fragment:
        return False
    base = cb.path or "/"
    path = ru.path or "/"
    return path == base or path.startswith(base if base.endswith("/") else base + "/")


def _scopes(raw: str) -> str:
    """Normalise a requested scope list (space or comma separated) the way GitHub reports it."""
    seen: list[str] = []
    for s in re.split(r"[\s,]+", raw.strip()):
        if s and s not in seen:
            seen.append(s)
    return ",".join(seen)


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


_running: dict[str, GitHubServer] = {}
_running_lock = threading.Lock()


class GitHubServer:
    """GitHub's OAuth web flow and `/user`, `/user/teams` on 127.0.0.1, a port of its own.

    Use as a context manager. Apps and users may be changed while it runs (`add_app`,
    `add_user`, `set_teams`, `remove_user`); `team_page_size` caps `per_page` on `/user/teams`
    so tests can force several pages; `clock` (seconds) ages authorization codes.
    """

    def __init__(self, apps: Iterable[OAuthApp] = (), users: Iterable[GitHubUser] = (), *,
                 team_page_size: int = 100, code_ttl: float = CODE_TTL,
                 password: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Condition()
        self._apps = {a.client_id: a for a in apps}
        self._users = {u.login: _copy(u) for u in users}
        self._grants: dict[str, _Grant] = {}
        self._tokens: dict[str, _Token] = {}
        self._requests: list[Recorded] = []
        self._outcomes: list[_Outcome] = []
        self._team_ids: dict[tuple[str, str], int] = {}
        self._org_ids: dict[str, int] = {}
        self._ids = itertools.count(1000)
        self.team_page_size = team_page_size
        self.code_ttl = code_ttl
        self.password = password  # None: the sign-in form takes any password, or none
        self.clock = clock
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> GitHubServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Bind 127.0.0.1:0 and serve on a daemon thread."""
        handler = type("Handler", (_Handler,), {"github": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"github-server-{self.port}", daemon=True)
        self._thread.start()
        with _running_lock:
            _running[self.endpoint_url] = self

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent."""
        if self._httpd is None:
            return
        with _running_lock:
            _running.pop(self.endpoint_url, None)
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = self._thread = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("GitHubServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def endpoint_url(self) -> str:
        """The connector's `endpoint_url` (GitHub's web host)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_endpoint_url(self) -> str:
        """The connector's `api_endpoint_url`, under /api/v3 as on GitHub Enterprise."""
        return self.endpoint_url + API_PREFIX

    # -- configuration, changeable while running ------------------------------------------

    def add_app(self, app: OAuthApp) -> None:
        """Register (or replace, by client_id) an OAuth app."""
        with self._lock:
            self._apps[app.client_id] = app

    def add_user(self, user: GitHubUser) -> None:
        """Create (or replace, by login) an account."""
        with self._lock:
            self._users[user.login] = _copy(user)

    def set_teams(self, login: str, teams: Iterable[tuple[str, str]]) -> None:
        """Change a user's (organization, team slug) memberships; tokens see it at once."""
        with self._lock:
            self._users[login].teams = list(teams)

    def remove_user(self, login: str) -> None:
        """Delete an account; its tokens stop working (401), as on GitHub."""
        with self._lock:
            self._users.pop(login, None)

    def revoke_tokens(self) -> None:
        """Forget every access token issued so far."""
        with self._lock:
            self._tokens.clear()

    # -- what the product sent -------------------------------------------------------------

    @property
    def requests(self) -> list[Recorded]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str, method: str | None = None) -> list[Recorded]:
        """The recorded requests for one path (e.g. "/login/oauth/authorize"), optionally one method."""
        return [r for r in self.requests if r.path == path and method in (None, r.method)]

    # -- the flow's state, used by the handler ----------------------------------------------

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self._requests.append(rec)

    def _outcome(self, outcome: _Outcome) -> None:
        with self._lock:
            self._outcomes.append(outcome)
            self._lock.notify_all()

    def _wait_outcome(self, index: int, timeout: float) -> _Outcome:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._outcomes) > index, timeout):
                raise AssertionError(f"the GitHub authorize form was not submitted within {timeout}s")
            return self._outcomes[index]

    def _user_json(self, user: GitHubUser) -> dict[str, Any]:
        api = self.api_endpoint_url
        return {
            "login": user.login, "id": user.id, "node_id": f"U_{user.id}",
            "avatar_url": f"{self.endpoint_url}/avatars/u/{user.id}", "gravatar_id": "",
            "url": f"{api}/users/{user.login}", "html_url": f"{self.endpoint_url}/{user.login}",
            "type": "User", "site_admin": False, "name": user.name or None, "company": None,
            "blog": "", "location": None, "email": user.email, "hireable": None, "bio": None,
            "public_repos": 0, "public_gists": 0, "followers": 0, "following": 0,
            "created_at": "2020-01-01T00:00:00Z", "updated_at": "2020-01-01T00:00:00Z",
        }

    def _team_json(self, org: str, slug: str) -> dict[str, Any]:
        api = self.api_endpoint_url
        team_id = self._team_ids.setdefault((org, slug), next(self._ids))
        org_id = self._org_ids.setdefault(org, next(self._ids))
        return {
            "id": team_id, "node_id": f"T_{team_id}", "url": f"{api}/teams/{team_id}",
            "html_url": f"{self.endpoint_url}/orgs/{org}/teams/{slug}",
            "name": slug.replace("-", " ").title(), "slug": slug, "description": "",
            "privacy": "closed", "notification_setting": "notifications_enabled",
            "permission": "pull", "parent": None, "members_count": 1, "repos_count": 0,
            "organization": {"login": org, "id": org_id, "node_id": f"O_{org_id}",
                             "url": f"{api}/orgs/{org}", "description": "", "name": org},
        }


class _Handler(BaseHTTPRequestHandler):
    """One request; HTTP/1.0 so every connection closes and `stop()` never waits on keep-alive."""

    github: GitHubServer
    server_version = "GitHub.com"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # tests read `GitHubServer.requests`, not stderr

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 1 << 20)) if length > 0 else b""
        form: dict[str, str] = {}
        if "json" in (self.headers.get("Content-Type") or ""):
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            form = {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}
        elif raw:
            form = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.github._record(Recorded(method, parts.path, query, form, headers))
        params = {**query, **form}
        route = (method, parts.path.rstrip("/") or "/")
        if route in (("GET", "/login/oauth/authorize"), ("POST", "/login/oauth/authorize")):
            self._authorize(method, params)
        elif route == ("POST", "/login/oauth/access_token"):
            self._access_token(params)
        elif route == ("GET", API_PREFIX + "/user"):
            self._api_user()
        elif route == ("GET", API_PREFIX + "/user/teams"):
            self._api_teams(query)
        elif parts.path.startswith(API_PREFIX):
            self._json(404, {"message": "Not Found", "documentation_url": f"{DOCS}/rest"})
        else:
            self._page(404, "Page not found", "<p>This is not the web page you are looking for.</p>")

    # -- responses ---------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8", extra)

    def _page(self, status: int, title: str, body: str) -> None:
        doc = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
               f' · GitHub</title><meta name="viewport" content="width=device-width"></head>'
               f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>")
        self._send(status, doc.encode(), "text/html; charset=utf-8")

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # -- the browser's half: sign in and authorize ------------------------------------------

    def _authorize(self, method: str, p: dict[str, str]) -> None:
        gh = self.github
        with gh._lock:
            app = gh._apps.get(p.get("client_id", ""))
        if app is None:
            self._page(404, "Page not found", "<p>No OAuth app has this client_id.</p>")
            return
        redirect_uri = p.get("redirect_uri") or None
        if redirect_uri is not None and not redirect_allowed(app.callback_url, redirect_uri):
            self._page(200, "Be careful!", (
                '<p id="error">redirect_uri_mismatch: The redirect_uri is not associated with this '
                "application.</p><p>The redirect_uri MUST match the registered callback URL for "
                f'this application. See <a href="{_AUTHZ_ERRORS}#redirect-uri-mismatch">the '
                "troubleshooting guide</a>.</p>"))
            return
        challenge, challenge_method = p.get("code_challenge", ""), p.get("code_challenge_method", "")
        if (challenge or challenge_method) and (challenge_method != "S256" or not challenge):
            self._page(200, "Be careful!", '<p id="error">invalid_request: code_challenge_method '
                       "must be S256 and come with a code_challenge.</p>")
            return
        if method == "GET":
            self._authorize_form(app, p, "")
            return
        target = redirect_uri or app.callback_url
        state = {"state": p["state"]} if "state" in p else {}
        if p.get("authorize") != "1":
            location = _with_query(target, {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
                "error_uri": f"{_AUTHZ_ERRORS}#access-denied", **state})
            gh._outcome(_Outcome(location, None))
            self._redirect(location)
            return
        login = p.get("login", "")
        with gh._lock:
            known = login in gh._users and gh.password in (None, p.get("password", ""))
        if not known:
            gh._outcome(_Outcome(None, f"Incorrect username or password ({login!r})."))
            self._authorize_form(app, p, "Incorrect username or password.")
            return
        code = secrets.token_hex(10)  # GitHub's codes are 20 hex digits
        with gh._lock:
            gh._grants[code] = _Grant(app.client_id, login, redirect_uri, _scopes(p.get("scope", "")),
                                      challenge, gh.clock())
        location = _with_query(target, {"code": code, **state})
        gh._outcome(_Outcome(location, None))
        self._redirect(location)

    def _authorize_form(self, app: OAuthApp, p: dict[str, str], error: str) -> None:
        keep = ("client_id", "redirect_uri", "state", "scope", "code_challenge", "code_challenge_method")
        hidden = "".join(f'<input type="hidden" name="{k}" value="{html.escape(p[k])}">'
                         for k in keep if k in p)
        scope = _scopes(p.get("scope", "")) or "(no scope: public information only)"
        flash = f'<p id="error" role="alert">{html.escape(error)}</p>' if error else ""
        self._page(200, f"Authorize {app.name}", (
            f"{flash}<p>{html.escape(app.name)} wants to access your account: "
            f'<span id="scope">{html.escape(scope)}</span></p>'
            f'<form method="post" action="/login/oauth/authorize">{hidden}'
            '<p><label for="login_field">Username or email address</label> '
            '<input type="text" id="login_field" name="login" autocomplete="username" autofocus></p>'
            '<p><label for="password">Password</label> '
            '<input type="password" id="password" name="password" autocomplete="current-password"></p>'
            '<button type="submit" name="authorize" value="0" id="js-oauth-cancel-btn">Cancel</button> '
            '<button type="submit" name="authorize" value="1" id="js-oauth-authorize-btn">'
            f"Authorize {html.escape(app.name)}</button></form>"))

    # -- the server's half: code for token --------------------------------------------------

    def _access_token(self, p: dict[str, str]) -> None:
        gh = self.github
        with gh._lock:
            app = gh._apps.get(p.get("client_id", ""))
            grant = gh._grants.get(p.get("code", ""))
            if app is None or not secrets.compare_digest(app.client_secret, p.get("client_secret", "")):
                self._token_answer(error=("incorrect_client_credentials",
                                          "The client_id and/or client_secret passed are incorrect.",
                                          "incorrect-client-credentials"))
                return
            if (grant is None or grant.client_id != app.client_id
                    or gh.clock() - grant.issued > gh.code_ttl):
                self._token_answer(error=("bad_verification_code",
                                          "The code passed is incorrect or expired.",
                                          "bad-verification-code"))
                return
            given = p.get("redirect_uri") or None
            wanted_ok = (given == grant.redirect_uri if grant.redirect_uri is not None
                         else given is None or redirect_allowed(app.callback_url, given))
            if not wanted_ok:
                self._token_answer(error=("redirect_uri_mismatch", "The redirect_uri MUST match the "
                                          "registered callback URL for this application.",
                                          "redirect-uri-mismatch2"))
                return
            verifier = p.get("code_verifier", "")
            if grant.challenge or verifier:
                if not (grant.challenge and _VERIFIER.fullmatch(verifier)
                        and secrets.compare_digest(_s256(verifier), grant.challenge)):
                    # GitHub documents no PKCE-specific code; a failed verifier fails the code.
                    self._token_answer(error=("bad_verification_code", "The code_verifier does not "
                                              "match the code_challenge.", "bad-verification-code"))
                    return
            del gh._grants[p["code"]]  # single use: only a successful exchange spends it
            alphabet = string.ascii_letters + string.digits
            token = "gho_" + "".join(secrets.choice(alphabet) for _ in range(36))
            gh._tokens[token] = _Token(app.client_id, grant.login, grant.scope)
        self._token_answer(ok={"access_token": token, "token_type": "bearer", "scope": grant.scope})

    def _token_answer(self, ok: dict[str, str] | None = None,
                      error: tuple[str, str, str] | None = None) -> None:
        """HTTP 200 either way, as GitHub answers; JSON only when the client asks for it."""
        body = ok if ok is not None else {}
        if error is not None:
            code, description, anchor = error
            body = {"error": code, "error_description": description,
                    "error_uri": f"{_TOKEN_ERRORS}#{anchor}"}
        if "application/json" in (self.headers.get("Accept") or ""):
            self._json(200, body)
        else:
            self._send(200, urllib.parse.urlencode(body).encode(),
                       "application/x-www-form-urlencoded; charset=utf-8")

    # -- the REST API -----------------------------------------------------------------------

    def _token(self) -> tuple[_Token, GitHubUser] | None:
        """The caller's token and account, or None after answering 401 as GitHub does."""
        gh = self.github
        auth = self.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        if not auth:
            self._json(401, {"message": "Requires authentication", "documentation_url": f"{DOCS}/rest"})
            return None
        with gh._lock:
            token = gh._tokens.get(value.strip()) if scheme.lower() in ("bearer", "token") else None
            user = gh._users.get(token.login) if token is not None else None
        if token is None or user is None:
            self._json(401, {"message": "Bad credentials", "documentation_url": f"{DOCS}/rest",
                             "status": "401"})
            return None
        return token, user

    def _api_headers(self, token: _Token, accepted: str) -> dict[str, str]:
        return {"X-OAuth-Scopes": token.scope.replace(",", ", "), "X-Accepted-OAuth-Scopes": accepted,
                "X-GitHub-Media-Type": "github.v3; format=json"}

    def _api_user(self) -> None:
        found = self._token()
        if found is not None:
            token, user = found
            with self.github._lock:
                body = self.github._user_json(user)
            self._json(200, body, self._api_headers(token, ""))

    def _api_teams(self, query: dict[str, str]) -> None:
        found = self._token()
        if found is None:
            return
        token, user = found
        gh = self.github
        accepted = "admin:org, read:org, repo, user, write:org"
        if not TEAM_SCOPES & set(token.scope.split(",")):
            self._json(403, {"message": "You need at least read:org scope or user scope to list "
                             "your teams.", "documentation_url": f"{DOCS}/rest/teams/teams"},
                       self._api_headers(token, accepted))
            return
        per_page = _int(query.get("per_page"), 30)
        per_page = max(1, min(per_page, 100, gh.team_page_size))
        page = max(1, _int(query.get("page"), 1))
        with gh._lock:
            teams = [gh._team_json(org, slug) for org, slug in user.teams]
        last = max(1, -(-len(teams) // per_page))
        links = []
        url = f"{gh.api_endpoint_url}/user/teams"

        def link(n: int, rel: str) -> str:
            return f'<{url}?{urllib.parse.urlencode({"per_page": per_page, "page": n})}>; rel="{rel}"'

        if page > 1:
            links += [link(page - 1, "prev"), link(1, "first")]
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        extra = self._api_headers(token, accepted)
        if links:
            extra["Link"] = ", ".join(links)
        self._json(200, teams[(page - 1) * per_page: page * per_page], extra)


def _copy(user: GitHubUser) -> GitHubUser:
    """The server's own copy, so `set_teams` never changes a caller's (module-level) user."""
    return dataclasses.replace(user, teams=list(user.teams))


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def github_authorize(driver: webdriver.Chrome, url: str, login: str, *,
                     password: str = "", timeout: float = WAIT) -> str:
    """Open `url` in the browser, sign in to the GitHubServer it leads to as `login`, authorize.

    Returns the URL the server redirected the browser to (the product's callback, with `code`
    and `state`) as soon as the server sent it, without waiting for that page to load, since
    it may be tsh's short-lived local server. Fails if the browser is not on an authorize form.
    """
    driver.get(url)
    here = driver.current_url
    with _running_lock:
        server = next((s for base, s in _running.items() if here.startswith(base + "/")), None)
    if server is None:
        raise AssertionError(f"the browser is at {here}, not on a running GitHubServer")
    found = driver.find_elements("id", "login_field")
    if not found:
        text = driver.find_element("tag name", "body").text
        raise AssertionError(f"no GitHub authorize form at {here}: {text}")
    found[0].send_keys(login)
    if password:
        driver.find_element("id", "password").send_keys(password)
    with server._lock:
        index = len(server._outcomes)
    # Clicked from a timer so WebDriver returns at once instead of waiting on the next page.
    driver.execute_script(
        "setTimeout(() => document.getElementById('js-oauth-authorize-btn').click(), 0)")
    outcome = server._wait_outcome(index, timeout)
    if outcome.location is None:
        raise AssertionError(f"GitHub sign-in refused: {outcome.error}")
    return outcome.location
