"""A recording proxy's certificates: only for registered nodes, only what the user already holds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from teleport.errors import AccessDenied, NotFound
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec, User, UserSpec
from tests.integration.auth.test_api import Api, api  # noqa: F401 - the fixture

_PUB = sshkeys.public_key_of(sshkeys.generate_private_key())


async def test_host_cert_only_for_a_registered_node_and_only_for_proxies(api: Api) -> None:  # noqa: F811
    await api.auth.hosts.upsert_server(Server(kind="node", metadata=Metadata(name="node-uuid"),
                                        spec=ServerSpec(addr="10.0.0.5:3022", hostname="web1")))
    async with await api.client("Proxy", "proxy-1") as proxy:
        cert = sshkeys.parse_cert(await proxy.node_cert_for_proxy("node-uuid", _PUB))
        assert cert.cert_type == "host"
        assert set(cert.principals) == {"node-uuid", "node-uuid.api.test", "web1", "web1.api.test",
                                        "10.0.0.5"}
        assert cert.valid_before <= datetime.now(timezone.utc) + timedelta(minutes=6)
        with pytest.raises(NotFound):
            await proxy.node_cert_for_proxy("auth.example.com", _PUB)
    async with await api.client("Node", "node-uuid") as node:
        with pytest.raises(AccessDenied):
            await node.node_cert_for_proxy("node-uuid", _PUB)


async def test_user_cert_copies_a_valid_user_cert_with_a_short_life(api: Api) -> None:  # noqa: F811
    user = await api.auth.accounts.upsert_user(User(metadata=Metadata(name="joe"), spec=UserSpec(
        roles=["access"], traits={"logins": ["root"]})))
    key = sshkeys.public_key_of(sshkeys.generate_private_key())
    issued = await api.auth.certs.issue_user_certs(
        user, key, tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()), timedelta(hours=8))
    async with await api.client("Proxy", "proxy-1") as proxy:
        copy = sshkeys.parse_cert(await proxy.user_cert_for_proxy(issued.ssh_cert, _PUB))
        original = sshkeys.parse_cert(issued.ssh_cert)
        assert copy.key_id == "joe" and copy.principals == original.principals == ("root",)
        assert copy.roles == original.roles and copy.public_key != original.public_key
        assert copy.valid_before <= datetime.now(timezone.utc) + timedelta(minutes=6)
        forged = sshkeys.sign_user_cert(
            sshkeys.generate_private_key(), key, key_id="joe", principals=["root"],
            valid_after=datetime.now(timezone.utc) - timedelta(minutes=1),
            valid_before=datetime.now(timezone.utc) + timedelta(hours=1))
        with pytest.raises(AccessDenied):
            await proxy.user_cert_for_proxy(forged, _PUB)
    async with await api.client("Node", "node-1") as node:
        with pytest.raises(AccessDenied):
            await node.user_cert_for_proxy(issued.ssh_cert, _PUB)
