"""make_config: flags over the file over defaults, resolved into typed values."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import pytest

from teleport.config import (
    CommandLabel,
    StartFlags,
    StaticToken,
    load_config,
    make_config,
    parse_file_config,
    parse_labels_flag,
    runtime,
)
from teleport.errors import BadParameter
from teleport.utils.addr import HostPort

PIN = "sha256:7e12c17c20d9cb504bbcb3f0236be3f446861f1396dcbb44425fe28ec1c108f1"


def test_defaults_without_a_file() -> None:
    config = make_config(None, StartFlags())
    assert config.data_dir == Path("/var/lib/teleport")
    assert config.nodename == socket.gethostname()
    assert (config.auth.enabled, config.ssh.enabled, config.proxy.enabled) == (True, True, True)
    assert config.auth.listen_addr == HostPort("0.0.0.0", 3025)
    assert config.ssh.listen_addr == HostPort("0.0.0.0", 3022)
    assert config.proxy.listen_addr == HostPort("0.0.0.0", 3023)
    assert config.proxy.tunnel_listen_addr == HostPort("0.0.0.0", 3024)
    assert config.proxy.web_listen_addr == HostPort("0.0.0.0", 3080)
    assert config.proxy.public_addrs == [HostPort(config.nodename, 3080)]
    assert config.proxy.ssh_public_addrs == [HostPort(config.nodename, 3023)]
    assert config.auth_servers == [HostPort("127.0.0.1", 3025)]
    assert config.auth.second_factor == "otp"
    assert config.storage.type == "dir"
    assert config.storage.path == Path("/var/lib/teleport/backend")
    assert (config.log.output, config.log.severity) == ("stderr", "ERROR")
    assert config.ca_pins == [] and config.ca_signature_algo is None and config.diag_addr is None


def test_debug_flag_turns_on_debug_logging() -> None:
    config = make_config(parse_file_config("teleport:\n  log:\n    severity: warning\n"),
                         StartFlags(debug=True))
    assert config.debug and config.log.severity == "DEBUG"
    assert make_config(None, StartFlags()).log.severity == "ERROR"


def test_flags_override_the_file(tmp_path: Path) -> None:
    file = parse_file_config(
        "teleport:\n  nodename: from-file\n  data_dir: /file/dir\n  auth_token: file-token\n"
        f"  ca_pin: {PIN}\n  auth_servers: [10.0.0.1]\n  diag_addr: 127.0.0.1:3000\n"
        "ssh_service:\n  labels:\n    env: staging\n    team: ops\n")
    flags = StartFlags(nodename="from-flag", data_dir=str(tmp_path), token="flag-token",
                       auth_servers=["10.0.0.9", "10.0.0.10:4025"], ca_pin=PIN.replace("7e", "00"),
                       diag_addr="0.0.0.0:3001", pid_file="/run/t.pid", labels="env=prod",
                       roles="node")
    config = make_config(file, flags)
    assert config.nodename == "from-flag"
    assert config.data_dir == tmp_path
    assert config.storage.path == tmp_path / "backend"
    assert config.auth_token == "flag-token"
    assert config.auth_servers == [HostPort("10.0.0.9", 3025), HostPort("10.0.0.10", 4025)]
    assert config.ca_pins == [PIN.replace("7e", "00")]
    assert config.diag_addr == HostPort("0.0.0.0", 3001)
    assert config.pid_file == Path("/run/t.pid")
    assert config.ssh.labels == {"env": "prod", "team": "ops"}

    from_file = make_config(file, StartFlags())
    assert (from_file.nodename, from_file.auth_token, from_file.ca_pins) == (
        "from-file", "file-token", [PIN])
    assert from_file.auth_servers == [HostPort("10.0.0.1", 3025)]
    assert from_file.diag_addr == HostPort("127.0.0.1", 3000)


def test_roles_enable_exactly_those_services() -> None:
    file = parse_file_config("ssh_service:\n  enabled: no\n")
    config = make_config(file, StartFlags(roles="node, proxy", auth_servers=["10.0.0.1"]))
    assert (config.auth.enabled, config.ssh.enabled, config.proxy.enabled) == (False, True, True)
    assert make_config(file, StartFlags()).ssh.enabled is False


def test_unknown_role_is_rejected() -> None:
    with pytest.raises(BadParameter, match="--roles: unknown role 'nodes'"):
        make_config(None, StartFlags(roles="auth,nodes"))


def test_no_auth_server_for_a_node_is_an_error() -> None:
    with pytest.raises(BadParameter, match="no auth server"):
        make_config(None, StartFlags(roles="node"))


def test_local_auth_server_follows_the_listen_port() -> None:
    file = parse_file_config("auth_service:\n  listen_addr: 0.0.0.0:4025\n")
    assert make_config(file, StartFlags()).auth_servers == [HostPort("127.0.0.1", 4025)]


def test_static_tokens_are_parsed_and_token_files_read(tmp_path: Path) -> None:
    token_file = tmp_path / "tokenfile"
    token_file.write_text("from-the-file\n")
    file = parse_file_config(
        f'auth_service:\n  tokens:\n  - "proxy,node:secret-token-value"\n  - "auth:{token_file}"\n')
    config = make_config(file, StartFlags())
    assert config.auth.static_tokens == [
        StaticToken(roles=frozenset({"proxy", "node"}), token="secret-token-value"),
        StaticToken(roles=frozenset({"auth"}), token="from-the-file"),
    ]


def test_missing_token_file_is_named(tmp_path: Path) -> None:
    file = parse_file_config(f'auth_service:\n  tokens:\n  - "auth:{tmp_path}/nope"\n')
    with pytest.raises(BadParameter, match=f"token file {tmp_path}/nope does not exist"):
        make_config(file, StartFlags())


def test_auth_token_may_be_a_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("join-me\n")
    config = make_config(None, StartFlags(token=str(tmp_path / "token")))
    assert config.auth_token == "join-me"


def test_malformed_ca_pin_is_rejected() -> None:
    file = parse_file_config('teleport:\n  ca_pin: "sha256:0123"\n')
    with pytest.raises(BadParameter, match="invalid CA pin"):
        make_config(file, StartFlags())


def test_dynamic_labels_flag() -> None:
    static, commands = parse_labels_flag('env=prod,uptime=[1m:"uptime -p"],kernel=[1h:uname -r]')
    assert static == {"env": "prod"}
    assert commands == [
        CommandLabel(name="uptime", command=["uptime", "-p"], period=timedelta(minutes=1)),
        CommandLabel(name="kernel", command=["uname", "-r"], period=timedelta(hours=1)),
    ]


def test_dynamic_label_flag_keeps_commas_inside_brackets() -> None:
    _, commands = parse_labels_flag("""x=[1m:"sh -c 'echo a,b'"],y=z""")
    assert commands[0].command == ["sh", "-c", "echo a,b"]


@pytest.mark.parametrize("labels, message", [
    ('uptime=[30s:"uptime -p"]', "--labels: uptime: period: must be at least 1m0s, got 30s"),
    ("uptime=[1x:uptime]", "--labels: uptime: period: invalid duration '1x'"),
    ("uptime=[uptime]", "--labels: uptime: expected [period:"),
    ("noequals", "--labels: expected key=value"),
    ("a b=c", "--labels: invalid label key 'a b'"),
    ("x=[1m:uptime", "--labels: unbalanced"),
])
def test_bad_labels_flag(labels: str, message: str) -> None:
    with pytest.raises(BadParameter) as info:
        make_config(None, StartFlags(labels=labels))
    assert str(info.value).startswith(message)


def test_flag_commands_join_file_commands() -> None:
    file = parse_file_config("ssh_service:\n  commands:\n  - name: arch\n    command: [uname, -p]\n"
                             "    period: 1h0m0s\n")
    config = make_config(file, StartFlags(labels="up=[1m:uptime]"))
    assert [c.name for c in config.ssh.commands] == ["arch", "up"]


def test_https_key_file_and_keypairs_are_combined() -> None:
    file = parse_file_config(
        "proxy_service:\n  https_keypairs:\n  - key_file: /k1\n    cert_file: /c1\n"
        "  https_key_file: /k2\n  https_cert_file: /c2\n  public_addr: proxy.example.com\n")
    config = make_config(file, StartFlags())
    assert config.proxy.https_keypairs == [(Path("/k1"), Path("/c1")), (Path("/k2"), Path("/c2"))]
    assert config.proxy.public_addrs == [HostPort("proxy.example.com", 3080)]
    assert config.proxy.ssh_public_addrs == [HostPort("proxy.example.com", 3023)]


def test_load_config_reads_the_named_file(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "teleport.yaml"
    path.write_text(f"teleport:\n  nodename: n1\n  data_dir: {tmp_path}\n")
    assert load_config(StartFlags(config_path=str(path))).nodename == "n1"
    monkeypatch.setattr(runtime, "DEFAULT_CONFIG_PATH", path)
    assert load_config(StartFlags()).nodename == "n1"
    monkeypatch.setattr(runtime, "DEFAULT_CONFIG_PATH", tmp_path / "absent.yaml")
    assert load_config(StartFlags(nodename="n2")).nodename == "n2"
    with pytest.raises(BadParameter, match="config file not found"):
        load_config(StartFlags(config_path=str(tmp_path / "absent.yaml")))
