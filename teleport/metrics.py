"""The process's Prometheus metrics, defined once so every layer counts into the same registry.

Served as `/metrics` by the diagnostics endpoint (`teleport start --diag-addr`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

CONNECTIONS = Gauge("teleport_connections", "Open client connections", ["service"],
                    registry=REGISTRY)
CONNECTIONS_REFUSED = Counter("teleport_connections_refused_total",
                              "Connections refused by connection limits", ["service"],
                              registry=REGISTRY)
SESSIONS = Gauge("teleport_sessions_active", "Interactive and exec sessions in progress",
                 registry=REGISTRY)
HEARTBEATS = Counter("teleport_heartbeats_total", "Presence heartbeats sent, by result",
                     ["kind", "result"], registry=REGISTRY)
LOGINS = Counter("teleport_logins_total", "User logins, by result", ["result"],
                 registry=REGISTRY)
BACKEND_LATENCY = Histogram("teleport_backend_operation_seconds", "Backend operation latency",
                            ["operation"], registry=REGISTRY,
                            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                     0.25, 0.5, 1.0, 2.5))
BACKEND_COMMITS = Counter("teleport_backend_commits_total",
                          "Backend transactions committed; with group commit one holds many"
                          " writes", ["backend"], registry=REGISTRY)
AUDIT_FAILURES = Counter("teleport_audit_write_failures_total",
                         "Audit events that could not be written", registry=REGISTRY)
AUDIT_PENDING = Gauge("teleport_audit_events_pending",
                      "Audit events a node or proxy holds (in memory or spooled on disk) "
                      "until the auth server takes them", ["component"], registry=REGISTRY)
AUDIT_DROPPED = Counter("teleport_audit_events_dropped_total",
                        "Audit events a node or proxy dropped because its local spool was full",
                        ["component"], registry=REGISTRY)
REVERSE_TUNNELS = Gauge("teleport_reverse_tunnels_connected",
                        "Nodes with a reverse tunnel to this proxy", registry=REGISTRY)
TUNNEL_AGENTS = Gauge("teleport_reverse_tunnel_agents",
                      "A node's reverse tunnels to proxies, by state", ["state"],
                      registry=REGISTRY)
HANDSHAKES_THROTTLED = Counter("teleport_handshakes_throttled_total",
                               "New connections a listener's per-source throttle refused at "
                               "once or made wait for their turn (teleport.api.throttle)",
                               ["listener", "action"], registry=REGISTRY)
