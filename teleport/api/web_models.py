"""The requests and answers of the proxy's web API (3080), shared by `WebProxy` and `WebClient`.

Field names follow Teleport's web API (`otp_token`, `pub_key`, `host_signers`), which `tsh`
and the web UI speak. Recordings and live sessions travel as the auth API lists them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from teleport.api.listing_models import ActiveSession, ClusterStatus, NodeInfo, RecordingInfo
from teleport.api.wire import Answer, Request
from teleport.types.shapes import AuditEvent


class SSOConnectorInfo(Answer):
    """A GitHub or OIDC connector users may log in through (no secret, no address)."""

    kind: str
    name: str
    display: str = ""


class WebauthnSettings(Answer):
    rp_id: str = ""


class AuthSettingsAnswer(Answer):
    type: str = "local"
    second_factor: str = "otp"
    #: The connector `authentication.connector_name` names ("" for local logins).
    connector_name: str = ""
    connectors: list[SSOConnectorInfo] = []
    #: Security keys (Teleport's names): absent when the cluster uses none.
    webauthn: WebauthnSettings | None = None
    allow_passwordless: bool = False


class SSHProxySettings(Answer):
    public_addr: str = ""
    #: Where nodes behind NAT open their reverse tunnels (3024, or the web port multiplexed).
    tunnel_public_addr: str = ""


class ProxySettings(Answer):
    ssh: SSHProxySettings = Field(default_factory=SSHProxySettings)


class WebPing(Answer):
    """What tsh learns before any credentials: the cluster, its second factor, the SSH proxy."""

    cluster_name: str
    server_version: str = ""
    auth: AuthSettingsAnswer = Field(default_factory=AuthSettingsAnswer)
    proxy: ProxySettings = Field(default_factory=ProxySettings)


class SignupInfoAnswer(Answer):
    """What a signup client needs to enroll the authenticator app (empty OTP fields: no OTP)."""

    user: str
    otp_secret: str = ""
    otp_uri: str = ""
    qr_svg: str = ""
    second_factor: str = "otp"
    expires: str = ""
    usage: str = "signup"


class SignupRequest(Request):
    token: str
    password: str = Field(min_length=1)
    second_factor_token: str | None = None
    #: A security key registered instead of the OTP code (`webauthn`, `on`, `optional`).
    webauthn_creation_response: dict[str, Any] | None = None
    device_name: str = ""


class SignupDone(Answer):
    user: str


class LoginRequest(Request):
    user: str = Field(min_length=1)
    password: str = Field(min_length=1)
    otp_token: str | None = None
    pub_key: str = Field(min_length=1)
    tls_pub_key: str = Field(min_length=1)
    ttl: str | None = None


class LoginResponse(Answer):
    """What the proxy returns for a login: certificates and the cluster's CAs to trust."""

    cert: str
    tls_cert: str
    host_signers: list[str]
    user_ca_keys: list[str]
    trusted_ca: list[str]
    cluster_name: str


class WebLoginRequest(Request):
    """A browser's login, in Teleport's field names (`pass` is a Python keyword)."""

    user: str = Field(min_length=1)
    password: str = Field(min_length=1, alias="pass")
    second_factor_token: str = ""


class WebLoginAnswer(Answer):
    """The bearer token the page sends with every call; the cookie comes with the answer."""

    token: str
    user: str
    #: When the session lapses unless renewed (never past the certificates' expiry).
    expires: datetime


class WebRenewAnswer(Answer):
    expires: datetime


class WebContext(Answer):
    """Who the page's user is: what the pages offer (logins to connect as, admin pages)."""

    user: str
    cluster: str
    logins: list[str]
    roles: list[str]
    #: The roles allow listing users (the users, tokens and status pages).
    admin: bool
    #: The roles allow reading the audit log.
    audit: bool = False


# --- the admin pages and the audit log (increment 2) --------------------------------------------

class WebEventPage(Answer):
    """One page of the audit log, newest first; `next_key` fetches the next ("" = done)."""

    events: list[AuditEvent]
    next_key: str


class WebUser(Answer):
    """A user as the users page lists them."""

    name: str
    roles: list[str]
    logins: list[str]
    #: Locked now: by an administrator, or for a while after failed logins.
    locked: bool
    locked_message: str = ""
    created: datetime | None = None


class WebUserCreate(Request):
    """An invitation: the user is created without a password, as `tctl users add` does."""

    name: str = Field(min_length=1)
    logins: list[str] = []
    roles: list[str] = []


class WebInvite(Answer):
    """The signup link to hand the invited user, as `tctl users add` prints it."""

    name: str
    signup_url: str
    expires: datetime | None


class WebToken(Answer):
    token: str
    roles: list[str]
    expires: datetime | None


class WebTokenCreate(Request):
    roles: list[str] = Field(default=["node"], min_length=1)
    ttl: str = "30m"


class WebTokenCreated(WebToken):
    """A new join token and what `teleport start` needs to join with it."""

    ca_pin: str
    #: Where the host joins: this proxy's public address, as `tctl nodes add` prints it.
    auth_server: str


#: The status page: the auth server's answer as is.
WebStatus = ClusterStatus


__all__ = ["ActiveSession", "AuthSettingsAnswer", "LoginRequest", "LoginResponse", "NodeInfo",
           "ProxySettings", "RecordingInfo", "SSHProxySettings", "SignupDone", "SignupInfoAnswer",
           "SignupRequest", "WebContext", "WebEventPage", "WebInvite", "WebLoginAnswer",
           "WebLoginRequest", "WebPing", "WebRenewAnswer", "WebStatus", "WebToken",
           "WebTokenCreate", "WebTokenCreated", "WebUser", "WebUserCreate"]


# --- single sign-on (teleport.proxy.websso, teleport.client.sso) ---------------------------------

class SSOConsoleRequest(Request):
    """`tsh login --auth=<connector>`: where to send the answer and the keys to certify."""

    connector_id: str
    #: tsh's local callback, `http://127.0.0.1:<port>/callback`.
    redirect_url: str
    #: 32 random bytes, base64url: the answer comes back sealed with it (AES-256-GCM).
    secret_key: str
    ssh_pub_key: str
    tls_pub_key: str
    cert_ttl: str = ""


class SSOConsoleAnswer(Answer):
    #: The identity provider's authorization URL for tsh's browser.
    redirect_url: str


class SSOLoginResponse(LoginResponse):
    """What tsh's local callback receives, sealed: the login answer and who logged in."""

    username: str


class ClusterInfo(Answer):
    """A cluster as `tsh clusters` and the web UI's picker list it (`GET /webapi/sites`)."""

    name: str
    #: "online" or "offline" (a leaf whose tunnel is down).
    status: str
    #: When the leaf's tunnel was last heard of (the root itself: now).
    last_connected: datetime = Field(alias="lastConnected")
    #: Which side this cluster is: "root" (the proxy's own) or "leaf".
    kind: str = "leaf"
