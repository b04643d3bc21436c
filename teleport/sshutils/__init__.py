"""asyncssh glue shared by the node and the proxy: certificate auth, listener settings, fd pumps."""

from teleport.sshutils.auth import CertAuthConnection, CertAuthServer, CertChecker, Identity
from teleport.sshutils.listener import bound_port, listen, server_options

__all__ = ["CertAuthConnection", "CertAuthServer", "CertChecker", "Identity", "bound_port",
           "listen", "server_options"]
