"""The requests and answers of the auth API (3025), shared by its handlers and `AuthClient`.

Requests are strict: a field of the wrong JSON type is a 400 naming it, never a crash deeper
in. Answers are validated by the client, so a server that is not ours, or a newer one that
changed a field, is a one-line ConnectionProblem, not a KeyError. Resources travel in their
YAML/JSON form (`ResourceJSON`) and are decoded by `teleport.types.codec`; audit events are
free-form JSON objects by nature (`AuditEvent`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from teleport.api.wire import Answer, Request
from teleport.types.shapes import AuditEvent, ResourceJSON

# --- certificates ------------------------------------------------------------------------------

class IssuedCerts(Answer):
    """What a login or a join hands back: certificates plus the CAs to trust."""

    ssh_cert: str
    tls_cert: str
    host_ca_keys: list[str]
    user_ca_keys: list[str]
    tls_ca_certs: list[str]


# --- users, signup, login ----------------------------------------------------------------------

class ConnectorInfo(Answer):
    """An SSO connector as the login page and `tsh login` see it: no secret, no address."""

    kind: str
    name: str
    display: str = ""


class PingAnswer(Answer):
    cluster_name: str
    server_version: str
    second_factor: str = "otp"
    session_recording: str = "node"
    #: `auth_service.disconnect_expired_cert` and `client_idle_timeout` (0: none), which nodes
    #: and proxies enforce on live connections (teleport.sshutils.monitor).
    disconnect_expired_cert: bool = False
    client_idle_timeout_seconds: float = 0.0
    #: `authentication.type` and `connector_name`, and every SSO connector users may pick.
    auth_type: str = "local"
    connector_name: str = ""
    connectors: list[ConnectorInfo] = []
    #: WebAuthn: the RP ID ("" = keys not used) and whether a resident key logs in alone.
    webauthn_rp_id: str = ""
    allow_passwordless: bool = False


class SignupRequest(Request):
    name: str
    logins: list[str] | None = None
    roles: list[str] | None = None
    #: How long the signup link lives, a Go duration (`24h`); default 1h, at most 48h.
    ttl: str | None = None


class SignupInfo(Answer):
    """Who a signup token is for, and the OTP secret their authenticator app enrolls."""

    user: str
    otp_secret: str
    otp_uri: str
    expires: str
    second_factor: str = "otp"
    #: "signup" (a new user) or "reset" (`tctl users reset`): the page words itself after it.
    usage: str = "signup"


class CompleteSignupRequest(Request):
    password: str
    otp_code: str | None = None


class LoginRequest(Request):
    password: str
    otp_code: str | None = None
    ssh_public_key: str
    tls_public_key: str
    ttl: str | None = None
    remote_addr: str | None = None


# --- tokens and joining ------------------------------------------------------------------------

class TokenRequest(Request):
    roles: list[str] | None = None
    ttl: str | None = None
    token: str | None = None


class TokenList(Answer):
    provision: list[ResourceJSON]
    signup: list[ResourceJSON]


class JoinCA(Answer):
    """The TLS CA a joining host checks against its CA pin before sending its token."""

    cluster_name: str = Field(min_length=1)
    tls_ca_certs: list[str] = Field(min_length=1)


class RotateRequest(Request):
    """`tctl auth rotate`: which CAs (user, host, tls, or all), how, to which phase."""

    type: Literal["user", "host", "tls", "all"] = "all"
    mode: Literal["auto", "manual"] = "auto"
    phase: Literal["init", "update_clients", "update_servers", "standby", "rollback"] | None = None
    #: Go-style duration (`48h`); the default is 48 hours.
    grace_period: str | None = Field(default=None, max_length=32)


class JoinRequest(Request):
    token: str
    host_uuid: str
    nodename: str
    role: str
    ssh_public_key: str
    tls_public_key: str
    addresses: list[str] | None = Field(default=None, max_length=64)
    #: The joining host's teleport version (`MAJOR.MINOR.PATCH`); "" from hosts that predate it.
    version: str = Field(default="", max_length=80)


class HostCertsRequest(Request):
    """A host's new public keys, to re-issue its certificates (it follows a CA rotation).

    No UUID nor role: the auth server takes both from the caller's own certificate.
    """

    nodename: str = Field(max_length=256)
    ssh_public_key: str = Field(max_length=16 * 1024)
    tls_public_key: str = Field(max_length=16 * 1024)
    addresses: list[str] | None = Field(default=None, max_length=64)


class JoinAnswer(IssuedCerts):
    auth_servers: list[str] = []
    cluster_name: str


# --- audit events ------------------------------------------------------------------------------

class EventPage(Answer):
    """One page of events, oldest first; `next_key` resumes after it ("" when done)."""

    events: list[AuditEvent]
    next_key: str


# --- recordings and live sessions --------------------------------------------------------------

class Stored(Answer):
    """Whether the auth server holds a recording (already, or now that it is committed)."""

    stored: bool


class AnnouncedSession(Request):
    """A live session as its node announces it (the node's UUID and name are the server's)."""

    user: str = Field(min_length=1)
    login: str = Field(min_length=1)
    server_hostname: str = Field(min_length=1)
    created: str = Field(min_length=1)
    parties: list[str] = []


# --- recording proxy ---------------------------------------------------------------------------

class NodeCertRequest(Request):
    node: str
    public_key: str


class UserCertRequest(Request):
    cert: str
    public_key: str


class CertAnswer(Answer):
    cert: str


class Empty(Answer):
    """The answer of a call that only acts (`{}`)."""


# --- web sessions (the proxy's browser UI) -------------------------------------------------------

class WebSessionCreate(Request):
    """A browser's login, relayed by the proxy: the same checks as `tsh login`."""

    password: str
    otp_code: str = ""
    remote_addr: str = ""


class WebSession(Answer):
    """A browser session and the keys the proxy acts with as its user."""

    id: str
    user: str
    created: datetime
    #: The certificates' end; renewals never go past it.
    expires: datetime
    idle_expires: datetime
    bearer_token: str
    ssh_private_key: str   # OpenSSH PEM
    ssh_cert: str          # authorized_keys line of the user certificate
    tls_private_key: str   # PEM
    tls_cert: str          # PEM
    tls_ca_certs: list[str]
    host_ca_keys: list[str]  # authorized_keys lines of the host CA public keys
    logins: list[str]      # the OS logins the user may use (principals)
    roles: list[str]


class WatchEvent(Answer):
    """One line of the watch stream (`GET /v1/watch`): a `put` per resource stored when the
    stream opened, `init` once that snapshot is complete, then `put` or `delete` of a resource's
    kind and name per change, and `ping` while nothing changes, so a dead connection is noticed.
    Locks, roles and users carry no content (the watcher re-reads what it needs); hosts and CAs
    carry the record in `resource` (a CA its public keys only, `sub_kind` its type).

    `init` and changes carry `revision`, an opaque cursor: watching again with `since` set to the
    last one applied, the stream opens with `init` and `resumed` (no snapshot: the copy stands)
    and the changes after it, or with a snapshot as usual when the store no longer has them."""

    type: str
    kind: str = ""
    name: str = ""
    sub_kind: str = ""
    resource: ResourceJSON | None = None
    revision: str = ""
    resumed: bool = False


__all__ = ["AnnouncedSession", "CertAnswer", "CompleteSignupRequest", "Empty", "EventPage",
           "IssuedCerts", "JoinAnswer", "JoinCA", "JoinRequest", "LoginRequest", "NodeCertRequest",
           "PingAnswer", "SignupInfo", "SignupRequest", "Stored", "TokenList", "TokenRequest",
           "UserCertRequest", "WatchEvent", "WebSession", "WebSessionCreate"]


# --- single sign-on (teleport.auth.sso) ------------------------------------------------------------

class SSOLoginStart(Request):
    """A proxy starts a GitHub or OIDC login for tsh (`console`) or a browser (`web`)."""

    connector_id: str
    flow: Literal["console", "web"]
    #: The proxy's address as the user reached it: picks the connector's redirect URL.
    proxy_host: str = ""
    #: console: tsh's local callback, the key its answer is sealed with, its public keys.
    client_redirect_url: str = ""
    secret_key: str = ""
    ssh_pub_key: str = ""
    tls_pub_key: str = ""
    cert_ttl: str = ""
    #: web: SHA-256 (hex) of the browser's SSO cookie, and where to land after login.
    csrf_hash: str = ""


class SSOLoginStarted(Answer):
    redirect_url: str
    state: str


class SSOCallback(Request):
    """What the provider sent back to the proxy's callback, relayed as is."""

    query: dict[str, str]
    #: The URL the callback arrived at (scheme, host and path; no query).
    callback_url: str
    csrf: str = ""
    remote_addr: str = ""


class SSOCallbackDone(Answer):
    username: str
    flow: Literal["console", "web"]
    #: console: tsh's callback with `response=` (sealed certificates) or `error=`.
    client_redirect_url: str = ""
    web_session: WebSession | None = None


# --- trusted clusters -------------------------------------------------------------------------

class TrustedClusterValidation(Request):
    """A leaf's request to trust a root (`POST /webapi/trustedclusters/validate` on the root's
    proxy, relayed to `POST /v1/trustedclusters/validate`): the root's join token and the
    leaf's host, user and TLS CAs, public halves only."""

    token: str = Field(min_length=1, max_length=512)
    certificate_authorities: list[ResourceJSON] = Field(max_length=3)
    teleport_version: str = ""
    #: Set by the root's proxy: who asked, for the root's audit log.
    remote_addr: str = ""


class TrustedClusterValidationAnswer(Answer):
    """The root's host, user and TLS CAs (public halves), for the leaf to trust."""

    certificate_authorities: list[ResourceJSON]


class LeafCAs(Request):
    """A leaf's host, user and TLS CAs (public halves), as its proxy told them over its tunnel."""

    certificate_authorities: list[ResourceJSON] = Field(max_length=3)


class LeafTunnel(Answer):
    """Where a leaf's proxies keep a tunnel to a root (`GET /v1/trustedclusters/tunnels`)."""

    name: str
    web_proxy_addr: str
    tunnel_addr: str = ""
