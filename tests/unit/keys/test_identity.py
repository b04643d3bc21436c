"""Identity is immutable whatever containers callers hand in."""

from __future__ import annotations

import pytest

from teleport.keys.identity import Identity


def test_identity_freezes_its_collections() -> None:
    traits = {"logins": ["root"]}
    identity = Identity("alice", roles=["admin"], logins=["root"], traits=traits)  # type: ignore[arg-type]
    traits["logins"].append("evil")
    assert identity.roles == ("admin",) and identity.logins == ("root",)
    assert identity.traits == {"logins": ("root",)}
    with pytest.raises(TypeError):
        identity.traits["x"] = ()  # type: ignore[index]
    assert identity == Identity("alice", roles=("admin",), logins=("root",),
                                traits={"logins": ("root",)})
    assert hash(identity) == hash(Identity("alice", roles=("admin",), logins=("root",)))
    assert Identity("bob").traits == {}
