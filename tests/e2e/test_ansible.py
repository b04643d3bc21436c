"""Ansible through the proxy with the `tsh config` OpenSSH block, as the README documents it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import BIN, CLUSTER, NODENAME, Cluster

pytestmark = pytest.mark.slow

PLAYBOOK = """\
- hosts: nodes
  gather_facts: true
  tasks:
    - name: ping
      ansible.builtin.ping:
    - name: copy
      ansible.builtin.copy:
        src: "{{ playbook_dir }}/source.txt"
        dest: "{{ out }}/copied.txt"
        mode: "0640"
    - name: template
      ansible.builtin.template:
        src: "{{ playbook_dir }}/page.j2"
        dest: "{{ out }}/page.txt"
    - name: command
      ansible.builtin.command: cat {{ out }}/page.txt
      register: page
      changed_when: false
    - name: become
      ansible.builtin.command: id -un
      become: true
      register: became
      changed_when: false
    - name: show
      ansible.builtin.debug:
        msg: "page={{ page.stdout }} became={{ became.stdout }}"
"""


@pytest.fixture
def project(cluster: Cluster, joe: dict[str, Any], tmp_path: Path) -> Path:
    """A folder with ansible.cfg, inventory and playbook set up as the README says."""
    (tmp_path / "ssh.cfg").write_text(cluster.tsh("config").stdout)
    (tmp_path / "ansible.cfg").write_text(f"""\
[defaults]
inventory = ./hosts
interpreter_python = /usr/bin/python3
remote_tmp = {tmp_path / "remote-tmp"}

[ssh_connection]
ssh_args = -F ./ssh.cfg
""")
    (tmp_path / "hosts").write_text(f"[nodes]\n{NODENAME}.{CLUSTER} ansible_user=root\n")
    (tmp_path / "play.yaml").write_text(PLAYBOOK)
    (tmp_path / "source.txt").write_text("copied by ansible\n")
    (tmp_path / "page.j2").write_text("host {{ ansible_facts['hostname'] }}\n")
    (tmp_path / "out").mkdir()
    return tmp_path


def test_a_playbook_runs_through_the_proxy_without_warnings(cluster: Cluster,
                                                            project: Path) -> None:
    if shutil.which("sudo") is None:
        pytest.skip("become needs sudo on the node")
    env = {**os.environ, **cluster.env, "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOME": str(project / "ansible-home")}
    run = subprocess.run([str(BIN / "ansible-playbook"), "play.yaml", "-e",
                          f"out={project / 'out'}"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=150,
                         stdin=subprocess.DEVNULL)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "failed=0" in output and "unreachable=0" in output, output
    assert "WARNING" not in output, output
    out = project / "out"
    assert (out / "copied.txt").read_text() == "copied by ansible\n"
    assert oct((out / "copied.txt").stat().st_mode & 0o777) == "0o640"
    hostname = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    assert (out / "page.txt").read_text() == f"host {hostname}\n"
    assert f"page=host {hostname} became=root" in output
    # Every step went through the cluster, and the audit log says so.
    commands = [e.get("command", "") for e in cluster.audit_events() if e.get("event") == "exec"]
    assert any("python3" in c for c in commands), commands
