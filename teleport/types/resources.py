"""The resources this cluster stores: users, tokens, certificate authorities, servers."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from teleport.errors import BadParameter
from teleport.types.mfa import MFADevice
from teleport.types.resource import ZERO_TIME, Model, Resource, Time
from teleport.types.rotation import Rotation
from teleport.types.trusted import RoleMapping


class LoginStatus(Model):
    is_locked: bool = False
    locked_message: str = ""
    locked_time: Time = ZERO_TIME
    lock_expires: Time = ZERO_TIME

    def locked_at(self, now: datetime) -> bool:
        """Tell whether the lock holds at now: `is_locked` until `lock_expires`, for good if unset."""
        return self.is_locked and (self.lock_expires <= ZERO_TIME or self.lock_expires > now)


class CreatedByUser(Model):
    name: str = ""


class ConnectorRef(Model):
    """The SSO connector that made a temporary user, and who the provider said they are."""

    type: str
    id: str
    identity: str = ""


class CreatedBy(Model):
    time: Time = ZERO_TIME
    user: CreatedByUser = Field(default_factory=CreatedByUser)
    connector: ConnectorRef | None = None


class WebauthnLocalAuth(Model):
    """The user's WebAuthn user handle (base64), which their passkeys store and name them by."""

    user_id: str = Field(min_length=1)

    @field_validator("user_id")
    @classmethod
    def _base64(cls, value: str) -> str:
        _b64decode(value, "user_id")
        return value


class LocalAuthSecrets(Model):
    """What a local user logs in with, as Teleport writes it in `spec.local_auth`.

    Only `tctl get users --with-secrets` with the admin identity prints it, and only
    `teleport start --bootstrap` reads it back: the auth server keeps these beside the user
    (`teleport.services.users`, `teleport.services.mfa_devices`), never in the user record.
    """

    #: The bcrypt hash, base64 (as Teleport encodes the bytes).
    password_hash: str = ""
    #: The OTP app's secret (base32), "" without one.
    totp_key: str = ""
    mfa: list[MFADevice] = Field(default_factory=list)
    webauthn: WebauthnLocalAuth | None = None

    @field_validator("password_hash")
    @classmethod
    def _bcrypt(cls, value: str) -> str:
        if value and not _b64decode(value, "password_hash").startswith((b"$2a$", b"$2b$", b"$2y$")):
            raise ValueError("password_hash is not a base64 bcrypt hash")
        return value

    @field_validator("totp_key")
    @classmethod
    def _base32(cls, value: str) -> str:
        try:
            base64.b32decode(value + "=" * (-len(value) % 8), casefold=True)
        except (binascii.Error, ValueError):
            raise ValueError("totp_key is not base32") from None
        return value


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None


class UserSpec(Model):
    roles: list[str] = Field(default_factory=list)
    traits: dict[str, list[str]] = Field(default_factory=dict)
    status: LoginStatus = Field(default_factory=LoginStatus)
    expires: Time = ZERO_TIME
    created_by: CreatedBy = Field(default_factory=CreatedBy)
    #: Only in a backup (`tctl get users --with-secrets`): never stored in the user record.
    local_auth: LocalAuthSecrets | None = None

    @field_validator("roles", mode="before")
    @classmethod
    def _roles_may_be_one_string(cls, value: Any) -> Any:
        # The manual's own example writes `roles: admin`.
        return [value] if isinstance(value, str) else value


def check_user_name(name: str) -> None:
    """Refuse a user name that could change a key path, a route or a log line, or is not text.

    One rule for the auth server and for `tctl create`, which checks a whole file before it
    applies any of it.
    """
    if not name or len(name) > 255 or any(c in name for c in "/\\ \t\n:"):
        raise BadParameter(f"invalid user name {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON allows and UTF-8 does not
        raise BadParameter("user name is not valid Unicode text") from None


class User(Resource):
    kind: Literal["user"] = "user"
    version: Literal["v2"] = "v2"
    spec: UserSpec = Field(default_factory=UserSpec)

    @property
    def logins(self) -> list[str]:
        return self.spec.traits.get("logins", [])

    def without_secrets(self) -> User:
        """Return the user without `spec.local_auth` (password hash, OTP key, devices)."""
        if self.spec.local_auth is None:
            return self
        return self.model_copy(update={"spec": self.spec.model_copy(update={"local_auth": None})})


class ProvisionTokenSpec(Model):
    roles: list[str]


class ProvisionToken(Resource):
    """An invitation for a host to join the cluster; metadata.name is the token."""

    kind: Literal["token"] = "token"
    version: Literal["v2"] = "v2"
    spec: ProvisionTokenSpec


class UserTokenSpec(Model):
    user: str
    created: Time = ZERO_TIME
    usage: Literal["signup", "reset"] = "signup"


class UserToken(Resource):
    """A signup link; metadata.name is the secret token in the URL."""

    kind: Literal["user_token"] = "user_token"
    version: Literal["v3"] = "v3"
    spec: UserTokenSpec


class SSHKeyPair(Model):
    public_key: str
    private_key: str = ""


class TLSKeyPair(Model):
    cert: str
    key: str = ""


class CAKeys(Model):
    ssh: list[SSHKeyPair] = Field(default_factory=list)
    tls: list[TLSKeyPair] = Field(default_factory=list)


class CertAuthoritySpec(Model):
    type: Literal["user", "host", "tls"]
    cluster_name: str
    active_keys: CAKeys = Field(default_factory=CAKeys)
    additional_trusted_keys: CAKeys = Field(default_factory=CAKeys)
    signing_alg: str = ""
    rotation: Rotation = Field(default_factory=Rotation)
    #: On a leaf, for a root's CAs it trusts: what the root's users' roles become here.
    role_map: list[RoleMapping] = Field(default_factory=list)


class CertAuthority(Resource):
    kind: Literal["cert_authority"] = "cert_authority"
    version: Literal["v2"] = "v2"
    spec: CertAuthoritySpec

    def without_secrets(self) -> CertAuthority:
        """Return a copy safe to hand to hosts and users: public halves only."""

        def strip(keys: CAKeys) -> CAKeys:
            return CAKeys(
                ssh=[SSHKeyPair(public_key=k.public_key) for k in keys.ssh],
                tls=[TLSKeyPair(cert=k.cert) for k in keys.tls],
            )

        spec = self.spec.model_copy(update={
            "active_keys": strip(self.spec.active_keys),
            "additional_trusted_keys": strip(self.spec.additional_trusted_keys),
        })
        return self.model_copy(update={"spec": spec})

    def trusted_ssh_public_keys(self) -> list[str]:
        keys = self.spec.active_keys.ssh + self.spec.additional_trusted_keys.ssh
        return [k.public_key for k in keys]

    def trusted_tls_certs(self) -> list[str]:
        keys = self.spec.active_keys.tls + self.spec.additional_trusted_keys.tls
        return [k.cert for k in keys]

    def export(self) -> str:
        """What stock tools take, every trusted key (both during a rotation): sshd's
        `TrustedUserCAKeys` lines for the user CA (the comment names the cluster), known_hosts
        `@cert-authority` lines for the host CA, PEM for the TLS CA."""
        cluster = self.spec.cluster_name
        if self.spec.type == "tls":
            return "".join(self.trusted_tls_certs())
        if self.spec.type == "user":
            return "".join(f"{k} clustername={cluster}&type=user\n"
                           for k in self.trusted_ssh_public_keys())
        return "".join(f"@cert-authority *.{cluster} {k} type=host\n"
                       for k in self.trusted_ssh_public_keys())


class CommandLabelValue(Model):
    period: str
    command: list[str]
    result: str = ""


class ServerSpec(Model):
    addr: str
    hostname: str
    public_addr: str = ""
    #: The node is reached over its reverse tunnel to the proxies (it opens no port); addr is "".
    use_tunnel: bool = False
    #: A proxy's own tunnel address, where other proxies reach the nodes tunnelled to it.
    peer_addr: str = ""
    cmd_labels: dict[str, CommandLabelValue] = Field(default_factory=dict)
    version: str = ""


class Server(Resource):
    """A node or proxy announcing itself; metadata.name is its host UUID."""

    kind: Literal["node", "proxy", "auth_server"] = "node"
    version: Literal["v2"] = "v2"
    spec: ServerSpec

    def all_labels(self) -> dict[str, str]:
        labels = dict(self.metadata.labels)
        labels.update({k: v.result for k, v in self.spec.cmd_labels.items()})
        return labels


class ClusterNameSpec(Model):
    cluster_name: str
    cluster_id: str


class ClusterName(Resource):
    kind: Literal["cluster_name"] = "cluster_name"
    version: Literal["v2"] = "v2"
    spec: ClusterNameSpec
