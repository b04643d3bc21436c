"""Auth API route for the revocation list nodes and proxies poll (see `teleport.auth.access`)."""

from __future__ import annotations

from typing import Any

from teleport.auth.access import list_revocations
from teleport.auth.api import NODE, PROXY, Call, route


@route("GET", "/v1/revocations", [NODE, PROXY])
async def revocations(call: Call) -> Any:
    """Answer the users whose certificates nodes and proxies must refuse, and why."""
    return (await list_revocations(call.auth.accounts)).model_dump(mode="json")
