"""Single sign-on: GitHub and OIDC logins, from the first redirect to certificates or a session.

The proxy starts a login (`start`): the auth server keeps a request named by a random `state`
with a PKCE verifier and, for OIDC, a nonce, and answers the provider's authorization URL. The
provider sends the browser back to the proxy's callback, which relays the query here
(`callback`): the request is taken once (a forged or replayed `state` finds nothing), the code is
exchanged with the verifier, the answer checked (an ID token's signature against the issuer's
keys, fetched again when it names an unknown key, its `iss`, `aud`, `exp`, `nonce`; a GitHub
user's teams), mapped to roles and logins (`teleport.rbac.sso`), and a temporary user is kept
until their certificates expire. Every outcome is audited as `user.login` with the method.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from teleport.api.auth_models import (
    SSOCallback,
    SSOCallbackDone,
    SSOLoginStart,
    SSOLoginStarted,
    WebSession,
)
from teleport.api.external import ProviderHTTP
from teleport.api.web_models import SSOLoginResponse
from teleport.auth.accounts import Accounts
from teleport.auth.certs import DEFAULT_CERT_TTL, CertIssuer
from teleport.auth.context import AuthContext
from teleport.auth.websessions import WebSessions
from teleport.errors import (
    AccessDenied,
    BadParameter,
    ConnectionProblem,
    NotFound,
    TeleportError,
)
from teleport.events import emitter as ev
from teleport.rbac import sso as mapping
from teleport.services.connectors import ConnectorService
from teleport.services.sso_requests import SSORequest, SSORequestService
from teleport.types.connectors import Connector, GithubConnector, OIDCConnector
from teleport.types.resource import Metadata
from teleport.types.resources import (
    ConnectorRef,
    CreatedBy,
    CreatedByUser,
    User,
    UserSpec,
    check_user_name,
)
from teleport.utils.duration import parse_duration

#: Asymmetric signatures only: `none` and HMAC (keyed with the client secret) are refused.
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                       "ES512", "EdDSA"]
#: Clock skew allowed between us and the provider when checking `exp` and `iat`.
LEEWAY = 60
#: How long an issuer's discovery document and keys are trusted before they are fetched again.
PROVIDER_CACHE_SECONDS = 3600
#: GitHub pages of teams read at most (100 each).
MAX_TEAM_PAGES = 10
_LOOPBACK_CALLBACK_HOSTS = ("127.0.0.1", "[::1]")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pkce_challenge(verifier: str) -> str:
    """RFC 7636's S256 challenge of a verifier."""
    return _b64(hashlib.sha256(verifier.encode()).digest())


def seal(secret_key: str, payload: bytes) -> str:
    """Encrypt tsh's login answer with the key only it knows (AES-256-GCM), base64url."""
    nonce = os.urandom(12)
    return _b64(nonce + AESGCM(_unb64(secret_key)).encrypt(nonce, payload, None))


def check_client_redirect(url: str) -> str:
    """Refuse a console login whose answer would go anywhere but tsh's local callback."""
    parts = urlsplit(url)
    netloc = parts.netloc
    host = netloc.rsplit(":", 1)[0] if ":" in netloc else netloc
    if (parts.scheme != "http" or host not in _LOOPBACK_CALLBACK_HOSTS or parts.port is None
            or parts.path != "/callback" or parts.fragment or parts.username):
        raise BadParameter("redirect_url must be tsh's local callback "
                           "http://127.0.0.1:<port>/callback")
    return url


class _Provider:
    """An OIDC issuer's discovery document and signing keys, cached and refetched on rotation."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.http = ProviderHTTP(f"OIDC provider {issuer}")
        self.config: dict[str, Any] = {}
        self.keys: KeySet | None = None
        self.fetched = 0.0

    async def discover(self) -> dict[str, Any]:
        if not self.config or time.monotonic() - self.fetched > PROVIDER_CACHE_SECONDS:
            config = await self.http.get_json(self.issuer + "/.well-known/openid-configuration")
            if not isinstance(config, dict) or config.get("issuer", "").rstrip("/") != self.issuer:
                raise ConnectionProblem(f"the OIDC provider's discovery document names issuer "
                                        f"{config.get('issuer') if isinstance(config, dict) else None!r}, "
                                        f"not {self.issuer!r}")
            for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(config.get(field), str):
                    raise ConnectionProblem(f"the OIDC provider's discovery document has no {field}")
            self.config, self.keys, self.fetched = config, None, time.monotonic()
        return self.config

    async def key_set(self, refresh: bool = False) -> KeySet:
        config = await self.discover()
        if self.keys is None or refresh:
            jwks = await self.http.get_json(config["jwks_uri"])
            try:
                self.keys = KeySet.import_key_set(jwks)
            except (JoseError, ValueError, TypeError, KeyError) as err:
                raise ConnectionProblem(f"the OIDC provider's keys (jwks_uri) are not a JWK set: "
                                        f"{err}") from None
        return self.keys


class SSO:
    """Starts and completes GitHub and OIDC logins for the proxies."""

    def __init__(self, ctx: AuthContext, connectors: ConnectorService,
                 requests: SSORequestService, accounts: Accounts, certs: CertIssuer,
                 web: WebSessions) -> None:
        self.ctx = ctx
        self.connectors = connectors
        self.requests = requests
        self.accounts = accounts
        self.certs = certs
        self.web = web
        self._providers: dict[str, _Provider] = {}

    def _provider(self, issuer: str) -> _Provider:
        provider = self._providers.get(issuer)
        if provider is None:
            provider = self._providers[issuer] = _Provider(issuer)
        return provider

    # --- start ----------------------------------------------------------------------------

    async def start(self, kind: str, body: SSOLoginStart) -> SSOLoginStarted:
        """Keep a new login request and answer where to send the user's browser."""
        connector = await self._connector(kind, body.connector_id)
        ttl = 0.0
        if body.flow == "console":
            check_client_redirect(body.client_redirect_url)
            try:
                if len(_unb64(body.secret_key)) != 32:
                    raise ValueError
            except ValueError:
                raise BadParameter("secret_key must be 32 bytes, base64url") from None
            if not body.ssh_pub_key or not body.tls_pub_key:
                raise BadParameter("ssh_pub_key and tls_pub_key are required")
            if body.cert_ttl:
                ttl = parse_duration(body.cert_ttl).total_seconds()
                if ttl <= 0:
                    raise BadParameter(f"cert_ttl must be positive, got {body.cert_ttl!r}")
        elif len(body.csrf_hash) != 64:
            raise BadParameter("a web login needs the hash of its browser's SSO cookie")
        redirect_uri = _pick_redirect(connector, body.proxy_host)
        request = SSORequest(
            state=secrets.token_urlsafe(32), kind=connector.kind, connector=connector.name,
            flow=body.flow, redirect_uri=redirect_uri, code_verifier=secrets.token_urlsafe(48),
            nonce=secrets.token_urlsafe(32) if isinstance(connector, OIDCConnector) else "",
            client_redirect_url=body.client_redirect_url, secret_key=body.secret_key,
            ssh_pub_key=body.ssh_pub_key, tls_pub_key=body.tls_pub_key, cert_ttl_seconds=ttl,
            csrf_hash=body.csrf_hash, created=self.ctx.clock.now())
        if isinstance(connector, OIDCConnector):
            url = await self._oidc_authorize_url(connector, request)
        else:
            url = _github_authorize_url(connector, request)
        await self.requests.create(request)
        return SSOLoginStarted(redirect_url=url, state=request.state)

    async def _connector(self, kind: str, name: str) -> Connector:
        try:
            return await self.connectors.get(kind, name)
        except NotFound:
            raise NotFound(f"{kind} connector {name!r} not found") from None

    async def _oidc_authorize_url(self, connector: OIDCConnector, request: SSORequest) -> str:
        config = await self._provider(connector.spec.issuer_url).discover()
        scopes = list(dict.fromkeys(["openid", "email", *connector.spec.scope]))
        params = {"response_type": "code", "client_id": connector.spec.client_id,
                  "redirect_uri": request.redirect_uri, "scope": " ".join(scopes),
                  "state": request.state, "nonce": request.nonce,
                  "code_challenge": pkce_challenge(request.code_verifier),
                  "code_challenge_method": "S256"}
        if connector.spec.prompt is not None:
            params["prompt"] = connector.spec.prompt
        if connector.spec.max_age is not None:
            params["max_age"] = str(int(connector.spec.max_age.total_seconds()))
        return _with_query(config["authorization_endpoint"], params)

    # --- callback -------------------------------------------------------------------------

    async def callback(self, kind: str, body: SSOCallback) -> SSOCallbackDone:
        """Complete a login from the provider's answer; refusals are audited and raised."""
        state = body.query.get("state", "")
        try:
            request = await self.requests.take(state)
        except NotFound:
            await self._audit_failure(kind, "", "unknown, used or expired login state",
                                      body.remote_addr)
            raise AccessDenied("this login link is unknown, used or expired: start the "
                               "login again").mark_audited() from None
        try:
            return await self._complete(kind, request, body)
        except TeleportError as err:
            await self._audit_failure(kind, request.connector, str(err), body.remote_addr)
            if request.flow == "console":
                return SSOCallbackDone(username="", flow="console", client_redirect_url=_with_query(
                    request.client_redirect_url, {"error": str(err)}))
            raise AccessDenied(str(err)).mark_audited() from None

    async def _complete(self, kind: str, request: SSORequest,
                        body: SSOCallback) -> SSOCallbackDone:
        if request.kind != kind:
            raise AccessDenied(f"this login was started for {request.kind}, not {kind}")
        if body.callback_url.rstrip("/") != request.redirect_uri.rstrip("/"):
            raise AccessDenied(f"the provider's answer arrived at {body.callback_url}, not at "
                               f"the connector's redirect_url {request.redirect_uri}")
        if request.flow == "web" and not hmac.compare_digest(
                hashlib.sha256(body.csrf.encode()).hexdigest(), request.csrf_hash):
            raise AccessDenied("this login was started in another browser")
        if "error" in body.query:
            raise AccessDenied(f"the identity provider refused the login: "
                               f"{body.query.get('error_description') or body.query['error']}")
        code = body.query.get("code", "")
        if not code:
            raise BadParameter("the identity provider's answer has no code")
        connector = await self._connector(kind, request.connector)
        if isinstance(connector, OIDCConnector):
            identity = await self._oidc_identity(connector, request, code)
        else:
            identity = await self._github_identity(connector, request, code)
        return await self._log_in(connector, request, identity, body.remote_addr)

    async def _oidc_identity(self, connector: OIDCConnector, request: SSORequest,
                             code: str) -> mapping.SSOIdentity:
        provider = self._provider(connector.spec.issuer_url)
        config = await provider.discover()
        basic = base64.b64encode(
            f"{_form_escape(connector.spec.client_id)}:"
            f"{_form_escape(connector.spec.client_secret)}".encode()).decode()
        status, answer, _ = await provider.http.request(
            "POST", config["token_endpoint"],
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
            form={"grant_type": "authorization_code", "code": code,
                  "redirect_uri": request.redirect_uri, "code_verifier": request.code_verifier})
        if status != 200 or not isinstance(answer, dict) or not answer.get("id_token"):
            reason = answer.get("error_description") or answer.get("error") \
                if isinstance(answer, dict) else None
            raise AccessDenied(f"the OIDC provider refused the code (HTTP {status}"
                               f"{': ' + str(reason) if reason else ''})")
        claims = await self._verify_id_token(provider, connector, request, str(answer["id_token"]))
        userinfo = config.get("userinfo_endpoint")
        if isinstance(userinfo, str) and isinstance(answer.get("access_token"), str):
            extra = await provider.http.get_json(
                userinfo, {"Authorization": f"Bearer {answer['access_token']}",
                           "Accept": "application/json"})
            if isinstance(extra, dict) and extra.get("sub") == claims.get("sub"):
                claims = {**extra, **claims}
        return mapping.oidc_identity(connector, claims)

    async def _verify_id_token(self, provider: _Provider, connector: OIDCConnector,
                               request: SSORequest, token: str) -> dict[str, Any]:
        """Check the ID token's signature against the issuer's keys (fetched again once when
        it names a key we do not have: the provider rotated), then its claims."""
        try:
            header = json.loads(_unb64(token.split(".")[0]))
        except (ValueError, IndexError):
            raise AccessDenied("the ID token is not a JWT") from None
        keys = await provider.key_set()
        kid = header.get("kid") if isinstance(header, dict) else None
        if kid is not None and not any(k.kid == kid for k in keys.keys):
            keys = await provider.key_set(refresh=True)
        try:
            decoded = jwt.decode(token, keys, algorithms=ID_TOKEN_ALGORITHMS)
        except JoseError as err:
            raise AccessDenied(f"the ID token's signature does not verify with the issuer's "
                               f"keys ({err.error})") from None
        except ValueError as err:
            raise AccessDenied(f"the ID token cannot be checked: {err}") from None
        claims = dict(decoded.claims)
        now = self.ctx.clock.now().timestamp()
        if str(claims.get("iss", "")).rstrip("/") != connector.spec.issuer_url:
            raise AccessDenied(f"the ID token's issuer {claims.get('iss')!r} is not "
                               f"{connector.spec.issuer_url!r}")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if connector.spec.client_id not in audiences:
            raise AccessDenied(f"the ID token is for audience {audience!r}, not this "
                               f"connector's client {connector.spec.client_id!r}")
        if len(audiences) > 1 and claims.get("azp") != connector.spec.client_id:
            raise AccessDenied("the ID token names several audiences and another party")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp + LEEWAY < now:
            raise AccessDenied("the ID token has expired")
        iat = claims.get("iat")
        if isinstance(iat, int | float) and iat - LEEWAY > now:
            raise AccessDenied("the ID token was issued in the future")
        if not hmac.compare_digest(str(claims.get("nonce", "")), request.nonce):
            raise AccessDenied("the ID token's nonce is not this login's")
        return claims

    async def _github_identity(self, connector: GithubConnector, request: SSORequest,
                               code: str) -> mapping.SSOIdentity:
        http = ProviderHTTP(f"GitHub at {connector.spec.endpoint_url}")
        status, answer, _ = await http.request(
            "POST", connector.spec.endpoint_url + "/login/oauth/access_token",
            headers={"Accept": "application/json"},
            form={"client_id": connector.spec.client_id,
                  "client_secret": connector.spec.client_secret, "code": code,
                  "redirect_uri": request.redirect_uri, "code_verifier": request.code_verifier})
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if status != 200 or not isinstance(token, str) or not token:
            reason = (answer.get("error_description") or answer.get("error")) \
                if isinstance(answer, dict) else None
            raise AccessDenied(f"GitHub refused the code (HTTP {status}"
                               f"{': ' + str(reason) if reason else ''})")
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}
        api = connector.spec.api_endpoint_url
        user = await http.get_json(api + "/user", headers)
        login = user.get("login") if isinstance(user, dict) else None
        if not isinstance(login, str) or not login:
            raise AccessDenied("GitHub's /user answer has no login")
        teams: list[mapping.GithubTeam] = []
        url: str | None = api + "/user/teams?" + urlencode({"per_page": 100, "page": 1})
        for _ in range(MAX_TEAM_PAGES):
            if url is None:
                break
            status, page, head = await http.request("GET", url, headers=headers)
            if status != 200 or not isinstance(page, list):
                raise ConnectionProblem(f"GitHub answered HTTP {status} to GET /user/teams")
            teams.extend(_github_teams(page))
            url = _next_link(head.get("Link", ""), api)
        return mapping.github_identity(connector, login, teams)

    # --- the user and what they get ---------------------------------------------------------

    async def _log_in(self, connector: Connector, request: SSORequest,
                      identity: mapping.SSOIdentity, remote_addr: str) -> SSOCallbackDone:
        check_user_name(identity.username)
        await self.accounts.check_roles(list(identity.roles))
        ttl = timedelta(seconds=request.cert_ttl_seconds) if request.cert_ttl_seconds \
            else DEFAULT_CERT_TTL
        user = await self._keep_user(connector, identity, ttl)
        method = connector.kind
        if request.flow == "web":
            record = await self.web.start(user, method=method, remote_addr=remote_addr)
            return SSOCallbackDone(username=user.metadata.name, flow="web",
                                   web_session=WebSession.model_validate(record.model_dump()))
        certs = await self.certs.issue_user_certs(user, request.ssh_pub_key,
                                                  request.tls_pub_key.encode(), ttl)
        answer = SSOLoginResponse(
            username=user.metadata.name, cert=certs.ssh_cert, tls_cert=certs.tls_cert,
            host_signers=certs.host_ca_keys, user_ca_keys=certs.user_ca_keys,
            trusted_ca=certs.tls_ca_certs, cluster_name=self.ctx.cluster_name)
        await self.ctx.audit(ev.USER_LOGIN, user.metadata.name, method=method, success=True,
                             connector=connector.name, addr_remote=remote_addr)
        sealed = seal(request.secret_key, answer.model_dump_json().encode())
        return SSOCallbackDone(username=user.metadata.name, flow="console",
                               client_redirect_url=_with_query(request.client_redirect_url,
                                                               {"response": sealed}))

    async def _keep_user(self, connector: Connector, identity: mapping.SSOIdentity,
                         ttl: timedelta) -> User:
        """Create or refresh the temporary user an SSO login makes; never touch a local user.

        The user lives as long as the longest certificate issued to it, so a deletion, a lock
        or an expiry acts on it like on any user, and it disappears afterwards by itself.
        """
        name = identity.username
        now = self.ctx.clock.now()
        expires = now + ttl
        try:
            before: User | None = await self.accounts.get_user(name)
        except NotFound:
            before = None
        if before is not None:
            by = before.spec.created_by.connector
            if by is None or (by.type, by.id) != (connector.kind, connector.name):
                raise AccessDenied(f"a user named {name!r} already exists and was not made by "
                                   f"{connector.kind} connector {connector.name!r}")
            if before.metadata.expires is not None and before.metadata.expires > expires:
                expires = before.metadata.expires
            status = before.spec.status
        else:
            status = UserSpec().status
        user = User(
            metadata=Metadata(name=name, expires=expires),
            spec=UserSpec(roles=list(identity.roles), traits=dict(identity.traits),
                          status=status, created_by=CreatedBy(
                              time=now, user=CreatedByUser(name="system"),
                              connector=ConnectorRef(type=connector.kind, id=connector.name,
                                                     identity=name))))
        return await self.accounts.upsert_user(user, actor="system")

    async def _audit_failure(self, kind: str, connector: str, error: str,
                             remote_addr: str) -> None:
        await self.ctx.audit(ev.USER_LOGIN, "", method=kind, success=False, connector=connector,
                             error=error, addr_remote=remote_addr)

    async def public_connectors(self) -> list[tuple[str, str, str]]:
        """(kind, name, display) of every connector: what login pages offer."""
        return [(c.kind, c.name, c.spec.display or c.name) for c in await self.connectors.list_all()]


# --- helpers ---------------------------------------------------------------------------------

def _pick_redirect(connector: Connector, proxy_host: str) -> str:
    """The connector's redirect URL on the proxy the user came through, else its first."""
    urls = connector.spec.redirect_url
    candidates = urls if isinstance(urls, list) else [urls]
    for url in candidates:
        if proxy_host and urlsplit(url).netloc.lower() == proxy_host.lower():
            return url
    return candidates[0]


def _github_authorize_url(connector: GithubConnector, request: SSORequest) -> str:
    return _with_query(connector.spec.endpoint_url + "/login/oauth/authorize", {
        "client_id": connector.spec.client_id, "redirect_uri": request.redirect_uri,
        "state": request.state, "scope": "read:org",
        "code_challenge": pkce_challenge(request.code_verifier),
        "code_challenge_method": "S256"})


def _github_teams(page: list[Any]) -> list[mapping.GithubTeam]:
    teams = []
    for team in page:
        if not isinstance(team, dict):
            continue
        org = team.get("organization")
        slug = team.get("slug")
        if isinstance(org, dict) and isinstance(org.get("login"), str) and isinstance(slug, str):
            teams.append(mapping.GithubTeam(org["login"], slug))
    return teams


def _next_link(header: str, api: str) -> str | None:
    """The `rel="next"` URL of GitHub's Link header, only on the same API server."""
    for part in header.split(","):
        url, _, params = part.partition(";")
        if 'rel="next"' in params:
            url = url.strip().strip("<>")
            if urlsplit(url).netloc == urlsplit(api).netloc:
                return url
    return None


def _with_query(url: str, params: Mapping[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _form_escape(value: str) -> str:
    """RFC 6749 2.3.1: client_secret_basic's parts are form-urlencoded first."""
    return quote_plus(value)
