"""The node's SSH service: sessions, PTYs, commands as the OS login, port forwarding."""

from teleport.srv.server import NodeServer

__all__ = ["NodeServer"]
