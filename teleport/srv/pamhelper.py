"""Hold one PAM session for the node: account check, open, environment, and close at the end.

Run by `teleport.srv.pam` as its own process (`python -I pamhelper.py`), never imported by the
node: a PAM module may block, fork, or change this process (limits, loginuid), so it runs where
the node can kill it on a timeout and where nothing it does leaks into the node.

Protocol on stdin/stdout, one JSON line each way: the node sends the request (service, login,
PAM items, PAM environment); the helper answers `{"ok", "error", "messages", "env", "process"}`
once the session is open (or refused), then keeps the session open until stdin reaches end of file,
when it closes the session and exits. `process` holds what the session modules changed on this
process (resource limits by RLIMIT_* name, umask, loginuid, nice) for the node to give the
session's child. Standard library only (ctypes over Debian's libpam0g).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import sys
from typing import Any

PAM_SUCCESS = 0
PAM_CONV_ERR = 19
PAM_BUF_ERR = 5
PAM_PROMPT_ECHO_OFF = 1
PAM_PROMPT_ECHO_ON = 2
PAM_ERROR_MSG = 3
PAM_TEXT_INFO = 4
PAM_TTY = 3
PAM_RHOST = 4
PAM_RUSER = 8
PAM_ESTABLISH_CRED = 0x2
PAM_DELETE_CRED = 0x4
#: Keep a chatty module (a huge MOTD) from growing our answer without bound.
MAX_MESSAGES_BYTES = 64 * 1024
MAX_ENV_VALUE = 10 * 1024


class PamMessage(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class PamResponse(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


ConvFunc = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int,
                            ctypes.POINTER(ctypes.POINTER(PamMessage)),
                            ctypes.POINTER(ctypes.POINTER(PamResponse)), ctypes.c_void_p)


class PamConv(ctypes.Structure):
    _fields_ = [("conv", ConvFunc), ("appdata_ptr", ctypes.c_void_p)]


def _libs() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    libpam = ctypes.CDLL(ctypes.util.find_library("pam") or "libpam.so.0")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.calloc.restype = ctypes.c_void_p
    libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.free.restype = None
    handle = ctypes.c_void_p
    libpam.pam_start.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(PamConv),
                                 ctypes.POINTER(handle)]
    for name in ("pam_acct_mgmt", "pam_open_session", "pam_close_session", "pam_setcred",
                 "pam_end"):
        getattr(libpam, name).argtypes = [handle, ctypes.c_int]
    libpam.pam_set_item.argtypes = [handle, ctypes.c_int, ctypes.c_void_p]
    libpam.pam_putenv.argtypes = [handle, ctypes.c_char_p]
    libpam.pam_getenvlist.argtypes = [handle]
    libpam.pam_getenvlist.restype = ctypes.POINTER(ctypes.c_void_p)
    libpam.pam_strerror.argtypes = [handle, ctypes.c_int]
    libpam.pam_strerror.restype = ctypes.c_char_p
    return libpam, libc


class Session:
    """One PAM transaction; messages modules show are kept for the node to pass on."""

    def __init__(self, service: str, login: str) -> None:
        self.libpam, self.libc = _libs()
        self.messages: list[str] = []
        self._size = 0
        self._conv_func = ConvFunc(self._converse)  # referenced for as long as PAM may call it
        self._conv = PamConv(self._conv_func, None)
        self.handle = ctypes.c_void_p()
        self.status = self.libpam.pam_start(service.encode(), login.encode(),
                                            ctypes.byref(self._conv), ctypes.byref(self.handle))
        if self.status != PAM_SUCCESS:
            raise PamError(f"cannot start PAM service {service}: code {self.status}")

    def _converse(self, count: int, messages: Any, responses: Any, _appdata: Any) -> int:
        """Collect what modules say; there is no one to answer prompts, so refuse those."""
        array = self.libc.calloc(count, ctypes.sizeof(PamResponse))
        if not array:
            return PAM_BUF_ERR
        for i in range(count):
            message = messages[i].contents
            if message.msg_style in (PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON):
                self.libc.free(array)
                return PAM_CONV_ERR
            text = (message.msg or b"").decode(errors="replace")
            if self._size + len(text) <= MAX_MESSAGES_BYTES:
                self._size += len(text)
                self.messages.append(text)
        responses[0] = ctypes.cast(array, ctypes.POINTER(PamResponse))
        return PAM_SUCCESS

    def error(self, code: int) -> str:
        text: bytes | None = self.libpam.pam_strerror(self.handle, code)
        return text.decode(errors="replace") if text else f"PAM error {code}"

    def call(self, name: str, flags: int = 0) -> int:
        code: int = getattr(self.libpam, name)(self.handle, flags)
        self.status = code
        return code

    def set_item(self, item: int, value: str) -> None:
        self.libpam.pam_set_item(self.handle, item, ctypes.c_char_p(value.encode()))

    def putenv(self, name: str, value: str) -> None:
        self.libpam.pam_putenv(self.handle, f"{name}={value}".encode())

    def environment(self) -> dict[str, str]:
        """Return PAM's environment (pam_env, pam_exec's modules...), freeing what libpam gave us."""
        env: dict[str, str] = {}
        array = self.libpam.pam_getenvlist(self.handle)
        if not array:
            return env
        i = 0
        while array[i]:
            entry = ctypes.string_at(array[i]).decode(errors="replace")
            name, sep, value = entry.partition("=")
            if sep and name and len(value) <= MAX_ENV_VALUE:
                env[name] = value
            self.libc.free(array[i])
            i += 1
        self.libc.free(ctypes.cast(array, ctypes.c_void_p))
        return env

    def end(self) -> None:
        self.libpam.pam_end(self.handle, self.status)


class PamError(Exception):
    pass


def process_attrs() -> dict[str, Any]:
    """Return this process's attributes that session modules may set (pam_limits, pam_umask...)."""
    limits = {name: list(resource.getrlimit(getattr(resource, name)))
              for name in dir(resource) if name.startswith("RLIMIT_")}
    mask = os.umask(0)
    os.umask(mask)
    try:
        with open("/proc/self/loginuid") as f:
            loginuid: int | None = int(f.read())
    except (OSError, ValueError):
        loginuid = None
    return {"limits": limits, "umask": mask, "loginuid": loginuid,
            "nice": os.getpriority(os.PRIO_PROCESS, 0)}


def changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Keep what PAM changed: the node's own values reach its children by inheritance."""
    out: dict[str, Any] = {"limits": {name: value for name, value in after["limits"].items()
                                      if value != before["limits"].get(name)}}
    for key in ("umask", "loginuid", "nice"):
        if after[key] is not None and after[key] != before[key]:
            out[key] = after[key]
    return out


def _answer(out: Any, **fields: Any) -> None:
    out.write(json.dumps(fields) + "\n")
    out.flush()


def main() -> int:
    # The protocol gets private copies of the pipes; modules that print or read find /dev/null.
    requests = os.fdopen(os.dup(0), "r")
    answers = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    before = process_attrs()
    try:
        request = json.loads(requests.readline())
        session = Session(request["service"], request["login"])
    except (ValueError, KeyError, OSError, PamError) as err:
        _answer(answers, ok=False, error=str(err), messages=[], env={})
        return 1
    for name, value in request.get("env", {}).items():
        session.putenv(name, value)
    for item, key in ((PAM_RHOST, "rhost"), (PAM_TTY, "tty"), (PAM_RUSER, "ruser")):
        if request.get(key):
            session.set_item(item, request[key])
    login = request["login"]
    code = session.call("pam_acct_mgmt")
    if code != PAM_SUCCESS:
        _answer(answers, ok=False, messages=session.messages,
                error=f"PAM account check for {login} failed: {session.error(code)}")
        session.end()
        return 1
    code = session.call("pam_open_session")
    if code != PAM_SUCCESS:
        _answer(answers, ok=False, messages=session.messages,
                error=f"PAM could not open a session for {login}: {session.error(code)}")
        session.end()
        return 1
    # As sshd does for logins PAM did not authenticate: a credential failure is not fatal.
    established = session.call("pam_setcred", PAM_ESTABLISH_CRED) == PAM_SUCCESS
    _answer(answers, ok=True, error="", messages=session.messages, env=session.environment(),
            process=changed(before, process_attrs()))
    # The session lasts until the node closes our stdin (also when the node dies).
    while requests.read(4096):
        pass
    if established:
        session.call("pam_setcred", PAM_DELETE_CRED)
    session.call("pam_close_session")
    session.end()
    return 0


if __name__ == "__main__":
    sys.exit(main())
