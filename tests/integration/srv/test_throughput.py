"""Per-packet costs of bulk output: what the node sends and how it reads the child (issue 20)."""

from __future__ import annotations

import asyncio
import shlex

import pytest

from teleport.srv import NodeServer
from teleport.sshutils.fdio import PIPE_SIZE
from teleport.sshutils.flow import SESSION_PKTSIZE, WINDOW
from tests.integration.srv.sshenv import Trust

F_GETPIPE_SZ = 1032


async def _run(argv: list[str]) -> tuple[bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out, err


async def test_no_ignore_packet_ahead_of_each_packet_to_a_strict_kex_client(
        trust: Trust, node: NodeServer) -> None:
    """asyncssh sends an empty MSG_IGNORE before every packet; OpenSSH (strict kex) needs none."""
    alice = trust.user(["root"])
    size = 1024 * 1024
    out, err = await _run(["ssh", "-vvv", *trust.ssh(alice, node.port, "root",
                                                     f"head -c {size} /dev/zero")[1:]])
    assert len(out) == size
    assert b"kex-strict-s-v00@openssh.com" in err  # the case the node leaves them out for
    assert err.count(b"Received SSH2_MSG_IGNORE") == 0


async def test_session_channel_takes_packets_four_times_the_usual_size(
        trust: Trust, node: NodeServer) -> None:
    """The node's channel open confirmation offers SESSION_PKTSIZE (OpenSSH's own is 32 KiB):
    a client sends a quarter of the packets, each a parse, a cipher call and a write less."""
    alice = trust.user(["root"])
    _, err = await _run(["ssh", "-vvv", *trust.ssh(alice, node.port, "root", "true")[1:]])
    assert f"open confirm rwindow {WINDOW} rmax {SESSION_PKTSIZE}".encode() in err


async def test_child_output_pipe_is_widened(trust: Trust, node: NodeServer) -> None:
    """A bulk writer fills a 1 MiB pipe, read 256 KiB at a time, not the default 64 KiB."""
    alice = trust.user(["root"])
    probe = f"python3 -c 'import fcntl; print(fcntl.fcntl(1, {F_GETPIPE_SZ}))'"
    out, _ = await _run(trust.ssh(alice, node.port, "root", probe))
    assert int(out) == PIPE_SIZE


@pytest.mark.parametrize("cipher", ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com",
                                    "aes256-gcm@openssh.com"])
async def test_stock_openssh_moves_bulk_both_ways_with_our_cipher_shims(
        trust: Trust, node: NodeServer, cipher: str) -> None:
    """teleport.sshutils.ciphers against OpenSSH's own implementation, many packets each way."""
    alice = trust.user(["root"])
    size = 3 * 1024 * 1024 + 7
    ssh = ["ssh", "-c", cipher, *trust.ssh(alice, node.port, "root")[1:]]
    down, _ = await _run(["sh", "-c", f"{shlex.join(ssh)} head -c {size} /dev/urandom | wc -c"])
    up, _ = await _run(["sh", "-c", f"head -c {size} /dev/urandom | {shlex.join(ssh)} wc -c"])
    assert int(down) == size
    assert int(up) == size
