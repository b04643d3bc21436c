"""A private etcd server for tests: Debian's /usr/bin/etcd on 127.0.0.1, its own data dir.

Optional TLS (a test CA, a server certificate and a client certificate made with `cryptography`,
clients required to present one) and optional auth (a `root` user and one user with a password,
allowed everything). `restart()` keeps the data dir and, unless told otherwise, the client port,
so a backend's watchers can resume. Always stop it (a context manager, or stop() in a finally).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ETCD = "/usr/bin/etcd"
ROOT_PASSWORD = "root-secret"


def free_port() -> int:
    """A loopback port free right now (etcd needs its ports on the command line)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class TestPKI:
    """A CA with one server certificate (127.0.0.1) and one client certificate, as PEM files."""

    __test__ = False

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        self._now = now
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd test CA")])
        ca_cert = (self._builder(ca_name, ca_name, ca_key)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        self.ca_file = folder / "ca.pem"
        self.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        # The gateway inside etcd dials its own gRPC port with the server certificate, so that
        # certificate needs clientAuth as well.
        self.server_cert, self.server_key = self._leaf(
            folder, "server", ca_cert, ca_key,
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
        self.client_cert, self.client_key = self._leaf(
            folder, "client", ca_cert, ca_key, [ExtendedKeyUsageOID.CLIENT_AUTH])

    def _builder(self, subject: x509.Name, issuer: x509.Name,
                 key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(self._now - datetime.timedelta(minutes=5))
                .not_valid_after(self._now + datetime.timedelta(days=1)))

    def _leaf(self, folder: Path, name: str, ca_cert: x509.Certificate,
              ca_key: ec.EllipticCurvePrivateKey,
              usages: list[x509.ObjectIdentifier]) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"etcd test {name}")])
        cert = (self._builder(subject, ca_cert.subject, key)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                     x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                .sign(ca_key, hashes.SHA256()))
        cert_file, key_file = folder / f"{name}.pem", folder / f"{name}-key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        return cert_file, key_file


class EtcdServer:
    """One etcd member for tests; see the module docstring."""

    def __init__(self, folder: Path, *, tls: bool = False,
                 user: tuple[str, str] | None = None) -> None:
        self.folder = folder
        self.data_dir = folder / "data"
        self.log_file = folder / "etcd.log"
        self.pki = TestPKI(folder / "pki") if tls else None
        self.user = user
        self.client_port = 0
        self.peer_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._auth_ready = False

    @property
    def scheme(self) -> str:
        return "https" if self.pki else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    def url_at(self, port: int) -> str:
        return f"{self.scheme}://127.0.0.1:{port}"

    def __enter__(self) -> EtcdServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, client_port: int | None = None) -> None:
        """Start etcd (on client_port if given, else the port it had, else a free one)."""
        for attempt in range(3):
            if client_port is not None:
                self.client_port = client_port
            elif not self.client_port or attempt:
                self.client_port = free_port()
            if not self.peer_port or attempt:
                self.peer_port = free_port()
            if self._launch():
                break
        else:
            raise RuntimeError(f"etcd did not start; see {self.log_file}:\n{self._log_tail()}")
        if self.user and not self._auth_ready:
            self._enable_auth()
            self._auth_ready = True

    def _launch(self) -> bool:
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [ETCD, "--name", "test", "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"test={peer}", "--initial-cluster-state", "new",
                "--log-level", "warn"]
        if self.pki:
            args += ["--cert-file", str(self.pki.server_cert),
                     "--key-file", str(self.pki.server_key),
                     "--trusted-ca-file", str(self.pki.ca_file), "--client-cert-auth"]
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=log, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False  # most likely a port taken meanwhile: try other ports
            try:
                if self._health():
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy; see {self.log_file}")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-10:])
        except OSError:
            return ""

    def _context(self) -> ssl.SSLContext | None:
        if not self.pki:
            return None
        context = ssl.create_default_context(cafile=str(self.pki.ca_file))
        context.load_cert_chain(str(self.pki.client_cert), str(self.pki.client_key))
        return context

    def _health(self) -> bool:
        with urllib.request.urlopen(self.url + "/health", timeout=2,
                                    context=self._context()) as answer:
            return bool(json.loads(answer.read()).get("health") == "true")

    def call(self, path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        """POST to etcd's JSON gateway as an administrator would."""
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         method="POST")
        if token:
            request.add_header("Authorization", token)
        with urllib.request.urlopen(request, timeout=10, context=self._context()) as answer:
            data: dict[str, Any] = json.loads(answer.read())
        if data.get("error"):
            raise RuntimeError(f"etcd {path}: {data['error']}")
        return data

    def admin_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Like call(), logged in as root when auth is on."""
        token = None
        if self._auth_ready:
            token = self.call("/v3/auth/authenticate",
                              {"name": "root", "password": ROOT_PASSWORD})["token"]
        return self.call(path, body, token)

    def _enable_auth(self) -> None:
        assert self.user is not None
        name, password = self.user
        self.call("/v3/auth/user/add", {"name": "root", "password": ROOT_PASSWORD})
        self.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
        self.call("/v3/auth/role/add", {"name": "teleport"})
        # key and range_end "\0" mean every key.
        self.call("/v3/auth/role/grant", {"name": "teleport", "perm": {
            "key": _b64(b"\0"), "range_end": _b64(b"\0"), "permType": "READWRITE"}})
        self.call("/v3/auth/user/add", {"name": name, "password": password})
        self.call("/v3/auth/user/grant", {"user": name, "role": "teleport"})
        self.call("/v3/auth/enable", {})

    def compact(self) -> int:
        """Compact the history up to the current revision; return that revision."""
        revision = int(self.admin_call("/v3/kv/range", {"key": _b64(b"\0"), "count_only": True})
                       ["header"]["revision"])
        self.admin_call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def stop(self) -> None:
        """Stop etcd (SIGTERM, then SIGKILL after 10 s); the data dir stays."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)

    def restart(self, client_port: int | None = None) -> None:
        """Stop and start again on the same data dir (and port, unless client_port is given)."""
        self.stop()
        self.start(client_port)
