"""The access rules of today, one function per question; each answers or raises AccessDenied.

Nothing here reads storage or the network, so every rule is tested on its own and every caller
(auth API, node, proxy) asks the same function. Messages say what was refused, for the audit
log and the user.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from teleport.errors import AccessDenied
from teleport.rbac.subject import ADMIN_ROLE, HOST_KINDS, Caller, Subject

# --- API routes -------------------------------------------------------------------------------


def check_route(subject: Subject, allowed: Collection[Caller], method: str, path: str) -> None:
    """Let a caller reach a route only if the route names its kind (declared at the route).

    A route for `Admin` (tctl) also admits a user holding the `admin` role, so the web UI's
    admin pages act with the user's own certificate; `subject.roles` must be the roles stored
    now, so a demoted or deleted admin loses the routes at once.
    """
    if subject.kind in allowed:
        return
    if Caller.ADMIN in allowed and subject.kind == Caller.USER and ADMIN_ROLE in subject.roles:
        return
    raise AccessDenied(f"{subject.kind.lower()} {subject.name!r} may not {method} {path}")


# --- SSH logins -------------------------------------------------------------------------------


def allowed_logins(name: str, logins: Sequence[str]) -> list[str]:
    """Return the OS logins a user may use on any node: their `logins` trait, else their name.

    Each login once: a trait written by hand (`root,root`) must not repeat a principal.
    """
    return list(dict.fromkeys(login for login in logins if login)) or [name]


def check_login(principals: Collection[str], login: str) -> None:
    """Let a certificate log in as an OS user only if it was issued for that login."""
    if login not in principals:
        raise AccessDenied(f"login {login!r} is not in the certificate's principals")


# --- sessions: recordings and live sessions ---------------------------------------------------


def sees_every_session(subject: Subject) -> bool:
    """Tell whether a caller sees, plays and joins sessions of other users (tctl, role admin)."""
    return subject.kind == Caller.ADMIN or \
        (subject.kind == Caller.USER and ADMIN_ROLE in subject.roles)


def may_see_session(subject: Subject, owner: str) -> bool:
    """Tell whether a caller may list (and so play or join) a session of owner."""
    return sees_every_session(subject) or (subject.kind == Caller.USER and subject.name == owner)


def check_play(subject: Subject, owner: str, sid: str) -> None:
    """Let only the session's owner and admins replay its recording."""
    if not may_see_session(subject, owner):
        raise AccessDenied(f"only {owner!r} and admins may play session {sid}")


def check_join(subject: Subject, owner: str, sid: str) -> None:
    """Let only the session's owner and admins join a live session."""
    if not may_see_session(subject, owner):
        raise AccessDenied(f"only {owner} and admins may join session {sid}")


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
