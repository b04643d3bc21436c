"""SSH flow control of our channels: one window and packet size for the node, the proxy and
`tsh`, apart from the listener so that a client imports none of the server side."""

#: Per-channel receive window: the most a client can have in flight on one channel.
WINDOW = 2 * 1024 * 1024
#: Packet size of channels that carry another SSH connection (tsh through the proxy). An inner
#: packet holds 32 KiB of data plus ~40 bytes of framing; with the default 32 KiB outer limit
#: every one was split into a full packet and a tiny one, costing a cipher call each.
TUNNEL_PKTSIZE = 128 * 1024
#: Packet size of session channels (shells, commands, scp and sftp) on every side of ours: the
#: node, the proxy and `tsh` ask peers for packets up to this. asyncssh pays a parse, a cipher call
#: and a write per packet whatever its size, so bulk data at the usual 32 KiB cost four times the
#: per-packet work of this (a peer sends at most this, and only what it has at hand). One whole
#: packet still fits in one tunnel packet.
SESSION_PKTSIZE = TUNNEL_PKTSIZE - 1024
