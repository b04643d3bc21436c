"""asyncssh glue shared by the node, the proxy and `tsh`: certificate auth, listener settings,
hops, fd pumps. Import each from its module: `tsh` needs the hop, not the listener."""
