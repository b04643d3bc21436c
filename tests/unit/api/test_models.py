"""The wire models and constants of `teleport.api`: shared by both ends, light to import."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from teleport.api import auth_models, constants, web_models
from teleport.config import schema
from teleport.types.resources import Server


def _imports(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_the_clis_import_neither_the_auth_server_nor_bcrypt() -> None:
    result = _imports('import teleport.cli.tsh, teleport.cli.tctl, sys; '
                      'assert "teleport.auth.server" not in sys.modules, "auth server"; '
                      'assert "bcrypt" not in sys.modules, "bcrypt"')
    assert result.returncode == 0, result.stderr


def test_the_clients_never_import_the_auth_server() -> None:
    """tsh, tctl, nodes and proxies load the clients; the server's password state stays out.

    (`bcrypt` the module may still load: `cryptography` imports it for SSH keys; what must not
    happen is the auth server computing its dummy hash at import.)
    """
    clients = ["teleport.auth.client", "teleport.auth.join", "teleport.auth.identity_file",
               "teleport.client.webapi", "teleport.client.login", "teleport.client.play",
               "teleport.client.join", "teleport.client.fanout", "teleport.cache.replica"]
    result = _imports(f'import sys, {", ".join(clients)}; '
                      'bad = [m for m in ("teleport.auth.server", "teleport.auth.passwords", '
                      '"teleport.auth.api") if m in sys.modules]; '
                      'assert not bad, bad')
    assert result.returncode == 0, result.stderr


def test_default_ports_agree_with_the_config_schema() -> None:
    assert schema.AuthService().listen_addr.port == constants.AUTH_PORT
    assert schema.SSHService().listen_addr.port == constants.NODE_SSH_PORT
    proxy = schema.ProxyService()
    assert proxy.listen_addr.port == constants.PROXY_SSH_PORT
    assert proxy.web_listen_addr.port == constants.PROXY_WEB_PORT
    assert proxy.tunnel_listen_addr.port == constants.PROXY_TUNNEL_PORT


def test_requests_are_strict_and_name_the_wrong_field() -> None:
    with pytest.raises(ValidationError, match="password"):
        auth_models.LoginRequest.model_validate(
            {"password": 123456, "ssh_public_key": "k", "tls_public_key": "k"})
    with pytest.raises(ValidationError, match="pub_key"):
        web_models.LoginRequest.model_validate(
            {"user": "alice", "password": "secret", "pub_key": "", "tls_pub_key": "k"})
    with pytest.raises(ValidationError, match="addresses"):
        auth_models.JoinRequest.model_validate(
            {"token": "t", "host_uuid": "h", "nodename": "n", "role": "node",
             "ssh_public_key": "k", "tls_public_key": "k", "addresses": ["a"] * 65})


def test_answers_ignore_fields_a_newer_server_adds() -> None:
    ping = web_models.WebPing.model_validate(
        {"cluster_name": "c", "auth": {"type": "local", "second_factor": "off", "new": 1},
         "proxy": {"ssh": {"public_addr": "p:3023"}}, "new_field": True})
    assert (ping.auth.second_factor, ping.proxy.ssh.public_addr) == ("off", "p:3023")


def test_a_join_answer_is_issued_certs_plus_the_cluster() -> None:
    certs = auth_models.IssuedCerts(ssh_cert="s", tls_cert="t", host_ca_keys=["h"],
                                    user_ca_keys=["u"], tls_ca_certs=["ca"])
    answer = auth_models.JoinAnswer.model_validate(
        {**certs.model_dump(), "auth_servers": ["a:3025"], "cluster_name": "c"})
    assert isinstance(answer, auth_models.IssuedCerts)
    assert auth_models.IssuedCerts.model_validate(answer.model_dump()) == certs
    with pytest.raises(ValidationError, match="tls_ca_certs"):
        auth_models.JoinCA.model_validate({"cluster_name": "c", "tls_ca_certs": []})


@pytest.mark.parametrize("decode", [
    lambda text: Server.model_validate_json(json.dumps(
        {"metadata": {"name": text}, "spec": {"addr": "a:3022", "hostname": "h"}})).metadata.name,
    lambda text: auth_models.SignupInfo.model_validate_json(json.dumps(
        {"user": text, "otp_secret": "s", "otp_uri": "u", "expires": "e"})).user,
    lambda text: auth_models.SignupRequest.model_validate_json(json.dumps({"name": text})).name,
], ids=["resource", "answer", "request"])
def test_a_decoded_string_is_freed_with_its_record(decode: Callable[[str], str]) -> None:
    """No model keeps what it decoded from JSON: pydantic's default string cache kept the last
    16,384 strings of a burst of node records alive, and they held the burst's memory."""
    value = decode(f"node-{uuid.uuid4()}")
    assert sys.getrefcount(value) == 2  # `value` and the call's argument: nothing else
