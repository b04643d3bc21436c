"""The second factor a cluster asks for, and where WebAuthn answers must come from.

`second_factor` is `off`, `otp`, `webauthn`, `on` (OTP or a WebAuthn key, whichever the user
has registered) or `optional` (nothing required, but what is registered is asked for). The
manual's `u2f` is WebAuthn, as Teleport maps it: the RP ID is the `u2f.app_id`'s host and the
origins are the `u2f.facets`. Current Teleport's `webauthn.rp_id` names the RP ID directly.
Pure functions: the schema calls them to refuse a file, the runtime to build the settings.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from teleport.errors import BadParameter

#: What the `second_factor` key accepts; `u2f` is read as `webauthn`.
SECOND_FACTORS = ("off", "otp", "webauthn", "u2f", "on", "optional")
#: The second factors under which a WebAuthn key can be used at all.
WEBAUTHN_FACTORS = frozenset({"webauthn", "on", "optional"})
_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class SecondFactorSettings:
    """The resolved second-factor policy: what the auth server enforces."""

    #: off, otp, webauthn, on or optional (u2f already mapped to webauthn).
    second_factor: str = "otp"
    #: The WebAuthn relying party ID ("": WebAuthn is not usable here).
    rp_id: str = ""
    #: Exact origins answers may come from (the u2f facets); empty: any https origin whose
    #: host is the RP ID or under it (as Teleport checks origins without facets).
    origins: tuple[str, ...] = ()
    #: Logging in with a resident key alone (no user name, no password).
    passwordless: bool = False

    @property
    def webauthn(self) -> bool:
        return bool(self.rp_id) and self.second_factor in WEBAUTHN_FACTORS


def check_rp_id(rp_id: str, key: str) -> str:
    """Return a valid RP ID (a DNS name, not an IP address), or refuse naming the key."""
    host = rp_id.strip().rstrip(".").lower()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise BadParameter(f"{key} {rp_id!r}: an IP address cannot be a WebAuthn RP ID; "
                           "use the proxy's DNS name")
    labels = host.split(".")
    if not host or len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise BadParameter(f"{key} {rp_id!r} is not a DNS name like teleport.example.com")
    return host


def rp_id_from_app_id(app_id: str) -> str:
    """Return the WebAuthn RP ID for the manual's `u2f.app_id` (`https://localhost:3080` ->
    `localhost`), as Teleport maps U2F to WebAuthn: the app ID's host name.

    The manual allows a URL or the proxy's bare domain name; an IP address is refused, since
    browsers accept no IP address as an RP ID.
    """
    value = app_id.strip()
    if not value:
        raise BadParameter("u2f.app_id is empty: set it to the proxy's URL, like https://example.com:3080")
    try:
        parts = urlsplit(value if "://" in value else f"//{value}")
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise BadParameter(f"u2f.app_id {app_id!r} is not a URL like https://example.com:3080") from None
    if "://" in value and parts.scheme != "https":
        raise BadParameter(f"u2f.app_id {app_id!r} must be an https:// URL")
    if not host:
        raise BadParameter(f"u2f.app_id {app_id!r} does not name a host")
    try:
        return check_rp_id(host, "u2f.app_id")
    except BadParameter as err:
        if "IP address" in str(err):
            raise BadParameter(f"u2f.app_id {app_id!r}: an IP address cannot be a WebAuthn RP "
                               "ID; use the proxy's DNS name") from None
        raise BadParameter(f"u2f.app_id {app_id!r} does not name a host") from None


def origins_from_facets(app_id: str, facets: Sequence[str]) -> list[str]:
    """Return the origins WebAuthn answers may come from: the `u2f.facets` (the proxies' URLs),
    or the app ID itself when it is a URL and no facets are listed, each as `scheme://host[:port]`."""
    origins = []
    for url in facets or ([app_id] if "://" in app_id else [f"https://{app_id}"]):
        try:
            parts = urlsplit(url.strip())
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise BadParameter(f"u2f.facets: {url!r} is not a URL like https://example.com:3080") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise BadParameter(f"u2f.facets: {url!r} is not a URL like https://example.com:3080")
        origin = f"{parts.scheme}://{parts.netloc.lower()}"
        if origin not in origins:
            origins.append(origin)
    return origins


def origin_matches_rp_id(origin: str, rp_id: str) -> bool:
    """Tell whether an https origin's host is the RP ID or a name under it (any port)."""
    try:
        parts = urlsplit(origin)
        host = (parts.hostname or "").rstrip(".")
        parts.port  # noqa: B018
    except ValueError:
        return False
    if parts.scheme != "https" or parts.path or parts.query or not host:
        return False
    return host == rp_id or host.endswith("." + rp_id)


def resolve(second_factor: str, *, u2f_app_id: str | None = None,
            u2f_facets: Sequence[str] = (), webauthn_rp_id: str | None = None,
            passwordless: bool | None = None) -> SecondFactorSettings:
    """Resolve the `authentication` keys into one policy, or refuse with one line naming a key.

    A second factor that needs WebAuthn (`webauthn`, `u2f`) without an RP ID is refused;
    `on` and `optional` without one offer OTP only. `passwordless` defaults to on wherever
    WebAuthn is usable, and asking for it where it is not is refused.
    """
    if second_factor not in SECOND_FACTORS:
        raise BadParameter(f"second_factor {second_factor!r}: use one of {', '.join(SECOND_FACTORS)}")
    mode = "webauthn" if second_factor == "u2f" else second_factor
    rp_id = ""
    origins: tuple[str, ...] = ()
    if webauthn_rp_id is not None:
        rp_id = check_rp_id(webauthn_rp_id, "webauthn.rp_id")
    if u2f_app_id is not None:
        from_app_id = rp_id_from_app_id(u2f_app_id)
        if rp_id and rp_id != from_app_id:
            raise BadParameter(f"webauthn.rp_id {rp_id!r} differs from the u2f.app_id's host "
                               f"{from_app_id!r}: keys registered under one fail under the other")
        rp_id = from_app_id
        origins = tuple(origins_from_facets(u2f_app_id, u2f_facets))
    elif u2f_facets:
        raise BadParameter("u2f.facets needs u2f.app_id")
    if mode == "webauthn" and not rp_id:
        raise BadParameter(
            f"second_factor {second_factor} needs webauthn.rp_id (the proxy's DNS name) or "
            "u2f.app_id (the proxy's URL)")
    usable = bool(rp_id) and mode in WEBAUTHN_FACTORS
    if passwordless and not usable:
        raise BadParameter("passwordless needs WebAuthn: set second_factor to webauthn, on or "
                           "optional, with webauthn.rp_id")
    return SecondFactorSettings(second_factor=mode, rp_id=rp_id if usable else "",
                                origins=origins if usable else (),
                                passwordless=usable if passwordless is None else passwordless)
