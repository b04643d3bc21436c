"""Local servers that speak the cloud stores' wire protocols, for tests: no cloud is reachable.

- `MotoServer`: moto's standalone server (S3, DynamoDB, DynamoDB Streams) on 127.0.0.1.
- `GcsEmulator`: gcp-storage-emulator (the GCS JSON API) on 127.0.0.1.

The product reaches them through the same `endpoint` settings a user of an S3-compatible store
would use, with credentials from the standard chains (`aws_env()`, `gcs_env()`): the test passes
those variables to the processes it starts. Both keep their data in memory, so `restart()` keeps
the port and makes again the buckets (not their objects) the test asked for, as a real outage
would leave them. Always stop them (a context manager, or stop() in a finally).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

BIN = Path(sys.executable).parent
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def aws_env() -> dict[str, str]:
    """Static test credentials and no instance-metadata lookups (no traffic off this machine)."""
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}


class _LocalServer:
    """One server process on a loopback port kept across restarts."""

    ready_path = "/"

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _args(self) -> list[str]:
        raise NotImplementedError

    def _after_start(self) -> None:
        """Make again what the test set up (buckets)."""

    def start(self) -> None:
        for attempt in range(3):
            if not self.port or attempt:
                self.port = _free_port()
            if self._launch():
                self._after_start()
                return
        raise RuntimeError(f"{type(self).__name__} did not start; see {self.log}")

    def _launch(self) -> bool:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, **aws_env()})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            try:
                urllib.request.urlopen(self.url + self.ready_path, timeout=2).close()
                return True
            except urllib.error.HTTPError:
                return True  # it answers, if only with an error
            except OSError:
                time.sleep(0.1)
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> _LocalServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class MotoServer(_LocalServer):
    """moto's server: S3, DynamoDB and DynamoDB Streams at `url` (one endpoint for all)."""

    ready_path = "/moto-api/"

    def __init__(self, log: Path) -> None:
        super().__init__(log)
        self.buckets: list[str] = []

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def _args(self) -> list[str]:
        return [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    def client(self, service: str):  # type: ignore[no-untyped-def]
        import boto3

        env = aws_env()
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])

    def make_bucket(self, name: str) -> None:
        self.client("s3").create_bucket(Bucket=name)
        if name not in self.buckets:
            self.buckets.append(name)

    def _after_start(self) -> None:
        for name in self.buckets:
            self.client("s3").create_bucket(Bucket=name)


def gcs_env(emulator: GcsEmulator) -> dict[str, str]:
    """What google-cloud-storage reads to talk to the emulator without credentials."""
    return {"STORAGE_EMULATOR_HOST": emulator.url, "GOOGLE_CLOUD_PROJECT": "test-project"}


class GcsEmulator(_LocalServer):
    """gcp-storage-emulator, in memory, at `url`."""

    ready_path = "/storage/v1/b"

    def __init__(self, log: Path) -> None:
        super().__init__(log)
        self.buckets: list[str] = []

    def __enter__(self) -> GcsEmulator:
        self.start()
        return self

    def _args(self) -> list[str]:
        return [str(BIN / "gcp-storage-emulator"), "start", "-H", "127.0.0.1",
                "--port", str(self.port), "--in-memory", "-q"]

    def make_bucket(self, name: str) -> None:
        self._create(name)
        if name not in self.buckets:
            self.buckets.append(name)

    def _create(self, name: str) -> None:
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=test-project", method="POST",
            data=f'{{"name": "{name}"}}'.encode(), headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()

    def _after_start(self) -> None:
        for name in self.buckets:
            self._create(name)
