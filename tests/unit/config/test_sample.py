"""`teleport configure` output works as a config file as it is."""

from __future__ import annotations

import socket
from datetime import timedelta

from teleport.config import StartFlags, make_config, parse_file_config, sample_config
from teleport.utils.addr import HostPort


def test_sample_parses_and_runs_all_services_on_this_host() -> None:
    file = parse_file_config(sample_config(), "sample")
    assert file.teleport.nodename == socket.gethostname()
    config = make_config(file, StartFlags())
    assert config.nodename == socket.gethostname()
    assert (config.auth.enabled, config.ssh.enabled, config.proxy.enabled) == (True, True, True)
    assert config.auth_servers == [HostPort("127.0.0.1", 3025)]
    assert config.auth.second_factor == "otp"
    assert config.auth.cluster_name is None
    assert config.proxy.https_keypairs == []
    assert [(c.command, c.period) for c in config.ssh.commands] == [
        (["hostname"], timedelta(minutes=1)), (["uname", "-p"], timedelta(hours=1))]
    assert config.proxy.web_listen_addr == HostPort("0.0.0.0", 3080)


def test_sample_mentions_what_to_change() -> None:
    text = sample_config()
    for hint in ("# cluster_name:", "# https_keypairs:", "ca_pin", "tctl status"):
        assert hint in text
