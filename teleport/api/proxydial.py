"""Dial host:port through an HTTP CONNECT proxy and hand back a plain connected socket.

The socket carries whatever the caller speaks next (SSH for `asyncssh.connect(sock=...)`,
TLS), so nothing here knows the protocol. The proxy's answer head is read one byte at a time:
the server behind it may speak first (an SSH banner), and those bytes must stay in the socket
for the caller rather than be swallowed with the head. The head is bounded in size and time,
and every way the proxy can say no becomes one `ConnectionProblem` naming the proxy and its
status line.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Mapping

from teleport.api.proxyenv import ProxyURL, proxy_for
from teleport.errors import ConnectionProblem

#: The longest answer head accepted from a proxy (tinyproxy's is about 100 bytes).
MAX_HEAD = 8192
#: How much of a status line is quoted in an error.
_QUOTE = 120


def connect_request(proxy: ProxyURL, host: str, port: int) -> bytes:
    """Return the CONNECT request for host:port, with basic auth when the proxy has a user."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if proxy.username is not None:
        secret = f"{proxy.username}:{proxy.password or ''}".encode()
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(secret).decode()}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(head: bytes) -> tuple[int, str]:
    """Return (status code, printable status line) of an answer head; code 0 if not HTTP."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    printable = "".join(c if c.isprintable() else "?" for c in line)[:_QUOTE]
    fields = line.split(" ", 2)
    if len(fields) >= 2 and fields[0].startswith("HTTP/1.") and fields[1].isdigit():
        return int(fields[1]), printable
    return 0, printable


async def dial(host: str, port: int, *, env: Mapping[str, str] | None = None,
               wait: float = 15.0) -> socket.socket | None:
    """Return a socket to host:port through the environment's proxy, or None to dial directly."""
    proxy = proxy_for(host, port, env, dial=True)
    if proxy is None:
        return None
    return await open_tunnel(proxy, host, port, wait=wait)


async def open_tunnel(proxy: ProxyURL, host: str, port: int, *,
                      wait: float = 15.0) -> socket.socket:
    """Ask `proxy` for a tunnel to host:port; return the connected socket once it says 2xx."""
    where = f"HTTP proxy {proxy}"
    target = f"{host}:{port}"
    sock = await _connect(proxy, where, wait)
    try:
        async with asyncio.timeout(wait):
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(sock, connect_request(proxy, host, port))
            head = await _read_head(loop, sock, where, target)
    except TimeoutError:
        sock.close()
        raise ConnectionProblem(
            f"{where} did not answer CONNECT {target} within {wait:g}s") from None
    except OSError as err:
        sock.close()
        raise ConnectionProblem(
            f"{where} broke off CONNECT {target}: {err.strerror or err}") from None
    except BaseException:
        sock.close()
        raise
    code, line = status_of(head)
    if 200 <= code < 300:
        return sock
    sock.close()
    raise ConnectionProblem(f"{where} refused CONNECT {target}: {line!r}{auth_hint(proxy, code)}")


def auth_hint(proxy: ProxyURL, status: int) -> str:
    """Say what to fix when a proxy refuses for credentials.

    407 is the standard answer; tinyproxy answers wrong credentials with 401.
    """
    if status not in (401, 407):
        return ""
    where = proxy.source or "the proxy URL"
    if proxy.username is None:
        return f" (the proxy wants credentials: put user:password@ in {where})"
    return f" (wrong proxy credentials in {where})"


async def _connect(proxy: ProxyURL, where: str, wait: float) -> socket.socket:
    try:
        return await connect_tcp(proxy.host, proxy.port, wait)
    except TimeoutError:
        reason = f"no answer within {wait:g}s"
    except OSError as err:
        reason = str(err)
    raise ConnectionProblem(f"cannot reach {where}: {reason}")


async def connect_tcp(host: str, port: int, wait: float = 15.0) -> socket.socket:
    """Return a connected non-blocking socket to host:port, trying each address in turn.

    Raises TimeoutError after `wait`, or OSError naming every address's failure.
    """
    loop = asyncio.get_running_loop()
    problems: list[str] = []
    async with asyncio.timeout(wait):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for family, kind, proto, _, addr in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, addr)
            except OSError as err:
                sock.close()
                problems.append(err.strerror or str(err))
                continue
            except BaseException:
                sock.close()
                raise
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
    raise OSError("; ".join(problems) or "no address")


async def dial_any(host: str, port: int, *, env: Mapping[str, str] | None = None,
                   wait: float = 15.0) -> socket.socket:
    """Return a socket to host:port: through the environment's HTTP proxy, else directly."""
    return await dial(host, port, env=env, wait=wait) or await connect_tcp(host, port, wait)


async def _read_head(loop: asyncio.AbstractEventLoop, sock: socket.socket, where: str,
                     target: str) -> bytes:
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        if len(head) >= MAX_HEAD:
            raise ConnectionProblem(f"{where} sent an answer head over {MAX_HEAD} bytes to "
                                    f"CONNECT {target}")
        byte = await loop.sock_recv(sock, 1)
        if not byte:
            said = f" after {status_of(bytes(head))[1]!r}" if head else ""
            raise ConnectionProblem(
                f"{where} closed the connection before answering CONNECT {target}{said}")
        head += byte
    return bytes(head)


__all__ = ["MAX_HEAD", "auth_hint", "connect_request", "dial", "open_tunnel", "status_of"]
