"""`teleport.storage`: sqlite, etcd, PostgreSQL and DynamoDB settings are checked at load, one line
each."""

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
    ("type: dynamodb\n", "teleport.storage: type dynamodb needs table_name"),
    ("type: dynamodb\ntable_name: t\nread_capacity_units: 5\n",
     "read_capacity_units is a setting of billing_mode provisioned"),
    ("type: dynamodb\ntable_name: t\nbilling_mode: free\n", "teleport.storage.billing_mode"),
    ("type: dynamodb\ntable_name: t\nbilling_mode: provisioned\nwrite_capacity_units: 0\n",
     "teleport.storage.write_capacity_units"),
    ("type: dynamodb\ntable_name: t\nendpoint: localhost:8000\n",
     "endpoint 'localhost:8000' must look like https://host:port"),
    ("table_name: t\n", "table_name is a setting of storage type dynamodb, not dir"),
    ("type: postgresql\nconn_string: postgresql://x\ncontinuous_backups: yes\n",
     "continuous_backups is a setting of storage type dynamodb, not postgresql"),
    ("type: firestore\n", "teleport.storage.type: Firestore is not supported yet "
     "(use type dir, etcd, postgresql or dynamodb)"),
    ("type: dir\nproject_id: p\n", "Firestore storage is not supported yet"),
])
def test_a_wrong_storage_setting_is_one_line_naming_it(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_dynamodb_takes_the_manuals_keys() -> None:
    config = parse_file_config(storage(
        "type: dynamodb\nregion: eu-west-1\ntable_name: teleport-state\n"
        "endpoint: http://127.0.0.1:8000\ncontinuous_backups: yes\nbilling_mode: provisioned\n"
        "read_capacity_units: 20\nwrite_capacity_units: 5\n"), "t.yaml")
    dynamo = config.teleport.storage
    assert (dynamo.region, dynamo.table_name, dynamo.endpoint) == (
        "eu-west-1", "teleport-state", "http://127.0.0.1:8000")
    assert dynamo.continuous_backups and dynamo.billing_mode == "provisioned"
    assert (dynamo.read_capacity_units, dynamo.write_capacity_units) == (20, 5)


def test_region_goes_with_every_storage_type() -> None:
    """The audit URIs (s3://, dynamodb://) take it as their default region."""
    config = parse_file_config(storage("type: sqlite\nregion: us-west-2\n"), "t.yaml")
    assert config.teleport.storage.region == "us-west-2"


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


def test_credentials_path_goes_with_every_storage_type() -> None:
    """gs:// recordings (audit_sessions_uri) read their Google credentials from it."""
    config = parse_file_config(storage(
        "type: etcd\npeers: [https://e:2379]\ncredentials_path: /var/lib/teleport/gcs.json\n"
        "audit_sessions_uri: gs://bucket/records\n"), "t.yaml")
    assert str(config.teleport.storage.credentials_path) == "/var/lib/teleport/gcs.json"
