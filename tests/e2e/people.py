"""People for e2e tests: users signed up with chosen roles, each with a tsh home of their own.

Tests about roles and locks need several users at once; one shared `~/.tsh` (Cluster.env) would
make them one person. A Person also remembers which TOTP steps it spent: the auth server accepts
each code once, so a second login in the same 30 s needs the next step's code.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyotp

from tests.e2e.cluster import Cluster


@dataclass
class Person:
    name: str
    home: Path
    totp: pyotp.TOTP
    #: TOTP time steps already spent (each code is accepted once).
    spent: set[int] = field(default_factory=set)

    @property
    def env(self) -> dict[str, str]:
        """The variables that make tsh (and anything it runs) use this person's home."""
        return {"TELEPORT_HOME": str(self.home / "tsh"), "HOME": str(self.home)}

    def code(self) -> str:
        """A code the auth server accepts now (one step either side) and has not seen yet."""
        while True:
            if time.time() % 30 > 28:  # a step about to change: the code could age out in flight
                time.sleep(30 - time.time() % 30 + 0.1)
            step = int(time.time()) // 30
            for candidate in (step + 1, step, step - 1):
                if candidate not in self.spent:
                    self.spent.add(candidate)
                    return self.totp.at(candidate * 30)
            time.sleep(30 - time.time() % 30 + 0.1)


def sign_up(cluster: Cluster, name: str, logins: str, roles: str, root: Path,
            password: str) -> Person:
    """Add name with these logins and roles (`tctl users add`), complete the signup, and give
    them a home under root; the signup's TOTP step counts as spent."""
    before = int(time.time()) // 30
    totp = cluster.signup(name, logins, password, roles=roles)  # spends totp.now()
    home = root / name
    home.mkdir()
    return Person(name, home, totp, {before, int(time.time()) // 30})


def env_of(who: Person) -> dict[str, str]:
    """The whole environment for a process run as who (os.environ plus who's home)."""
    return {**os.environ, **who.env}


def tsh_as(cluster: Cluster, who: Person, *args: str, input: str | None = None,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run tsh as who; the result is returned whatever the exit status (callers assert)."""
    return cluster._run("tsh", args, input, False, timeout, env=who.env)


def login_as(cluster: Cluster, who: Person, password: str,
             *extra: str) -> subprocess.CompletedProcess[str]:
    """`tsh login` as who with password and a fresh code, plus extra flags; not checked, so a
    refused login can be asserted on."""
    return tsh_as(cluster, who, "login", f"--proxy={cluster.web_addr}", f"--user={who.name}",
                  "--insecure", *extra, input=f"{password}\n{who.code()}\n")
