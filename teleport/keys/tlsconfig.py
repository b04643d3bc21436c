"""Our TLS profile: the contexts of every TLS server and client of ours (auth API, the proxy's
web port, `tsh`, `tctl`). Apart from the X.509 code (`teleport.keys.tls`), so a client that only
connects does not load the certificate builders.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence

from teleport.errors import BadParameter

#: TLS 1.2 suites of Mozilla's "intermediate" profile (5.7) without DHE, which would need DH
#: parameters of our own: forward secrecy by ECDHE, AEAD ciphers only (no CBC, no RSA key exchange).
TLS12_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])
#: The one key-exchange group servers accept. The profile allows X25519, P-256 and P-384, but
#: Python 3.11's `set_ecdh_curve` sets exactly one group (there is no `set_groups`); X25519 is
#: the key share every client we know sends first (OpenSSL, Go, browsers, so no HelloRetryRequest)
#: and OpenSSL's default would also accept X448, P-521 and the FFDHE groups.
TLS_SERVER_GROUP = "X25519"


def tls_context(*, server: bool) -> ssl.SSLContext:
    """Start every TLS context of ours, server or client, from the same profile.

    TLS 1.2 minimum with the suites above; TLS 1.3 keeps OpenSSL's suites (all AEAD). Servers
    also accept one group only and let the client pick its preferred suite (the profile says no
    server order: a client without AES hardware picks ChaCha20). Clients keep OpenSSL's groups,
    which offer X25519 first: they also meet a balancer in front of a proxy.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    if server:
        ctx.set_ecdh_curve(TLS_SERVER_GROUP)
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def ssl_server_context(cert_pem: bytes, key_pem: bytes, client_ca_pems: Sequence[bytes] | None,
                       require_client_cert: bool) -> ssl.SSLContext:
    """Build a server context of our TLS profile that verifies client certificates against our
    CAs: the one builder of every TLS listener (auth API, the proxy's web port)."""
    ctx = tls_context(server=True)
    # A connection's client certificate is read once (the auth API keeps its identity for the
    # connection's life), so TLS 1.2 renegotiation must not swap it.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    load_cert_chain(ctx, cert_pem, key_pem)
    if client_ca_pems:
        ctx.load_verify_locations(cadata=_cadata(client_ca_pems))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise BadParameter("requiring client certificates needs at least one client CA")
    return ctx


class LiveServerContext:
    """A TLS server context whose certificate and client CAs can change while it serves.

    The listener keeps `context` for its life; each new handshake is moved (from its SNI
    callback, which runs for every ClientHello, with or without a name) to the context built
    by the last `update`. Connections already open keep what they negotiated: a CA rotation
    swaps what the auth server presents and trusts without dropping anyone.
    """

    def __init__(self, cert_pem: bytes, key_pem: bytes, client_ca_pems: Sequence[bytes],
                 *, require_client_cert: bool) -> None:
        self._require = require_client_cert
        self._cert, self._key, self._cas = cert_pem, key_pem, list(client_ca_pems)
        self.context = ssl_server_context(cert_pem, key_pem, client_ca_pems, require_client_cert)
        self._current = self.context
        self.context.sni_callback = self._select

    @property
    def cert_pem(self) -> bytes:
        """The certificate new connections are served."""
        return self._cert

    @property
    def client_ca_pems(self) -> list[bytes]:
        """The CA certificates new connections' client certificates are checked against."""
        return list(self._cas)

    def update(self, *, cert_pem: bytes | None = None, key_pem: bytes | None = None,
               client_ca_pems: Sequence[bytes] | None = None) -> None:
        """Serve new connections another certificate and/or check them against other CAs.

        Built (and so checked) first: a pair that does not load raises and changes nothing.
        """
        cert, key = cert_pem or self._cert, key_pem or self._key
        cas = list(client_ca_pems) if client_ca_pems is not None else self._cas
        fresh = ssl_server_context(cert, key, cas, self._require)
        self._cert, self._key, self._cas, self._current = cert, key, cas, fresh

    def _select(self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                context: ssl.SSLContext) -> None:
        if self._current is not context:
            ssl_object.context = self._current


def unverified_client_context() -> ssl.SSLContext:
    """A client context that checks nothing: only for answers verified another way (a CA
    pin, a host certificate on the next connection, a pinned web certificate)."""
    ctx = tls_context(server=False)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def ssl_client_context(cert_pem: bytes | None, key_pem: bytes | None,
                       ca_pems: Sequence[bytes]) -> ssl.SSLContext:
    """Build a client context of our TLS profile that trusts only our CAs and presents our
    certificate.

    Names are always checked: connections must name the server they expect (for the auth API,
    `server_hostname=auth_server_name(cluster)`), since a valid certificate of our CA alone
    proves only membership of the cluster, not the role. Without a certificate (a host joining
    with a token) it only verifies the server.
    """
    if not ca_pems:
        raise BadParameter("a TLS client needs at least one trusted CA")
    ctx = tls_context(server=False)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=_cadata(ca_pems))
    if cert_pem is not None and key_pem is not None:
        load_cert_chain(ctx, cert_pem, key_pem)
    return ctx


def load_cert_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load a certificate and key, which the ssl module only accepts from a file.

    The file is an anonymous memory file of this process (`memfd_create`), named through
    /proc: the key never touches a disk, and no temporary directory is made and removed.
    """
    fd = os.memfd_create("teleport-tls", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as f:
            f.write(cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    except ssl.SSLError as err:
        raise BadParameter(f"invalid TLS certificate or key: {err.reason or err}") from None
    finally:
        os.close(fd)


def _cadata(pems: Sequence[bytes]) -> str:
    try:
        return "\n".join(p.decode().strip() for p in pems) + "\n"
    except UnicodeDecodeError:
        raise BadParameter("CA certificates must be PEM") from None
