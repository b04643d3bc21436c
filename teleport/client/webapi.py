"""The client of the proxy's web API (HTTPS 3080) that `tsh` logs in and lists nodes through.

Errors come back as the kinds the proxy raised; network and TLS failures become one-line
ConnectionProblems that say what to try next.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from teleport.api import h1
from teleport.api.http import HTTPClient, one_line
from teleport.api.listing_models import ActiveSession, NodeInfo, RecordingInfo
from teleport.client.profile import Profile
from teleport.errors import ConnectionProblem
from teleport.keys.tlsconfig import load_cert_chain, tls_context, unverified_client_context
from teleport.utils.addr import HostPort
from teleport.utils.duration import format_duration
from teleport.utils.lazy import lazy_module

if TYPE_CHECKING:  # loaded by the calls that need them: `tsh ls` builds neither model set,
    # and a CA refresh that gets a 304 (beside `tsh ssh`) builds no model at all
    from teleport.api import mfa_models as mfa
    from teleport.api import web_models as w
    from teleport.types.resources import CertAuthority
else:
    w = lazy_module("teleport.api.web_models")


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
        self._http = HTTPClient([proxy_addr], self._ssl, peer="proxy", timeout=timeout,
                                connect_timeout=10, describe=self._describe, unreachable="")

    @classmethod
    def for_profile(cls, profile: Profile, *, present_cert: bool = True) -> WebClient:
        """Return a client that trusts the cluster and presents the login's certificate
        (unless present_cert is False: public calls, which work with a dropped certificate).

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
                                profile.tls_key_path.read_bytes()) if present_cert else None,
                   pinned_cert=pinned)

    async def __aenter__(self) -> WebClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close pooled connections."""
        await self._http.close()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request and decode the JSON answer, raising the proxy's error kinds."""
        return await self._http.call(method, path, body)

    def _describe(self, addr: str, exc: BaseException) -> str:
        """Say what went wrong reaching the proxy, and what to try next."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            if self.pinned:
                return (f"proxy {addr} presented an HTTPS certificate other than the one "
                        "accepted at 'tsh login --insecure': it has changed, or someone is in the "
                        "middle; if you expect the change, run 'tsh login --insecure' again")
            return (f"cannot verify the HTTPS certificate of proxy {addr} "
                    f"({_verify_reason(exc)}); if the proxy uses a self-signed "
                    "certificate, pass --insecure")
        if isinstance(exc, ssl.SSLError):
            return (f"TLS handshake with proxy {addr} failed ({one_line(exc)}); "
                    "if the proxy uses a self-signed certificate, pass --insecure")
        if isinstance(exc, h1.ConnectFailed):
            return f"cannot connect to proxy {addr}: {_os_reason(exc.os_error)}"
        if isinstance(exc, h1.ServerDisconnected):
            if self._presents_cert:
                # TLS 1.3 refuses a client certificate after the handshake, with no error
                # surfacing here, so name the likely cause.
                return (f"proxy {addr} closed the connection: it may have refused your "
                        "certificate (expired or from another cluster); run 'tsh login'")
            return f"proxy {addr} closed the connection"
        return f"proxy {addr} did not answer: {one_line(exc)}"

    async def ping(self) -> w.WebPing:
        """Learn the cluster name, its second factor and the SSH proxy address."""
        return await self._http.call("GET", "/webapi/ping", answer=w.WebPing)

    async def clusters(self) -> list[w.ClusterInfo]:
        """This cluster and its leaves, with their status (`tsh clusters`)."""
        return await self._http.call("GET", "/webapi/sites", answer=list[w.ClusterInfo])

    async def authorities(self, etag: str = "") -> tuple[str, list[CertAuthority]] | None:
        """The cluster's public CA records, with their rotation (no login needed), and their
        entity tag; None when they still have `etag` (the records are then not sent)."""
        got = await self._http.get_if_changed("/webapi/authorities", etag)
        if got is None:
            return None
        from teleport.types.codec import from_dict
        from teleport.types.resources import CertAuthority

        etag, answer = got
        if not isinstance(answer, list):
            raise ConnectionProblem(f"proxy {self.proxy_addr} answered the CAs with something "
                                    "else than a list")
        cas = [from_dict(item, "proxy response") for item in answer]
        return etag, [ca for ca in cas if isinstance(ca, CertAuthority)]

    async def ssh_login(self, user: str, password: str, otp_token: str, pub_key: str,
                        tls_pub_key: str, ttl: timedelta | None) -> w.LoginResponse:
        """Trade credentials and public keys for SSH and X.509 certificates."""
        body = w.LoginRequest(user=user, password=password, otp_token=otp_token,
                              pub_key=pub_key, tls_pub_key=tls_pub_key,
                              ttl=format_duration(ttl) if ttl else "")
        return await self._http.call("POST", "/webapi/ssh/certs", body, answer=w.LoginResponse)

    async def mfa_login_begin(self, user: str, password: str) -> mfa.WebauthnChallenge:
        """A security key's challenge: the user's keys after the password is checked, or (no
        user) any passkey; options None: the cluster wants no key of this user."""
        from teleport.api import mfa_models as mfa

        body = {"user": user, "pass": password, "passwordless": not user}  # WebMFALoginBegin
        return await self._http.call("POST", "/webapi/mfa/login/begin", body,
                                     answer=mfa.WebauthnChallenge)

    async def mfa_login_finish(self, body: mfa.WebMFALoginCertsFinish) -> w.SSOLoginResponse:
        """The key's answer and the login's public keys -> certificates, and whom for."""
        return await self._http.call("POST", "/webapi/mfa/login/finish", body,
                                     answer=w.SSOLoginResponse)

    async def sso_console_login(self, kind: str, body: w.SSOConsoleRequest) -> str:
        """Start a single sign-on login for tsh; return the provider URL its browser opens."""
        answer = await self._http.call("POST", f"/webapi/{quote(kind, safe='')}/login/console",
                                       body, answer=w.SSOConsoleAnswer)
        return answer.redirect_url

    async def list_nodes(self, cluster: str) -> list[NodeInfo]:
        """List the cluster's nodes; needs the client certificate of a login."""
        return await self._http.call("GET", f"/webapi/sites/{quote(cluster, safe='')}/nodes",
                                     answer=list[NodeInfo])

    async def list_recordings(self, cluster: str) -> list[RecordingInfo]:
        """List the recorded sessions this login may play."""
        return await self._http.call("GET", f"/webapi/sites/{quote(cluster, safe='')}/sessions",
                                     answer=list[RecordingInfo])

    async def list_active_sessions(self, cluster: str) -> list[ActiveSession]:
        """List the live sessions this login may join."""
        return await self._http.call(
            "GET", f"/webapi/sites/{quote(cluster, safe='')}/active_sessions",
            answer=list[ActiveSession])

    def stream_recording(self, cluster: str, sid: str) -> AsyncIterator[bytes]:
        """Yield a recording's replay stream (JSON lines) as the proxy relays it."""
        return self._http.stream("GET", f"/webapi/sites/{quote(cluster, safe='')}"
                                        f"/sessions/{quote(sid, safe='')}/stream")

    async def signup_info(self, token: str) -> w.SignupInfoAnswer:
        """Fetch who a signup token is for and the OTP secret to enroll."""
        return await self._http.call(
            "GET", f"/webapi/users/password/token/{quote(token, safe='')}",
            answer=w.SignupInfoAnswer)

    async def complete_signup(self, token: str, password: str, otp_code: str) -> str:
        """Set the new user's password with a signup token; return the user name."""
        body = w.SignupRequest(token=token, password=password, second_factor_token=otp_code)
        return (await self._http.call("PUT", "/webapi/users/password/token", body,
                                      answer=w.SignupDone)).user


def _client_context(insecure: bool, ca_pems: Sequence[bytes],
                    client_cert: tuple[bytes, bytes] | None) -> ssl.SSLContext:
    return _cached_client_context(insecure, tuple(ca_pems), client_cert)


@functools.cache
def _cached_client_context(insecure: bool, ca_pems: tuple[bytes, ...],
                           client_cert: tuple[bytes, bytes] | None) -> ssl.SSLContext:
    """One context per trust and certificate for the process: the system CA bundle is read
    once (a `tsh` command talks to its proxy with several clients), and not at all when
    nothing is verified."""
    ctx = tls_context(server=False)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
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
    ctx = tls_context(server=False)
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
    unverified = unverified_client_context()
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


def _os_reason(err: OSError) -> str:
    if err.errno and err.errno > 0:
        return os.strerror(err.errno)
    return one_line(err.strerror or err)


def _verify_reason(err: Exception) -> str:
    return one_line(getattr(err, "verify_message", "") or err)


