"""`tsh config`: an ssh_config block so stock OpenSSH uses the tsh certificate."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from teleport.client.profile import Profile
from teleport.utils.addr import parse_addr


def ssh_config(profile: Profile, leaves: Sequence[str] = ()) -> str:
    """Return Host blocks: the proxy directly, nodes as `<name>.<cluster>` through it (and a
    leaf cluster's as `<name>.<leaf>`: the proxy routes them through the leaf's tunnel)."""
    proxy = parse_addr(profile.ssh_proxy_addr, 3023)
    hosts = " ".join(f"*.{name}" for name in [profile.cluster, *leaves])
    q = shlex.quote
    ident = q(str(profile.key_path))
    cert = q(str(profile.cert_path))
    known = q(str(profile.known_hosts_path))
    return f"""\
# Begin generated Teleport configuration for {profile.proxy_host} from `tsh config`

# Common flags for all {profile.cluster} hosts
Host {hosts} {proxy.host}
    UserKnownHostsFile {known}
    IdentityFile {ident}
    CertificateFile {cert}
    IdentitiesOnly yes
    StrictHostKeyChecking yes

# Flags for all {profile.cluster} hosts except the proxy
Host {hosts} !{proxy.host}
    Port 3022
    ProxyCommand ssh -F none -o UserKnownHostsFile={known} -o IdentityFile={ident} -o CertificateFile={cert} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -p {proxy.port} {q(profile.user)}@{proxy.host} -s proxy:%h:%p

# End generated Teleport configuration
"""
