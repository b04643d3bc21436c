"""`tsh` imports asyncssh without the start-up work it would do for features tsh never uses."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import ctypes.util, subprocess, sys
    spawned = []
    real_init = subprocess.Popen.__init__
    def counting(self, args, *a, **k):
        spawned.append(args)
        real_init(self, args, *a, **k)
    subprocess.Popen.__init__ = counting
    real_find = ctypes.util.find_library
    from teleport.client import sshstack
    sshstack.load()
    import asyncssh, asyncssh.crypto.umac as umac
    print(len(spawned), "fido2" in sys.modules, "OpenSSL" in sys.modules,
          ctypes.util.find_library is real_find, umac._nettle_lib is not None)
    import fido2.client, OpenSSL  # still there for WebAuthn logins
    print("fido2 and pyOpenSSL importable")
""")


def test_asyncssh_loads_with_one_library_lookup_and_without_python_fido2_or_pyopenssl() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split("\n")
    spawned, fido2_loaded, openssl_loaded, restored, nettle = out[0].split()
    # One `ldconfig -p` answers every lookup (plain find_library runs gcc and ld for each
    # library not installed), and the lookups still find what is there (nettle: UMAC).
    assert int(spawned) <= 1
    assert (fido2_loaded, openssl_loaded, restored, nettle) == ("False", "False", "True", "True")
    assert out[1] == "fido2 and pyOpenSSL importable"
