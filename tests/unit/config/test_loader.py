"""teleport.yaml parsing: the manual's examples load, every mistake is one located line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from teleport.config import FileConfig, load_file_config, parse_file_config
from teleport.errors import BadParameter
from teleport.utils.addr import HostPort
from tests.unit.config.errors import error_of

HERE = Path(__file__).parent


def test_manual_sample_parses_once_its_placeholders_are_replaced() -> None:
    text = (HERE / "manual_sample.yaml").read_text()
    for placeholder, value in [("NODE_NAME", "node-1"), ("TELEPORT_PUBLIC_DNS_NAME", "tp.example.com"),
                               ("xxxx-token-xxxx", "s3cret-token"),
                               ("ca-pin-hash-goes-here", "ab" * 32)]:
        text = text.replace(placeholder, value)
    config = parse_file_config(text)
    assert config.teleport.nodename == "node-1"
    assert config.teleport.ca_pin == ["sha256:" + "ab" * 32]
    assert config.teleport.auth_servers == [HostPort("10.1.0.5", 3025), HostPort("10.1.0.6", 3025)]
    assert config.teleport.log.severity == "INFO"
    assert config.auth_service.enabled is True
    assert config.auth_service.cluster_name == "teleport-aws-us-east-1"
    assert config.auth_service.tokens == ["proxy,node:s3cret-token"]
    assert config.auth_service.authentication.second_factor == "otp"
    assert config.ssh_service.labels == {"teleport": "static-label-example"}
    arch = config.ssh_service.commands[1]
    assert (arch.name, arch.command, arch.period) == ("arch", ["/usr/bin/uname", "-p"],
                                                      timedelta(hours=1))
    assert config.proxy_service.public_addr == [HostPort("tp.example.com", 3080)]
    assert str(config.proxy_service.https_keypairs[0].cert_file).endswith("webproxy_cert.pem")


@pytest.mark.parametrize("snippet", [
    # static tokens
    'auth_service:\n  enabled: true\n  tokens:\n  - "proxy,node:secret-token-value"\n'
    '  - "auth:/path/to/tokenfile"\n',
    # CA pin on a node
    'teleport:\n  auth_token: "1ac590d36493acdaa2387bc1c492db1a"\n'
    '  ca_pin: "sha256:7e12c17c20d9cb504bbcb3f0236be3f446861f1396dcbb44425fe28ec1c108f1"\n'
    '  auth_servers:\n    - "10.12.0.6:3025"\n',
    # second factor off is YAML 1.1's boolean false, but means "off" here
    "auth_service:\n  authentication:\n    type: local\n    second_factor: off\n",
    "teleport:\n  cache:\n    type: in-memory\n  connection_limits:\n"
    "    max_connections: 65000\n    max_users: 1000\n",
    'teleport:\n  ca_signature_algo: "rsa-sha2-512"\n  diag_addr: 127.0.0.1:3000\n',
    'proxy_service:\n  public_addr: ["proxy-one.example.com", "proxy-two.example.com"]\n',
    "teleport:\n  data_dir: fresh\n",
])
def test_manual_snippets_parse(snippet: str) -> None:
    assert isinstance(parse_file_config(snippet), FileConfig)


def test_empty_file_means_defaults() -> None:
    config = parse_file_config("# nothing yet\n")
    assert config == FileConfig()
    assert config.proxy_service.web_listen_addr == HostPort("0.0.0.0", 3080)
    assert config.auth_service.authentication.second_factor == "otp"


@pytest.mark.parametrize("value, enabled", [
    ('"yes"', True), ("yes", True), ("no", False), ("true", True), ("False", False),
])
def test_enabled_accepts_yes_no_true_false(value: str, enabled: bool) -> None:
    config = parse_file_config(f"ssh_service:\n  enabled: {value}\n")
    assert config.ssh_service.enabled is enabled


@pytest.mark.parametrize("period, expected", [
    ("1m0s", timedelta(minutes=1)), ("1h0m0s", timedelta(hours=1)), ("90s", timedelta(seconds=90)),
])
def test_command_periods(period: str, expected: timedelta) -> None:
    text = f"ssh_service:\n  commands:\n  - name: up\n    command: [uptime]\n    period: {period}\n"
    assert parse_file_config(text).ssh_service.commands[0].period == expected


def test_30s_is_a_duration() -> None:
    config = parse_file_config("auth_service:\n  client_idle_timeout: 30s\n")
    assert config.auth_service.client_idle_timeout == timedelta(seconds=30)


def test_label_values_stay_as_written() -> None:
    config = parse_file_config("ssh_service:\n  labels:\n    version: 1.10\n    prod: yes\n")
    assert config.ssh_service.labels == {"version": "1.10", "prod": "yes"}


def test_single_public_addr_becomes_a_list() -> None:
    config = parse_file_config("auth_service:\n  public_addr: auth.example.com\n")
    assert config.auth_service.public_addr == [HostPort("auth.example.com", 3025)]


COMMAND = "ssh_service:\n  commands:\n  - name: up\n"


@pytest.mark.parametrize("text, message", [
    ("teleport:\n  nodename: a\n  data_dir: /d\n\n  foo: 1\n",
     "teleport.yaml:5: teleport.foo: unknown key"),
    ("teleport:\n  auth_server: 10.0.0.1\n",
     "teleport.yaml:2: teleport.auth_server: unknown key, did you mean 'auth_servers'?"),
    ("app_service:\n  enabled: yes\n", "teleport.yaml:1: app_service: unknown key"),
    (COMMAND + "    command: [uptime]\n    period: 1x\n",
     "teleport.yaml:5: ssh_service.commands[0].period: invalid duration '1x' "
     "(use Go syntax: 30s, 1m0s, 1h0m0s)"),
    (COMMAND + "    command: [uptime]\n    period: 5\n",
     "teleport.yaml:5: ssh_service.commands[0].period: invalid duration '5' "
     "(use Go syntax: 30s, 1m0s, 1h0m0s)"),
    (COMMAND + "    command: [uptime]\n    period: 30s\n",
     "teleport.yaml:5: ssh_service.commands[0].period: must be at least 1m0s, got 30s"),
    (COMMAND + '    command: ["/bin/uname -m"]\n    period: 1m\n',
     "teleport.yaml:4: ssh_service.commands[0].command: '/bin/uname -m' is one string; give "
     'the program and each argument as array items: ["/bin/uname", "-m"]'),
    (COMMAND + "    command: [uptime]\n",
     "teleport.yaml:3: ssh_service.commands[0].period: missing required key"),
    (COMMAND + "    command: [uptime]\n    period:\n",
     "teleport.yaml:5: ssh_service.commands[0].period: needs a value"),
    ("teleport: localhost\n", "teleport.yaml:1: teleport: expected a mapping, got 'localhost'"),
    ("teleport:\n  nodename: [a, b]\n",
     "teleport.yaml:2: teleport.nodename: expected a string, got a list"),
    ("teleport:\n  auth_servers:\n    main: 10.0.0.1\n",
     "teleport.yaml:2: teleport.auth_servers: expected a list, got a mapping"),
    ("teleport:\n  connection_limits:\n    max_users: many\n",
     "teleport.yaml:3: teleport.connection_limits.max_users: expected an integer, got 'many'"),
    ("auth_service:\n  enabled: sure\n",
     "teleport.yaml:2: auth_service.enabled: expected yes/no or true/false, got 'sure'"),
    ("auth_service:\n  authentication:\n    second_factor: sms\n",
     "teleport.yaml:3: auth_service.authentication.second_factor: expected 'off', 'otp', "
     "'webauthn', 'u2f', 'on' or 'optional', got 'sms'"),
    ("proxy_service:\n  web_listen_addr: 0.0.0.0:99999\n",
     "teleport.yaml:2: proxy_service.web_listen_addr: invalid port in address '0.0.0.0:99999'"),
    ("proxy_service:\n  public_addr: [a.example.com, 'b.example.com:x']\n",
     "teleport.yaml:2: proxy_service.public_addr[1]: invalid port in address 'b.example.com:x'"),
    ("teleport:\n  diag_addr: 127.0.0.1\n",
     "teleport.yaml:2: teleport.diag_addr: address '127.0.0.1' needs a port"),
    ("teleport:\n  storage:\n    type: firestore\n",
     "teleport.yaml:3: teleport.storage.type: Firestore is not supported yet "
     "(use type dir, etcd, postgresql or dynamodb)"),
    ("teleport:\n  nodename: a\n  nodename: b\n",
     "teleport.yaml:3: teleport.nodename: duplicate key"),
    ("auth_service:\n  tokens:\n  - 'nodes:secret'\n",
     "teleport.yaml:3: auth_service.tokens[0]: static token has unknown role 'nodes' "
     "(expected auth, node, proxy, trusted_cluster)"),
    ("ssh_service:\n  labels:\n    'a b': x\n",
     "teleport.yaml:3: ssh_service.labels.a b: invalid label key 'a b' "
     "(use letters, digits and / . _ * -)"),
    ("- teleport\n", "teleport.yaml:1: expected a mapping of sections, got a list"),
    ("teleport:\n  nodename: [a\n",
     "teleport.yaml:3: teleport.nodename[0]: invalid YAML: expected ',' or ']', but got "
     "'<stream end>' (while parsing a flow sequence)"),
    ("teleport:\n  nodename: a\n   data_dir: b\n",
     "teleport.yaml:3: teleport: invalid YAML: mapping values are not allowed here"),
    ("teleport:\n  nodename: a\n\tdata_dir: /d\n",
     "teleport.yaml:3: teleport: tab used for indentation; indent with spaces"),
    ("ssh_service:\n\tenabled: yes\n",
     "teleport.yaml:2: ssh_service: tab used for indentation; indent with spaces"),
])
def test_errors_name_file_line_and_key(text: str, message: str) -> None:
    assert error_of(text) == message


def test_earliest_error_is_reported() -> None:
    text = "teleport:\n  nodename: a\n  bogus: 1\nproxy_service:\n  bogus: 2\n"
    assert error_of(text).startswith("teleport.yaml:3: teleport.bogus:")
    text = "proxy_service:\n  bogus: 2\nteleport:\n  bogus: 1\n"
    assert error_of(text).startswith("teleport.yaml:2: proxy_service.bogus:")


def test_recursive_alias_is_an_error_not_a_crash() -> None:
    # Aliases are refused outright (see test_yaml_safety.py), a recursive one included.
    assert error_of("teleport: &a [*a]\n").startswith("teleport.yaml:1: invalid YAML: YAML anchors")


def test_load_file_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "teleport.yaml"
    path.write_text("teleport:\n  nodename: a\n  nodname: b\n")
    with pytest.raises(BadParameter, match=rf"^{path}:3: teleport.nodname: unknown key"):
        load_file_config(path)
    with pytest.raises(BadParameter, match="config file not found"):
        load_file_config(tmp_path / "missing.yaml")
