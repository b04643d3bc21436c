"""A saved identity names its cluster beside its certificate, so that `tctl` knows which auth
server to expect without parsing X.509 (issue 20: cryptography's X.509 import was a sixth of
`tctl nodes ls`); files written before still work."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

from teleport.api.auth_models import IssuedCerts
from teleport.auth.identity_file import IdentityFile
from teleport.keys import tls
from teleport.keys.identity import Identity

NOW = datetime(2026, 12, 2, tzinfo=timezone.utc)


def _issued(cluster: str) -> tuple[bytes, IssuedCerts]:
    ca = tls.generate_tls_ca(cluster, now=NOW)
    key = tls.generate_tls_key()
    cert = tls.issue_tls_cert(*ca, tls.tls_public_key_pem(key),
                              Identity(username=f"5d2c.{cluster}", roles=("Admin",),
                                       cluster=cluster, system_role="Admin", host_uuid="5d2c"),
                              now=NOW, not_after=NOW + timedelta(days=1))
    return key, IssuedCerts(ssh_cert="", tls_cert=cert.decode(), host_ca_keys=[],
                            user_ca_keys=[], tls_ca_certs=[ca[1].decode()])


def test_a_saved_identity_names_its_cluster(tmp_path: Path) -> None:
    key, certs = _issued("blue.example.com")
    IdentityFile.from_issued("Admin", "5d2c", b"", key, certs).save(tmp_path)
    path = tmp_path / "identity" / "admin.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["cluster"] == "blue.example.com"
    assert IdentityFile.load(tmp_path, "Admin").cluster_name() == "blue.example.com"


def test_an_identity_saved_without_its_cluster_reads_it_from_the_certificate(tmp_path: Path) -> None:
    key, certs = _issued("green.example.com")
    IdentityFile.from_issued("Admin", "5d2c", b"", key, certs).save(tmp_path)
    path = tmp_path / "identity" / "admin.json"
    data = json.loads(path.read_text())
    del data["cluster"]  # as written before the field existed
    path.write_text(json.dumps(data))
    loaded = IdentityFile.load(tmp_path, "Admin")
    assert loaded.cluster == ""
    assert loaded.cluster_name() == "green.example.com"
