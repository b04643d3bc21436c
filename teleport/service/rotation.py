"""Follow the cluster's CA rotations with this process's own identities, without a restart.

One `IdentityFollower` per role identity (Node, Proxy; Auth and Admin when the auth server runs
here) compares the host and TLS CAs' `spec.rotation` and keys with the certificates it holds,
and acts per phase (`teleport.types.rotation`), within a second of a CA change it hears of and
at the latest every `CHECK_INTERVAL`:

- init: the new TLS CA is trusted (`on_trust`: the auth client's CA list, the auth server's
  client CAs); the SSH trust lists follow through `service.trust`;
- update_clients: new certificates (fresh keys) are issued by the new CA and used as a client
  (`on_client`: the auth client, the node's tunnel agent, a proxy's peer dialler and address
  signer); servers still present the old ones;
- update_servers: the new certificates are presented by servers too (`on_server`: SSH host
  keys, the tunnel server, the auth server's TLS certificate);
- rollback: new certificates from the old CA, which signs again, used everywhere;
- standby: the dropped CA is no longer trusted.

What a role holds survives a restart: `data_dir/identity/<role>.json` is what its servers
present; during update_clients the client's certificates live in `<role>.next.json` (0600) with
the rotations they were issued for, and `<role>.rotation.json` records the phase of each CA
last followed. Each step is decided by which CA key signed the certificates held, so it runs
once per phase and rotation, also after a restart or a missed phase. Connections already open
keep their certificates: live sessions survive.

The same re-issue renews a role's certificates two thirds into its X.509 certificate's life
(`RENEW_AT`; a year, `auth.authority.HOST_TLS_CERT_TTL`), so a running host never serves or
presents an expired one without any rotation.

A host whose certificates were signed by a CA that was dropped while it was away (offline for
the whole grace period), or whose certificate expired meanwhile, can no longer reach the auth
server; it says why in one line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from teleport.api.auth_models import IssuedCerts
from teleport.auth import authority
from teleport.auth.identity_file import IdentityFile
from teleport.auth.server import AuthServer
from teleport.backend.base import key
from teleport.errors import AccessDenied, BadParameter, TeleportError
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.keys.authname import auth_server_name
from teleport.types.resources import CertAuthority
from teleport.types.rotation import Phase, Rotation
from teleport.utils.addr import HostPort
from teleport.utils.fs import ensure_private_dir, write_secret

log = logging.getLogger("teleport.rotation")

#: The longest a host takes to notice a phase it was not told of (a lost watch stream).
CHECK_INTERVAL = 10.0
#: Wait this long after hearing of a CA change: `--type=all` writes the CAs one after another.
SETTLE = 0.3
#: The CAs a host identity is signed by: the SSH host certificate and the X.509 certificate.
FOLLOWED = ("host", "tls")
#: The phases in which a client must use certificates of the CA's active (signing) keys, and
#: those in which servers must present them too; otherwise any trusted key will do.
CLIENT_ACTIVE = frozenset({Phase.UPDATE_CLIENTS, Phase.UPDATE_SERVERS, Phase.ROLLBACK})
SERVER_ACTIVE = frozenset({Phase.UPDATE_SERVERS, Phase.ROLLBACK})
#: How far into its life a host's X.509 certificate is renewed (through the same re-issue as a
#: rotation), so that a running host never presents an expired one: a third of it is left to
#: retry through an outage of the auth server.
RENEW_AT = 2 / 3
#: A certificate longer-lived than a host's by more than this is renewed at once (an upgrade).
LONGER = timedelta(days=1)
#: How long the handshake that tells a dropped CA from an outage may take.
DIAGNOSE_TIMEOUT = 10.0
#: A backend watch on the CAs that fails is opened again after this long (doubling to 5 s).
WATCH_RETRY = 0.5

#: Read one CA (public parts): through the auth API, or the auth server in this process.
FetchCA = Callable[[str], Awaitable[CertAuthority]]
#: Sign this role's new SSH public key and TLS public key (PEM) with the CAs' active keys.
Issue = Callable[[str, bytes], Awaitable[IssuedCerts]]
IdentityHook = Callable[[IdentityFile], None]
TrustHook = Callable[[list[bytes]], None]
#: Say why the auth server refuses this identity for good (None: it does not, or cannot tell).
Diagnose = Callable[[IdentityFile], Awaitable[str | None]]


class Followed(BaseModel):
    """Which rotation of a CA, and which of its phases, a role's certificates are in step with."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    current_id: str = ""
    phase: Phase = Phase.STANDBY

    @classmethod
    def of(cls, rotation: Rotation) -> Followed:
        return cls(current_id=rotation.current_id, phase=rotation.phase)


class NextIdentity(BaseModel):
    """`<role>.next.json`: a role's client certificates during update_clients."""

    model_config = ConfigDict(extra="ignore")

    rotation: dict[str, Followed]
    identity: dict[str, object]


def next_path(data_dir: Path, role: str) -> Path:
    return data_dir / "identity" / f"{role.lower()}.next.json"


def state_path(data_dir: Path, role: str) -> Path:
    return data_dir / "identity" / f"{role.lower()}.rotation.json"


def load_next(data_dir: Path, identity: IdentityFile) -> IdentityFile | None:
    """Return the client certificates a role was given in update_clients, if it holds any."""
    path = next_path(data_dir, identity.role)
    try:
        kept = NextIdentity.model_validate_json(path.read_bytes())
        loaded = IdentityFile(**kept.identity)  # type: ignore[arg-type]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        log.warning("Ignoring %s (%s): the %s certificates are issued again if needed.", path,
                    _first_line(err), identity.role.lower())
        return None
    if (loaded.role, loaded.host_uuid) != (identity.role, identity.host_uuid):
        log.warning("Ignoring %s: it is not this host's %s identity.", path, identity.role)
        return None
    return loaded


def client_identity(data_dir: Path, identity: IdentityFile) -> IdentityFile:
    """Return what a role uses as a client on start: its update_clients certificates, if any."""
    return load_next(data_dir, identity) or identity


class IdentityFollower:
    """Keep one role's certificates in step with the host and TLS CAs' rotations."""

    def __init__(self, identity: IdentityFile, data_dir: Path, *, fetch_ca: FetchCA,
                 issue: Issue, now: Callable[[], datetime], serves: bool = True,
                 fresh: bool = False, interval: float = CHECK_INTERVAL,
                 diagnose: Diagnose | None = None,
                 on_lost: Callable[[str | None], None] | None = None) -> None:
        """serves: the role presents its certificates as a server (not so the Admin identity,
        whose one file is what tctl uses). fresh: the identity was just issued (the auth
        server's process issues its identities on every start), so no kept next one counts."""
        self.role = identity.role
        self.data_dir = data_dir
        self.current = identity
        self.serves = serves
        self.interval = interval
        self._fetch_ca = fetch_ca
        self._issue = issue
        self._now = now
        self._diagnose = diagnose
        self._on_lost = on_lost
        if fresh or not serves:
            self.next: IdentityFile | None = None
            next_path(data_dir, self.role).unlink(missing_ok=True)
        else:
            self.next = load_next(data_dir, identity)
        self._followed = self._load_state()
        self._trusted_tls = [c.encode() for c in self.client_identity.tls_ca_certs]
        self._client_hooks: list[IdentityHook] = []
        self._server_hooks: list[IdentityHook] = []
        self._trust_hooks: list[TrustHook] = []
        self._wake = asyncio.Event()
        self._wake.set()  # the first check right at start: a phase may have moved meanwhile
        #: Why the auth server refuses us, as last logged ("" while it does not).
        self._lost = ""
        self._failing = False

    @property
    def client_identity(self) -> IdentityFile:
        """The certificates this role uses as a client now (update_clients' when it has them)."""
        return self.next or self.current

    def on_client(self, hook: IdentityHook) -> None:
        """Call hook(identity) when the role must use other certificates as a client."""
        self._client_hooks.append(hook)

    def on_server(self, hook: IdentityHook) -> None:
        """Call hook(identity) when the role's servers must present other certificates."""
        self._server_hooks.append(hook)

    def on_trust(self, hook: TrustHook) -> None:
        """Call hook(pems) when the TLS CA's trusted certificates change (init, standby)."""
        self._trust_hooks.append(hook)

    def check_soon(self) -> None:
        """Check now rather than at the next interval: a CA changed."""
        self._wake.set()

    async def run(self) -> None:
        """Check at every CA change and every interval, until cancelled."""
        while True:
            try:
                # Not wait_for: on 3.11 it can swallow a cancel that comes as the event is set.
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
                await asyncio.sleep(SETTLE)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.check()
            except TeleportError as err:
                await self._refused(err)

    # --- one check ----------------------------------------------------------------------------

    async def check(self) -> None:
        """Bring the role's certificates and trust in step with the CAs as they are now."""
        cas = {ca_type: await self._fetch_ca(ca_type) for ca_type in (*FOLLOWED, "user")}
        self._trust(cas["tls"])
        rotations = {t: cas[t].spec.rotation for t in FOLLOWED}
        rolled_back = [t for t, r in rotations.items()
                       if r.phase is Phase.ROLLBACK and self._followed.get(t) != Followed.of(r)]
        if rolled_back:
            await self._reissue(cas, server=True, why=f"the {_names(rolled_back)} rotation "
                                "is rolled back: the old CA signs again")
        elif self.serves and not self._fits(self.current, cas, SERVER_ACTIVE):
            if self.next is not None and self._fits(self.next, cas, SERVER_ACTIVE):
                self._promote()
            else:
                await self._reissue(cas, server=True, why=self._why(rotations, SERVER_ACTIVE))
        if not self._fits(self.client_identity, cas, CLIENT_ACTIVE):
            await self._reissue(cas, server=not self.serves,
                                why=self._why(rotations, CLIENT_ACTIVE))
        if self.next is not None and not self._fits(self.next, cas, frozenset()):
            log.info("Dropping the %s certificates of the new CA: it is no longer trusted.",
                     self.role.lower())
            self.next = None
            next_path(self.data_dir, self.role).unlink(missing_ok=True)
            self._call(self._client_hooks, self.current)
        if self.next is None and (due := self._renewal_due(self.current, cas)) is not None:
            await self._reissue(cas, server=True, why=due)
        self._keep_trust_lists(cas)
        self._follow(rotations)
        self._back()

    def _renewal_due(self, identity: IdentityFile, cas: dict[str, CertAuthority]) -> str | None:
        """Say why the identity must be renewed now, if so: its TLS certificate nears its end,
        or lives longer than a host's may now (issued by an older version, for ten years).

        Not while a rotation holds new client certificates (they replace these soon anyway),
        nor when the certificate already ends with the CA (only a rotation extends it)."""
        start, end = tlskeys.validity(identity.tls_cert.encode())
        ca_end = min((tlskeys.validity(k.cert.encode())[1]
                      for k in cas["tls"].spec.active_keys.tls), default=end)
        if end - start > authority.HOST_TLS_CERT_TTL + LONGER:
            return "its TLS certificate lives longer than a host's may now"
        if end >= ca_end or self._now() < start + (end - start) * RENEW_AT:
            return None
        return f"its TLS certificate expires on {end:%Y-%m-%d %H:%M} UTC"

    def _fits(self, identity: IdentityFile, cas: dict[str, CertAuthority],
              active_in: frozenset[Phase]) -> bool:
        """Tell whether the identity's certificates are signed by keys the CAs accept for this
        use now: the active ones in the phases named, else any trusted one."""
        host, tls = cas["host"], cas["tls"]
        if host.spec.rotation.phase in active_in:
            host_keys = [k.public_key for k in host.spec.active_keys.ssh]
        else:
            host_keys = host.trusted_ssh_public_keys()
        if tls.spec.rotation.phase in active_in:
            tls_certs = [k.cert for k in tls.spec.active_keys.tls]
        else:
            tls_certs = tls.trusted_tls_certs()
        return (_ssh_signed_by(identity.ssh_cert, host_keys, self._now())
                and tlskeys.issued_by(identity.tls_cert.encode(), [c.encode() for c in tls_certs]))

    def _why(self, rotations: dict[str, Rotation], active_in: frozenset[Phase]) -> str:
        moving = [f"{t} CA in {r.phase}" for t, r in rotations.items() if r.phase in active_in]
        if moving:
            return "the " + " and ".join(moving)
        return "its certificates are not signed by a key the cluster trusts"

    async def _reissue(self, cas: dict[str, CertAuthority], *, server: bool, why: str) -> None:
        """Get certificates for fresh keys; the servers' (and the client's) with server, else
        the client's alone, kept in `<role>.next.json` until update_servers."""
        ssh_key = await asyncio.to_thread(sshkeys.generate_private_key, "ed25519")
        tls_key = await asyncio.to_thread(tlskeys.generate_tls_key)
        certs = await self._issue(sshkeys.public_key_of(ssh_key), tlskeys.tls_public_key_pem(tls_key))
        identity = IdentityFile.from_issued(self.role, self.current.host_uuid, ssh_key, tls_key,
                                            certs)
        if server:
            identity.save(self.data_dir)  # kept before it is used: a crash loses nothing
            self.current, self.next = identity, None
            next_path(self.data_dir, self.role).unlink(missing_ok=True)
            log.info("Re-issued the %s certificates (%s); using them everywhere now.",
                     self.role.lower(), why)
            self._call(self._server_hooks, identity)
        else:
            rotation = {t: Followed.of(cas[t].spec.rotation) for t in FOLLOWED}
            self._save_next(identity, rotation)
            self.next = identity
            log.info("Re-issued the %s certificates (%s); using them as a client, still "
                     "presenting the old ones as a server.", self.role.lower(), why)
        self._call(self._client_hooks, identity)

    def _promote(self) -> None:
        """Present the update_clients certificates as a server too (update_servers)."""
        assert self.next is not None
        identity = self.next
        identity.save(self.data_dir)
        self.current, self.next = identity, None
        next_path(self.data_dir, self.role).unlink(missing_ok=True)
        log.info("Presenting the %s certificates of the new CA as a server now.",
                 self.role.lower())
        self._call(self._server_hooks, identity)

    def _trust(self, tls: CertAuthority) -> None:
        pems = [c.encode() for c in tls.trusted_tls_certs()]
        if sorted(pems) == sorted(self._trusted_tls):  # update_clients only swaps the two
            return
        self._trusted_tls = pems
        log.info("Trusting %d TLS CA certificate%s now (%s rotation phase %s).", len(pems),
                 "" if len(pems) == 1 else "s", self.role.lower(), tls.spec.rotation.phase)
        for hook in self._trust_hooks:
            hook(list(pems))

    def _keep_trust_lists(self, cas: dict[str, CertAuthority]) -> None:
        """Keep the CA lists in the identity files as trusted now, so that a restart (and tctl,
        with the Admin identity) trusts neither less nor more than the cluster does."""
        lists = {"host_ca_keys": cas["host"].trusted_ssh_public_keys(),
                 "user_ca_keys": cas["user"].trusted_ssh_public_keys(),
                 "tls_ca_certs": cas["tls"].trusted_tls_certs()}
        if _differ(self.current, lists):
            self.current = dataclasses.replace(self.current, **lists)  # type: ignore[arg-type]
            self.current.save(self.data_dir)
        if self.next is not None and _differ(self.next, lists):
            self.next = dataclasses.replace(self.next, **lists)  # type: ignore[arg-type]
            self._save_next(self.next, self._load_next_rotation())

    def _follow(self, rotations: dict[str, Rotation]) -> None:
        followed = {t: Followed.of(r) for t, r in rotations.items()}
        if followed == self._followed:
            return
        for ca_type, now in followed.items():
            before = self._followed.get(ca_type)
            # A first look at a CA that never rotated is no step worth a line.
            if before != now and (before is not None or now.current_id):
                log.info("The %s certificates follow the %s CA's rotation %s: phase %s.",
                         self.role.lower(), ca_type, now.current_id or "(none)", now.phase)
        self._followed = followed
        ensure_private_dir(self.data_dir / "identity")
        write_secret(state_path(self.data_dir, self.role), json.dumps(
            {t: f.model_dump(mode="json") for t, f in followed.items()}, indent=1))

    # --- refused ------------------------------------------------------------------------------

    async def _refused(self, err: TeleportError) -> None:
        """Say once why the check failed; when the CA was rotated without us, or our TLS
        certificate expired (the host was away past its renewal), say so."""
        reason = None
        end = tlskeys.validity(self.client_identity.tls_cert.encode())[1]
        if end <= self._now():
            reason = (f"The {self.role.lower()}'s TLS certificate expired on "
                      f"{end:%Y-%m-%d %H:%M} UTC (it was away past its renewal): the auth "
                      f"server refuses it. Join again: remove {self.data_dir / 'identity'} and "
                      "start with a new token from 'tctl tokens add'.")
        elif self._diagnose is not None:
            try:
                reason = await self._diagnose(self.client_identity)
            except TeleportError:
                reason = None
        if reason is not None:
            if reason != self._lost:
                log.error("%s", reason)
                self._lost = reason
                if self._on_lost is not None:
                    self._on_lost(reason)
            return
        if not self._failing:
            log.warning("Cannot check the CA rotation for the %s certificates: %s",
                        self.role.lower(), err)
        self._failing = True

    def _back(self) -> None:
        if self._lost:
            log.info("The auth server accepts the %s certificates again.", self.role.lower())
            self._lost = ""
            if self._on_lost is not None:
                self._on_lost(None)
        self._failing = False

    # --- files --------------------------------------------------------------------------------

    def _save_next(self, identity: IdentityFile, rotation: dict[str, Followed]) -> None:
        kept = NextIdentity(rotation=rotation, identity=dataclasses.asdict(identity))
        ensure_private_dir(self.data_dir / "identity")
        write_secret(next_path(self.data_dir, self.role), kept.model_dump_json(indent=1))

    def _load_next_rotation(self) -> dict[str, Followed]:
        try:
            return NextIdentity.model_validate_json(
                next_path(self.data_dir, self.role).read_bytes()).rotation
        except (OSError, ValueError):
            return {}

    def _load_state(self) -> dict[str, Followed]:
        path = state_path(self.data_dir, self.role)
        try:
            data = json.loads(path.read_bytes())
            return {t: Followed.model_validate(v) for t, v in data.items() if t in FOLLOWED}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError, ValidationError) as err:
            log.warning("Ignoring %s (%s).", path, _first_line(err))
            return {}

    def _call(self, hooks: Sequence[IdentityHook], identity: IdentityFile) -> None:
        for hook in hooks:
            hook(identity)


# --- what the process plugs in ----------------------------------------------------------------

def local_issuer(auth: AuthServer, role: str, host_uuid: str, nodename: str,
                 addresses: list[str]) -> Issue:
    """Issue a role's certificates from the auth server in this process (no API call)."""

    async def issue(ssh_public_key: str, tls_public_key: bytes) -> IssuedCerts:
        return await auth.certs.issue_host_certs(
            host_uuid=host_uuid, nodename=nodename, system_role=role,
            ssh_public_key=ssh_public_key, tls_public_key=tls_public_key, addresses=addresses)

    return issue


def refused_since_rotation(addrs: Callable[[], Sequence[HostPort]], role: str,
                           data_dir: Path) -> Diagnose:
    """Tell whether the auth server refuses us because the cluster's TLS CA was dropped while
    we were away (we must join again): its certificate is then signed by no CA we trust.

    Only a TLS handshake, verified against the CAs we trust, and no request: whoever answers
    at the address learns nothing, whether the auth server or an impostor (which the line
    names as the other possibility)."""

    async def diagnose(identity: IdentityFile) -> str | None:
        cluster = tlskeys.identity_from_cert(identity.tls_cert.encode()).cluster
        ctx = tlsconfig.ssl_client_context(None, None, [c.encode() for c in identity.tls_ca_certs])
        for addr in addrs():
            try:
                async with asyncio.timeout(DIAGNOSE_TIMEOUT):
                    _, writer = await asyncio.open_connection(
                        addr.host, addr.port, ssl=ctx,
                        server_hostname=auth_server_name(cluster))
            except ssl.SSLCertVerificationError:
                return (f"The auth server at {addr} presents a certificate no CA this "
                        f"{role.lower()} trusts has signed: the cluster's certificate authority "
                        f"was rotated while this {role.lower()} was away (or something else "
                        f"answers at that address). Join again: remove {data_dir / 'identity'} "
                        "and start with a new token from 'tctl tokens add'.")
            except (OSError, TimeoutError):
                continue
            writer.close()
            return None  # the server is ours: the refusal is something else
        return None

    return diagnose


async def watch_local_cas(auth: AuthServer, changed: Callable[[], None]) -> None:
    """Call changed() whenever a CA changes in the auth server's backend (whichever auth server
    wrote it), until cancelled, so the identities of its own process follow within a second."""
    prefixes = [key(*auth.certs.cas.store(t).prefix) + b"/" for t in (*FOLLOWED, "user")]
    delay = WATCH_RETRY
    while True:
        try:
            async with await auth.backend.watch(prefixes) as watcher:
                async for _ in watcher:
                    delay = WATCH_RETRY
                    changed()
        except TeleportError as err:
            log.debug("cannot watch the CAs in the backend, checking every %g s: %s",
                      CHECK_INTERVAL, err)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


def _ssh_signed_by(cert: str, keys: Sequence[str], now: datetime) -> bool:
    try:
        sshkeys.verify_cert(cert, keys, now=now, cert_type="host")
    except (AccessDenied, BadParameter):
        return False
    return True


def _differ(identity: IdentityFile, lists: dict[str, list[str]]) -> bool:
    return any(sorted(getattr(identity, name)) != sorted(value) for name, value in lists.items())


def _names(ca_types: Sequence[str]) -> str:
    return " and ".join(f"{t} CA" for t in ca_types)


def _first_line(err: BaseException) -> str:
    text = str(err)
    return text.splitlines()[0] if text else type(err).__name__
