"""The teleport.yaml schema: what a file may say, with Teleport's defaults for what it omits.

Validators raise BadParameter like the rest of the code; `_checked` turns that into a pydantic
error so that the loader can put the file, line and key path in front of the message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from teleport.config import secondfactor, sshalgos
from teleport.config.modes import SessionRecording
from teleport.errors import BadParameter
from teleport.utils.addr import HostPort, parse_addr
from teleport.utils.duration import format_duration, parse_duration

#: pydantic error type of every problem our validators report; the loader shows its text as is.
CONFIG_ERROR = "teleport_config"

StorageType = Literal["dir", "sqlite", "etcd", "postgresql", "dynamodb", "firestore"]
SecondFactor = Literal["off", "otp", "webauthn", "u2f", "on", "optional"]
AuthType = Literal["local", "github", "oidc", "saml"]
Severity = Literal["DEBUG", "INFO", "WARN", "ERROR"]

#: System roles a static token may grant.
TOKEN_ROLES = frozenset({"auth", "node", "proxy", "trusted_cluster"})
MIN_COMMAND_PERIOD = timedelta(minutes=1)

_T = TypeVar("_T")
_LABEL_KEY = re.compile(r"^[a-zA-Z0-9/._*-]+$")
_PAM_SERVICE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
_TRUE = frozenset({"yes", "true", "on"})
_FALSE = frozenset({"no", "false", "off"})


def _invalid(message: str) -> PydanticCustomError:
    """Make a pydantic error whose text the loader shows as is."""
    return PydanticCustomError(CONFIG_ERROR, "{reason}", {"reason": message})


def _checked(check: Callable[[Any], _T]) -> Callable[[Any], _T]:
    """Wrap a BadParameter-raising check so pydantic reports its message verbatim."""

    def run(value: Any) -> _T:
        try:
            return check(value)
        except BadParameter as err:
            raise _invalid(str(err)) from None

    return run


def parse_flag(value: object) -> bool:
    """Accept yes/no/true/false (and on/off) because the manual quotes `enabled: "yes"`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise BadParameter(f"expected yes/no or true/false, got {value!r}")


def parse_config_duration(value: object) -> timedelta:
    """Accept only Go-syntax durations, so that a bare `5` is not silently 5 seconds."""
    if isinstance(value, timedelta):
        return value
    try:
        if not isinstance(value, str):
            raise BadParameter("not text")
        duration = parse_duration(value)
    except BadParameter:
        raise BadParameter(
            f"invalid duration {value!r} (use Go syntax: 30s, 1m0s, 1h0m0s)") from None
    if duration < timedelta(0):
        raise BadParameter(f"duration {value!r} must not be negative")
    return duration


def check_label_key(key: str) -> str:
    """Reject label keys that would break `k=v,k2=v2` flags and label selectors."""
    if not _LABEL_KEY.match(key):
        raise BadParameter(f"invalid label key {key!r} (use letters, digits and / . _ * -)")
    return key


def split_static_token(text: str) -> tuple[frozenset[str], str]:
    """Split `proxy,node:secret` into roles and token (or token file); never echo the secret."""
    roles_text, sep, value = text.partition(":")
    if not sep or not value.strip() or not roles_text.strip():
        raise BadParameter("static token must look like 'proxy,node:<token>' "
                           "or 'auth:/path/to/tokenfile'")
    roles = frozenset(r.strip().lower() for r in roles_text.split(","))
    unknown = sorted(roles - TOKEN_ROLES)
    if unknown:
        raise BadParameter(f"static token has unknown role {unknown[0]!r} "
                           f"(expected {', '.join(sorted(TOKEN_ROLES))})")
    return roles, value.strip()


def _check_static_token(text: str) -> str:
    """Validate a `tokens` entry where the file says it, keeping the text for the runtime."""
    split_static_token(text)
    return text


def _address(default_port: int | None) -> BeforeValidator:
    """Validate `host[:port]` with the port the service listens on by default."""

    def check(value: object) -> HostPort:
        if isinstance(value, HostPort):
            return value
        if not isinstance(value, str):
            raise BadParameter(f"expected an address like host:port, got {value!r}")
        return parse_addr(value, default_port)

    return BeforeValidator(_checked(check))


def _refuse(what: str, hint: str = "") -> Callable[[Any], Any]:
    """Refuse a value this implementation would otherwise accept and silently not honour."""

    def check(value: Any) -> Any:
        raise _invalid(f"{what} is not supported yet{f' ({hint})' if hint else ''}")

    return check


def _only(supported: Collection[Any], hint: str) -> AfterValidator:
    """Accept the values of a manual-listed key that are implemented; refuse the rest by name."""

    def check(value: Any) -> Any:
        if value not in supported:
            shown = value.value if isinstance(value, Enum) else value
            raise _invalid(f"{shown} is not supported yet ({hint})")
        return value

    return AfterValidator(check)


def _unset(what: str, hint: str = "") -> AfterValidator:
    """Refuse any value given for a key whose feature is not built yet (leaving it out is fine)."""
    return AfterValidator(_refuse(what, hint))


def _default_only(default: Any, what: str, hint: str = "") -> AfterValidator:
    """Accept a key only at its default, which is what this implementation does anyway."""

    def check(value: Any) -> Any:
        if value != default:
            _refuse(what, hint)(value)
        return value

    return AfterValidator(check)


def _one_or_many(value: object) -> object:
    """Let a list-valued key also take one string, as `public_addr` does in the manual."""
    return [value] if isinstance(value, str) else value


def _upper_severity(value: object) -> object:
    """Accept `info` and `WARNING` for the severity names Teleport prints."""
    if isinstance(value, str):
        upper = value.strip().upper()
        return "WARN" if upper == "WARNING" else upper
    return value


Flag = Annotated[bool, BeforeValidator(_checked(parse_flag))]
Duration = Annotated[timedelta, BeforeValidator(_checked(parse_config_duration))]
LabelKey = Annotated[str, AfterValidator(_checked(check_label_key))]
StrList = Annotated[list[str], BeforeValidator(_one_or_many)]
TokenText = Annotated[str, AfterValidator(_checked(_check_static_token))]
AuthAddr = Annotated[HostPort, _address(3025)]
NodeAddr = Annotated[HostPort, _address(3022)]
ProxySSHAddr = Annotated[HostPort, _address(3023)]
TunnelAddr = Annotated[HostPort, _address(3024)]
WebAddr = Annotated[HostPort, _address(3080)]
KubeAddr = Annotated[HostPort, _address(3026)]
DiagAddr = Annotated[HostPort, _address(None)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Log(_Model):
    output: str = "stderr"
    severity: Annotated[Severity, BeforeValidator(_upper_severity)] = "ERROR"
    format: Literal["text", "json"] = "text"


#: Keys of storage backends that are not built yet; dir (sqlite), etcd, PostgreSQL and
#: DynamoDB are.
_GCP = _unset("Firestore storage", "use type dir, etcd, postgresql or dynamodb")
#: The keys each built storage type reads; a key of another type is a mistake, said by name.
STORAGE_KEYS: dict[str, frozenset[str]] = {
    "dir": frozenset({"path"}),
    "sqlite": frozenset({"path"}),
    "etcd": frozenset({"peers", "prefix", "tls_cert_file", "tls_key_file", "tls_ca_file",
                       "username", "password_file", "insecure",
                       "etcd_max_client_msg_size_bytes"}),
    "postgresql": frozenset({"conn_string"}),
    "dynamodb": frozenset({"table_name", "endpoint", "continuous_backups", "billing_mode",
                           "read_capacity_units", "write_capacity_units"}),
}
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _check_peer(url: str) -> str:
    """An etcd peer is an http(s) URL with host and port; plain http only on this machine,
    since etcd holds the cluster's private keys."""
    match = re.fullmatch(r"(https?)://([^/:]+|\[[0-9a-fA-F:]+\]):(\d{1,5})/?", url)
    if match is None:
        raise BadParameter(f"etcd peer {url!r} must look like https://host:2379")
    scheme, host = match.group(1), match.group(2)
    if scheme == "http" and host not in _LOOPBACK_HOSTS and not host.startswith("127."):
        raise BadParameter(f"etcd peer {url!r} must use https (plain http is only "
                           "accepted on this machine's loopback address)")
    return url


def _check_storage_type(value: str) -> str:
    if value == "firestore":
        raise BadParameter("Firestore is not supported yet "
                           "(use type dir, etcd, postgresql or dynamodb)")
    return value


def _check_endpoint(url: str) -> str:
    """A DynamoDB-compatible server's URL (AWS itself needs none)."""
    if not re.fullmatch(r"https?://[^/\s]+/?", url):
        raise BadParameter(f"endpoint {url!r} must look like https://host:port")
    return url


class Storage(_Model):
    type: Annotated[StorageType, AfterValidator(_checked(_check_storage_type))] = "dir"
    path: Path | None = None
    # etcd
    peers: list[Annotated[str, AfterValidator(_checked(_check_peer))]] = []
    prefix: str = "/teleport/"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    insecure: Flag = False
    etcd_max_client_msg_size_bytes: Annotated[int | None, Field(ge=1)] = None
    # postgresql
    conn_string: str | None = None
    # dynamodb; region is also the default region of s3:// and dynamodb:// audit URIs, so it
    # goes with every type
    region: str | None = None
    table_name: str | None = None
    endpoint: Annotated[str | None, AfterValidator(_checked(_check_endpoint))] = None
    continuous_backups: Flag = False
    billing_mode: Literal["pay_per_request", "provisioned"] = "pay_per_request"
    read_capacity_units: Annotated[int, Field(ge=1)] = 10
    write_capacity_units: Annotated[int, Field(ge=1)] = 10
    # Firestore (not built)
    project_id: Annotated[str | None, _GCP] = None
    collection_name: Annotated[str | None, _GCP] = None
    # the Google credentials of gs:// recordings (audit_sessions_uri), with every type
    credentials_path: Path | None = None
    # audit log and session recordings, for every storage type; their schemes are checked
    # where they are opened (teleport.events.sinks), which refuses the ones not built yet
    audit_events_uri: StrList = []
    audit_sessions_uri: str | None = None

    @model_validator(mode="after")
    def _for_its_type(self) -> Storage:
        """Each type's keys only with that type, and what each type cannot start without."""
        mine = STORAGE_KEYS.get(self.type, frozenset())
        for other, keys in STORAGE_KEYS.items():
            for name in sorted((keys - mine) & self.model_fields_set):
                raise _invalid(f"{name} is a setting of storage type {other}, not {self.type}")
        if self.type == "etcd":
            if not self.peers:
                raise _invalid("type etcd needs peers, e.g. [https://10.0.0.1:2379]")
            if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
                raise _invalid(f"prefix {self.prefix!r} must start and end with '/'")
            if (self.tls_cert_file is None) != (self.tls_key_file is None):
                raise _invalid("tls_cert_file and tls_key_file go together")
            if (self.username is None) != (self.password_file is None):
                raise _invalid("username and password_file go together")
        if self.type == "dynamodb":
            if not (self.table_name or "").strip():
                raise _invalid("type dynamodb needs table_name, e.g. teleport-state")
            for name in ("read_capacity_units", "write_capacity_units"):
                if name in self.model_fields_set and self.billing_mode != "provisioned":
                    raise _invalid(f"{name} is a setting of billing_mode provisioned")
        if self.type == "postgresql" and not (self.conn_string or "").strip():
            raise _invalid("type postgresql needs conn_string, e.g. "
                           "postgresql://teleport@db.example.com:5432/teleport?sslmode=verify-full")
        return self


class Cache(_Model):
    # the cache is kept in memory; one that survives a restart on disk is not built yet
    type: Annotated[Literal["in-memory", "sqlite"],
                    _only(("in-memory",), "use in-memory")] = "in-memory"
    enabled: Flag = True


class ConnectionRate(_Model):
    """Teleport's `connection_limits.rates` entry: `average` new connections per `period` from
    one address, `burst` at once. Ours count unauthenticated handshakes (teleport.api.throttle)."""

    period: Duration
    average: int = Field(ge=1)
    burst: int = Field(ge=1)

    @field_validator("period")
    @classmethod
    def _positive(cls, period: timedelta) -> timedelta:
        if period <= timedelta(0):
            raise _invalid("period must be longer than 0s")
        return period


class ConnectionLimits(_Model):
    max_connections: int = Field(default=15000, ge=1)
    max_users: int = Field(default=250, ge=1)
    #: None: the throttle's defaults (10 a second, burst 10); [] turns the pacing off.
    rates: list[ConnectionRate] | None = None
    #: Ours, not Teleport's: unauthenticated connections one address may hold at once on each
    #: listener (None: the throttle's default, 32), like OpenSSH's PerSourceMaxStartups.
    max_unauthenticated_per_source: int | None = Field(default=None, ge=1)


class JoinLimits(_Model):
    """Ours (Teleport's joins share `connection_limits.rates`): `failed_per_source` limits the
    failed join attempts (wrong or expired token, malformed request) of one address, so a
    guesser waits while a fleet behind one NAT address is not held back; `total` bounds all
    join requests of every address together (each host makes two: the CA, then the join)."""

    failed_per_source: ConnectionRate = ConnectionRate(
        period=timedelta(minutes=1), average=10, burst=10)
    total: ConnectionRate = ConnectionRate(period=timedelta(seconds=1), average=200, burst=1000)


def _ssh_algorithms(kind: sshalgos.Kind) -> AfterValidator:
    """Check a teleport.yaml list of SSH algorithms with `sshalgos.check`."""
    return AfterValidator(_checked(lambda names: sshalgos.check(kind, names)))


AlgorithmList = Annotated[tuple[str, ...] | None, BeforeValidator(_one_or_many)]


class TeleportSection(_Model):
    nodename: str | None = None
    data_dir: Path = Path("/var/lib/teleport")
    pid_file: Path | None = None
    auth_token: str | None = None
    ca_pin: StrList = []
    auth_servers: Annotated[list[AuthAddr], BeforeValidator(_one_or_many)] = []
    log: Log = Log()
    storage: Storage = Storage()
    ca_signature_algo: Literal["rsa-sha2-256", "rsa-sha2-512"] | None = None
    cache: Cache = Cache()
    connection_limits: ConnectionLimits = ConnectionLimits()
    diag_addr: DiagAddr | None = None
    # SSH algorithms of every SSH server and client of this process (absent: sshalgos' defaults)
    ciphers: Annotated[AlgorithmList, _ssh_algorithms("ciphers")] = None
    kex_algos: Annotated[AlgorithmList, _ssh_algorithms("kex_algos")] = None
    mac_algos: Annotated[AlgorithmList, _ssh_algorithms("mac_algos")] = None

    def ssh_algorithms(self) -> sshalgos.SSHAlgorithms:
        """The SSH algorithm set these keys choose, the defaults for those left out."""
        chosen = {"ciphers": self.ciphers, "kex_algos": self.kex_algos, "mac_algos": self.mac_algos}
        return sshalgos.SSHAlgorithms(**{k: v for k, v in chosen.items() if v is not None})


class U2F(_Model):
    app_id: str
    facets: StrList = []


class WebauthnSection(_Model):
    """Current Teleport's `webauthn` section: the relying party ID (the proxy's DNS name)."""

    rp_id: str


class Authentication(_Model):
    type: Annotated[AuthType, _only(("local", "github", "oidc"), "use local, github or oidc")] = "local"
    #: The connector `tsh login` and the web UI use first when `type` is github or oidc.
    connector_name: str = ""
    #: `u2f` is read as `webauthn` (teleport.config.secondfactor).
    second_factor: SecondFactor = "otp"
    u2f: U2F | None = None
    webauthn: WebauthnSection | None = None
    #: Logging in with a resident WebAuthn key alone; default on where WebAuthn is usable.
    passwordless: Flag | None = None

    @model_validator(mode="after")
    def _second_factor(self) -> Authentication:
        try:
            self.resolved()
        except BadParameter as err:
            raise _invalid(str(err)) from None
        return self

    def resolved(self) -> secondfactor.SecondFactorSettings:
        """The second-factor policy these keys say (u2f mapped to WebAuthn)."""
        return secondfactor.resolve(
            self.second_factor, u2f_app_id=self.u2f.app_id if self.u2f else None,
            u2f_facets=self.u2f.facets if self.u2f else (),
            webauthn_rp_id=self.webauthn.rp_id if self.webauthn else None,
            passwordless=self.passwordless)


class AuthService(_Model):
    enabled: Flag = True
    listen_addr: AuthAddr = HostPort("0.0.0.0", 3025)
    public_addr: Annotated[list[AuthAddr], BeforeValidator(_one_or_many)] = []
    cluster_name: str | None = None
    tokens: list[TokenText] = []
    authentication: Authentication = Authentication()
    session_recording: SessionRecording = SessionRecording.NODE
    license_file: Annotated[Path | None, _unset("an Enterprise license")] = None
    client_idle_timeout: Duration | None = None
    disconnect_expired_cert: Flag = False
    # SSH keep-alives are sent every 5m0s and 3 missed ones hang up (sshutils.listener)
    keep_alive_interval: Annotated[Duration, _default_only(
        timedelta(minutes=5), "a keep-alive interval other than 5m0s")] = timedelta(minutes=5)
    keep_alive_count_max: Annotated[int, Field(ge=1), _default_only(
        3, "a keep-alive count other than 3")] = 3
    join_limits: JoinLimits = JoinLimits()


class CommandLabel(_Model):
    """A dynamic label: the output of `command`, re-run every `period`."""

    name: LabelKey
    command: list[str] = Field(min_length=1)
    period: Duration

    @field_validator("command")
    @classmethod
    def _split(cls, command: list[str]) -> list[str]:
        """Reject what the manual calls INVALID syntax: a whole command line in one item."""
        if len(command) == 1 and " " in command[0].strip():
            raise _invalid(f"{command[0]!r} is one string; give the program and each argument "
                           f"as array items: {json.dumps(command[0].split())}")
        return command

    @field_validator("period")
    @classmethod
    def _not_too_often(cls, period: timedelta) -> timedelta:
        """Keep label commands from hammering the host, as the manual's minimum says."""
        if period < MIN_COMMAND_PERIOD:
            raise _invalid(f"must be at least 1m0s, got {format_duration(period)}")
        return period


def check_pam_service(name: str) -> str:
    """A PAM service names a file in /etc/pam.d; libpam would quietly drop a path's directories."""
    if not _PAM_SERVICE.fullmatch(name):
        raise BadParameter(f"{name!r} is not a PAM service name (a file name in /etc/pam.d, "
                           "like sshd)")
    return name


class PAM(_Model):
    """The account and session stacks of `service_name` run for every session of the node."""

    enabled: Flag = False
    service_name: Annotated[str, AfterValidator(_checked(check_pam_service))] = "sshd"
    # Teleport's optional auth stack: the certificate is the only authentication here
    use_pam_auth: Annotated[Flag, _default_only(
        False, "the PAM auth stack", "leave use_pam_auth out")] = False


class SSHService(_Model):
    enabled: Flag = True
    listen_addr: NodeAddr = HostPort("0.0.0.0", 3022)
    public_addr: Annotated[list[NodeAddr], BeforeValidator(_one_or_many)] = []
    labels: dict[LabelKey, str] = {}
    commands: list[CommandLabel] = []
    pam: PAM = PAM()


class KeyPair(_Model):
    key_file: Path
    cert_file: Path


class Kubernetes(_Model):
    enabled: Flag = False
    listen_addr: KubeAddr = HostPort("0.0.0.0", 3026)
    public_addr: Annotated[list[KubeAddr], BeforeValidator(_one_or_many)] = []
    kubeconfig_file: Path | None = None
    cluster_name: str | None = None


class ProxyService(_Model):
    enabled: Flag = True
    listen_addr: ProxySSHAddr = HostPort("0.0.0.0", 3023)
    web_listen_addr: WebAddr = HostPort("0.0.0.0", 3080)
    # nodes behind NAT dial in here; the web address multiplexes it on the web port
    tunnel_listen_addr: TunnelAddr = HostPort("0.0.0.0", 3024)
    public_addr: Annotated[list[WebAddr], BeforeValidator(_one_or_many)] = []
    ssh_public_addr: Annotated[list[ProxySSHAddr], BeforeValidator(_one_or_many)] = []
    https_keypairs: list[KeyPair] = []
    # the older single-pair spelling
    https_key_file: Path | None = None
    https_cert_file: Path | None = None
    kubernetes: Annotated[Kubernetes, _default_only(
        Kubernetes(), "the Kubernetes proxy", "leave proxy_service.kubernetes out")] = Kubernetes()

    @model_validator(mode="after")
    def _pair(self) -> ProxyService:
        """A key without its certificate (or the reverse) is always a mistake."""
        if (self.https_key_file is None) != (self.https_cert_file is None):
            raise _invalid("https_key_file and https_cert_file go together")
        return self


class FileConfig(_Model):
    """A parsed teleport.yaml; sections left out mean Teleport's defaults."""

    teleport: TeleportSection = TeleportSection()
    auth_service: AuthService = AuthService()
    ssh_service: SSHService = SSHService()
    proxy_service: ProxyService = ProxyService()
