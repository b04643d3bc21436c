"""HTTP to services outside the cluster: identity providers (OIDC issuers, GitHub).

Not a Teleport peer, so answers are the provider's own JSON and any status: the caller reads
them. What is shared with `teleport.api.http`: the system's CAs for TLS, the HTTP CONNECT proxy
rules of `proxyenv` (`HTTPS_PROXY`, `NO_PROXY`), bounded time, and one-line errors naming the
provider. Answers are read up to 1 MiB, so a hostile provider cannot exhaust memory.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from teleport.api import proxyenv
from teleport.api.http import TRANSPORT_ERRORS, one_line
from teleport.errors import ConnectionProblem

MAX_ANSWER = 1 << 20


class ProviderHTTP:
    """One provider's HTTP client; `peer` names it in errors ("OIDC provider https://...")."""

    def __init__(self, peer: str, *, timeout: float = 15.0,
                 proxy_env: Mapping[str, str] | None = None) -> None:
        self.peer = peer
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._proxy_env = proxy_env
        self._ssl = ssl.create_default_context()

    async def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                      form: Mapping[str, str] | None = None) -> tuple[int, Any, Mapping[str, str]]:
        """Send one request; return (status, the JSON answer or None, headers)."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        proxy = proxyenv.proxy_for(parts.hostname or "", port, self._proxy_env)
        auth = (aiohttp.BasicAuth(proxy.username, proxy.password or "")
                if proxy is not None and proxy.username is not None else None)
        try:
            async with aiohttp.ClientSession(timeout=self._timeout) as session, \
                    session.request(method, url, headers=dict(headers or {}),
                                    data=dict(form) if form is not None else None,
                                    ssl=self._ssl if parts.scheme == "https" else False,
                                    proxy=proxy.url if proxy else None, proxy_auth=auth,
                                    allow_redirects=False) as resp:
                raw = await resp.content.read(MAX_ANSWER + 1)
                if len(raw) > MAX_ANSWER:
                    raise ConnectionProblem(f"{self.peer} sent more than 1 MiB to "
                                            f"{method} {parts.path}")
                status, answer_headers = resp.status, dict(resp.headers)
        except TRANSPORT_ERRORS as exc:
            raise ConnectionProblem(f"cannot reach the {self.peer}: {one_line(exc)}") from None
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        return status, data, answer_headers

    async def get_json(self, url: str, headers: Mapping[str, str] | None = None) -> Any:
        """GET a JSON document; anything but 200 with JSON is a one-line ConnectionProblem."""
        status, data, _ = await self.request("GET", url, headers=headers)
        if status != 200 or data is None:
            raise ConnectionProblem(f"the {self.peer} answered HTTP {status} to GET "
                                    f"{urlsplit(url).path}{'' if data is not None else ' without JSON'}")
        return data
