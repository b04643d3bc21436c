"""Auth API route for a host's own certificates: a node or proxy following a CA rotation asks
for new ones without a token, proving who it is with the certificate it holds.

The UUID and role come from that certificate, never from the body, so a host can only renew
itself; the name and addresses it asks for are checked as joining checks them.
"""

from __future__ import annotations

from typing import Any

from teleport.api.auth_models import HostCertsRequest
from teleport.auth.api import NODE, PROXY, Call, route


@route("POST", "/v1/hosts/certs", [NODE, PROXY])
async def reissue_host_certs(call: Call) -> Any:
    """Sign the calling host's new keys with the CAs' active keys (`teleport.service.rotation`)."""
    body = await call.body(HostCertsRequest)
    return await call.auth.hosts.reissue_host_certs(
        host_uuid=call.identity.host_uuid, role=call.identity.system_role or "",
        nodename=body.nodename, ssh_public_key=body.ssh_public_key,
        tls_public_key=body.tls_public_key.encode(), addresses=list(body.addresses or []))
