"""`teleport.storage`: sqlite, etcd and PostgreSQL settings are checked at load, one line each."""

from __future__ import annotations

from pathlib import Path

import pytest

from teleport.config import parse_file_config
from teleport.errors import BadParameter
from teleport.service.storage import open_backend
from teleport.utils.clock import FakeClock
from tests.unit.config.errors import error_of as config_error


def storage(text: str) -> str:
    return "teleport:\n  storage:\n" + "".join(f"    {line}\n" for line in text.splitlines())


def error_of(text: str) -> str:
    return config_error(storage(text))


def test_the_manuals_etcd_example_loads() -> None:
    config = parse_file_config(storage(
        "type: etcd\n"
        "peers: ['https://172.17.0.1:4001', 'https://172.17.0.2:4001']\n"
        "tls_cert_file: /var/lib/teleport/etcd-cert.pem\n"
        "tls_key_file: /var/lib/teleport/etcd-key.pem\n"
        "tls_ca_file: /var/lib/teleport/etcd-ca.pem\n"
        "username: username\n"
        "password_file: /mnt/secrets/etcd-pass\n"
        "prefix: /teleport/\n"
        "insecure: false\n"
        "etcd_max_client_msg_size_bytes: 15728640\n"), "teleport.yaml")
    etcd = config.teleport.storage
    assert etcd.peers == ["https://172.17.0.1:4001", "https://172.17.0.2:4001"]
    assert (etcd.prefix, etcd.etcd_max_client_msg_size_bytes) == ("/teleport/", 15728640)


def test_postgresql_takes_a_conn_string() -> None:
    config = parse_file_config(storage(
        "type: postgresql\nconn_string: postgresql://teleport@db:5432/teleport\n"), "t.yaml")
    assert config.teleport.storage.conn_string == "postgresql://teleport@db:5432/teleport"


@pytest.mark.parametrize("text, expected", [
    ("type: etcd\n", "teleport.storage: type etcd needs peers"),
    ("type: etcd\npeers: [https://e:2379]\nprefix: /teleport\n",
     "teleport.storage: prefix '/teleport' must start and end with '/'"),
    ("type: etcd\npeers: ['e:2379']\n", "etcd peer 'e:2379' must look like https://host:2379"),
    ("type: etcd\npeers: ['http://10.0.0.1:2379']\n",
     "etcd peer 'http://10.0.0.1:2379' must use https"),
    ("type: etcd\npeers: [https://e:2379]\ntls_cert_file: /c.pem\n",
     "tls_cert_file and tls_key_file go together"),
    ("type: etcd\npeers: [https://e:2379]\nusername: u\n", "username and password_file go together"),
    ("type: etcd\npeers: [https://e:2379]\nconn_string: postgresql://x\n",
     "conn_string is a setting of storage type postgresql, not etcd"),
    ("type: postgresql\n", "type postgresql needs conn_string"),
    ("type: postgresql\nconn_string: postgresql://x\npeers: [https://e:2379]\n",
     "peers is a setting of storage type etcd, not postgresql"),
    ("peers: [https://e:2379]\n", "peers is a setting of storage type etcd, not dir"),
    ("type: postgres\n", "teleport.storage.type"),
    ("type: dynamodb\n", "dynamodb is not supported yet (use type dir, etcd or postgresql)"),
])
def test_a_wrong_storage_setting_is_one_line_naming_it(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_loopback_etcd_may_be_plain_http() -> None:
    config = parse_file_config(storage("type: etcd\npeers: ['http://127.0.0.1:2379']\n"), "t")
    assert config.teleport.storage.peers == ["http://127.0.0.1:2379"]


@pytest.mark.parametrize("key", ["tls_cert_file", "tls_ca_file", "password_file"])
async def test_a_missing_file_is_named_before_connecting(key: str, tmp_path: Path) -> None:
    present = tmp_path / "present.pem"
    present.write_text("x\n")
    files = {"tls_cert_file": present, "tls_key_file": present, "tls_ca_file": present,
             "password_file": present}
    files[key] = tmp_path / "missing"
    config = parse_file_config(storage(
        "type: etcd\npeers: ['https://127.0.0.1:1']\nusername: u\n"
        + "".join(f"{k}: {v}\n" for k, v in files.items())), "t")
    with pytest.raises(BadParameter, match=f"^storage.{key}: cannot read {files[key]}"):
        await open_backend(config.teleport.storage, tmp_path, FakeClock())
