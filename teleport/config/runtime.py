"""The runtime Config: `teleport start` flags merged over teleport.yaml merged over defaults.

Services read only this object: every address is a HostPort, every duration a timedelta,
token files are read and defaults that depend on other settings are filled in.
"""

from __future__ import annotations

import re
import shlex
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from teleport.config import DEFAULT_CONFIG_PATH
from teleport.config.loader import load_file_config
from teleport.config.schema import (
    PAM,
    U2F,
    AuthService,
    AuthType,
    Cache,
    CommandLabel,
    ConnectionLimits,
    FileConfig,
    JoinLimits,
    Kubernetes,
    Log,
    ProxyService,
    SecondFactor,
    SessionRecording,
    SSHService,
    Storage,
    check_label_key,
    split_static_token,
)
from teleport.config.secondfactor import SecondFactorSettings
from teleport.config.sshalgos import SSHAlgorithms
from teleport.errors import BadParameter
from teleport.utils.addr import HostPort, parse_addr

#: Where `teleport start` looks for a config file when no --config is given.
ROLES = ("auth", "node", "proxy")

_T = TypeVar("_T")
_CA_PIN = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class StartFlags:
    """The `teleport start` command line, as given (None means not given)."""

    config_path: str | None = None
    debug: bool = False
    roles: str | None = None
    nodename: str | None = None
    data_dir: str | None = None
    pid_file: str | None = None
    labels: str | None = None
    token: str | None = None
    auth_servers: list[str] = field(default_factory=list)
    ca_pin: str | None = None
    diag_addr: str | None = None
    insecure: bool = False
    bootstrap: str | None = None
    #: `--insecure-no-tls`: the web port speaks plain HTTP (TLS ends at a load balancer).
    insecure_no_tls: bool = False


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StaticToken(_Frozen):
    roles: frozenset[str]
    token: str


class AuthConfig(_Frozen):
    enabled: bool
    listen_addr: HostPort
    public_addrs: list[HostPort]
    cluster_name: str | None
    static_tokens: list[StaticToken]
    second_factor: SecondFactor
    auth_type: AuthType
    connector_name: str
    u2f: U2F | None
    #: The resolved policy: u2f read as webauthn, the RP ID, origins, passwordless.
    mfa: SecondFactorSettings = SecondFactorSettings()
    session_recording: SessionRecording
    license_file: Path | None
    client_idle_timeout: timedelta | None
    disconnect_expired_cert: bool
    keep_alive_interval: timedelta
    keep_alive_count_max: int
    #: `join_limits`: failed joins per source address, all joins together.
    join_limits: JoinLimits = JoinLimits()


class SSHConfig(_Frozen):
    enabled: bool
    listen_addr: HostPort
    public_addrs: list[HostPort]
    labels: dict[str, str]
    commands: list[CommandLabel]
    pam: PAM


class ProxyConfig(_Frozen):
    enabled: bool
    listen_addr: HostPort
    web_listen_addr: HostPort
    tunnel_listen_addr: HostPort
    public_addrs: list[HostPort]
    ssh_public_addrs: list[HostPort]
    https_keypairs: list[tuple[Path, Path]]
    kubernetes: Kubernetes
    #: Serve plain HTTP on the web port (`teleport start --insecure-no-tls`).
    insecure_no_tls: bool = False


class Config(_Frozen):
    """Everything one teleport process needs to know, resolved and typed."""

    data_dir: Path
    nodename: str
    debug: bool
    pid_file: Path | None
    auth_servers: list[HostPort]
    auth_token: str | None
    ca_pins: list[str]
    ca_signature_algo: str | None
    #: `ciphers`, `kex_algos`, `mac_algos`: every SSH server and client of the process.
    ssh_algorithms: SSHAlgorithms = SSHAlgorithms()
    storage: Storage
    log: Log
    cache: Cache
    connection_limits: ConnectionLimits
    diag_addr: HostPort | None
    insecure: bool
    bootstrap: Path | None
    auth: AuthConfig
    ssh: SSHConfig
    proxy: ProxyConfig


def load_config(flags: StartFlags) -> Config:
    """Read the file the flags name, else /etc/teleport.yaml if present, and merge the flags."""
    if flags.config_path:
        return make_config(load_file_config(flags.config_path), flags)
    if DEFAULT_CONFIG_PATH.is_file():
        return make_config(load_file_config(DEFAULT_CONFIG_PATH), flags)
    return make_config(None, flags)


def make_config(file: FileConfig | None, flags: StartFlags) -> Config:
    """Merge flags over the file over defaults so that services read one resolved object."""
    file = file or FileConfig()
    section = file.teleport
    roles = _roles(file, flags.roles)
    data_dir = Path(flags.data_dir) if flags.data_dir else section.data_dir
    nodename = flags.nodename or section.nodename or socket.gethostname()
    auth = _auth(file.auth_service, "auth" in roles, data_dir)
    storage = section.storage
    if storage.type in ("dir", "sqlite") and storage.path is None:
        storage = storage.model_copy(update={"path": data_dir / "backend"})
    pins = [flags.ca_pin] if flags.ca_pin else section.ca_pin
    for pin in pins:
        if not _CA_PIN.match(pin):
            raise BadParameter(f"invalid CA pin {pin!r}: expected sha256:<64 hex digits> "
                               "as 'tctl status' prints it")
    token = flags.token or section.auth_token
    diag_addr = (_from_flag("--diag-addr", parse_addr, flags.diag_addr)
                 if flags.diag_addr else section.diag_addr)
    return Config(
        data_dir=data_dir,
        nodename=nodename,
        debug=flags.debug,
        pid_file=Path(flags.pid_file) if flags.pid_file else section.pid_file,
        auth_servers=_auth_servers(flags, file, auth),
        auth_token=_read_token(token, "auth token") if token else None,
        ca_pins=pins,
        ca_signature_algo=section.ca_signature_algo,
        ssh_algorithms=section.ssh_algorithms(),
        storage=storage,
        log=section.log.model_copy(update={"severity": "DEBUG"}) if flags.debug else section.log,
        cache=section.cache,
        connection_limits=section.connection_limits,
        diag_addr=diag_addr,
        insecure=flags.insecure,
        bootstrap=Path(flags.bootstrap) if flags.bootstrap else None,
        auth=auth,
        ssh=_ssh(file.ssh_service, "node" in roles, flags.labels),
        proxy=_proxy(file.proxy_service, "proxy" in roles, nodename, flags.insecure_no_tls),
    )


def parse_labels_flag(text: str) -> tuple[dict[str, str], list[CommandLabel]]:
    """Parse `--labels env=prod,uptime=[1m:"uptime -p"]` into static and dynamic labels."""
    static: dict[str, str] = {}
    commands: list[CommandLabel] = []
    for item in _split_outside_brackets(text):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise BadParameter(f"--labels: expected key=value, got {item!r}")
        _from_flag("--labels", check_label_key, key)
        if not value.startswith("["):
            static[key] = value
            continue
        period, sep, command = value.removeprefix("[").removesuffix("]").partition(":")
        if not sep or not value.endswith("]"):
            raise BadParameter(f"--labels: {key}: expected [period:\"command\"], "
                               f"e.g. [1m:\"uptime -p\"]")
        command = command.strip()
        if len(command) >= 2 and command[0] == command[-1] and command[0] in "'\"":
            command = command[1:-1]
        try:
            argv = shlex.split(command)
            commands.append(CommandLabel.model_validate(
                {"name": key, "command": argv, "period": period.strip()}))
        except ValueError as err:  # shlex's unbalanced quotes, or a ValidationError
            raise BadParameter(f"--labels: {key}: {_first_problem(err)}") from None
    return static, commands


def _first_problem(err: ValueError) -> str:
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(err)


def _split_outside_brackets(text: str) -> list[str]:
    """Split on commas, except inside `[...]` and quotes where commands may use them."""
    items, current, depth, quote = [], "", 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        current += char
    if quote or depth:
        raise BadParameter(f"--labels: unbalanced quote or bracket in {text!r}")
    return [item for item in [*items, current] if item.strip()]


def _from_flag(flag: str, parse: Callable[[str], _T], value: str) -> _T:
    """Name the flag in the error, since there is no file line to point at."""
    try:
        return parse(value)
    except BadParameter as err:
        raise BadParameter(f"{flag}: {err}") from None


def _roles(file: FileConfig, roles: str | None) -> frozenset[str]:
    """Let `--roles` pick exactly the services to run, else the file's `enabled` keys."""
    if roles is None:
        enabled = {"auth": file.auth_service.enabled, "node": file.ssh_service.enabled,
                   "proxy": file.proxy_service.enabled}
        chosen = frozenset(role for role, on in enabled.items() if on)
    else:
        chosen = frozenset(r.strip().lower() for r in roles.split(",") if r.strip())
        unknown = sorted(chosen - set(ROLES))
        if unknown:
            raise BadParameter(f"--roles: unknown role {unknown[0]!r} "
                               f"(expected a comma list of {', '.join(ROLES)})")
    if not chosen:
        raise BadParameter("no service to run: enable auth_service, ssh_service or "
                           "proxy_service, or pass --roles")
    return chosen


def _read_token(value: str, what: str) -> str:
    """Read a token from a file when the value is an absolute path, as Teleport does."""
    if not value.startswith("/"):
        return value
    try:
        token = Path(value).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise BadParameter(f"{what}: token file {value} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadParameter(f"{what}: cannot read token file {value}: {err}") from None
    if not token:
        raise BadParameter(f"{what}: token file {value} is empty")
    return token


def _auth_servers(flags: StartFlags, file: FileConfig, auth: AuthConfig) -> list[HostPort]:
    """Find the auth API: the flags, the file, else this host when it runs auth."""
    if flags.auth_servers:
        return [_from_flag("--auth-server", lambda a: parse_addr(a, 3025), addr)
                for addr in flags.auth_servers]
    if file.teleport.auth_servers:
        return list(file.teleport.auth_servers)
    if auth.enabled:
        host = auth.listen_addr.host
        local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return [HostPort(local, auth.listen_addr.port)]
    raise BadParameter("no auth server to join: pass --auth-server or set "
                       "teleport.auth_servers")


def _auth(section: AuthService, enabled: bool, data_dir: Path) -> AuthConfig:
    license_file = section.license_file
    if license_file is not None and not license_file.is_absolute():
        license_file = data_dir / license_file
    tokens = []
    for text in section.tokens:
        roles, value = split_static_token(text)
        tokens.append(StaticToken(roles=roles,
                                  token=_read_token(value, "auth_service.tokens")))
    return AuthConfig(
        enabled=enabled,
        listen_addr=section.listen_addr,
        public_addrs=section.public_addr,
        cluster_name=section.cluster_name,
        static_tokens=tokens,
        second_factor=section.authentication.resolved().second_factor,  # type: ignore[arg-type]
        auth_type=section.authentication.type,
        connector_name=section.authentication.connector_name,
        u2f=section.authentication.u2f,
        mfa=section.authentication.resolved(),
        session_recording=section.session_recording,
        license_file=license_file,
        client_idle_timeout=section.client_idle_timeout,
        disconnect_expired_cert=section.disconnect_expired_cert,
        keep_alive_interval=section.keep_alive_interval,
        keep_alive_count_max=section.keep_alive_count_max,
        join_limits=section.join_limits,
    )


def _ssh(section: SSHService, enabled: bool, labels_flag: str | None) -> SSHConfig:
    """Merge `--labels` over the file's labels and commands, a flag winning by name."""
    static, commands = parse_labels_flag(labels_flag) if labels_flag else ({}, [])
    by_name = {c.name: c for c in section.commands} | {c.name: c for c in commands}
    return SSHConfig(
        enabled=enabled,
        listen_addr=section.listen_addr,
        public_addrs=section.public_addr,
        labels=section.labels | static,
        commands=list(by_name.values()),
        pam=section.pam,
    )


def _proxy(section: ProxyService, enabled: bool, nodename: str,
           insecure_no_tls: bool = False) -> ProxyConfig:
    """Default public addresses to this host, which signup and login URLs are built from."""
    public = section.public_addr or [HostPort(nodename, section.web_listen_addr.port)]
    ssh_public = section.ssh_public_addr or [HostPort(p.host, section.listen_addr.port)
                                             for p in public[:1]]
    keypairs = [(k.key_file, k.cert_file) for k in section.https_keypairs]
    if section.https_key_file is not None and section.https_cert_file is not None:
        keypairs.append((section.https_key_file, section.https_cert_file))
    return ProxyConfig(
        enabled=enabled,
        listen_addr=section.listen_addr,
        web_listen_addr=section.web_listen_addr,
        tunnel_listen_addr=section.tunnel_listen_addr,
        public_addrs=public,
        ssh_public_addrs=ssh_public,
        https_keypairs=keypairs,
        kubernetes=section.kubernetes,
        insecure_no_tls=insecure_no_tls,
    )
