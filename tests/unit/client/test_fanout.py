"""A host with `=` is a label selector; names, UUIDs and addresses are not."""

from __future__ import annotations

import pytest

from teleport.client import fanout
from teleport.client.nodes import parse_label_selector
from teleport.errors import BadParameter, NotFound


@pytest.mark.parametrize("host", [
    "e2e-node", "node.example.com", "9f1c2a4e-3b5d-4c6e-8f70-1a2b3c4d5e6f", "10.0.0.5",
    "10.0.0.5:3022", "[::1]:3022", "node.e2e.test",
])
def test_names_uuids_and_addresses_are_not_selectors(host: str) -> None:
    assert parse_label_selector(host) is None


@pytest.mark.parametrize(("host", "expected"), [
    ("env=prod", {"env": "prod"}),
    ("env=prod,role=db", {"env": "prod", "role": "db"}),
    (" env = prod , role=db ", {"env": "prod", "role": "db"}),
    ("env=prod,env=prod", {"env": "prod"}),
    ("kernel=5.15.0-1", {"kernel": "5.15.0-1"}),
    ("empty=", {"empty": ""}),
])
def test_key_value_pairs_are_selectors(host: str, expected: dict[str, str]) -> None:
    assert parse_label_selector(host) == expected


@pytest.mark.parametrize("host", ["env=prod,db", "=prod", "env=prod,", "env=prod,env=dev"])
def test_malformed_selectors_are_refused(host: str) -> None:
    with pytest.raises(BadParameter, match="invalid label selector"):
        parse_label_selector(host)


def _nodes(count: int) -> list[dict[str, object]]:
    return [{"name": f"n{i}", "id": f"uuid-{i}", "addr": "", "labels": {"env": "prod"}}
            for i in range(count)]


async def test_no_match_and_ambiguous_sessions_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    found: list[dict[str, object]] = []

    async def matching(profile: object, selector: object) -> list[dict[str, object]]:
        return found

    monkeypatch.setattr(fanout, "matching_nodes", matching)
    with pytest.raises(NotFound, match="^no nodes match labels env=prod$"):
        await fanout.run_on_matching(None, "root", {"env": "prod"}, ["true"])  # type: ignore[arg-type]
    found[:] = _nodes(2)
    with pytest.raises(BadParameter, match="env=prod match 2 nodes"):
        await fanout.run_on_matching(None, "root", {"env": "prod"}, [])  # type: ignore[arg-type]
    with pytest.raises(BadParameter, match="match 2 nodes"):
        await fanout.run_on_matching(None, "root", {"env": "prod"}, ["true"],  # type: ignore[arg-type]
                                     no_command=True)
