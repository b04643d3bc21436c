"""Shared set-up for the benchmarks: a real cluster and a stock sshd, both on loopback.

Not a script. `Bench` is a context manager that, in a temporary directory,
- starts `teleport start` (auth + proxy + node in one process) on free 127.0.0.1 ports,
- adds a user with `tctl users add`, completes signup through the web API with an OTP code
  and logs in with `tsh login` (the same steps as tests/e2e/cluster.py),
- starts a stock `sshd -D` on a free port that accepts a certificate for root from a throwaway
  user CA and presents a host certificate (as Teleport does both); that one sshd is both the
  jump host and the target of the OpenSSH reference path,
- writes ssh_config files so `ssh -F <file> -J ...` needs no other options,
and on exit kills the process group of everything it started and removes the directory.

`Bench.paths()` returns the compared paths, each an argv to append the remote command to:
  openssh        ssh -J root@localhost:P -p P root@127.0.0.1      (stock sshd -> stock sshd)
  tsh            tsh ssh root@<node>                              (Teleport proxy -> node)
  ssh-teleport   ssh -J <user>@<proxy> root@<node>.<cluster>      (stock ssh, tsh cert)

`SplitCluster` runs auth, proxy (and a node) as separate processes, so each one's CPU and
memory can be measured; `join_host` joins simulated hosts for real from their own loopback
source addresses (`source_address`), as tunnels.py and scale.py need.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
#: The baseline sshd serves SFTP with the same OpenSSH binary the Teleport node runs.
SFTP_SERVER = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                                "/usr/lib/ssh/sftp-server", "/usr/libexec/sftp-server")
                    if os.path.exists(p)), "internal-sftp")
CLUSTER = "bench.test"
NODENAME = "bench-node"
USER = "bench"
PASSWORD = "correct horse battery staple"
BASELINE = "openssh"
#: What `tsh` negotiates (its first preference, teleport.config.sshalgos.CIPHERS), and what the
#: benches pin on the stock clients by default, so every path runs the same cipher.
TSH_CIPHER = "aes128-gcm@openssh.com"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A failure worth one line on stderr (missing tool, cluster did not start, ...)."""


def run_main(main: Callable[[], None]) -> None:
    """Run a benchmark's main; turn any failure into one line on stderr and exit status 1."""
    prog = Path(sys.argv[0]).name
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(f"{prog}: interrupted")
    except BenchError as exc:
        sys.exit(f"{prog}: error: {exc}")
    except subprocess.TimeoutExpired as exc:
        sys.exit(f"{prog}: error: timed out after {exc.timeout:.0f}s: {_argv_str(exc.cmd)}")
    except (OSError, subprocess.SubprocessError) as exc:
        sys.exit(f"{prog}: error: {exc}")


def _argv_str(cmd: Any) -> str:
    return " ".join(map(str, cmd)) if isinstance(cmd, list | tuple) else str(cmd)


def parse_size(text: str) -> int:
    """`1G`, `256M`, `64k`, `1GiB` or plain bytes; units are binary (M = 2**20)."""
    units = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    s = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = s[-1:] if s[-1:] in units and s[-1:].isalpha() else ""
    try:
        value = float(s[: len(s) - len(unit)] if unit else s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 256M or 1G)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return int(value * units[unit])


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-ssh-teleport", action="store_true",
                        help="skip the stock-ssh-through-the-Teleport-proxy path")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (configs, teleport.log, sshd.log)")


def free_ports(count: int) -> list[int]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def descendants(pid: int) -> list[int]:
    """All living descendants of `pid` (children first), from /proc/<pid>/task/*/children."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 10_000:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def kill_group(proc: subprocess.Popen[Any] | None, grace: float = 10) -> None:
    """SIGTERM the process group `proc` leads (started with start_new_session), then SIGKILL;
    last, SIGKILL whatever descendants it left in other groups (sshd's per-connection
    processes and the node's session children call setsid)."""
    if proc is None:
        return
    strays = {pid: _start_time(pid) for pid in descendants(proc.pid)}
    _kill_group(proc, grace)
    for pid, started in strays.items():
        # Same pid and same start time: still the process we started, not a reused pid.
        if started is not None and _start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]  # field 22, starttime


def _kill_group(proc: subprocess.Popen[Any], grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure nothing it left in its group survives.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


def proc_status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/<pid>/status, e.g. VmHWM (peak RSS) or VmRSS."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/{pid}/status")


def proc_cpu_seconds(pid: int) -> float:
    """CPU time of a process plus that of its children it has reaped (user + system)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14..17.
    return sum(int(f) for f in fields[11:15]) / CLK_TCK


def child_pids(pid: int) -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def wait_children_reaped(pid: int, keep: set[int], timeout: float = 10) -> None:
    """Wait (bounded) until `pid` has no children but those in `keep`, so that the CPU time
    of the ones that served a finished connection is in its cutime/cstime."""
    deadline = time.monotonic() + timeout
    while child_pids(pid) - keep and time.monotonic() < deadline:
        time.sleep(0.02)


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"no {path.name}"
    return lines[-1] if lines else f"{path.name} is empty"


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


def summarize(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"p50": statistics.median(s), "p95": percentile(s, 95), "mean": statistics.fmean(s),
            "min": s[0], "max": s[-1]}


@dataclass
class Route:
    """One way of reaching a shell on the target: its name and argv (remote command appended)."""

    name: str
    argv: list[str]
    server_pid: int


class Bench:
    """A running cluster, a logged-in user and a stock sshd; use as `with Bench() as b:`."""

    def __init__(self, keep: bool = False, ssh_teleport: bool = True) -> None:
        self.keep = keep
        self.want_ssh_teleport = ssh_teleport
        self.root = Path()
        self.ports: dict[str, int] = {}
        self.teleport: subprocess.Popen[bytes] | None = None
        self.sshd: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    # --- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Bench:
        for tool in ("teleport", "tctl", "tsh"):
            if not (BIN / tool).exists():
                raise BenchError(f"{BIN / tool} not found; run with the venv's python "
                                 "(e.g. /tmp/venv/bin/python bench/...)")
        for tool in ("ssh", "ssh-keygen", "head"):
            if shutil.which(tool) is None:
                raise BenchError(f"`{tool}` is not installed")
        if not os.path.exists(SSHD):
            raise BenchError("sshd is not installed (apt-get install openssh-server)")
        try:
            import pyotp  # noqa: F401 - checked here for a clear message
        except ImportError:
            raise BenchError("pyotp is not installed in this python") from None
        self.root = Path(tempfile.mkdtemp(prefix="teleport-bench-"))
        try:
            self._start_teleport()
            self._signup_and_login()
            self._start_sshd()
        except BaseException as exc:
            self.keep = True
            self.__exit__(None, None, None)
            if isinstance(exc, BenchError):
                raise BenchError(f"{exc} (files kept in {self.root})") from None
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        kill_group(self.sshd)
        kill_group(self.teleport, grace=15)
        if self.keep:
            print(f"kept {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- teleport ----------------------------------------------------------------------

    @property
    def web_addr(self) -> str:
        return f"127.0.0.1:{self.ports['web']}"

    def _start_teleport(self) -> None:
        names = ["auth", "node", "proxy_ssh", "web", "tunnel"]
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        p = self.ports
        (self.root / "home").mkdir()
        self.env = {**os.environ, "TELEPORT_HOME": str(self.root / "tsh-home"),
                    "HOME": str(self.root / "home")}
        config = self.root / "teleport.yaml"
        config.write_text(f"""\
teleport:
  nodename: {NODENAME}
  data_dir: {self.root / 'data'}
  log:
    output: stderr
    severity: WARN
auth_service:
  enabled: yes
  cluster_name: {CLUSTER}
  listen_addr: 127.0.0.1:{p['auth']}
ssh_service:
  enabled: yes
  listen_addr: 127.0.0.1:{p['node']}
proxy_service:
  enabled: yes
  listen_addr: 127.0.0.1:{p['proxy_ssh']}
  web_listen_addr: 127.0.0.1:{p['web']}
  tunnel_listen_addr: 127.0.0.1:{p['web']}
  public_addr: 127.0.0.1:{p['web']}
""")
        with open(self.root / "teleport.log", "wb") as log:
            self.teleport = subprocess.Popen(
                [str(BIN / "teleport"), "start", "-c", str(config),
                 "--pid-file", str(self.root / "teleport.pid")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.teleport.poll() is not None:
                raise BenchError(f"teleport exited with status {self.teleport.returncode} "
                                 "while starting; see teleport.log")
            if self._tctl("status", check=False).returncode == 0 and self._web_up():
                return
            time.sleep(0.3)
        raise BenchError("teleport did not become ready within 60s; see teleport.log")

    def _run(self, argv: list[str], input: str | None = None, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run_checked(argv, env=self.env, input=input, check=check, timeout=timeout)

    def _tctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run([str(BIN / "tctl"), "-c", str(self.root / "teleport.yaml"), *args],
                         check=check, timeout=30)

    def _web(self, method: str, path: str, body: Any = None) -> Any:
        return web_json(self.web_addr, method, path, body)

    def _web_up(self) -> bool:
        try:
            self._web("GET", "/webapi/ping")
            return True
        except OSError:
            return False

    def _signup_and_login(self) -> None:
        key = signup_and_login(self.web_addr,
                               [str(BIN / "tctl"), "-c", str(self.root / "teleport.yaml")],
                               self.env)
        home = Path(self.env["TELEPORT_HOME"])
        (self.root / "ssh_config.teleport").write_text(f"""\
Host *
    BatchMode yes
    IdentitiesOnly yes
    IdentityFile {key}
    CertificateFile {key}-cert.pub
    UserKnownHostsFile {home / 'known_hosts'}
    StrictHostKeyChecking yes
    ControlMaster no
    ControlPath none
""")

    # --- stock sshd --------------------------------------------------------------------

    def _start_sshd(self) -> None:
        d = self.root / "sshd"
        d.mkdir(mode=0o700)
        for name in ("host_ed25519", "client_ed25519", "user_ca", "host_ca"):
            self._run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                       "-f", str(d / name)])
        # Certificates both ways, as Teleport uses: the user logs in with a certificate from a
        # user CA, the host presents one from a host CA, so the baseline pays the same checks.
        self._run(["ssh-keygen", "-q", "-s", str(d / "user_ca"), "-I", "bench-user", "-n", "root",
                   "-V", "-5m:+1d", str(d / "client_ed25519.pub")])
        self._run(["ssh-keygen", "-q", "-s", str(d / "host_ca"), "-I", "bench-host", "-h",
                   "-n", "127.0.0.1,localhost", "-V", "-5m:+1d", str(d / "host_ed25519.pub")])
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        (port,) = free_ports(1)
        self.ports["sshd"] = port
        (d / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_ed25519'}
HostCertificate {d / 'host_ed25519-cert.pub'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile none
TrustedUserCAKeys {d / 'user_ca.pub'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
MaxStartups 100
Subsystem sftp {SFTP_SERVER}
""")
        ca_pub = (d / "host_ca.pub").read_text().split()
        (d / "known_hosts").write_text(f"@cert-authority [127.0.0.1]:{port},[localhost]:{port} "
                                       f"{ca_pub[0]} {ca_pub[1]}\n")
        (self.root / "ssh_config.openssh").write_text(f"""\
Host *
    BatchMode yes
    IdentitiesOnly yes
    IdentityFile {d / 'client_ed25519'}
    CertificateFile {d / 'client_ed25519-cert.pub'}
    UserKnownHostsFile {d / 'known_hosts'}
    StrictHostKeyChecking yes
    AddressFamily inet
    ControlMaster no
    ControlPath none
""")
        with open(d / "sshd.log", "wb") as log:
            self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.sshd.poll() is not None:
                raise BenchError(f"sshd exited with status {self.sshd.returncode}; "
                                 f"see {d / 'sshd.log'}")
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise BenchError(f"sshd did not listen on 127.0.0.1:{port} within 10s")

    # --- what the benchmarks run -------------------------------------------------------

    def check_alive(self) -> None:
        """Raise BenchError if the teleport process or sshd has exited (it should not)."""
        for name, proc, log in (("teleport", self.teleport, self.root / "teleport.log"),
                                ("sshd", self.sshd, self.root / "sshd" / "sshd.log")):
            if proc is not None and proc.poll() is not None:
                self.keep = True
                raise BenchError(f"{name} exited with status {proc.returncode} during the "
                                 f"benchmark: {_last_line(log)} (files kept in {self.root})")

    @property
    def teleport_pid(self) -> int:
        assert self.teleport is not None
        return self.teleport.pid

    def ssh_config(self, name: str, cipher: str | None) -> Path:
        """The ssh_config file for `name` (openssh, teleport), with `Ciphers` pinned if asked.

        A config file, not `-c`: ssh hands `-F` (not `-c`) to its `-J` jump process, so only
        a file pins the cipher of both hops.
        """
        base = self.root / f"ssh_config.{name}"
        if cipher is None:
            return base
        pinned = self.root / f"ssh_config.{name}.{cipher}"
        if not pinned.exists():
            pinned.write_text(base.read_text() + f"    Ciphers {cipher}\n")
        return pinned

    def paths(self, cipher: str | None = None) -> list[Route]:
        """The compared paths, the OpenSSH baseline first; append the remote command.

        cipher: pin it on the stock ssh clients (both hops); None leaves each client's default
        (chacha20-poly1305 for OpenSSH). `tsh` always uses its own first choice, `TSH_CIPHER`.
        The baseline names the jump hop `localhost` (AddressFamily inet: still 127.0.0.1)
        because ssh refuses a jump host spelled exactly like the target ("jumphost loop").
        """
        assert self.teleport is not None and self.sshd is not None
        sshd = self.ports["sshd"]
        result = [
            Route(BASELINE, ["ssh", "-F", str(self.ssh_config("openssh", cipher)),
                             "-J", f"root@localhost:{sshd}", "-p", str(sshd), "root@127.0.0.1"],
                  self.sshd.pid),
            Route("tsh", [str(BIN / "tsh"), "ssh", f"root@{NODENAME}"], self.teleport.pid),
        ]
        if self.want_ssh_teleport:
            result.append(Route(
                "ssh-teleport",
                ["ssh", "-F", str(self.ssh_config("teleport", cipher)),
                 "-J", f"{USER}@127.0.0.1:{self.ports['proxy_ssh']}", "-p", "3022",
                 f"root@{NODENAME}.{CLUSTER}"],
                self.teleport.pid))
        return result

    def run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        """Run a client command in its own process group; kill the group on timeout."""
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                kill_group(proc, grace=1)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def check(self, path: Route, remote: list[str], timeout: float = 60) -> bytes:
        """Run `remote` over `path` once; raise BenchError unless it exits 0."""
        result = self.run([*path.argv, *remote], timeout)
        self.check_alive()
        if result.returncode != 0:
            last = (result.stderr.decode(errors="replace").strip().splitlines()
                    or ["(no output)"])[-1]
            raise BenchError(f"{path.name}: `{' '.join(remote)}` exited {result.returncode}: "
                             f"{last}")
        return result.stdout


# --- shared by every cluster: running the CLIs, signing a user up -------------------------------

def run_checked(argv: list[str], *, env: dict[str, str] | None = None, input: str | None = None,
                check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a CLI to completion; unless it exits 0 (and check), raise its last stderr line."""
    result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                            env=env, stdin=None if input is not None else subprocess.DEVNULL)
    if check and result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"`{_argv_str([Path(argv[0]).name, *argv[1:3]])} ...` exited "
                         f"{result.returncode}: {last}")
    return result


def web_json(web_addr: str, method: str, path: str, body: Any = None) -> Any:
    """Call the proxy's web API as the browser does (the proxy's certificate is self-signed)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"https://{web_addr}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        return json.loads(resp.read())


def signup_and_login(web_addr: str, tctl: list[str], env: dict[str, str]) -> Path:
    """Add USER (logins USER and root) with `tctl`, complete its signup with an OTP through the
    web API and `tsh login` into env's TELEPORT_HOME; return the key path tsh left."""
    import pyotp

    out = run_checked([*tctl, "users", "add", USER, f"{USER},root"], env=env, timeout=30).stdout
    url = next((w for w in out.split() if "/web/newuser/" in w), None)
    if url is None:
        raise BenchError("`tctl users add` printed no signup link")
    token = url.rsplit("/", 1)[1]
    info = web_json(web_addr, "GET", f"/webapi/users/password/token/{token}")
    totp = pyotp.TOTP(info["otp_secret"])
    web_json(web_addr, "PUT", "/webapi/users/password/token",
             {"token": token, "password": PASSWORD, "second_factor_token": totp.now()})
    # The signup code cannot be replayed: log in with the next window's code.
    code = totp.at(time.time() + 30)
    run_checked([str(BIN / "tsh"), "login", f"--proxy={web_addr}", f"--user={USER}",
                 "--insecure"], env=env, input=f"{PASSWORD}\n{code}\n")
    key = Path(env["TELEPORT_HOME"]) / "keys" / web_addr.rsplit(":", 1)[0] / USER
    if not key.exists():
        raise BenchError(f"tsh login left no key at {key}")
    return key


def raise_fd_limit(want: int) -> None:
    """Raise this process's soft limit of open files to `want` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if want > hard != resource.RLIM_INFINITY:
        raise BenchError(f"this needs about {want} open files; the hard limit is {hard} "
                         "(raise it, e.g. `ulimit -Hn`, or use fewer --nodes)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))


def sigterm_as_interrupt() -> None:
    """Turn SIGTERM into Ctrl-C, so the same clean-up runs (`finally` blocks kill children)."""
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))


# --- a split cluster: auth, proxy (and a node) in their own processes (tunnels.py, scale.py) ----

class SplitCluster:
    """`teleport start` as an auth-only process, then a proxy-only one (and, with `node`, an
    SSH-only node named NODENAME) joining it with a static token: each process's CPU and
    memory are its own.

    `profile` ("auth" or "proxy") runs that process under cProfile (`<name>.prof` on exit).
    """

    def __init__(self, root: Path, cluster: str, token: str, *, tunnel_on_web: bool = False,
                 node: bool = False, profile: str = "") -> None:
        self.root = root
        self.cluster = cluster
        self.token = token
        self.tunnel_on_web = tunnel_on_web
        self.with_node = node
        self.profile = profile
        auth, ssh, web, tunnel, node_port = free_ports(5)
        self.ports = {"auth": auth, "proxy_ssh": ssh, "web": web, "node": node_port,
                      "tunnel": web if tunnel_on_web else tunnel}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        (root / "home").mkdir(exist_ok=True)
        #: For tsh: its profile lives in the directory, not in the caller's home.
        self.env = {**os.environ, "TELEPORT_HOME": str(root / "tsh-home"),
                    "HOME": str(root / "home")}

    @property
    def web_addr(self) -> str:
        return f"127.0.0.1:{self.ports['web']}"

    def start(self) -> None:
        p = self.ports
        self._start("auth", f"""\
auth_service:
  enabled: yes
  cluster_name: {self.cluster}
  listen_addr: 127.0.0.1:{p['auth']}
  tokens:
  - "node,proxy:{self.token}"
ssh_service:
  enabled: no
proxy_service:
  enabled: no
""")
        self._wait("auth", lambda: self.tctl("status", check=False).returncode == 0)
        join = (f"  auth_token: {self.token}\n  ca_pin: {self._ca_pin()}\n"
                f"  auth_servers: [\"127.0.0.1:{p['auth']}\"]\n")
        self._start("proxy", f"""\
auth_service:
  enabled: no
ssh_service:
  enabled: no
proxy_service:
  enabled: yes
  listen_addr: 127.0.0.1:{p['proxy_ssh']}
  web_listen_addr: 127.0.0.1:{p['web']}
  tunnel_listen_addr: 127.0.0.1:{p['tunnel']}
  public_addr: 127.0.0.1:{p['web']}
""", extra=join)
        if self.with_node:
            self._start("node", f"""\
auth_service:
  enabled: no
proxy_service:
  enabled: no
ssh_service:
  enabled: yes
  listen_addr: 127.0.0.1:{p['node']}
""", extra=join, nodename=NODENAME)
        self._wait("proxy", lambda: listening(p["tunnel"]) and listening(p["web"]))
        if self.with_node:
            self._wait("node", lambda: listening(p["node"]))

    def login(self) -> Path:
        """Sign USER up and `tsh login` through the proxy; return the key path."""
        return signup_and_login(self.web_addr, self.tctl_argv(), self.env)

    def _ca_pin(self) -> str:
        found = re.search(r"sha256:[0-9a-f]{64}", self.tctl("status").stdout)
        if found is None:
            raise BenchError("`tctl status` shows no CA pin")
        return found.group(0)

    def _start(self, name: str, services: str, extra: str = "", nodename: str = "") -> None:
        config = self.root / f"{name}.yaml"
        config.write_text(f"teleport:\n  nodename: {nodename or 'bench-' + name}\n"
                          f"  data_dir: {self.root / name}\n"
                          f"  log:\n    output: stderr\n    severity: WARN\n{extra}{services}")
        argv = [str(BIN / "teleport"), "start", "-c", str(config)]
        if name == self.profile:
            argv = [sys.executable, "-m", "cProfile", "-o", str(self.root / f"{name}.prof"), *argv]
        with open(self.root / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait(self, name: str, ready: Callable[[], bool], limit: float = 60) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self.check_alive()
            if ready():
                return
            time.sleep(0.3)
        raise BenchError(f"the {name} process was not ready within {limit:.0f}s; see {name}.log")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise BenchError(f"the {name} process exited with status {proc.returncode}: "
                                 f"{_last_line(self.root / f'{name}.log')}")

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def tctl_argv(self, *args: str) -> list[str]:
        return [str(BIN / "tctl"), "-c", str(self.root / "auth.yaml"), *args]

    def tctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_checked(self.tctl_argv(*args), check=check)

    def stop(self) -> None:
        for name in ("node", "proxy", "auth"):
            kill_group(self.procs.get(name), grace=15)


def listening(port: int) -> bool:
    """True if something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


# --- simulated hosts: real joins from their own loopback addresses ------------------------------

def source_address(index: int, per_address: int) -> str:
    """127.0.x.y for host `index`, `per_address` hosts to an address (never 127.0.0.1): the
    join limiter and the handshake throttle count per source address, as for separate hosts."""
    n = index // per_address
    return f"127.0.{1 + n // 250}.{2 + n % 250}"


async def fetch_join_ca(auth: str) -> list[bytes]:
    """The cluster's TLS CA certificates, as a joining host fetches them (we started the
    cluster: no pin to check)."""
    import aiohttp

    from teleport.api.auth_models import JoinCA
    from teleport.keys import authname

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    async with aiohttp.ClientSession() as http, http.get(
            f"https://{auth}/v1/join/ca", ssl=ctx,
            server_hostname=authname.RESERVED_DOMAIN) as resp:
        resp.raise_for_status()
        ca = JoinCA.model_validate(await resp.json())
    return [c.encode() for c in ca.tls_ca_certs]


class JoinRefused(BenchError):
    """The auth server answered a join with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """Worth another try, as a node retries: rate limited, or the server was busy."""
        return self.status == 429 or self.status >= 500


async def join_host(auth: str, ca_certs: list[bytes], *, token: str, cluster: str,
                    nodename: str, source: str, addresses: list[str]) -> Any:
    """Join as a node through `POST /v1/join` from `source`; return its `IdentityFile`.

    The keys are made here and only their public halves are sent, as a real node does. A
    refusal raises JoinRefused; the caller bounds the time (`asyncio.timeout`) and retries.
    """
    import uuid

    import aiohttp

    from teleport.api.auth_models import JoinAnswer, JoinRequest
    from teleport.auth.identity_file import IdentityFile
    from teleport.keys import authname, tlsconfig
    from teleport.keys import ssh as sshkeys
    from teleport.keys import tls as tlskeys

    host_uuid = str(uuid.uuid4())
    ssh_key = sshkeys.generate_private_key("ed25519")
    tls_key = tlskeys.generate_tls_key()
    body = JoinRequest(token=token, role="Node", host_uuid=host_uuid, nodename=nodename,
                       ssh_public_key=sshkeys.public_key_of(ssh_key),
                       tls_public_key=tlskeys.tls_public_key_pem(tls_key).decode(),
                       addresses=addresses)
    ctx = tlsconfig.ssl_client_context(None, None, ca_certs)
    connector = aiohttp.TCPConnector(local_addr=(source, 0), ssl=ctx)
    async with aiohttp.ClientSession(connector=connector) as http, http.post(
            f"https://{auth}/v1/join", json=body.model_dump(mode="json"),
            server_hostname=authname.auth_server_name(cluster)) as resp:
        if resp.status != 200:
            raise JoinRefused(f"join of {nodename} from {source} refused ({resp.status}): "
                              f"{(await resp.text())[:200]}", resp.status)
        answer = JoinAnswer.model_validate(await resp.json())
    return IdentityFile.from_issued("Node", host_uuid, ssh_key, tls_key, answer)
