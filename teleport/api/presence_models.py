"""The heartbeat keep-alive of the auth API (`PUT /v1/servers/keepalive`), shared by its
handler and `AuthClient`: a host whose record has not changed moves its expiry with these few
fields instead of sending the whole record again, as Teleport's keep-alives do."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from teleport.api.wire import Request
from teleport.types.resource import Time


class ServerKeepAlive(Request):
    """Extend a live host record's expiry; 404 when the record is gone (send it whole then)."""

    kind: Literal["node", "proxy"]
    name: str = Field(min_length=1, max_length=253)
    #: An RFC 3339 string on the wire, as resources carry their expiry.
    expires: Annotated[Time, Field(strict=False)]
