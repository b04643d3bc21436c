"""The client of the proxy's web API (HTTPS 3080) that `tsh` logs in and lists nodes through.

Errors come back as the kinds the proxy raised; network and TLS failures become one-line
ConnectionProblems that say what to try next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import aiohttp

from teleport.client.profile import Profile
from teleport.errors import ConnectionProblem, TeleportError, from_wire
from teleport.keys.tls import load_cert_chain
from teleport.utils.addr import HostPort
from teleport.utils.duration import format_duration


@dataclass(frozen=True)
class LoginResponse:
    """What the proxy returns for a login: certificates and the cluster's CAs to trust."""

    cert: str
    tls_cert: str
    host_signers: list[str]
    user_ca_keys: list[str]
    trusted_ca: list[str]
    cluster_name: str


class WebClient:
    """Talk to one proxy over HTTPS, optionally presenting the certificate of a login."""

    def __init__(self, proxy_addr: str, *, insecure: bool, ca_pems: Sequence[bytes] = (),
                 client_cert: tuple[bytes, bytes] | None = None, timeout: float = 30.0,
                 pinned_cert: bytes | None = None) -> None:
        self.proxy_addr = proxy_addr
        self.insecure = insecure
        self.pinned = pinned_cert is not None and not insecure
        self._ssl = (_pinned_context(pinned_cert, client_cert)
                     if pinned_cert is not None and not insecure
                     else _client_context(insecure, ca_pems, client_cert))
        self._presents_cert = client_cert is not None
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=10)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_profile(cls, profile: Profile) -> WebClient:
        """Return a client that trusts the cluster and presents the login's certificate.

        After `tsh login --insecure` the proxy must present the very certificate accepted
        then; `--insecure` on this command (profile.insecure) accepts any, for this command.
        """
        try:
            pinned: bytes | None = profile.web_cert_path.read_bytes()
        except FileNotFoundError:
            pinned = None
        return cls(profile.web_proxy_addr, insecure=profile.insecure,
                   ca_pems=[profile.ca_path.read_bytes()],
                   client_cert=(profile.tls_cert_path.read_bytes(),
                                profile.tls_key_path.read_bytes()),
                   pinned_cert=pinned)

    async def __aenter__(self) -> WebClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request and decode the JSON answer, raising the proxy's error kinds."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl))
        url = f"https://{self.proxy_addr}{path}"
        try:
            async with self._session.request(method, url, json=body) as resp:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = None
                status, reason = resp.status, resp.reason or ""
        except aiohttp.ClientConnectorCertificateError as exc:
            if self.pinned:
                raise ConnectionProblem(
                    f"proxy {self.proxy_addr} presented an HTTPS certificate other than the one "
                    "accepted at 'tsh login --insecure': it has changed, or someone is in the "
                    "middle; if you expect the change, run 'tsh login --insecure' again") from None
            raise ConnectionProblem(
                f"cannot verify the HTTPS certificate of proxy {self.proxy_addr} "
                f"({_verify_reason(exc.certificate_error)}); if the proxy uses a self-signed "
                "certificate, pass --insecure") from None
        except aiohttp.ClientSSLError as exc:
            raise ConnectionProblem(
                f"TLS handshake with proxy {self.proxy_addr} failed ({_one_line(exc)}); "
                "if the proxy uses a self-signed certificate, pass --insecure") from None
        except aiohttp.ClientConnectorError as exc:
            raise ConnectionProblem(
                f"cannot connect to proxy {self.proxy_addr}: {_os_reason(exc.os_error)}") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            if self._presents_cert:
                # TLS 1.3 refuses a client certificate after the handshake, with no error
                # surfacing here, so name the likely cause.
                raise ConnectionProblem(
                    f"proxy {self.proxy_addr} closed the connection: it may have refused your "
                    "certificate (expired or from another cluster); run 'tsh login'") from None
            raise ConnectionProblem(f"proxy {self.proxy_addr} closed the connection") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionProblem(
                f"proxy {self.proxy_addr} did not answer: {_one_line(exc)}") from None
        if status >= 400:
            raise _error(data, status, reason, self.proxy_addr)
        return data

    async def ping(self) -> dict[str, Any]:
        """Learn the cluster name, its second factor and the SSH proxy address."""
        result: dict[str, Any] = await self.call("GET", "/webapi/ping")
        return result

    async def ssh_login(self, user: str, password: str, otp_token: str, pub_key: str,
                        tls_pub_key: str, ttl: timedelta | None) -> LoginResponse:
        """Trade credentials and public keys for SSH and X.509 certificates."""
        body = {"user": user, "password": password, "otp_token": otp_token, "pub_key": pub_key,
                "tls_pub_key": tls_pub_key, "ttl": format_duration(ttl) if ttl else ""}
        data = await self.call("POST", "/webapi/ssh/certs", body)
        try:
            return LoginResponse(
                cert=data["cert"], tls_cert=data["tls_cert"],
                host_signers=list(data["host_signers"]), user_ca_keys=list(data["user_ca_keys"]),
                trusted_ca=list(data["trusted_ca"]), cluster_name=data["cluster_name"])
        except (KeyError, TypeError):
            raise ConnectionProblem(
                f"proxy {self.proxy_addr} sent an incomplete login response") from None

    async def list_nodes(self, cluster: str) -> list[dict[str, Any]]:
        """List the cluster's nodes; needs the client certificate of a login."""
        result: list[dict[str, Any]] = await self.call(
            "GET", f"/webapi/sites/{quote(cluster, safe='')}/nodes")
        return result

    async def list_recordings(self, cluster: str) -> list[dict[str, Any]]:
        """List the recorded sessions this login may play."""
        result: list[dict[str, Any]] = await self.call(
            "GET", f"/webapi/sites/{quote(cluster, safe='')}/sessions")
        return result

    async def list_active_sessions(self, cluster: str) -> list[dict[str, Any]]:
        """List the live sessions this login may join."""
        result: list[dict[str, Any]] = await self.call(
            "GET", f"/webapi/sites/{quote(cluster, safe='')}/active_sessions")
        return result

    async def stream_recording(self, cluster: str, sid: str) -> AsyncIterator[bytes]:
        """Yield a recording's replay stream (JSON lines) as the proxy relays it."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl))
        url = (f"https://{self.proxy_addr}/webapi/sites/{quote(cluster, safe='')}"
               f"/sessions/{quote(sid, safe='')}/stream")
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=self._timeout.total)
        try:
            async with self._session.get(url, timeout=timeout) as resp:
                if resp.status >= 400:
                    try:
                        data = await resp.json(content_type=None)
                    except ValueError:
                        data = None
                    raise _error(data, resp.status, resp.reason or "", self.proxy_addr)
                async for piece in resp.content.iter_any():
                    yield piece
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionProblem(
                f"proxy {self.proxy_addr} stopped sending the recording: {_one_line(exc)}") from None

    async def signup_info(self, token: str) -> dict[str, Any]:
        """Fetch who a signup token is for and the OTP secret to enroll."""
        result: dict[str, Any] = await self.call(
            "GET", f"/webapi/users/password/token/{quote(token, safe='')}")
        return result

    async def complete_signup(self, token: str, password: str, otp_code: str) -> str:
        """Set the new user's password with a signup token; return the user name."""
        data = await self.call("PUT", "/webapi/users/password/token",
                               {"token": token, "password": password,
                                "second_factor_token": otp_code})
        return str(data["user"])


def _client_context(insecure: bool, ca_pems: Sequence[bytes],
                    client_cert: tuple[bytes, bytes] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    for pem in ca_pems:
        ctx.load_verify_locations(cadata=pem.decode())
    if client_cert is not None:
        load_cert_chain(ctx, *client_cert)
    return ctx


def _pinned_context(pinned_pem: bytes,
                    client_cert: tuple[bytes, bytes] | None) -> ssl.SSLContext:
    """Trust exactly one certificate, the proxy's as accepted at login, and nothing else.

    The pinned certificate is the only trust anchor (no system CAs), so the name it was issued
    for does not matter: the address was the user's choice at login, as with `--insecure`.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf of a chain can be the anchor
    try:
        ctx.load_verify_locations(cadata=pinned_pem.decode())
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        raise ConnectionProblem("the pinned proxy certificate is damaged: run "
                                "'tsh login --insecure' again") from None
    if client_cert is not None:
        load_cert_chain(ctx, *client_cert)
    return ctx


#: How long fetching the proxy's certificate may take.
CONNECT_SECONDS = 10.0


async def proxy_certificate(proxy_addr: HostPort) -> bytes:
    """Return (PEM) the certificate the proxy presents, unverified: what `--insecure` accepts.

    `tsh login --insecure` pins it and talks to the proxy through the pin from then on, so the
    password goes only to the holder of the certificate accepted here.
    """
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            _, writer = await asyncio.open_connection(proxy_addr.host, proxy_addr.port,
                                                      ssl=unverified)
    except (OSError, TimeoutError) as err:
        reason = _os_reason(err) if isinstance(err, OSError) else "timed out"
        raise ConnectionProblem(f"cannot connect to proxy {proxy_addr}: {reason}") from None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    if not der:
        raise ConnectionProblem(f"proxy {proxy_addr} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode()


def _error(data: Any, status: int, reason: str, addr: str) -> TeleportError:
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return from_wire(str(err.get("code", "")), _one_line(err["message"]))
    return ConnectionProblem(f"{addr} answered HTTP {status} {reason}: is it a Teleport proxy?")


def _os_reason(err: OSError) -> str:
    if err.errno and err.errno > 0:
        return os.strerror(err.errno)
    return _one_line(err.strerror or err)


def _verify_reason(err: Exception) -> str:
    return _one_line(getattr(err, "verify_message", "") or err)


def _one_line(value: object) -> str:
    return " ".join(str(value).split()) or type(value).__name__
