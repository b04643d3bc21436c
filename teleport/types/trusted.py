"""Trusted clusters: a leaf's `trusted_cluster` (whom it trusts, and how their roles map) and
the `remote_cluster` a root keeps for each leaf that joined it.

As in Teleport (`trusted_cluster` v2, `remote_cluster` v3): both are named by a cluster name,
which becomes part of key paths, certificates' cluster names and `tsh --cluster` arguments.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from teleport.types.resource import ZERO_TIME, Metadata, Model, Resource, Time


def cluster_name_ok(name: str) -> bool:
    """Tell whether a cluster name is safe in a key path, a host name pattern and `user@host:port`."""
    return bool(name) and not any(c in "/\\:" or c.isspace() for c in name)


def _check_cluster_name(metadata: Metadata) -> Metadata:
    if not cluster_name_ok(metadata.name):
        raise ValueError(f"invalid cluster name {metadata.name!r}")
    return metadata


class RoleMapping(Model):
    """Root roles matching `remote` (exact, a `*` glob or `^regex$`) become the `local` roles."""

    remote: str = Field(min_length=1)
    #: `$1`/`${1}` take the pattern's captures (`teleport.rbac.rolemap`).
    local: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)


class TrustedClusterSpec(Model):
    enabled: bool = True
    #: The root's join token: a secret, dropped by `without_secrets()`.
    token: str = ""
    #: The root's proxy web address (`host:3080`), where the leaf asks to join.
    web_proxy_addr: str = Field(min_length=1)
    #: The root's reverse tunnel address; "" means the proxy's host on the default tunnel port.
    tunnel_addr: str = ""
    role_map: list[RoleMapping] = Field(default_factory=list)


class TrustedCluster(Resource):
    """Made on a leaf: the root cluster named `metadata.name` whose users it lets in."""

    kind: Literal["trusted_cluster"] = "trusted_cluster"
    version: Literal["v2"] = "v2"
    spec: TrustedClusterSpec

    @field_validator("metadata")
    @classmethod
    def _cluster_name(cls, value: Metadata) -> Metadata:
        return _check_cluster_name(value)

    def without_secrets(self) -> TrustedCluster:
        """Return the trusted cluster without its join token."""
        if not self.spec.token:
            return self
        return self.model_copy(update={"spec": self.spec.model_copy(update={"token": ""})})


class RemoteClusterStatus(Model):
    connection: Literal["online", "offline"] = "offline"
    last_heartbeat: Time = ZERO_TIME


class RemoteCluster(Resource):
    """Kept by a root for a leaf that joined it; the cluster itself writes it (no spec)."""

    kind: Literal["remote_cluster"] = "remote_cluster"
    version: Literal["v3"] = "v3"
    status: RemoteClusterStatus = Field(default_factory=RemoteClusterStatus)

    @field_validator("metadata")
    @classmethod
    def _cluster_name(cls, value: Metadata) -> Metadata:
        return _check_cluster_name(value)
