"""What `tsh login` leaves in `~/.tsh`: the current profile, keys and certificates.

Layout (all files 0600, folders 0700), `TELEPORT_HOME` overrides `~/.tsh`:
    profile                      the current profile (JSON)
    known_hosts                  `@cert-authority` lines for the cluster's host CA, and for
                                 each leaf cluster's (`*.<leaf>` only)
    keys/<proxy>/<user>          SSH private key (OpenSSH)
    keys/<proxy>/<user>.pub      SSH public key
    keys/<proxy>/<user>-cert.pub SSH certificate
    keys/<proxy>/<user>-x509.pem X.509 certificate, with <user>.tls.key its key
    keys/<proxy>/certs.pem       the cluster's TLS CA certificates
    keys/<proxy>/web-cert.pem    the proxy's HTTPS certificate accepted with `login --insecure`

`--insecure` is never saved: it applies to the command it is given to. A login with it pins the
certificate the proxy presented (trust on first use, as SSH does with host keys): later
commands accept that certificate and no other, instead of accepting any.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from teleport.api.constants import HOME_ENV
from teleport.errors import AccessDenied, BadParameter, NotFound
from teleport.utils.fs import ensure_private_dir, write_secret


def tsh_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".tsh")


@dataclass(frozen=True)
class Profile:
    web_proxy_addr: str
    ssh_proxy_addr: str
    user: str
    cluster: str
    #: When the login's SSH certificate expires (ISO 8601), noted at login so that a command
    #: checks it without loading the certificate parser; "" from an older tsh.
    valid_before: str = ""
    #: This command only (`--insecure`): accept any proxy certificate. Never saved.
    insecure: bool = field(default=False, compare=False)

    @property
    def proxy_host(self) -> str:
        return self.web_proxy_addr.rsplit(":", 1)[0].strip("[]")

    @property
    def key_dir(self) -> Path:
        return tsh_home() / "keys" / self.proxy_host

    @property
    def key_path(self) -> Path:
        return self.key_dir / self.user

    @property
    def cert_path(self) -> Path:
        return self.key_dir / f"{self.user}-cert.pub"

    @property
    def tls_cert_path(self) -> Path:
        return self.key_dir / f"{self.user}-x509.pem"

    @property
    def tls_key_path(self) -> Path:
        return self.key_dir / f"{self.user}.tls.key"

    @property
    def ca_path(self) -> Path:
        return self.key_dir / "certs.pem"

    @property
    def web_cert_path(self) -> Path:
        """The proxy certificate pinned by `tsh login --insecure` (absent otherwise)."""
        return self.key_dir / "web-cert.pem"

    @property
    def known_hosts_path(self) -> Path:
        return tsh_home() / "known_hosts"

    def ssh_cert(self) -> str:
        try:
            return self.cert_path.read_text().strip()
        except FileNotFoundError:
            raise NotFound("no certificate found, run 'tsh login'") from None

    def check_valid(self, now: datetime | None = None) -> datetime:
        """Return when the certificate expires; raise AccessDenied if it already has."""
        try:
            valid_before = datetime.fromisoformat(self.valid_before)
        except ValueError:  # noted by no login of this tsh: ask the certificate
            from teleport.keys.ssh import parse_cert

            valid_before = parse_cert(self.ssh_cert()).valid_before
        if valid_before <= (now or datetime.now(timezone.utc)):
            raise AccessDenied("your certificate has expired, run 'tsh login'")
        return valid_before


def save_login(profile: Profile, *, ssh_key: bytes, ssh_pub: str, ssh_cert: str, tls_key: bytes,
               tls_cert: str, tls_cas: list[str], host_ca_keys: list[str],
               web_cert: str | None = None) -> None:
    """Write the keys and certificates of a fresh login and make it the current profile.

    web_cert (PEM) is the proxy certificate to pin, from a login with `--insecure`; without
    it, later commands verify the proxy's certificate the usual way.
    """
    home = ensure_private_dir(tsh_home())
    ensure_private_dir(home / "keys")
    ensure_private_dir(profile.key_dir)
    write_secret(profile.key_path, ssh_key)
    write_secret(profile.key_path.with_name(f"{profile.user}.pub"), ssh_pub + "\n")
    write_secret(profile.cert_path, ssh_cert + "\n")
    write_secret(profile.tls_key_path, tls_key)
    write_secret(profile.tls_cert_path, tls_cert)
    write_secret(profile.ca_path, "".join(tls_cas))
    write_known_hosts(profile, host_ca_keys)
    if web_cert is not None:
        write_secret(profile.web_cert_path, web_cert)
    else:
        profile.web_cert_path.unlink(missing_ok=True)
    from teleport.keys.ssh import parse_cert

    expires = parse_cert(ssh_cert).valid_before.isoformat()
    saved = {k: v for k, v in asdict(replace(profile, valid_before=expires)).items()
             if k != "insecure"}
    write_secret(home / "profile", json.dumps(saved, indent=1) + "\n")


def write_known_hosts(profile: Profile, host_ca_keys: list[str],
                      leaves: Mapping[str, list[str]] | None = None) -> None:
    """Trust these host CA keys for the proxy and the cluster's nodes (`tsh ssh`, and stock
    OpenSSH through `tsh config`'s `UserKnownHostsFile`), and each leaf cluster's host CA for
    that leaf's nodes only (`*.<leaf>`): a leaf's CA never vouches for another cluster's hosts."""
    patterns = f"{profile.proxy_host},*.{profile.cluster}"
    lines = [f"@cert-authority {patterns} {key} type=host\n" for key in host_ca_keys]
    for leaf, keys in sorted((leaves or {}).items()):
        lines += [f"@cert-authority *.{leaf} {key} type=host clustername={leaf}\n" for key in keys]
    write_secret(profile.known_hosts_path, "".join(lines))


def known_host_keys(profile: Profile, cluster: str = "") -> list[str]:
    """The host CA keys known_hosts trusts now for one cluster's hosts (`<type> <base64>`
    each): this profile's cluster unless another is named."""
    wanted = f"*.{cluster or profile.cluster}"
    keys = []
    with contextlib.suppress(FileNotFoundError):
        for line in profile.known_hosts_path.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[0] == "@cert-authority" and \
                    wanted in fields[1].split(","):
                keys.append(" ".join(fields[2:4]))
    return keys


def leaf_host_keys(profile: Profile) -> dict[str, list[str]]:
    """The leaf clusters' host CA keys known_hosts trusts now, by leaf."""
    leaves: dict[str, list[str]] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in profile.known_hosts_path.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[0] == "@cert-authority" and \
                    fields[1].startswith("*.") and "," not in fields[1]:
                leaves.setdefault(fields[1][2:], []).append(" ".join(fields[2:4]))
    return leaves


def current_profile() -> Profile:
    """Return the profile of the last login, or NotFound with the command to run."""
    path = tsh_home() / "profile"
    saved = {f.name for f in fields(Profile) if f.name != "insecure"}
    try:
        # An older tsh saved `insecure`; it is ignored now (see the module docstring).
        data = json.loads(path.read_text())
        return Profile(**{k: v for k, v in data.items() if k in saved})
    except FileNotFoundError:
        raise NotFound("not logged in, run 'tsh login --proxy=<host:3080> --user=<name>'") from None
    except (ValueError, TypeError, AttributeError):
        raise BadParameter(f"{path} is corrupt; run 'tsh logout' and log in again") from None


def remove_profile() -> bool:
    """Delete the current profile and its keys; return whether there was one."""
    import shutil

    home = tsh_home()
    found = (home / "profile").exists()
    for name in ("profile", "known_hosts"):
        (home / name).unlink(missing_ok=True)
    shutil.rmtree(home / "keys", ignore_errors=True)
    return found
