"""A private PostgreSQL server for tests, from Debian's `postgresql` package.

initdb into a fresh temporary directory, listen on 127.0.0.1 on a free port with the unix socket
inside that directory, and require a password over TCP for the test role, so a wrong password is
refused for real. Running as root, initdb and postgres run as the `postgres` OS user (postgres
refuses root). Debian's own cluster on 5432, if any, is never touched.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

#: The role the backend connects as: not a superuser, so per-database limits apply to it.
USER = "teleport"


def find_bin() -> Path:
    """Return the newest /usr/lib/postgresql/<version>/bin holding initdb and postgres."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One postgres process over one data directory; restart keeps its data and port."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.bin = find_bin()
        self.fsync = fsync
        self.password = secrets.token_urlsafe(12)
        self.root = Path(tempfile.mkdtemp(prefix="teleport-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0
        self.sockets.mkdir()
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def _spawn(self, args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        if self._as_postgres:
            kwargs.update(user="postgres", group="postgres", extra_groups=[])
        return subprocess.Popen(args, cwd=self.root, **kwargs)  # type: ignore[call-overload]

    def _initdb(self) -> None:
        with open(self.log, "ab") as out:
            proc = self._spawn(
                [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
                stdout=out, stderr=subprocess.STDOUT)
            if proc.wait(60) != 0:
                raise RuntimeError(f"initdb failed: {self.log.read_text()[-2000:]}")

    def start(self) -> None:
        """Start the server (initialising it the first time) and wait until it accepts logins."""
        first = not self.data.exists()
        if first:
            self._initdb()
        for _ in range(5):
            if not self.port:
                self.port = _free_port()
            if self._launch():
                break
            if not first:
                raise RuntimeError(f"postgres did not restart: {self.log.read_text()[-2000:]}")
            self.port = 0  # someone took the port between our probe and postgres' bind
        else:
            raise RuntimeError(f"postgres did not start: {self.log.read_text()[-2000:]}")
        if first:
            self.sql(f"CREATE ROLE {USER} LOGIN PASSWORD '{self.password}'")

    def _launch(self) -> bool:
        with open(self.log, "ab") as out:
            self.process = self._spawn(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.sockets), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "full_page_writes=off",
                 "-c", "max_connections=300", "-c", "shared_buffers=32MB"],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-q", "-h", str(self.sockets), "-p", str(self.port),
                 "-U", "postgres"], check=False)
            if ready.returncode == 0:
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self, *, immediate: bool = False) -> None:
        """Shut down, ending every client connection (fast shutdown, or crash-like immediate)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same data directory and port."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop and remove every file."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement as the superuser over the unix socket; return psql's output."""
        result = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.sockets), "-p", str(self.port), "-U", "postgres", "-d", database,
             "-c", statement],
            capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"psql {statement!r} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self) -> str:
        """Create an empty database owned by the test role; return its name."""
        name = f"t_{secrets.token_hex(6)}"
        self.sql(f"CREATE DATABASE {name} OWNER {USER}")
        return name

    def dsn(self, database: str, *, password: str | None = None) -> str:
        """Return the conn_string reaching database as the test role over TCP."""
        secret = quote(self.password if password is None else password, safe="")
        return f"postgresql://{USER}:{secret}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
