"""Certificate-based SSH access with every session audited: the teleport, tctl and tsh tools."""

__version__ = "0.1.0"
