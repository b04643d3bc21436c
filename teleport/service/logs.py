"""Process logging as `teleport.log` configures it: where, how much, text or JSON.

Text lines look like Teleport's: `INFO [AUTH] Auth service is starting on 0.0.0.0:3025.`,
with the component taken from the logger name (`teleport.auth` -> AUTH, `teleport` -> PROC).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from pathlib import Path

from teleport.errors import BadParameter

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
          "WARNING": logging.WARNING, "ERROR": logging.ERROR}
SHORT = {logging.DEBUG: "DEBU", logging.INFO: "INFO", logging.WARNING: "WARN",
         logging.ERROR: "ERRO", logging.CRITICAL: "ERRO"}


def component(name: str) -> str:
    """Map `teleport.auth` to `AUTH`; the process itself is `PROC`."""
    parts = name.split(".")
    if parts[0] != "teleport":
        return parts[0].upper()
    return parts[1].upper() if len(parts) > 1 else "PROC"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{SHORT.get(record.levelno, record.levelname[:4])} [{component(record.name)}] {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                 "level": SHORT.get(record.levelno, record.levelname).lower(),
                 "component": component(record.name), "message": record.getMessage()}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(output: str, severity: str, fmt: str, debug: bool) -> None:
    """Send all `teleport.*` logs to one handler; `-d` forces DEBUG."""
    level = logging.DEBUG if debug else LEVELS.get(severity.upper())
    if level is None:
        raise BadParameter(f"unknown log severity {severity!r}: use DEBUG, INFO, WARN or ERROR")
    handler: logging.Handler
    if output in ("stderr", ""):
        handler = logging.StreamHandler(sys.stderr)
    elif output == "stdout":
        handler = logging.StreamHandler(sys.stdout)
    elif output == "syslog":
        try:
            handler = logging.handlers.SysLogHandler(address="/dev/log")
        except OSError as err:
            raise BadParameter(f"cannot log to syslog: /dev/log: {err.strerror}") from None
    else:
        path = Path(output)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path)
        except OSError as err:
            raise BadParameter(f"cannot open log file {path}: {err.strerror}") from None
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # asyncssh and aiohttp are chatty at INFO: keep them one notch quieter unless debugging.
    for noisy in ("asyncssh", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else max(level, logging.WARNING))


def dump(text: str) -> None:
    """Write text to the log whatever the severity: an operator asked for it (SIGUSR1)."""
    record = logging.LogRecord("teleport", logging.INFO, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        handler.handle(record)
