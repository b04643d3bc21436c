"""The access rules, one function per question; each answers or raises AccessDenied.

Nothing here reads storage or the network, so every rule is tested on its own and every caller
(auth API, node, proxy) asks the same function. Messages say what was refused, for the audit
log and the user.
"""

from __future__ import annotations

from collections.abc import Collection

from teleport.errors import AccessDenied
from teleport.rbac.subject import HOST_KINDS, Caller, Subject

# --- API routes -------------------------------------------------------------------------------

#: What a route asks of a user's roles: a resource of the rules and a verb (`("user", "list")`).
RouteRule = tuple[str, str]


def check_route(subject: Subject, allowed: Collection[Caller], method: str, path: str,
                rule: RouteRule | None = None) -> None:
    """Let a caller reach a route only if the route names its kind (declared at the route), and
    a user only if their roles' rules allow the route's rule (`subject.access`: the roles as
    stored now, so a demoted or deleted user loses the route at once)."""
    if subject.kind not in allowed:
        raise AccessDenied(f"{subject.kind.lower()} {subject.name!r} may not {method} {path}")
    if subject.kind == Caller.USER and rule is not None:
        subject.access.check_rule(*rule)


def check_rule(subject: Subject, resource: str, verb: str) -> None:
    """Let tctl (Admin) act on any resource, and a user as their roles' rules allow."""
    if subject.kind == Caller.ADMIN:
        return
    if subject.kind != Caller.USER:
        raise AccessDenied(f"{subject.kind.lower()} {subject.name!r} may not {verb} {resource}")
    subject.access.check_rule(resource, verb)


#: Why a user's profile never gets what a backup restores, whatever its roles.
ADMIN_SECRETS_REFUSAL = ("{resource} with secrets: what a backup restores (CA private keys, "
                         "users' password hashes and second factors) is given only to tctl "
                         "with the auth server's admin identity, on the auth host; never to a "
                         "user's profile, whatever its roles")


def check_read_secrets(subject: Subject, resource: str, admin_only: bool) -> None:
    """Let a caller read a kind's secrets: as `read` on it, and for the secrets a backup holds
    (`admin_only`: a CA's keys, users' credentials) only tctl's admin identity."""
    if admin_only and subject.kind != Caller.ADMIN:
        raise AccessDenied(ADMIN_SECRETS_REFUSAL.format(resource=resource))
    check_rule(subject, resource, "read")


# --- SSH logins -------------------------------------------------------------------------------


def check_login(principals: Collection[str], login: str) -> None:
    """Let a certificate log in as an OS user only if it was issued for that login."""
    if login not in principals:
        raise AccessDenied(f"login {login!r} is not in the certificate's principals")


# --- sessions: recordings and live sessions ---------------------------------------------------


def _allows(subject: Subject, resource: str, verb: str) -> bool:
    return subject.kind == Caller.ADMIN or \
        (subject.kind == Caller.USER and subject.access.allows(resource, verb))


def _own(subject: Subject, owner: str) -> bool:
    return subject.kind == Caller.USER and subject.name == owner


def may_list_recording(subject: Subject, owner: str) -> bool:
    """Tell whether a caller may list a recording of owner: their own, or rule session/list."""
    return _own(subject, owner) or _allows(subject, "session", "list")


def check_play(subject: Subject, owner: str, sid: str) -> None:
    """Let a session's owner, and roles allowing session/read, replay its recording."""
    if not (_own(subject, owner) or _allows(subject, "session", "read")):
        raise AccessDenied(f"only {owner!r} and roles allowing session read may play session {sid}")


def may_join_session(subject: Subject, owner: str, owner_roles: Collection[str]) -> bool:
    """Tell whether a caller may join owner's live session: their own, or a role's
    `join_sessions` naming one of the owner's roles."""
    return subject.kind == Caller.ADMIN or _own(subject, owner) or \
        (subject.kind == Caller.USER and subject.access.may_join(owner_roles))


def may_list_live_session(subject: Subject, owner: str, owner_roles: Collection[str]) -> bool:
    """Tell whether a caller may see owner's live session listed: one they may join, or any
    with rule session_tracker/list (an auditor watching who is connected)."""
    return may_join_session(subject, owner, owner_roles) or \
        _allows(subject, "session_tracker", "list")


def check_join(subject: Subject, owner: str, owner_roles: Collection[str], sid: str) -> None:
    """Let only the session's owner and roles whose `join_sessions` allow it join a session."""
    if not may_join_session(subject, owner, owner_roles):
        raise AccessDenied(f"no role of {subject.name!r} allows joining {owner}'s session {sid} "
                           "(allow.join_sessions)")


# --- hosts: what a node or proxy may say about itself -----------------------------------------


def check_announces_itself(subject: Subject, kind: str, host_uuid: str) -> None:
    """Let a host announce only itself, under the kind its system role makes it."""
    if subject.name != host_uuid or HOST_KINDS.get(subject.kind) != kind:
        raise AccessDenied("a host may only announce itself")


def recorded_server(subject: Subject) -> str | None:
    """Return the only server whose sessions a host may upload, or None for any.

    A node records its own sessions; a recording proxy records sessions on other nodes.
    """
    return subject.name if subject.kind == Caller.NODE else None


# --- reverse tunnels --------------------------------------------------------------------------


def check_tunnel_peer(role: str, authority: str, host_uuid: str, principals: Collection[str],
                      *, allowed: Collection[Caller], cluster: str,
                      login: str | None = None) -> None:
    """Let a host certificate open (or serve) a reverse tunnel only as what it was issued for.

    A tunnel agent must hold a node certificate of this cluster and name its own host UUID as
    the SSH user, so a node cannot register as another; another proxy may connect to reach the
    nodes tunnelled here; an agent accepts only a proxy's certificate as the server's.
    """
    if role not in {kind.value for kind in allowed}:
        what = (role or "no role").lower()
        wanted = " or ".join(sorted(kind.value.lower() for kind in allowed))
        raise AccessDenied(f"a {what} certificate cannot serve as a {wanted} "
                           "of a reverse tunnel")
    if authority != cluster:
        raise AccessDenied(f"host certificate of cluster {authority!r}, not {cluster!r}")
    if not host_uuid or host_uuid not in principals:
        raise AccessDenied("host certificate does not name its host UUID")
    if login is not None and login != host_uuid:
        raise AccessDenied(f"host {host_uuid} may tunnel only as itself, not as {login!r}")
