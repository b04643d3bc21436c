#!/usr/bin/env python3
"""The web terminal against `tsh ssh`: keystroke echo round trip, and a large `cat` with flow control.

Usage: .venv/bin/python bench/web_terminal.py [--keys 300] [--size 50M] [--keep]

Starts a single-host cluster (see bench/common.py), logs a second user in the way the browser
does (`POST /webapi/sessions/web`), and opens two terminals to the same node as root: the web
terminal's websocket (as the page speaks it) and `tsh ssh` under a local pseudo-terminal. Each
runs `cat`, so a keystroke comes back as the remote terminal's echo: the round trip crosses the
client, the proxy, the node and its pty and back, as typing does. Keystrokes alternate between
the two in blocks, and the script prints p50, p99 and mean per path and the web/tsh ratios
(target: p50 within 1.5x of `tsh ssh`).

Then each path `cat`s a file of --size and the script prints the time and MiB/s, and the
teleport process's peak RSS growth (VmHWM, reset first): with flow control end to end the
proxy holds a bounded amount whatever the size. Last, a slow page (reading 256 KiB a second for
a few seconds while the node could send far more) shows that the proxy does not buffer what the
browser has not taken.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import select
import subprocess
import time
from pathlib import Path

import aiohttp
from common import (
    BIN,
    CLUSTER,
    NODENAME,
    Bench,
    BenchError,
    add_common_args,
    parse_size,
    percentile,
    positive_int,
    proc_status_kb,
    run_main,
    summarize,
)

WEB_USER = "webbench"
WEB_PASSWORD = "web bench password"
COOKIE = "__Host-teleport-session"
BLOCK = 20  # keystrokes per turn before switching paths
SLOW_RATE = 256 * 1024  # bytes a second the slow page takes
SLOW_SECONDS = 6


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


class WebTerminal:
    def __init__(self, bench: Bench, cookie: str, token: str) -> None:
        self.bench, self.cookie, self.token = bench, cookie, token
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self, node_id: str) -> None:
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        url = f"https://{self.bench.web_addr}/webapi/sites/{CLUSTER}/connect"
        self.ws = await self.http.ws_connect(
            url, params={"node": node_id, "login": "root", "cols": "120", "rows": "40"},
            headers={"Cookie": f"{COOKIE}={self.cookie}",
                     "Origin": f"https://{self.bench.web_addr}"}, ssl=False, max_msg_size=0)
        await self.ws.send_str(json.dumps({"token": self.token}))

    async def read_until(self, needle: bytes, timeout: float = 30) -> bytes:  # noqa: ASYNC109
        assert self.ws is not None
        seen = b""
        async with asyncio.timeout(timeout):
            while needle not in seen[-len(needle) - 65536:]:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    seen = seen[-65536:] + msg.data
                elif msg.type != aiohttp.WSMsgType.TEXT:
                    raise BenchError(f"web terminal closed: {msg.type} {msg.data!r}")
        return seen

    async def type(self, data: bytes) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(data)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()


class TshTerminal:
    """`tsh ssh root@node` under a local pty: write keystrokes, read the remote echo."""

    def __init__(self, bench: Bench) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen([str(BIN / "tsh"), "ssh", f"root@{NODENAME}"],
                                     stdin=slave, stdout=slave, stderr=slave,
                                     env={**bench.env, "TERM": "xterm"}, start_new_session=True)
        os.close(slave)

    def read_until(self, needle: bytes, timeout: float = 30) -> bytes:
        seen = b""
        deadline = time.monotonic() + timeout
        while needle not in seen[-len(needle) - 65536:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"tsh: did not see {needle!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                seen = seen[-65536:] + os.read(self.master, 1 << 20)
        return seen

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self.master)


async def _web_login(bench: Bench, token: str) -> tuple[str, str]:
    """Sign the web user up with its signup token and log in as the page does."""
    import pyotp

    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        base = f"https://{bench.web_addr}"
        async with http.get(f"{base}/webapi/users/password/token/{token}", ssl=False) as resp:
            totp = pyotp.TOTP((await resp.json())["otp_secret"])
        async with http.put(f"{base}/webapi/users/password/token", ssl=False, json={
                "token": token, "password": WEB_PASSWORD,
                "second_factor_token": totp.now()}) as resp:
            if resp.status != 200:
                raise BenchError(f"signup failed: {await resp.text()}")
        async with http.post(f"{base}/webapi/sessions/web", ssl=False, json={
                "user": WEB_USER, "pass": WEB_PASSWORD,
                "second_factor_token": totp.at(time.time() + 30)}) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise BenchError(f"web login failed: {answer}")
            match = re.search(rf"{COOKIE}=([^;]+)", resp.headers["Set-Cookie"])
            assert match
            cookie = match.group(1)
        async with http.get(f"{base}/webapi/sites/{CLUSTER}/nodes", ssl=False,
                            headers={"Cookie": f"{COOKIE}={cookie}",
                                     "Authorization": f"Bearer {answer['token']}"}) as resp:
            nodes = await resp.json()
    node_id = next(n["id"] for n in nodes if n["name"] == NODENAME)
    return f"{cookie}|{answer['token']}", node_id


async def _echo_rounds(web: WebTerminal, tsh: TshTerminal, keys: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"web": [], "tsh": []}
    loop = asyncio.get_running_loop()
    letters = b"abcdefghijklmnopqrstuvwxyz"
    done = 0
    while done < keys:
        for _ in range(min(BLOCK, keys - done)):
            key = letters[done % 26:done % 26 + 1]
            start = time.perf_counter()
            await web.type(key)
            await web.read_until(key)
            times["web"].append(time.perf_counter() - start)
            start = time.perf_counter()
            tsh.type(key)
            await loop.run_in_executor(None, tsh.read_until, key)
            times["tsh"].append(time.perf_counter() - start)
            done += 1
        # End the line so cat prints it and the terminals stay small.
        await web.type(b"\r")
        tsh.type(b"\r")
        await web.read_until(b"\n")
        await loop.run_in_executor(None, tsh.read_until, b"\n")
    return times


async def _bulk(web: WebTerminal, tsh: TshTerminal, path: Path, size: int,
                pid: int) -> list[tuple[str, float, int]]:
    rows = []
    loop = asyncio.get_running_loop()
    for name in ("web", "tsh"):
        marker = f"BULK-{name}-$((6*7))".encode()
        expect = f"BULK-{name}-42".encode()
        _reset_peak(pid)
        base = proc_status_kb(pid, "VmHWM")
        start = time.perf_counter()
        command = b"cat " + str(path).encode() + b"; echo " + marker + b"\r"
        if name == "web":
            await web.type(command)
            await web.read_until(expect, timeout=600)
        else:
            tsh.type(command)
            await loop.run_in_executor(None, functools.partial(tsh.read_until, expect, 600))
        rows.append((name, time.perf_counter() - start, proc_status_kb(pid, "VmHWM") - base))
    return rows


async def _slow_page(bench: Bench, cookie: str, token: str, node_id: str, path: Path,
                     pid: int) -> int:
    """Open a terminal that reads slowly while `cat` could send much more; return RSS growth."""
    web = WebTerminal(bench, cookie, token)
    await web.open(node_id)
    try:
        await web.read_until(b"#")
        await web.type(b"cat " + str(path).encode() + b"\r")
        _reset_peak(pid)
        base = proc_status_kb(pid, "VmHWM")
        assert web.ws is not None
        deadline = time.monotonic() + SLOW_SECONDS
        while time.monotonic() < deadline:
            msg = await web.ws.receive()
            if msg.type != aiohttp.WSMsgType.BINARY and msg.type != aiohttp.WSMsgType.TEXT:
                break
            if msg.type == aiohttp.WSMsgType.BINARY:
                await asyncio.sleep(len(msg.data) / SLOW_RATE)
        return proc_status_kb(pid, "VmHWM") - base
    finally:
        await web.close()


async def _run(bench: Bench, signup: str, keys: int, size: int) -> None:
    credentials, node_id = await _web_login(bench, signup)
    cookie, token = credentials.split("|", 1)
    path = bench.root / "bulk.txt"
    line = b"x" * 79 + b"\n"
    with path.open("wb") as f:
        for _ in range(size // len(line)):
            f.write(line)
    web = WebTerminal(bench, cookie, token)
    await web.open(node_id)
    tsh = TshTerminal(bench)
    loop = asyncio.get_running_loop()
    try:
        await web.read_until(b"#")
        await loop.run_in_executor(None, tsh.read_until, b"#")
        for term_type in (web.type, tsh.type):
            result = term_type(b"stty -onlcr; exec cat\r")
            if asyncio.iscoroutine(result):
                await result
        await asyncio.sleep(1.0)  # both shells have become cat
        await _echo_rounds(web, tsh, min(BLOCK, keys))  # warm-up
        times = await _echo_rounds(web, tsh, keys)
        print(f"keystroke echo round trip, {keys} keys per path (ms)")
        print(f"{'path':6} {'p50':>8} {'p99':>8} {'mean':>8}")
        stats = {name: {**summarize(values), "p99": percentile(sorted(values), 99)}
                 for name, values in times.items()}
        for name, s in stats.items():
            print(f"{name:6} {s['p50'] * 1000:8.2f} {s['p99'] * 1000:8.2f} {s['mean'] * 1000:8.2f}")
        for key in ("p50", "p99", "mean"):
            print(f"web / tsh {key}: {stats['web'][key] / stats['tsh'][key]:.2f}x")
        # cat ends with ^D; the shells then run the bulk command.
        await web.type(b"\x04")
        tsh.type(b"\x04")
    finally:
        await web.close()
        tsh.close()
    web = WebTerminal(bench, cookie, token)
    await web.open(node_id)
    tsh = TshTerminal(bench)
    try:
        await web.read_until(b"#")
        await loop.run_in_executor(None, tsh.read_until, b"#")
        rows = await _bulk(web, tsh, path, size, bench.teleport_pid)
    finally:
        await web.close()
        tsh.close()
    mib = size / (1 << 20)
    print(f"\ncat of {mib:.0f} MiB to the terminal")
    print(f"{'path':6} {'seconds':>8} {'MiB/s':>8} {'peak RSS growth':>16}")
    for name, seconds, growth in rows:
        print(f"{name:6} {seconds:8.2f} {mib / seconds:8.1f} {growth / 1024:13.1f} MiB")
    growth = await _slow_page(bench, cookie, token, node_id, path, bench.teleport_pid)
    print(f"\nslow page ({SLOW_RATE // 1024} KiB/s for {SLOW_SECONDS} s while cat runs): "
          f"teleport peak RSS growth {growth / 1024:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=positive_int, default=300, help="keystrokes per path")
    parser.add_argument("--size", type=parse_size, default=parse_size("50M"),
                        help="size of the file cat prints (default 50M)")
    add_common_args(parser)
    args = parser.parse_args()
    with Bench(keep=args.keep, ssh_teleport=False) as bench:
        out = bench._tctl("users", "add", WEB_USER, "root").stdout
        signup = next(w for w in out.split() if "/web/newuser/" in w).rsplit("/", 1)[1]
        asyncio.run(_run(bench, signup, args.keys, args.size))


if __name__ == "__main__":
    run_main(main)
