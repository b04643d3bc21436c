"""Protocol constants both ends of a connection must agree on: ports and environment names.

The config schema (a layer below) keeps its own copies of the default ports, since it may not
import this package; `tests/unit/api/test_models.py` checks that they agree.
"""

from __future__ import annotations

#: Default ports, as the manual lists them.
AUTH_PORT = 3025
NODE_SSH_PORT = 3022
PROXY_SSH_PORT = 3023
PROXY_TUNNEL_PORT = 3024
PROXY_WEB_PORT = 3080

#: What `tsh ls` and `tctl nodes ls` show as the address of a node behind a reverse tunnel.
TUNNEL_ADDR = "⟵ Tunnel"
#: The env request a session channel sends to join a live session instead of starting a shell.
SESSION_ENV = "TELEPORT_SESSION"
#: Where `tsh` keeps its profiles (default `~/.tsh`).
HOME_ENV = "TELEPORT_HOME"
#: Set to show a traceback instead of the one-line internal error of a CLI.
DEBUG_ENV = "TELEPORT_DEBUG"
#: Listening sockets a restarted process inherits: `auth=3,node=4`.
INHERITED_LISTENERS_ENV = "TELEPORT_INHERITED_LISTENERS"
#: Listen queue of every listening socket; whoever serves a socket must pass it again, as
#: listen() on a listening socket resets the queue (aiohttp's default would make it 128).
LISTEN_BACKLOG = 1024
#: What a node tells the commands of a session about it (as Teleport sets them).
SSH_USER_ENV = "SSH_TELEPORT_USER"
SSH_HOST_UUID_ENV = "SSH_TELEPORT_HOST_UUID"
SSH_CLUSTER_NAME_ENV = "SSH_TELEPORT_CLUSTER_NAME"

__all__ = ["AUTH_PORT", "DEBUG_ENV", "HOME_ENV", "INHERITED_LISTENERS_ENV", "LISTEN_BACKLOG",
           "NODE_SSH_PORT",
           "PROXY_SSH_PORT", "PROXY_TUNNEL_PORT", "PROXY_WEB_PORT", "SESSION_ENV",
           "SSH_CLUSTER_NAME_ENV", "SSH_HOST_UUID_ENV", "SSH_USER_ENV"]
