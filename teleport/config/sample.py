"""The `teleport configure` output: a commented teleport.yaml that runs as is on one host."""

from __future__ import annotations

import socket

_SAMPLE = """\
#
# Teleport configuration file, written by 'teleport configure'.
# It runs the auth, proxy and node services on this host as it is.
#
# Things to update before other hosts or users rely on it:
#  1. cluster_name: choose it now; renaming a cluster invalidates all its certificates.
#  2. https_keypairs: give the proxy a certificate for its public name; until then it
#     serves a self-signed one.
#  3. ca_pin: nodes joining from other hosts should pin the CA. Get the pin by running
#     'tctl status' on this host once Teleport is running.
#
teleport:
  # nodename is the name this host is reached by; it defaults to the hostname.
  nodename: {nodename}
  data_dir: /var/lib/teleport

  # Invitation token and CA pin, used by a host that joins an existing cluster:
  # auth_token: xxxx-token-xxxx
  # ca_pin: "sha256:ca-pin-hash-goes-here"

  # Auth servers of the cluster. Behind NAT, use the proxy's web address instead,
  # e.g. teleport-proxy.example.com:3080.
  auth_servers:
    - 127.0.0.1:3025

  # output: stderr, stdout, syslog or a file path; severity: DEBUG, INFO, WARN or ERROR.
  log:
    output: stderr
    severity: INFO

auth_service:
  enabled: "yes"
  # Part of every certificate this cluster signs; by default a random name is generated.
  # cluster_name: "main"

  # Other Teleport hosts connect to the auth API on this address.
  listen_addr: 0.0.0.0:3025

  # Static invitation tokens: "roles:token" or "roles:/path/to/tokenfile".
  # tokens:
  #   - "proxy,node:xxxx-token-xxxx"

  authentication:
    # type: local, github or oidc (a connector made with `tctl create`; saml is not supported
    # yet). connector_name: the connector `tsh login` and the web UI use first.
    type: local
    # second_factor: off, otp, webauthn (u2f is read as webauthn), on (OTP or a key) or
    # optional; keys need webauthn.rp_id (the proxy's DNS name) or the manual's u2f.app_id.
    # passwordless (resident keys alone) is on wherever keys are, unless set to false.
    second_factor: otp

ssh_service:
  enabled: "yes"
  listen_addr: 0.0.0.0:3022
  labels:
    teleport: static-label-example
  # Dynamic labels: each command's output is a label, refreshed every period (at least 1m0s).
  # The command is an array: the program first, then each argument.
  commands:
    - name: hostname
      command: [hostname]
      period: 1m0s
    - name: arch
      command: [uname, -p]
      period: 1h0m0s

proxy_service:
  enabled: "yes"
  listen_addr: 0.0.0.0:3023
  web_listen_addr: 0.0.0.0:3080

  # The DNS name users reach the proxy's HTTPS endpoint by; defaults to this host's name.
  # public_addr: teleport.example.com:3080

  # TLS certificate for the HTTPS endpoint:
  # https_keypairs:
  #   - key_file: /var/lib/teleport/webproxy_key.pem
  #     cert_file: /var/lib/teleport/webproxy_cert.pem
"""


def sample_config() -> str:
    """Return a working single-host teleport.yaml so that a first start needs no editing."""
    return _SAMPLE.format(nodename=socket.gethostname())
