"""Resource YAML round trip and one-line errors for bad input."""

from __future__ import annotations

import pytest

from teleport.errors import BadParameter
from teleport.types.codec import dump_yaml, parse_yaml
from teleport.types.resources import User

MANUAL_USER = """\
kind: user
version: v2
metadata:
  name: joe
spec:
  roles: admin
  status:
    is_locked: false
    lock_expires: 0001-01-01T00:00:00Z
    locked_time: 0001-01-01T00:00:00Z
  traits:
    logins:
    - joe
    - root
  expires: 0001-01-01T00:00:00Z
  created_by:
    time: 0001-01-01T00:00:00Z
    user:
      name: builtin-Admin
"""


def test_manual_user_parses_and_round_trips() -> None:
    (user,) = parse_yaml(MANUAL_USER)
    assert isinstance(user, User)
    assert user.logins == ["joe", "root"]
    assert user.spec.roles == ["admin"]
    assert parse_yaml(dump_yaml([user])) == [user]


def test_several_documents() -> None:
    text = MANUAL_USER + "---\n" + MANUAL_USER.replace("name: joe", "name: ann")
    assert [r.metadata.name for r in parse_yaml(text)] == ["joe", "ann"]


@pytest.mark.parametrize("text, message", [
    ("kind: user\nversion: v2\nmetadata: {name: x}\nspec:\n  bogus: 1\n", "spec.bogus"),
    ("kind: user\nversion: v9\nmetadata: {name: x}\n", "version"),
    ("kind: spaceship\nversion: v2\nmetadata: {name: x}\n", "unsupported kind"),
    ("version: v2\n", "missing 'kind'"),
    ("kind: user\n\tversion: v2\n", "f.yaml:2"),
    ("- just\n- a list\n", "mapping"),
    ("", "no resources"),
])
def test_bad_input_is_one_line(text: str, message: str) -> None:
    with pytest.raises(BadParameter) as err:
        parse_yaml(text, "f.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_every_kind_that_travels_decodes_to_its_own_model() -> None:
    """Kinds name their models by import path (loaded on first use): each path must lead to a
    resource model of that very kind, or a kind would fail only when first met."""
    from teleport.types.codec import MODEL_PATHS
    from teleport.types.registry import load_model
    from teleport.types.resource import Resource

    for kind, path in MODEL_PATHS.items():
        model = load_model(path)
        assert issubclass(model, Resource), kind
        assert kind in (model.model_fields["kind"].default, "proxy", "auth_server"), (kind, path)
