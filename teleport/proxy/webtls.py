"""The web port's TLS: one or several certificates, chosen by the name the browser asks for.

`proxy_service.https_keypairs` may list several key pairs (one per public name); the first is the
default, and a ClientHello whose server name (SNI) one of the others covers (a DNS name of its
subject alternative names, `*.example.com` matching one label) gets that one, as in Teleport.
Client certificates stay optional and are checked against the cluster's CAs (`tsh`'s calls).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from cryptography import x509

from teleport.errors import BadParameter
from teleport.keys.tlsconfig import ssl_server_context

#: (key PEM, certificate PEM), as read from the configured files.
KeyPair = tuple[bytes, bytes]


def dns_names(cert_pem: bytes) -> list[str]:
    """Return the DNS names a certificate's subject alternative names cover, lowercase."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as err:
        raise BadParameter(f"invalid TLS certificate: {err}") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in san.get_values_for_type(x509.DNSName)]


def covers(pattern: str, name: str) -> bool:
    """Tell whether a certificate name (maybe `*.` wildcard of one label) covers a host name."""
    name = name.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def server_context(pairs: Sequence[KeyPair], client_ca_pems: Sequence[bytes]) -> ssl.SSLContext:
    """Build the web port's context: the first pair by default, another when SNI names it.

    Every pair is loaded (and so checked: a key that does not match its certificate is a
    BadParameter) before the context is returned.
    """
    if not pairs:
        raise BadParameter("no HTTPS key pair to serve")
    contexts = [(dns_names(cert), ssl_server_context(cert, key, list(client_ca_pems),
                                                     require_client_cert=False))
                for key, cert in pairs]
    default = contexts[0][1]
    if len(contexts) > 1:
        def pick(sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
            if server_name:
                for names, ctx in contexts:
                    if any(covers(n, server_name) for n in names):
                        sslobj.context = ctx
                        return

        default.sni_callback = pick
    return default


__all__ = ["KeyPair", "covers", "dns_names", "server_context"]
