"""`data_dir/authservers.json`: the auth servers a host learned, preferred over the config."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from teleport.errors import BadParameter
from teleport.utils.addr import HostPort, parse_addr
from teleport.utils.fs import write_secret

FILE_NAME = "authservers.json"


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
