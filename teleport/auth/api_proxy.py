"""Auth API routes for a recording proxy (`session_recording: proxy`).

The proxy terminates a user's SSH connection to record it, so it needs to show the user a host
certificate for the node they asked for, and to log in to that node as the user. Both
certificates live five minutes at most: the host one only names a registered node, the user one
only re-issues what a certificate the user presented (still valid, CA-signed) already grants.
"""

from __future__ import annotations

from typing import Any

from teleport.api.auth_models import CertAnswer, NodeCertRequest, UserCertRequest
from teleport.auth.api import PROXY, Call, route


@route("POST", "/v1/proxy/hostcert", [PROXY])
async def node_cert(call: Call) -> Any:
    body = await call.body(NodeCertRequest)
    return CertAnswer(cert=await call.auth.certs.issue_node_cert_for_proxy(body.node, body.public_key))


@route("POST", "/v1/proxy/usercert", [PROXY])
async def user_cert(call: Call) -> Any:
    body = await call.body(UserCertRequest)
    return CertAnswer(cert=await call.auth.certs.issue_user_cert_for_proxy(body.cert, body.public_key))
