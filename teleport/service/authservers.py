"""`data_dir/authservers.json`: the auth servers a host learned, preferred over the config.

Auth servers announce themselves (`auth_server` records: the address others should use). A
node or proxy that talks to the auth servers directly asks for them every few seconds
(`AuthServerList`), uses the ones online then the configured ones, and keeps that list in the
file for its next start, as the manual says ("the values from the cache file will take
precedence over the configuration file"). Its clients try the one that answered last first
(`teleport.api.http`), so when it dies they move to the next within a call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from teleport.auth.client import AuthClient
from teleport.errors import BadParameter, TeleportError
from teleport.utils.addr import HostPort, parse_addr
from teleport.utils.fs import write_secret

log = logging.getLogger("teleport")
FILE_NAME = "authservers.json"
#: How often a host asks which auth servers are online (they announce every 5 s, for 15 s).
LEARN_INTERVAL = 5.0


def load_auth_servers(data_dir: Path) -> list[HostPort]:
    """Return the learned auth servers, or [] when this host has not joined yet."""
    path = data_dir / FILE_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise BadParameter(f"cannot read {path}: {err}; remove it to use the config's auth_servers") from None
    if not isinstance(data, list) or not all(isinstance(a, str) for a in data):
        raise BadParameter(f"{path} must be a JSON list of host:port strings")
    return [parse_addr(a, 3025) for a in data]


def save_auth_servers(data_dir: Path, learned: Sequence[str], used: Sequence[HostPort]) -> None:
    """Remember the addresses that worked first, then the ones the cluster announced."""
    addrs = list(dict.fromkeys([*(str(a) for a in used), *learned]))
    write_secret(data_dir / FILE_NAME, json.dumps(addrs) + "\n")


def starting_auth_servers(data_dir: Path, configured: Sequence[HostPort]) -> list[HostPort]:
    """Return the auth servers to start with: the learned ones first, then the configured ones
    (an address added to the config is still tried)."""
    return list(dict.fromkeys([*load_auth_servers(data_dir), *configured]))


class AuthServerList:
    """The auth servers a node or proxy uses, following the ones the cluster announces.

    Every attached client gets each new list at once (`AuthClient.addrs`), and the list is kept
    in `data_dir/authservers.json`. The configured addresses stay at the end as a way back in
    (a balancer's address is never announced); an answer naming no auth server changes nothing.
    """

    def __init__(self, data_dir: Path, current: Sequence[HostPort],
                 configured: Sequence[HostPort] = ()) -> None:
        self.data_dir = data_dir
        self.current = list(current)
        self.configured = list(configured)
        self._clients: list[AuthClient] = []

    def __call__(self) -> list[HostPort]:
        """The list now (for who dials per connection: the proxy's auth relay)."""
        return list(self.current)

    def attach(self, client: AuthClient) -> None:
        self._clients.append(client)
        client.addrs = self.current

    def learn(self, announced: Sequence[str]) -> bool:
        """Take the announced addresses (host:port) as the list; True if it changed."""
        learned: list[HostPort] = []
        for text in announced:
            try:
                learned.append(parse_addr(text, 3025))
            except BadParameter as err:
                log.warning("ignoring an auth server's announced address %r: %s", text, err)
        if not learned:
            return False
        new = list(dict.fromkeys([*learned, *self.configured]))
        if new == self.current:
            return False
        log.info("Auth servers: %s.", ", ".join(map(str, new)))
        self.current = new
        for client in self._clients:
            client.addrs = new
        try:
            write_secret(self.data_dir / FILE_NAME,
                         json.dumps([str(a) for a in new]) + "\n")
        except OSError as err:
            log.warning("cannot keep the auth servers in %s: %s", self.data_dir / FILE_NAME,
                        err.strerror or err)
        return True

    async def run(self, client: AuthClient, interval: float = LEARN_INTERVAL) -> None:
        """Ask for the auth servers online every interval until cancelled; keep the list when
        no auth server answers."""
        while True:
            try:
                servers = await client.list_servers("auth_server")
            except TeleportError as err:
                log.debug("cannot list the auth servers: %s", err)
            else:
                self.learn([s.spec.addr for s in servers if s.spec.addr])
            await asyncio.sleep(interval)


PROXY_FILE = "tunnel.json"


def load_join_proxy(data_dir: Path) -> HostPort | None:
    """Return the proxy web address this host joined through (reverse tunnel mode), or None."""
    path = data_dir / PROXY_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise BadParameter(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("proxy"), str):
        raise BadParameter(f"{path} must be a JSON object with the proxy's address")
    return parse_addr(data["proxy"], 3080)


def save_join_proxy(data_dir: Path, addr: HostPort) -> None:
    """Remember that this host reaches the cluster through the proxy at addr."""
    write_secret(data_dir / PROXY_FILE, json.dumps({"proxy": str(addr)}) + "\n")
