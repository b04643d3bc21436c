"""teleport.ciphers, kex_algos and mac_algos: checked at load, the defaults when absent, and the
asyncssh options every SSH server and client of ours is built with."""

from __future__ import annotations

import pytest

from teleport.config import StartFlags, make_config, parse_file_config, sshalgos
from tests.unit.config.errors import error_of


def test_absent_keys_mean_the_modern_defaults() -> None:
    algorithms = make_config(parse_file_config("teleport:\n  nodename: n\n"), StartFlags()).ssh_algorithms
    assert algorithms == sshalgos.DEFAULT
    assert algorithms.kex_algos == ("mlkem768x25519-sha256", "curve25519-sha256",
                                    "curve25519-sha256@libssh.org")
    assert algorithms.ciphers == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                                  "chacha20-poly1305@openssh.com")
    assert algorithms.mac_algos == ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")


def test_chosen_lists_replace_the_defaults_key_by_key() -> None:
    config = parse_file_config(
        "teleport:\n  kex_algos:\n  - curve25519-sha256\n  - diffie-hellman-group14-sha1\n"
        "  mac_algos: hmac-sha1\n")
    algorithms = make_config(config, StartFlags()).ssh_algorithms
    # SHA-1 stays the admin's choice for an old client they must serve
    assert algorithms.kex_algos == ("curve25519-sha256", "diffie-hellman-group14-sha1")
    assert algorithms.mac_algos == ("hmac-sha1",)
    assert algorithms.ciphers == sshalgos.CIPHERS


@pytest.mark.parametrize("key, value", [
    ("kex_algos", "diffie-hellman-group1-sha1"), ("kex_algos", "rsa1024-sha1"),
    ("kex_algos", "gss-curve25519-sha256"), ("kex_algos", "diffie-hellman-group-exchange-sha1"),
    ("ciphers", "none"), ("ciphers", "arcfour256"), ("ciphers", "3des-cbc"),
    ("ciphers", "blowfish-cbc"), ("ciphers", "cast128-cbc"), ("ciphers", "seed-cbc@ssh.com"),
    ("mac_algos", "hmac-md5"), ("mac_algos", "hmac-md5-etm@openssh.com"),
    ("mac_algos", "hmac-sha1-96"), ("mac_algos", "hmac-sha2-256-96-etm@openssh.com"),
    ("mac_algos", "umac-64-etm@openssh.com"),
])
def test_broken_algorithms_are_refused_in_one_located_line(key: str, value: str) -> None:
    text = f"teleport:\n  nodename: n\n  {key}:\n  - {sshalgos.DEFAULT.__dict__[key][0]}\n  - {value}\n"
    assert error_of(text) == f"teleport.yaml:3: teleport.{key}: {value} is refused as insecure"


def test_unknown_algorithm_is_named_with_what_is_supported() -> None:
    message = error_of("teleport:\n  ciphers: [aes128-gcm@openssh.com, aes512-gcm]\n")
    assert message.startswith("teleport.yaml:2: teleport.ciphers: unknown algorithm 'aes512-gcm' "
                              "(supported, besides the refused ones: ")
    assert "chacha20-poly1305@openssh.com" in message and "arcfour" not in message


def test_a_cipher_is_not_a_mac() -> None:
    assert "unknown algorithm 'aes128-ctr'" in error_of("teleport:\n  mac_algos: [aes128-ctr]\n")


def test_an_empty_list_is_refused() -> None:
    assert error_of("teleport:\n  kex_algos: []\n") == (
        "teleport.yaml:2: teleport.kex_algos: must name at least one algorithm "
        "(leave the key out for the defaults)")


def test_server_and_client_options() -> None:
    chosen = sshalgos.SSHAlgorithms(kex_algos=("diffie-hellman-group14-sha1",))
    server = sshalgos.asyncssh_kwargs(chosen, "server")
    assert server == {"kex_algs": ["diffie-hellman-group14-sha1"],
                      "encryption_algs": list(sshalgos.CIPHERS),
                      "mac_algs": list(sshalgos.MAC_ALGOS), "compression_algs": ["none"],
                      "signature_algs": list(sshalgos.SIGNATURE_ALGOS)}
    client = sshalgos.asyncssh_kwargs(chosen, "client")
    assert client == {**server, "server_host_key_algs": list(sshalgos.HOST_KEY_ALGOS)}


def test_no_sha1_signature_or_host_key() -> None:
    for name in (*sshalgos.SIGNATURE_ALGOS, *sshalgos.HOST_KEY_ALGOS):
        assert not name.startswith(("ssh-rsa", "ssh-dss")), name
    assert "rsa-sha2-512-cert-v01@openssh.com" in sshalgos.HOST_KEY_ALGOS
    assert sshalgos.host_key_algorithms(
        [b"rsa-sha2-256-cert-v01@openssh.com", b"ssh-rsa-cert-v01@openssh.com", b"ssh-rsa"]) \
        == [b"rsa-sha2-256-cert-v01@openssh.com"]
