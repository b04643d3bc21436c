from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.browser import browser as browser  # the headless Chromium fixture
from tests.e2e.cluster import Cluster, make_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One teleport process (auth + proxy + node) for a test module, stopped afterwards."""
    c = make_cluster(tmp_path_factory.mktemp("cluster"))
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def keys_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster whose second factor is a WebAuthn key, RP ID localhost (browsers reach the
    proxy as https://localhost:<port>)."""
    cluster = make_cluster(tmp_path_factory.mktemp("webauthn"))
    cluster.set_authentication({"type": "local", "second_factor": "webauthn",
                                "webauthn": {"rp_id": "localhost"}})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def joe(cluster: Cluster) -> dict[str, object]:
    """A signed-up and logged-in user joe with logins joe and root."""
    password = "correct horse battery"
    totp = cluster.signup("joe", "joe,root", password)
    cluster.login("joe", password, totp)
    return {"password": password, "totp": totp}


@pytest.fixture(scope="module")
def os_joe() -> Iterator[pwd.struct_passwd]:
    """The OS account `joe` (created if missing, removed afterwards if we created it)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("creating OS users needs root and useradd")
    try:
        yield pwd.getpwnam("joe")
        return
    except KeyError:
        pass
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "joe"], check=True,
                   capture_output=True)
    try:
        yield pwd.getpwnam("joe")
    finally:
        subprocess.run(["userdel", "--remove", "--force", "joe"], capture_output=True)


@pytest.fixture(scope="module")
def echo_server() -> Iterator[int]:
    """A loopback TCP server that answers every connection with `echo:` + what it received."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(b"echo:" + data)

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "e2e":
            item.add_marker(pytest.mark.timeout(180))
