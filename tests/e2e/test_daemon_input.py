"""Bad configuration and an unusable data_dir fail with one clear line, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.e2e.cluster import BIN, make_cluster


def _start(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "teleport"), "start", *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_config_with_tab_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "teleport.yaml"
    bad.write_text("teleport:\n\tnodename: x\n")
    out = _start("--config", str(bad))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "teleport.yaml:2" in lines[0], out.stderr


def test_unknown_key_and_bad_duration(tmp_path: Path) -> None:
    bad = tmp_path / "teleport.yaml"
    bad.write_text("teleport:\n  nodename: x\n  bogus_key: 1\n")
    out = _start("--config", str(bad))
    assert out.returncode == 2 and "teleport.bogus_key" in out.stderr and ":3" in out.stderr
    bad.write_text("ssh_service:\n  commands:\n  - name: h\n    command: [hostname]\n    period: 1x\n")
    out = _start("--config", str(bad))
    assert out.returncode == 2 and "period" in out.stderr and "Traceback" not in out.stderr


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = _start("--data-dir", str(blocker / "data"), "--roles=auth")
    assert out.returncode != 0
    assert "data_dir" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_configure_output_starts_a_cluster(tmp_path: Path) -> None:
    sample = subprocess.run([str(BIN / "teleport"), "configure"], capture_output=True, text=True,
                            check=True).stdout
    cluster = make_cluster(tmp_path)
    config = yaml.safe_load(sample)
    # Keep every key of the sample; move only the data_dir and ports onto loopback port 0
    # (auth_servers stays: a process that runs the auth service talks to its own).
    config["teleport"]["data_dir"] = str(cluster.data_dir)
    config["auth_service"]["listen_addr"] = "127.0.0.1:0"
    config["ssh_service"]["listen_addr"] = "127.0.0.1:0"
    config["proxy_service"].update(listen_addr="127.0.0.1:0", web_listen_addr="127.0.0.1:0",
                                   public_addr="127.0.0.1:0", tunnel_listen_addr="127.0.0.1:0")
    # the tunnel multiplexed on the web port: the test never takes the machine's 3024
    cluster.config.write_text(yaml.safe_dump(config))
    cluster.start()
    try:
        assert "Cluster" in cluster.tctl("status").stdout
    finally:
        cluster.stop()
