"""A TLS handshake between two contexts through memory buffers, for tests without sockets."""

from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass
class Handshake:
    server: ssl.SSLObject
    client: ssl.SSLObject
    #: Flights the client sent: 2 for a TLS 1.3 handshake, 3 after a HelloRetryRequest.
    flights: int


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
              server_hostname: str) -> Handshake:
    """Run a handshake to the end, or raise the SSLError either side raised."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    done = {"server": False, "client": False}
    flights = 0
    for _ in range(10):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        sent = c_out.read()
        flights += bool(sent)
        s_in.write(sent)
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3 checks the client certificate after the client thinks it is done: one
            # record to the server makes its verdict part of the handshake.
            client.write(b"ping")
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            return Handshake(server, client, flights)
    raise AssertionError("handshake did not finish")
