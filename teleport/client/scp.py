"""`tsh scp`: copy files to and from a node through the proxy, as `tsh ssh` reaches it.

The node already serves scp's classic protocol (`scp -t` / `scp -f`, run as the OS login), so the
client speaks that protocol with asyncssh's scp over the same proxied connection as `tsh ssh`:
no SFTP subsystem is needed on the node. Remote paths are quoted before they reach the login's
shell (a leading `~/` still means the login's home), so names with spaces arrive as typed;
remote wildcards are therefore not expanded.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncssh

from teleport.api.web_models import NodeInfo
from teleport.client import nodes as node_selection
from teleport.client import ssh
from teleport.client.profile import Profile
from teleport.errors import AccessDenied, BadParameter, NotFound, TeleportError

#: `[login@]host:path` where host is a name, a label selector or a bracketed IPv6 address.
_REMOTE = re.compile(r"^(?:(?P<login>[^/:@]+)@)?(?P<host>\[[^]/]+\]|[^:/@\[\]]+):(?P<path>.*)$",
                     re.DOTALL)
#: How often the progress bar is redrawn at most, in seconds.
_REDRAW = 0.1


@dataclass(frozen=True)
class Remote:
    """One side of a copy on a node: `[login@]host:path`."""

    login: str
    host: str
    path: str


def parse_remote(spec: str, default_login: str) -> Remote | None:
    """Read `[login@]host:path` as scp does; None for a local path (no colon before any `/`)."""
    match = _REMOTE.match(spec)
    if match is None:
        if re.match(r"^[^/]*@[^/]*:", spec):  # `@host:x`, `a@b@c:x`: meant remote, malformed
            raise BadParameter(f"invalid remote location {spec!r}: expected [login@]host:path")
        return None
    return Remote(match["login"] or default_login, match["host"], match["path"])


def remote_path(path: str) -> str:
    """Quote a remote path for the login's shell, keeping a leading `~` as the login's home."""
    if not path:
        return "."
    if path == "~" or path == "~/":
        return path
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


@dataclass(frozen=True)
class Plan:
    """What one `tsh scp` moves: local paths and remote paths on one node, and the direction."""

    upload: bool
    login: str
    host: str
    local: tuple[str, ...]
    remote: tuple[str, ...]


def plan(paths: Sequence[str], default_login: str) -> Plan:
    """Split `src... dst` into a direction and one node; refuse what scp cannot do here."""
    if len(paths) < 2:
        raise BadParameter("usage: tsh scp [-r] [-p] [-P port] [-q] src... [login@]host:dst "
                           "(or [login@]host:src... dst)")
    *sources, dest = paths
    remote_dest = parse_remote(dest, default_login)
    remote_sources = [parse_remote(s, default_login) for s in sources]
    if remote_dest is not None:
        if any(r is not None for r in remote_sources):
            raise BadParameter("copying between two remote locations is not supported: "
                               "copy to a local path first")
        return Plan(True, remote_dest.login, remote_dest.host, tuple(sources),
                    (remote_dest.path,))
    if any(r is None for r in remote_sources):
        raise BadParameter("one side of the copy must be remote: [login@]host:path")
    found = [r for r in remote_sources if r is not None]
    if len({(r.login, r.host) for r in found}) != 1:
        raise BadParameter("all remote sources must be on the same node with the same login")
    return Plan(False, found[0].login, found[0].host, (dest,), tuple(r.path for r in found))


async def copy(profile: Profile, paths: Sequence[str], default_login: str, *,
               recursive: bool = False, preserve: bool = False, port: int | None = None,
               quiet: bool = False, every_match: bool = False, cluster: str = "") -> int:
    """Copy between this machine and one node (or, asked with `every_match`, upload to every
    node a label selector matches) of ours or of a leaf cluster; a remote failure raises with
    the node's reason."""
    job = plan(paths, default_login)
    progress = None if quiet or not sys.stderr.isatty() else ProgressBar(sys.stderr.fileno())
    if (selector := node_selection.parse_label_selector(job.host)) is None:
        await _copy_with(profile, job, _with_port(job.host, port), recursive, preserve, progress,
                         cluster)
        return 0
    nodes = await _matching(profile, selector, job.upload, every_match, cluster)
    if len(nodes) == 1:
        await _copy_with(profile, job, _with_port(nodes[0].id, port), recursive, preserve,
                         progress, cluster)
        return 0
    failed = 0
    for node in nodes:  # one at a time: a progress bar and an error line per node
        try:
            await _copy_with(profile, job, _with_port(node.id, port), recursive, preserve,
                             progress, cluster)
        except TeleportError as err:
            failed += 1
            print(f"[{node.name}] ERROR: {err}", file=sys.stderr)
    return 1 if failed else 0


def _with_port(host: str, port: int | None) -> str:
    return f"{host}:{port}" if port else host


async def _copy_with(profile: Profile, job: Plan, host: str, recursive: bool, preserve: bool,
                     progress: ProgressBar | None, cluster: str) -> None:
    async with ssh.connect_node(profile, job.login, host, cluster=cluster) as conn:
        try:
            if job.upload:
                await asyncssh.scp(list(job.local), (conn, remote_path(job.remote[0])),
                                   preserve=preserve, recurse=recursive,
                                   progress_handler=progress)
            else:
                await asyncssh.scp([(conn, remote_path(p)) for p in job.remote], job.local[0],
                                   preserve=preserve, recurse=recursive,
                                   progress_handler=progress)
        except asyncssh.SFTPError as err:
            raise _remote_error(err) from None
        except OSError as err:
            raise _local_error(err) from None
        finally:
            if progress is not None:
                progress.finish()


async def _matching(profile: Profile, selector: dict[str, str], upload: bool,
                    every_match: bool, cluster: str) -> list[NodeInfo]:
    """Resolve labels to nodes: one, or every match for an upload the user asked to fan out."""
    nodes = await node_selection.matching_nodes(profile, selector, cluster)
    labels = ",".join(f"{k}={v}" for k, v in selector.items())
    if not nodes:
        raise NotFound(f"no nodes match labels {labels}")
    if len(nodes) > 1 and not upload:
        raise BadParameter(f"labels {labels} match {len(nodes)} nodes; tsh scp downloads from "
                           "one node at a time: add labels or name the node")
    if len(nodes) > 1 and not every_match:
        raise BadParameter(f"labels {labels} match {len(nodes)} nodes: add --all to upload to "
                           "every one of them, or add labels or name the node")
    return nodes


def _remote_error(err: asyncssh.SFTPError) -> TeleportError:
    """Turn the node's scp refusal (`scp: /x: No such file or directory`) into one line."""
    reason = " ".join(str(err.reason).split()).removeprefix("scp: ") or "remote scp failed"
    lowered = reason.lower()
    if "no such file" in lowered:
        return NotFound(reason)
    if "permission denied" in lowered:
        return AccessDenied(reason)
    if lowered.startswith("not a regular file: "):
        name = reason[len("not a regular file: "):]
        return BadParameter(f"{name}: not a regular file (use -r to copy a directory)")
    if isinstance(err, asyncssh.SFTPConnectionLost):
        return TeleportError(f"the node closed the copy: {reason} "
                             "(is scp installed on the node?)")
    return TeleportError(reason)


def _local_error(err: OSError) -> TeleportError:
    where = f"{os.fsdecode(err.filename)}: " if err.filename else ""
    text = err.strerror or str(err) or type(err).__name__
    return NotFound(where + text) if isinstance(err, FileNotFoundError) else TeleportError(where + text)


class ProgressBar:
    """Draw `name  42% |█████     | (4.2/10.0 MB, 3.1 MB/s)` on a terminal, one line per file."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._current: bytes | None = None
        self._started = 0.0
        self._drawn = 0.0
        self._open = False

    def __call__(self, srcpath: bytes, dstpath: bytes, copied: int, total: int) -> None:
        now = time.monotonic()
        if srcpath != self._current:
            self.finish()
            self._current, self._started, self._drawn = srcpath, now, 0.0
        done = copied >= total
        if not done and now - self._drawn < _REDRAW:
            return
        self._drawn = now
        self._draw(os.path.basename(os.fsdecode(srcpath).rstrip("/")), copied, total, now)
        if done:
            self._write("\n")
            self._open = False
            self._current = None

    def finish(self) -> None:
        """End a half-drawn line, so an error message starts on its own line."""
        if self._open:
            self._write("\n")
            self._open = False

    def _draw(self, name: str, copied: int, total: int, now: float) -> None:
        try:
            width = os.get_terminal_size(self._fd).columns or 80
        except OSError:
            width = 80
        fraction = copied / total if total else 1.0
        unit, scale = _unit(total)
        rate = copied / max(now - self._started, 1e-3)
        rate_unit, rate_scale = _unit(int(rate))
        head = f"{name[:32]} {fraction * 100:3.0f}% |"
        info = (f"| ({copied / scale:.1f}/{total / scale:.1f} {unit}, "
                f"{rate / rate_scale:.1f} {rate_unit}/s)")
        bar_width = min(max(width - 1 - len(head) - len(info), 10), 40)
        filled = int(bar_width * fraction)
        line = head + "█" * filled + " " * (bar_width - filled) + info
        self._write("\r" + line[:width - 1] + "\x1b[K")
        self._open = True

    def _write(self, text: str) -> None:
        data = text.encode()
        while data:
            try:
                data = data[os.write(self._fd, data):]
            except BlockingIOError:
                time.sleep(0.005)
            except OSError:
                return


def _unit(size: int) -> tuple[str, int]:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if size >= scale:
            return unit, scale
    return "B", 1
