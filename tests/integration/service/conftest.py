"""Fixtures shared by the in-process service tests: one `TeleportProcess` config with its
services on loopback, every port picked by the kernel."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from teleport.config import StartFlags, load_config
from teleport.config.runtime import Config

#: Builds a loopback config: (nodename, cluster name, keyword options) -> Config.
LoopbackConfig = Callable[..., Config]


def loopback_config(tmp: Path, nodename: str, cluster: str, *, data: str = "data",
                    ssh: bool = True, diag: bool = False, tokens: Sequence[str] = ()) -> Config:
    """Auth and proxy (and a node when `ssh`) in one process, listening on 127.0.0.1:0.

    The file is written to tmp/<data>.yaml and the data directory is tmp/<data>, so one test
    can run several processes side by side.
    """
    extra = "  diag_addr: 127.0.0.1:0\n" if diag else ""
    static = f"  tokens: [{', '.join(repr(t) for t in tokens)}]\n" if tokens else ""
    node = "  listen_addr: 127.0.0.1:0\n" if ssh else ""
    path = tmp / f"{data}.yaml"
    path.write_text(f"""\
teleport:
  nodename: {nodename}
  data_dir: {tmp / data}
{extra}auth_service:
  enabled: yes
  cluster_name: {cluster}
  listen_addr: 127.0.0.1:0
{static}proxy_service:
  enabled: yes
  listen_addr: 127.0.0.1:0
  web_listen_addr: 127.0.0.1:0
  tunnel_listen_addr: 127.0.0.1:0
  public_addr: 127.0.0.1:0
ssh_service:
  enabled: {"yes" if ssh else "no"}
{node}""")
    return load_config(StartFlags(config_path=str(path)))


@pytest.fixture
def loopback(tmp_path: Path) -> LoopbackConfig:
    """`loopback_config` bound to this test's tmp_path."""

    def make(nodename: str, cluster: str, **options: object) -> Config:
        return loopback_config(tmp_path, nodename, cluster, **options)  # type: ignore[arg-type]

    return make
