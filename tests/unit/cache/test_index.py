"""The cache's server index: every name a user may give a node finds it, and a record that moves
(a heartbeat with a new hostname or address, a delete) leaves nothing behind."""

from __future__ import annotations

from teleport.cache.index import ServerIndex
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec


def _node(name: str, hostname: str, addr: str = "", tunnel: bool = False) -> Server:
    return Server(kind="node", metadata=Metadata(name=name),
                  spec=ServerSpec(addr=addr, hostname=hostname, use_tunnel=tunnel))


def _names(servers: list[Server]) -> set[str]:
    return {s.metadata.name for s in servers}


def test_a_node_is_found_by_uuid_hostname_and_address() -> None:
    index = ServerIndex([_node("u1", "web", "10.0.0.1:3022"), _node("u2", "db", "10.0.0.2")])
    assert _names(index.named("u1")) == _names(index.named("web")) == {"u1"}
    assert _names(index.at("10.0.0.1")) == _names(index.at("10.0.0.1", 3022)) == {"u1"}
    assert index.at("10.0.0.1", 22) == []
    # An address without a port is the node's SSH port.
    assert _names(index.at("10.0.0.2", 3022)) == {"u2"}
    assert index.named("nobody") == [] and index.at("10.0.0.9") == []
    assert len(index) == 2 and index.get("u2") is not None


def test_a_shared_hostname_or_address_answers_every_node_with_it() -> None:
    index = ServerIndex([_node("u1", "twin", "10.0.0.1:3022"), _node("u2", "twin", "10.0.0.1:3023"),
                         _node("u3", "other", "10.0.0.3:3022")])
    assert _names(index.named("twin")) == {"u1", "u2"}
    assert _names(index.at("10.0.0.1")) == {"u1", "u2"}
    assert _names(index.at("10.0.0.1", 3023)) == {"u2"}
    # A hostname that is another node's UUID names both, each once.
    index.put(_node("u4", "u3", "10.0.0.4:3022"))
    assert _names(index.named("u3")) == {"u3", "u4"}
    index.put(_node("u5", "u5"))
    assert len(index.named("u5")) == 1


def test_a_tunnelled_node_or_an_undiallable_address_is_not_found_by_address() -> None:
    index = ServerIndex([_node("u1", "natted", "10.0.0.1:3022", tunnel=True),
                         _node("u2", "broken", "10.0.0.2:notaport")])
    assert index.at("10.0.0.1") == [] and index.at("10.0.0.2") == []
    assert _names(index.named("natted")) == {"u1"} and _names(index.named("broken")) == {"u2"}


def test_a_changed_record_is_found_only_by_its_new_names() -> None:
    index = ServerIndex([_node("u1", "old", "10.0.0.1:3022"), _node("u2", "other", "10.0.0.2")])
    index.put(_node("u1", "new", "10.0.0.9:3022"))
    assert index.named("old") == [] and index.at("10.0.0.1") == []
    assert _names(index.named("new")) == _names(index.at("10.0.0.9", 3022)) == {"u1"}
    # A heartbeat keeps the record's place in the listing.
    assert [s.metadata.name for s in index.values()] == ["u1", "u2"]
    index.put(_node("u1", "new", tunnel=True))
    assert index.at("10.0.0.9") == []
    index.delete("u1")
    index.delete("u1")  # a repeated delete changes nothing
    assert index.named("new") == [] and index.get("u1") is None and len(index) == 1
    assert index._by_hostname.keys() == {"other"} and index._by_host.keys() == {"10.0.0.2"}
