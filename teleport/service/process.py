"""One teleport process: start the enabled services in order and stop them all cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from teleport import __version__
from teleport.api import throttle as handshake_throttle
from teleport.api.ratelimit import JoinLimits
from teleport.auth import api as auth_api
from teleport.auth.client import AuthClient
from teleport.auth.identity_file import IdentityFile
from teleport.auth.join import join
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.base import Backend
from teleport.cache import CachedAuth
from teleport.config.runtime import Config
from teleport.errors import BadParameter, ConnectionProblem, NotFound, TeleportError
from teleport.events.buffered import BufferedEmitter
from teleport.events.sinks import build_audit_log, sessions_dir, sessions_store
from teleport.keys import tlsconfig
from teleport.keys.tls import identity_from_cert
from teleport.proxy.authrelay import AuthRelay
from teleport.proxy.mux import Handler, Multiplexer, Protocol
from teleport.proxy.peers import PeerDialer
from teleport.proxy.recording import RecordingProxy
from teleport.proxy.ssh import ProxySSHServer
from teleport.proxy.tunnel import TunnelServer
from teleport.proxy.web import WebProxy
from teleport.service import diag, leafclusters, webcerts
from teleport.service.authservers import (
    AuthServerList,
    load_join_proxy,
    save_auth_servers,
    save_join_proxy,
    starting_auth_servers,
)
from teleport.service.health import Health
from teleport.service.heartbeat import HEARTBEAT_INTERVAL, SERVER_TTL, heartbeat_forever
from teleport.service.identities import issue_local_identity, load_or_create_host_uuid
from teleport.service.labels import DynamicLabels
from teleport.service.listeners import Listeners
from teleport.service.resolve import NodeResolver
from teleport.service.revocations import RevocationWatch
from teleport.service.rotation import (
    IdentityFollower,
    Issue,
    client_identity,
    local_issuer,
    refused_since_rotation,
    watch_local_cas,
)
from teleport.service.storage import open_backend
from teleport.service.trust import TrustedCAs
from teleport.service.tunnels import (
    PROXY_REFRESH,
    AuthLoopback,
    TunnelPool,
    is_proxy,
    tunnel_addr,
)
from teleport.srv.pam import PamService
from teleport.srv.server import NodeServer
from teleport.sshutils import clientaddr
from teleport.sshutils.recorder import Recordings
from teleport.sshutils.reversetunnel import TunnelCredentials
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import Clock, RealClock
from teleport.utils.fs import ensure_private_dir, write_secret
from teleport.utils.supervisor import Supervisor
from teleport.utils.waits import wait_event

log = logging.getLogger("teleport")

#: How often a node re-reads the proxy address its sessions name, once it knows one.
PROXY_ADDR_REFRESH = 60.0


class TeleportProcess:
    """Run auth, proxy and node as the config says; an async context manager."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or RealClock()
        self.stack = AsyncExitStack()
        self.auth: AuthServer | None = None
        self.ports: dict[str, int] = {}
        self.host_uuid = ""
        self.cluster_name = ""
        self.health = Health()
        #: Owns every background loop of the process; a failed loop degrades /readyz by name.
        self.supervisor = Supervisor("process", on_failure=self._task_failed,
                                     on_recovery=self.health.ok)
        #: Set once a successor was started (HUP, USR2): the pid file is its to write, not ours.
        self.handed_over = False
        self.node: NodeServer | None = None
        self.proxy_ssh: ProxySSHServer | None = None
        self.tunnels: TunnelServer | None = None
        self.web: WebProxy | None = None
        #: The web port's protocol multiplexer, when tunnel_listen_addr is web_listen_addr.
        self.mux: Multiplexer | None = None
        #: The auth API port's: it paces new connections per source before their TLS handshake.
        self.auth_mux: Multiplexer | None = None
        #: One revocation list per process, enforced by the proxy and the node alike.
        self._revocations: RevocationWatch | None = None
        self.runners: list[Any] = []
        self.listeners = Listeners()
        #: A node behind NAT: its tunnels to the proxies and the auth API's loopback relay.
        self.tunnel_pool: TunnelPool | None = None
        self._auth_loopback: AuthLoopback | None = None
        #: The auth servers a node or proxy of its own follows (None: auth in this process,
        #: or reached through a proxy's tunnel).
        self._auth_list: AuthServerList | None = None
        #: What follows the CA rotations for each role identity held here (Auth, Admin, Proxy,
        #: Node): their hooks swap certificates and trust live (`teleport.service.rotation`).
        self.rotation: dict[str, IdentityFollower] = {}

    async def __aenter__(self) -> TeleportProcess:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _supervise(self, name: str, run: Callable[[], Awaitable[Any]]) -> None:
        self.supervisor.supervise(name, run)

    def _revocation_watch(self, client: AuthClient) -> RevocationWatch:
        """Return the process's revocation list, polling it from the first service that asks."""
        if self._revocations is None:
            # Kept on disk: a node restarted while the auth server is down still judges logins.
            self._revocations = RevocationWatch(client, self.clock,
                                                state=self.config.data_dir / "cache" / "access.json")
            self._supervise("revocations", self._revocations.run)
            self._supervise("revocation watch", self._revocations.watch)
        return self._revocations

    def _task_failed(self, name: str, reason: str) -> None:
        self.health.degraded(name, f"task failed ({reason})")

    async def start(self) -> None:
        cfg = self.config
        await self.supervisor.start()
        data_dir = _prepare_data_dir(cfg.data_dir)
        # Diagnostics first, so /readyz can say what is still starting (or stuck joining).
        for role, enabled in (("auth", cfg.auth.enabled), ("proxy", cfg.proxy.enabled),
                              ("node", cfg.ssh.enabled)):
            if enabled:
                self.health.register(role)
        if cfg.diag_addr is not None:
            runner, port = await diag.serve(self.health, cfg.diag_addr.host, cfg.diag_addr.port,
                                            sock=self._listen("diagnostics", cfg.diag_addr))
            self.runners.append(runner)
            self.stack.push_async_callback(runner.cleanup)
            self.ports["diag"] = port
        self.host_uuid = load_or_create_host_uuid(data_dir)
        if cfg.auth.enabled:
            await self._start_auth(data_dir)
        if cfg.proxy.enabled:
            await self._start_proxy(data_dir)
        if cfg.ssh.enabled:
            await self._start_node(data_dir)
        for role, follower in self.rotation.items():  # once every hook is in place
            self._supervise(f"{role.lower()}-certs", follower.run)
        self.listeners.close_unused()
        if cfg.pid_file:
            # Atomic (temp file + rename): across a graceful restart the file always exists and
            # names a live process, which systemd's PIDFile= relies on.
            write_secret(cfg.pid_file, f"{os.getpid()}\n", mode=0o644)

    def _throttle(self, listener: str) -> handshake_throttle.Throttle:
        """Make a listener's per-source handshake limits from `teleport.connection_limits`."""
        limits = self.config.connection_limits
        rates = (handshake_throttle.DEFAULT_RATES if limits.rates is None else tuple(
            handshake_throttle.Rate(r.period.total_seconds(), r.average, r.burst)
            for r in limits.rates))
        return handshake_throttle.Throttle(
            listener, rates, limits.max_unauthenticated_per_source
            or handshake_throttle.DEFAULT_MAX_PENDING)  # paced by the monotonic clock

    def _listen(self, service: str, addr: HostPort) -> socket.socket:
        """Take the inherited listener for service, or bind addr; a failure is one line."""
        try:
            return self.listeners.get(service, addr)
        except OSError as err:
            reason = "address already in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
            raise BadParameter(f"{service} service cannot listen on {addr}: {reason}") from None

    def spawn_successor(self) -> subprocess.Popen[bytes]:
        """Start a new daemon on our listening sockets (USR2, HUP); return it."""
        child = self.listeners.spawn_successor()
        self.handed_over = True
        logging.getLogger("teleport").info("Started a new teleport process %d on the same sockets.",
                                           child.pid)
        return child

    async def wait_for_successor(self, child: subprocess.Popen[bytes], stop: asyncio.Event,
                                 poll: float = 0.05) -> bool:
        """Wait until the successor has taken over the pid file; False if it exited instead.

        Exiting sooner would leave the pid file naming a dead process until the successor has
        started, and systemd (PIDFile=) would consider the service gone.
        """
        pid_file = Path(self.config.pid_file) if self.config.pid_file else None
        while pid_file is not None and not stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                if int(pid_file.read_text()) == child.pid:
                    return True
            if child.poll() is not None:
                self.handed_over = False  # nobody took over: the pid file is still ours
                return False
            await wait_event(stop, poll)
        return True

    async def drain(self, stop: asyncio.Event) -> None:
        """Stop accepting and wait until every SSH client has gone (or stop is set)."""
        servers = [s for s in (self.node, self.proxy_ssh) if s is not None]
        for server in servers:
            server.stop_accepting()
        if self.tunnels is not None:
            # New tunnels go to the successor; ours close when we exit and their nodes dial
            # again (the successor), while users' sessions over them finish here.
            self.tunnels.stop_accepting()
        if self.web is not None:
            await self.web.stop_accepting()
        for mux in (self.mux, self.auth_mux):
            if mux is not None:
                mux.stop_accepting()
        for runner in self.runners:
            for site in list(runner.sites):
                await site.stop()
        log_ = logging.getLogger("teleport")
        while any(s.connections for s in servers) and not stop.is_set():
            log_.debug("waiting for %d connections before exiting",
                       sum(len(s.connections) for s in servers))
            await wait_event(stop, 0.5)

    def diagnostics(self) -> str:
        """Describe what the process is doing, for the USR1 dump."""
        tasks = asyncio.all_tasks()
        names: dict[str, int] = {}
        for task in tasks:
            name = task.get_name().split("-")[0] if task.get_name().startswith("Task-") else task.get_name()
            names[name] = names.get(name, 0) + 1
        lines = [f"pid {os.getpid()}, cluster {self.cluster_name!r}, ports "
                 + ", ".join(f"{k}={v}" for k, v in sorted(self.ports.items())),
                 f"memory: {_memory()}",
                 f"tasks: {len(tasks)} (" + ", ".join(f"{n}={c}" for n, c in sorted(names.items())) + ")",
                 "supervised: " + (", ".join(
                     name + (f" (failed {self.supervisor.failures[name]}x, restarting)"
                             if self.supervisor.failures.get(name) else "")
                     for name in self.supervisor.names()) or "none")]
        for name, server in (("node", self.node), ("proxy", self.proxy_ssh)):
            if server is not None:
                lines.append(f"{name}: {len(server.connections)} SSH connections")
        if self.tunnels is not None:
            lines.append(f"proxy: {len(self.tunnels.tunnels)} nodes tunnelled here")
        if self.tunnel_pool is not None:
            lines.append(f"node: reverse tunnels to {len(self.tunnel_pool.tunnels)} of "
                         f"{len(self.tunnel_pool.proxies)} known proxies")
        if self.node is not None:
            lines.append(f"node: {len(self.node.children)} session processes")
        problems = self.health.problems()
        lines.append("ready" if not problems else "not ready: " + "; ".join(
            f"{k}: {v}" for k, v in sorted(problems.items())))
        return "\n".join(lines)

    async def close(self) -> None:
        await self.supervisor.close()
        await self.stack.aclose()
        pid_file = Path(self.config.pid_file) if self.config.pid_file else None
        with contextlib.suppress(OSError, ValueError):
            # Once a successor was started the file is its own (it may not have written it yet):
            # removing it would leave a moment with no pid file at all.
            if (pid_file is not None and not self.handed_over
                    and int(pid_file.read_text()) == os.getpid()):
                pid_file.unlink()

    # --- auth ---------------------------------------------------------------------------------

    async def _open_backend(self, data_dir: Path) -> Backend:
        backend = await open_backend(self.config.storage, data_dir, self.clock)
        self.stack.push_async_callback(backend.close)
        return backend

    async def _start_auth(self, data_dir: Path) -> None:
        cfg = self.config
        backend = await self._open_backend(data_dir)
        audit = await build_audit_log(cfg.storage.audit_events_uri, data_dir, self.clock,
                                      region=cfg.storage.region)
        await self.stack.enter_async_context(audit)
        settings = AuthSettings(
            cluster_name=cfg.auth.cluster_name,
            second_factor=cfg.auth.second_factor,
            webauthn_rp_id=cfg.auth.mfa.rp_id,
            webauthn_origins=cfg.auth.mfa.origins,
            passwordless=cfg.auth.mfa.passwordless,
            auth_type=cfg.auth.auth_type,
            connector_name=cfg.auth.connector_name,
            ca_signature_algo=cfg.ca_signature_algo,
            static_tokens=tuple(cfg.auth.static_tokens),
            # --- session recordings (issue 5, recording engineer; lead to review) ---
            session_recording=cfg.auth.session_recording,
            disconnect_expired_cert=cfg.auth.disconnect_expired_cert,
            client_idle_seconds=(cfg.auth.client_idle_timeout.total_seconds()
                                 if cfg.auth.client_idle_timeout else 0.0),
            recordings_dir=sessions_dir(cfg.storage.audit_sessions_uri, data_dir),
            recordings_store=sessions_store(cfg.storage.audit_sessions_uri,
                                            region=cfg.storage.region,
                                            credentials_path=cfg.storage.credentials_path),
            # --- end session recordings ---
            insecure=cfg.insecure,
        )
        if cfg.insecure:
            log.warning("--insecure: the HTTPS certificates of trusted root clusters' proxies "
                        "are not verified; anyone between could pose as a root cluster.")
        auth = AuthServer(backend, audit, self.clock, settings)
        await auth.init(bootstrap=cfg.bootstrap)  # ignored once the backend is initialised
        self.auth = auth
        self.cluster_name = auth.cluster_name
        listen = cfg.auth.listen_addr
        addresses = _host_addresses(cfg.nodename, listen, cfg.auth.public_addrs)
        identity = await issue_local_identity(auth, data_dir, "Auth", self.host_uuid,
                                              cfg.nodename, addresses)
        # tctl on this host talks to the API with this Admin identity.
        admin = await issue_local_identity(auth, data_dir, "Admin", self.host_uuid,
                                           cfg.nodename, [])
        # Its certificate and client CAs change for new connections as the CAs rotate.
        tls = tlsconfig.LiveServerContext(identity.tls_cert.encode(),
                                          identity.tls_private_key.encode(),
                                          [c.encode() for c in identity.tls_ca_certs],
                                          # Optional only so that a new host can join with a
                                          # token; every other route refuses a caller without one.
                                          require_client_cert=False)
        # Served through a TLS-only multiplexer, so each source's new connections are paced
        # before their handshake; a verified client certificate gives its token back.
        rates = [handshake_throttle.Rate(r.period.total_seconds(), r.average, r.burst)
                 for r in (cfg.auth.join_limits.failed_per_source, cfg.auth.join_limits.total)]
        runner = await auth_api.serve(auth, tls.context, listen.host, listen.port, bind=False,
                                      join_limits=JoinLimits(*rates))
        self.stack.push_async_callback(runner.cleanup)
        self.auth_mux = mux = Multiplexer(
            {Protocol.TLS: lambda sock: auth_api.serve_socket(runner, tls.context, sock)},
            name="auth", throttle=self._throttle("auth"))
        await self.stack.enter_async_context(mux)
        await mux.start(self._listen("auth", listen))
        self.ports["auth"] = mux.port
        self.health.ok("auth")
        advertise = cfg.auth.public_addrs[0] if cfg.auth.public_addrs else HostPort(
            cfg.nodename if listen.host in ("0.0.0.0", "::", "") else listen.host,
            self.ports["auth"])

        async def announce_auth() -> None:
            failing = False
            while True:
                record = Server(kind="auth_server", metadata=Metadata(
                    name=self.host_uuid, expires=self.clock.now() + SERVER_TTL),
                    spec=ServerSpec(addr=str(advertise), hostname=cfg.nodename,
                                    version=__version__))
                try:
                    await auth.hosts.upsert_server(record)
                    failing = False
                except TeleportError as err:  # nodes and proxies will not learn of us
                    if not failing:
                        log.warning("cannot announce this auth server at %s: %s", advertise, err)
                    failing = True
                await asyncio.sleep(HEARTBEAT_INTERVAL)

        self._supervise("auth-heartbeat", announce_auth)
        # Several auth servers may share the backend: follow what the others change.
        self._supervise("auth-changes", auth.follow_changes)
        self._supervise("auth-rotation", auth.rotate_when_due)
        if settings.recordings_store is not None:  # staged recordings into the shared store
            self._supervise("auth-recordings", auth.sessions.ship_recordings)
        # As a leaf: follow the trusted roots' CAs as they rotate (trusted clusters).
        self._supervise("auth-follow-roots", auth.trusted_clusters.follow_roots)
        # The auth server's own identities follow its CAs' rotations (teleport.service.rotation).
        follower = self._follow_rotation(identity, local_issuer(
            auth, "Auth", self.host_uuid, cfg.nodename, addresses), fresh=True)
        follower.on_server(lambda i: tls.update(cert_pem=i.tls_cert.encode(),
                                                key_pem=i.tls_private_key.encode()))
        # Our TLS CAs as they rotate, and the trusted roots' for their users (trusted clusters).
        client_cas = leafclusters.AuthClientCAs(auth, tls)
        follower.on_trust(client_cas.set_own)
        self._supervise("auth-root-cas", client_cas.follow)
        self._follow_rotation(admin, local_issuer(auth, "Admin", self.host_uuid, cfg.nodename,
                                                  []), serves=False)
        self._supervise("auth-ca-watch", lambda: watch_local_cas(auth, self._rotation_changed))
        logging.getLogger("teleport.auth").info("Auth service %s is starting on %s.", __version__,
                 HostPort(listen.host, self.ports["auth"]))

    # --- identities for proxy and node ---------------------------------------------------------

    def _auth_addrs(self) -> list[HostPort]:
        """Return where the auth API is: this process, the learned list, else the config."""
        if "auth" in self.ports:
            listen = self.config.auth.listen_addr
            host = "127.0.0.1" if listen.host in ("0.0.0.0", "::", "") else listen.host
            return [HostPort(host, self.ports["auth"])]
        if self._auth_loopback is not None:
            return [self._auth_loopback.addr]
        if self._auth_list is not None:
            return self._auth_list()
        return starting_auth_servers(self.config.data_dir, self.config.auth_servers)

    async def _identity(self, data_dir: Path, role: str, addresses: list[str]) -> IdentityFile:
        if self.auth is not None:
            return await issue_local_identity(self.auth, data_dir, role, self.host_uuid,
                                              self.config.nodename, addresses)
        try:
            return IdentityFile.load(data_dir, role)
        except NotFound:
            pass
        token = self.config.auth_token
        if not token:
            raise BadParameter(
                f"this host has not joined a cluster as {role.lower()} yet: start it with "
                "--token=<token from 'tctl nodes add'> --auth-server=<host:3025> --ca-pin=<pin>")
        result = await join(self._auth_addrs(), token=token, role=role, host_uuid=self.host_uuid,
                            nodename=self.config.nodename, addresses=addresses,
                            ca_pins=self.config.ca_pins, warn=_warn)
        addr = result.via
        try:
            via_proxy = await is_proxy(addr)
        except TeleportError as err:
            raise ConnectionProblem(f"joined through {addr}, but cannot tell whether it is a "
                                    f"proxy or an auth server ({err}); nothing was saved, "
                                    "start again") from None
        # Written only now: a refused join (wrong pin, bad token) leaves nothing behind.
        result.identity.save(data_dir)
        if via_proxy:
            # Joined through a proxy's web port: the auth servers it named are out of reach,
            # the proxy is the way in from now on (a node's reverse tunnel, else its web port).
            save_join_proxy(data_dir, addr)
            save_auth_servers(data_dir, [], [addr])
        else:
            save_auth_servers(data_dir, result.auth_servers, [addr])
        logging.getLogger(f"teleport.{role.lower()}").info(
            "Joined cluster %s as %s.", result.cluster_name, self.host_uuid)
        return result.identity

    def _follow_rotation(self, identity: IdentityFile, issue: Issue, *,
                         fetch_ca: Callable[[str], Awaitable[Any]] | None = None,
                         **options: Any) -> IdentityFollower:
        """Make what keeps a role's identity in step with the CAs (run once the process has
        started, every hook in place); `fetch_ca` defaults to the auth server in this process."""
        role = identity.role
        assert fetch_ca is not None or self.auth is not None
        component = f"{role.lower()} certificates"

        def lost(reason: str | None) -> None:
            if reason is None:
                self.health.ok(component)
            else:
                self.health.degraded(component, reason)

        follower = IdentityFollower(
            identity, self.config.data_dir, fetch_ca=fetch_ca or self.auth.certs.get_ca,  # type: ignore[union-attr]
            issue=issue, now=self.clock.now, on_lost=lost, **options)
        self.rotation[role] = follower
        return follower

    def _rotation_changed(self) -> None:
        for follower in self.rotation.values():
            follower.check_soon()

    def _host_follower(self, identity: IdentityFile, client: AuthClient, addresses: list[str],
                       reach: Callable[[], list[HostPort]]) -> IdentityFollower:
        """Follow the CAs with a node's or proxy's identity: certificates re-issued through the
        auth API (in-process when auth runs here), used by its auth client at once.

        reach: where the cluster's CA can be fetched anonymously when the auth server refuses
        us, to tell a CA rotated while we were away from an outage.
        """
        nodename = self.config.nodename
        if self.auth is not None:
            follower = self._follow_rotation(identity, local_issuer(
                self.auth, identity.role, self.host_uuid, nodename, addresses), fresh=True)
        else:
            async def issue(ssh_public_key: str, tls_public_key: bytes) -> Any:
                return await client.reissue_host_certs(
                    nodename=nodename, ssh_public_key=ssh_public_key,
                    tls_public_key=tls_public_key, addresses=addresses)

            follower = self._follow_rotation(
                identity, issue, fetch_ca=client.get_ca,
                diagnose=refused_since_rotation(reach, identity.role, self.config.data_dir))
        follower.on_client(lambda i: client.use_tls(cert=i.tls_cert.encode(),
                                                    key=i.tls_private_key.encode()))
        follower.on_trust(lambda cas: client.use_tls(ca_pems=cas))
        self._revocation_watch(client).on_ca_change(follower.check_soon)
        return follower

    async def _client(self, identity: IdentityFile, cached: bool = False) -> AuthClient:
        client: AuthClient
        if cached:
            # Either cache type is this in-memory copy: nothing here needs it to outlive a restart.
            cache = CachedAuth.from_identity(identity, self._auth_addrs())
            self._supervise("cache", cache.run)
            client = cache
        else:
            client = AuthClient.from_identity(identity, self._auth_addrs())
        self.stack.push_async_callback(client.close)
        self._follow_auth_servers(client)
        if not self.cluster_name:
            # From our own certificate, not a call: a joined host starts while auth is down.
            self.cluster_name = identity_from_cert(identity.tls_cert.encode()).cluster
        return client

    def _follow_auth_servers(self, client: AuthClient) -> None:
        """Keep client on the auth servers online (authservers.json), when this process talks
        to them directly: not with auth in this process, nor through a proxy's tunnel."""
        if "auth" in self.ports or self._auth_loopback is not None:
            return
        servers = self._auth_list
        if servers is None:
            servers = self._auth_list = AuthServerList(self.config.data_dir, self._auth_addrs(),
                                                       self.config.auth_servers)
            self._supervise("auth-servers", lambda: servers.run(client))
        servers.attach(client)

    async def _audit(self, client: AuthClient, data_dir: Path, component: str) -> BufferedEmitter:
        """Return the emitter a node or proxy audits through, off every session's critical path.

        Entered after the client and before the server that uses it: on stop, the server's last
        events are queued, get a short grace to reach the auth server, and the rest stay spooled
        in data_dir/log/upload/events/<component> for the next start. With auth in this process
        the client still goes through the auth API, so the same holds.
        """
        emitter = BufferedEmitter(client, data_dir / "log" / "upload" / "events" / component,
                                  component=component)
        return await self.stack.enter_async_context(emitter)

    # --- proxy --------------------------------------------------------------------------------

    async def _start_proxy(self, data_dir: Path) -> None:
        cfg = self.config.proxy
        web_public = cfg.public_addrs[0] if cfg.public_addrs else HostPort(
            self.config.nodename, cfg.web_listen_addr.port)
        ssh_public = cfg.ssh_public_addrs[0] if cfg.ssh_public_addrs else HostPort(
            web_public.host, cfg.listen_addr.port)
        addresses = _host_addresses(self.config.nodename, cfg.listen_addr,
                                    [web_public, ssh_public])
        identity = await self._identity(data_dir, "Proxy", addresses)
        # Presented by its servers; `using` is what it is as a client (mid-rotation, newer).
        using = identity if self.auth is not None else client_identity(data_dir, identity)
        # Routing and node lists fall back on the cache's copy, CAs and ping come from it;
        # writes still reach the auth server.
        client = await self._client(using, cached=self.config.cache.enabled)
        trust = TrustedCAs(client, identity)
        self._supervise("proxy-trust", trust.run)
        if isinstance(client, CachedAuth):  # the cache hears of a CA change within a second
            client.subscribe(lambda kind: trust.refresh_soon() if kind == "cert_authority"
                             else None)
        revocations = self._revocation_watch(client)
        audit = await self._audit(client, data_dir, "proxy")
        # Nodes behind NAT dial in here; routing reaches them over their tunnels.
        tunnel_on_web = cfg.tunnel_listen_addr == cfg.web_listen_addr
        tunnels = TunnelServer(
            host_private_key=identity.ssh_private_key.encode(), host_cert=identity.ssh_cert,
            trusted_host_cas=trust.host_keys, cluster_name=self.cluster_name,
            auth_addrs=self._auth_addrs, emitter=audit, clock=self.clock,
            remote_host_cas=trust.remote_host_keys,
            max_connections=self.config.connection_limits.max_connections,
            algorithms=self.config.ssh_algorithms)
        await self.stack.enter_async_context(tunnels)
        tunnels.throttle = self._throttle("reversetunnel")
        await tunnels.start(cfg.tunnel_listen_addr.host, cfg.tunnel_listen_addr.port,
                            sock=None if tunnel_on_web else self._listen(
                                "reverse tunnel", cfg.tunnel_listen_addr),
                            bind=not tunnel_on_web)
        self.tunnels = tunnels
        peers = await self.stack.enter_async_context(PeerDialer(
            TunnelCredentials(host_uuid=self.host_uuid, private_key=using.ssh_private_key,
                            cert=using.ssh_cert, cluster=self.cluster_name,
                            trusted_host_cas=trust.host_keys,
                            algorithms=self.config.ssh_algorithms),
            lambda: client.list_servers("proxy"), self.clock))
        resolver = NodeResolver(client, self.cluster_name, tunnels, peers,
                                signer=clientaddr.Signer(using.ssh_private_key,
                                                         using.ssh_cert), clock=self.clock)
        # --- recording proxy (issue 5): `session_recording: proxy` records here, not on nodes ---
        # Its own spool: a node in this process uploads whatever finished files sit in its spool.
        recordings = Recordings(data_dir / "log" / "upload" / "proxy" / "sessions" / "default",
                                client, clock=self.clock, records_in="proxy")
        await self.stack.enter_async_context(recordings)
        self._supervise("proxy-recordings", recordings.run)
        recording = RecordingProxy(auth=client, recordings=recordings,
                                   resolve_node=resolver.resolve_node,
                                   dial_node=resolver.dial_node,
                                   trusted_user_cas=trust.user_keys,
                                   trusted_host_cas=trust.host_keys, emitter=audit,
                                   clock=self.clock, revoked=revocations.refusal,
                                   algorithms=self.config.ssh_algorithms)
        await self.stack.enter_async_context(recording)
        # --- end recording proxy ---

        ssh_server = ProxySSHServer(
            host_private_key=identity.ssh_private_key.encode(), host_cert=identity.ssh_cert,
            trusted_user_cas=trust.user_keys, cluster_name=self.cluster_name,
            dial=resolver.dial, emitter=audit, clock=self.clock,
            # Every cluster of a trust names its nodes `<node>.<cluster>`; one whose tunnel
            # is down is said to be offline, not mistaken for one of our node names.
            dial_cluster=tunnels.dial_cluster, leaves=lambda: trust.remote_host_keys(),
            max_connections=self.config.connection_limits.max_connections,
            max_users=self.config.connection_limits.max_users, recording=recording,
            revoked=revocations.refusal, algorithms=self.config.ssh_algorithms)
        await self.stack.enter_async_context(ssh_server)
        self.proxy_ssh = ssh_server
        revocations.enforce_on(ssh_server)
        # The SSH port may be the web port: then the web port's multiplexer serves it alone.
        # Port 0 twice asks for two free ports (tests), not for one shared port.
        ssh_on_web = cfg.listen_addr == cfg.web_listen_addr and cfg.listen_addr.port != 0
        ssh_server.throttle = self._throttle("proxy")
        await ssh_server.start(cfg.listen_addr.host, cfg.listen_addr.port,
                               sock=None if ssh_on_web else self._listen("proxy SSH",
                                                                         cfg.listen_addr),
                               bind=not ssh_on_web)
        self.ports["proxy_ssh"] = ssh_server.port
        if ssh_public.port == 0 or cfg.listen_addr.port == 0:
            ssh_public = HostPort(ssh_public.host, ssh_server.port)

        if cfg.https_keypairs:
            pairs = webcerts.read_keypairs(cfg.https_keypairs)
        else:
            pairs = [await webcerts.self_signed(web_public.host, self.clock, data_dir)]
            if not cfg.insecure_no_tls:
                log.warning("Serving a self-signed certificate for %s: browsers will warn and "
                            "tsh needs --insecure; set proxy_service.https_keypairs to serve "
                            "a real one.", web_public.host)
        web = WebProxy(auth=client, cluster_name=self.cluster_name, keypairs=pairs,
                       client_ca_pems=trust.tls_certs,
                       public_addr=str(web_public), ssh_public_addr=str(ssh_public),
                       clock=self.clock, hsts=bool(cfg.https_keypairs),
                       revoked=revocations.tls_refusal, serve_ssh=ssh_server.serve_socket,
                       trusted_host_cas=trust.host_keys, plain_http=cfg.insecure_no_tls,
                       roles=lambda: revocations.roles,
                       leaves=lambda: tunnels.clusters, leaf_host_cas=trust.remote_host_keys,
                       ssh_algorithms=self.config.ssh_algorithms)
        await self.stack.enter_async_context(web)
        trust.on_tls_change(web.refresh_client_cas)  # a rotated TLS CA's users' certificates
        # As a leaf: a tunnel to each trusted root, dialling our nodes for it (started below).
        leaves = await self.stack.enter_async_context(leafclusters.RootTunnels(
            client, TunnelCredentials(host_uuid=self.host_uuid, private_key=using.ssh_private_key,
                                      cert=using.ssh_cert, cluster="",
                                      trusted_host_cas=list,
                                      algorithms=self.config.ssh_algorithms),
            trust.remote_host_keys, resolver.dial, self.clock,
            dial_auth=lambda: leafclusters.dial_first(self._auth_addrs())))
        self._follow_proxy_rotation(identity, client, addresses, ssh_server, tunnels, peers,
                                    resolver, leaves)
        if cfg.insecure_no_tls:
            log.warning("The web port serves plain HTTP (--insecure-no-tls): terminate TLS "
                        "in front of it.")
        elif cfg.https_keypairs:
            self._supervise("proxy-https-keypairs",
                            lambda: webcerts.watch(cfg.https_keypairs, web.set_keypairs))
        web_sock = self._listen("proxy web", cfg.web_listen_addr)
        # The web port always sorts connections by their first bytes: TLS for the auth server
        # (nodes and proxies joining through here) is relayed to it, other TLS is the web
        # server's, SSH the tunnel server's or the SSH proxy's when either shares the port.
        await web.start(cfg.web_listen_addr.host, cfg.web_listen_addr.port, bind=False)
        self.web = web
        relay = await self.stack.enter_async_context(AuthRelay(
            self._auth_addrs, leaf_auth=leafclusters.leaf_auth_dialer(tunnels)))
        handlers: dict[Protocol, Handler] = {
            Protocol.HTTP if cfg.insecure_no_tls else Protocol.TLS: web.serve_socket,
            Protocol.AUTH: relay.serve_socket}
        if tunnel_on_web:
            handlers[Protocol.TUNNEL] = tunnels.serve_socket
        if tunnel_on_web or ssh_on_web:
            handlers[Protocol.SSH] = ssh_server.serve_socket
        self.ports["proxy_web"] = await self._multiplex(web_sock, handlers)
        web.self_addr = HostPort(_loopback_for(cfg.web_listen_addr.host), self.ports["proxy_web"])
        if ssh_on_web:
            self.ports["proxy_ssh"] = self.ports["proxy_web"]
            if ssh_public.port == 0:
                ssh_public = HostPort(ssh_public.host, self.ports["proxy_web"])
                web.ssh_public_addr = str(ssh_public)
        if web_public.port == 0:
            web_public = HostPort(web_public.host, self.ports["proxy_web"])
            web.public_addr = str(web_public)
        self.ports["tunnel"] = self.ports["proxy_web"] if tunnel_on_web else tunnels.port
        web.tunnel_public_addr = str(web_public if tunnel_on_web
                                     else HostPort(web_public.host, self.ports["tunnel"]))
        # This proxy's own tunnel address (not a balancer's): where peers reach its tunnels.
        tunnel_listen = cfg.web_listen_addr if tunnel_on_web else cfg.tunnel_listen_addr
        peer_addr = HostPort(self.config.nodename if tunnel_listen.host in ("0.0.0.0", "::", "")
                             else tunnel_listen.host, self.ports["tunnel"])

        def proxy_record() -> Server:
            return Server(kind="proxy", metadata=Metadata(name=self.host_uuid),
                          spec=ServerSpec(addr=str(ssh_public), hostname=self.config.nodename,
                                          public_addr=str(web_public), peer_addr=str(peer_addr),
                                          version=__version__))

        self._supervise("proxy-heartbeat",
                        lambda: heartbeat_forever(client, proxy_record, self.clock, self.health))
        # Trusted clusters: as a root, report the leaves whose tunnels we hold; as a leaf, keep
        # a tunnel to each root, dialling our nodes for it (teleport.service.leafclusters).
        self._supervise("proxy-leaf-heartbeats",
                        lambda: leafclusters.report_leaves(client, tunnels))
        self._supervise("proxy-root-tunnels", leaves.run)
        logging.getLogger("teleport.proxy").info("Web proxy service %s is starting on %s.", __version__,
                 HostPort(cfg.web_listen_addr.host, self.ports["proxy_web"]))
        logging.getLogger("teleport.proxy").info("SSH proxy service %s is starting on %s.", __version__,
                 HostPort(cfg.listen_addr.host, self.ports["proxy_ssh"]))

    def _follow_proxy_rotation(self, identity: IdentityFile, client: AuthClient,
                               addresses: list[str], ssh_server: ProxySSHServer,
                               tunnels: TunnelServer, peers: PeerDialer,
                               resolver: NodeResolver, leaves: leafclusters.RootTunnels) -> None:
        """Swap the proxy's certificates as the CAs rotate: its SSH and tunnel servers' host
        key for new connections, what it dials peers and signs users' addresses with."""
        follower = self._host_follower(identity, client, addresses, self._auth_addrs)

        def serve(new: IdentityFile) -> None:
            for server in (ssh_server, tunnels):
                server.set_host_key(new.ssh_private_key.encode(), new.ssh_cert)

        def dial(new: IdentityFile) -> None:
            peers.creds = dataclasses.replace(peers.creds, private_key=new.ssh_private_key,
                                              cert=new.ssh_cert)
            resolver.signer = clientaddr.Signer(new.ssh_private_key, new.ssh_cert)
            leaves.use_identity(new.ssh_private_key, new.ssh_cert)

        follower.on_server(serve)
        follower.on_client(dial)
        if isinstance(client, CachedAuth):  # the cache hears of a CA change within a second
            client.subscribe(lambda kind: follower.check_soon() if kind == "cert_authority"
                             else None)

    async def _multiplex(self, sock: socket.socket,
                         handlers: dict[Protocol, Handler]) -> int:
        """Serve the web port's protocols from one listener (teleport.proxy.mux); its port."""
        mux = Multiplexer(handlers, throttle=self._throttle("proxy web"))
        await self.stack.enter_async_context(mux)
        await mux.start(sock)
        self.mux = mux
        if Protocol.SSH in handlers:
            logging.getLogger("teleport").debug(
                "Setup Proxy: Reverse tunnel proxy and web proxy listen on the same port, "
                "multiplexing is on.")
        return mux.port

    # --- node ---------------------------------------------------------------------------------

    async def _start_tunnels(self, identity: IdentityFile, proxy: HostPort) -> TunnelPool:
        """Make the node's tunnel pool and the auth API's loopback relay (not dialling yet)."""
        cluster = identity_from_cert(identity.tls_cert.encode()).cluster
        trusted: list[str] = list(identity.host_ca_keys)
        creds = TunnelCredentials(host_uuid=self.host_uuid, private_key=identity.ssh_private_key,
                                  cert=identity.ssh_cert, cluster=cluster,
                                  trusted_host_cas=lambda: trusted,
                                  algorithms=self.config.ssh_algorithms)

        async def serve_ssh(sock: socket.socket, peer: tuple[str, int]) -> None:
            if self.node is None:
                sock.close()
                return
            await self.node.serve_socket(sock, peer=peer)

        pool = TunnelPool(lambda: tunnel_addr(proxy), creds, self.clock, serve_ssh,
                          on_change=self._tunnels_changed)
        self.tunnel_pool = await self.stack.enter_async_context(pool)
        self._auth_loopback = await self.stack.enter_async_context(AuthLoopback(pool))
        self.health.register("tunnel", "no reverse tunnel to a proxy yet")
        return pool

    def _tunnels_changed(self, connected: int) -> None:
        if connected:
            self.health.ok("tunnel")
        else:
            self.health.degraded("tunnel", "no reverse tunnel to a proxy")

    async def _start_node(self, data_dir: Path) -> None:
        cfg = self.config.ssh
        addresses = _host_addresses(self.config.nodename, cfg.listen_addr, cfg.public_addrs)
        identity = await self._identity(data_dir, "Node", addresses)
        # Presented by its SSH server; `using` is what it is as a client (mid-rotation, newer).
        using = identity if self.auth is not None else client_identity(data_dir, identity)
        proxy = None if self.auth is not None else load_join_proxy(data_dir)
        pool = await self._start_tunnels(using, proxy) if proxy is not None else None
        client = await self._client(using)
        trust = TrustedCAs(client, identity)
        self._supervise("node-trust", trust.run)
        # A CA change reaches the node's trust within a second, not at its 30 s re-read.
        self._revocation_watch(client).on_ca_change(trust.refresh_soon)
        if pool is not None:
            pool.creds = dataclasses.replace(pool.creds, trusted_host_cas=trust.host_keys)
        labels = dict(cfg.labels)
        dynamic = DynamicLabels(cfg.commands)
        if cfg.commands:
            self._supervise("node-labels", dynamic.run)

        def all_labels() -> dict[str, str]:
            return {**labels, **{k: v.result for k, v in dynamic.snapshot().items()}}

        proxy_addr = ""
        revocations = self._revocation_watch(client)

        async def follow_proxy_addr() -> None:
            """Keep the proxy address sessions name (`teleport status`'s Session URL): every
            second until a proxy has announced itself (in one process the node may ask
            first), then every minute."""
            nonlocal proxy_addr
            while True:
                with contextlib.suppress(TeleportError):
                    proxies = await client.list_servers("proxy")
                    proxy_addr = proxies[0].spec.public_addr if proxies else ""
                await asyncio.sleep(PROXY_ADDR_REFRESH if proxy_addr else 1.0)

        audit = await self._audit(client, data_dir, "node")
        node = NodeServer(
            host_private_key=identity.ssh_private_key.encode(), host_cert=identity.ssh_cert,
            trusted_user_cas=trust.user_keys, cluster_name=self.cluster_name,
            server_id=self.host_uuid, nodename=self.config.nodename, labels=all_labels,
            emitter=audit, proxy_addr=lambda: proxy_addr, clock=self.clock,
            max_connections=self.config.connection_limits.max_connections,
            max_users=self.config.connection_limits.max_users, registry=client,
            revoked=revocations.node_check(self.host_uuid, trust.local_roles),
            roles=lambda: revocations.roles,
            roles_of=trust.local_roles, algorithms=self.config.ssh_algorithms)
        # A proxy dialling this node over TCP names the user's address in a signed line first.
        node.client_addr = clientaddr.checker(trusted_host_cas=trust.host_keys,
                                              cluster=self.cluster_name,
                                              node_uuid=self.host_uuid, now=self.clock.now)
        # --- session recordings (issue 5, recording engineer; lead to review) ---
        # Closed after the node (the stack unwinds in reverse): sessions hung up on shutdown
        # still finish their recordings, which the next start uploads.
        node_recordings: Recordings = await self.stack.enter_async_context(
            Recordings(data_dir / "log" / "upload" / "sessions" / "default", client,
                       clock=self.clock))
        node.recordings = node_recordings
        # The same ping answer carries the session policy (disconnect_expired_cert, idle).
        node.policy = node_recordings.session_policy
        self._supervise("node-recordings", node_recordings.run)
        # --- end session recordings ---
        if cfg.pam.enabled:  # account and session stacks for every session (teleport.srv.pam)
            node.pam = PamService(cfg.pam.service_name)
            node.pam.warn_if_missing()
        node.throttle = self._throttle("node")
        await self.stack.enter_async_context(node)
        self.node = node
        revocations.enforce_on(node)
        self._follow_node_rotation(identity, client, addresses, node, pool, proxy)
        node_log = logging.getLogger("teleport.node")
        if pool is not None:
            # Behind NAT: no port; users come in over the tunnels (ssh_service.listen_addr unused).
            await node.start(cfg.listen_addr.host, 0, bind=False)
            self._supervise("node-tunnels", pool.run)

            async def learn_proxies() -> None:
                while True:
                    with contextlib.suppress(TeleportError):
                        pool.set_proxies({p.metadata.name
                                          for p in await client.list_servers("proxy")})
                    await asyncio.sleep(PROXY_REFRESH)

            self._supervise("node-proxies", learn_proxies)
            advertise = ""
            node_log.info("Service %s is starting in reverse tunnel mode through %s.",
                          __version__, proxy)
        else:
            await node.start(cfg.listen_addr.host, cfg.listen_addr.port,
                             sock=self._listen("node SSH", cfg.listen_addr))
            self.ports["node"] = node.port
            advertise = str(cfg.public_addrs[0] if cfg.public_addrs else HostPort(
                _advertise_host(cfg.listen_addr.host), node.port))
            node_log.info("Service %s is starting on %s.", __version__,
                          HostPort(cfg.listen_addr.host, node.port))

        def node_record() -> Server:
            return Server(kind="node", metadata=Metadata(name=self.host_uuid, labels=labels),
                          spec=ServerSpec(addr=advertise, hostname=self.config.nodename,
                                          use_tunnel=pool is not None,
                                          cmd_labels=dynamic.snapshot(), version=__version__))

        async def node_heartbeat() -> None:
            await heartbeat_forever(client, node_record, self.clock, self.health)

        self._supervise("node-heartbeat", node_heartbeat)
        self._supervise("node-proxy-addr", follow_proxy_addr)


    def _follow_node_rotation(self, identity: IdentityFile, client: AuthClient,
                              addresses: list[str], node: NodeServer, pool: TunnelPool | None,
                              proxy: HostPort | None) -> None:
        """Swap the node's certificates as the CAs rotate: its SSH server's host key for new
        connections, and what its tunnel agent dials the proxies with."""
        # Behind a proxy the auth server is reached through the tunnel, which a dropped CA
        # closes too; the proxy's web port still answers anonymously.
        follower = self._host_follower(identity, client, addresses,
                                       (lambda: [proxy]) if proxy is not None
                                       else self._auth_addrs)
        follower.on_server(lambda new: node.set_host_key(new.ssh_private_key.encode(),
                                                         new.ssh_cert))
        if pool is not None:
            def dial(new: IdentityFile) -> None:
                pool.creds = dataclasses.replace(pool.creds, private_key=new.ssh_private_key,
                                                 cert=new.ssh_cert)

            follower.on_client(dial)


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _memory() -> str:
    """Return resident and peak memory from /proc, the way `ps` would show them."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return "unknown"
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return f"rss {fields.get('VmRSS', '?').strip()}, peak {fields.get('VmHWM', '?').strip()}"


#: Folders that older versions made with the umask's mode (0755); tightened on start.
_PRIVATE_FOLDERS = ("log", "log/upload", "log/upload/sessions", "log/upload/sessions/default",
                    "log/sessions", "log/sessions/default", "identity", "backend")


def _prepare_data_dir(path: Path) -> Path:
    try:
        ensure_private_dir(path)
        for sub in _PRIVATE_FOLDERS:
            if (path / sub).is_dir():
                os.chmod(path / sub, 0o700)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise BadParameter(f"data_dir {path} is not writable: {err.strerror}") from None
    return path


def _loopback_for(host: str) -> str:
    """Where this host reaches a listener bound to host: itself, or loopback for a wildcard."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _advertise_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _host_addresses(nodename: str, listen: HostPort, public: list[HostPort]) -> list[str]:
    names = [nodename, "localhost", "127.0.0.1", "::1", _advertise_host(listen.host)]
    names += [p.host for p in public]
    with contextlib.suppress(OSError):
        names.append(socket.gethostname())
    return list(dict.fromkeys(n for n in names if n))
