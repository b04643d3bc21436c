"""What every command line shares: the event loop, error-to-exit-code mapping, tables."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Coroutine, Sequence
from datetime import timedelta
from typing import Any, ParamSpec

from teleport.api.constants import DEBUG_ENV
from teleport.errors import BadParameter, TeleportError

_P = ParamSpec("_P")

EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
#: What a shell reports for `cat` killed by SIGPIPE: the reader went away (`| head -1`).
EXIT_CLOSED_PIPE = 128 + 13


def run(command: Coroutine[Any, Any, int | None] | Callable[[], int | None]) -> int:
    """Run a command, a coroutine on asyncio (uvloop when installed) or a plain function (one
    that reads only local files: `tsh status` does not pay for an event loop); errors become
    one line."""
    try:
        code = _on_loop(command) if isinstance(command, Coroutine) else command() or 0
        sys.stdout.flush()  # here, so that a reader gone meanwhile is seen below
        return code
    except BrokenPipeError:
        return closed_pipe()
    except TeleportError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(err, BadParameter) else EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug: still one line, the traceback only when asked for
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"ERROR: internal error: {type(err).__name__}: {err} "
              "(set TELEPORT_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_ERROR


def _on_loop(coro: Coroutine[Any, Any, int | None]) -> int:
    import asyncio  # imported here: `tsh version`, `--help` and `status` must not pay for it

    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro) or 0


def needed_commands(argv: Sequence[str], commands: Collection[str]) -> list[str]:
    """The subcommands whose parsers a command line needs: the ones it names, or all of them
    for help and for a command line that names none (to list them in the error).

    Each subparser costs argparse ~2 ms to build (its help strings go through gettext's locale
    search), as much as the rest of `tsh ls`'s argument handling together.
    """
    named = set(argv) & set(commands)
    if not named or "-h" in argv or "--help" in argv:
        return list(commands)
    return [name for name in commands if name in named]


def quiet_on_closed_pipe(main: Callable[_P, int]) -> Callable[_P, int]:
    """Stop a CLI's `main` quietly on a closed pipe, also for what it prints outside `run`.

    `version` and `teleport configure` print without the event loop, and stdout's last flush
    happens after `run` returns.
    """
    import functools

    @functools.wraps(main)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> int:
        try:
            code = main(*args, **kwargs)
            sys.stdout.flush()
        except BrokenPipeError:
            return closed_pipe()
        return code

    return wrapper


def version_line() -> str:
    """Return the line every `version` command prints.

    Teleport prints `Teleport v<version> git:<tag> go<version>`; we name Python where it names Go.
    """
    from teleport import __version__

    return f"Teleport v{__version__} python{sys.version_info.major}.{sys.version_info.minor}"


def closed_pipe() -> int:
    """Stop quietly when the reader of stdout has gone, as `cat` does (`tsh play | head -1`).

    Whatever is still buffered goes to /dev/null, so Python's flush at exit cannot print
    "Exception ignored ... BrokenPipeError" either.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
    return EXIT_CLOSED_PIPE


def csv_list(text: str | None) -> list[str]:
    """Split a comma-separated flag, each item once (`root,root` is one login)."""
    return list(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))


def flag_duration(text: str, flag: str) -> timedelta:
    """Parse a duration flag (`1h`), naming the flag in the error."""
    from teleport.utils.duration import parse_duration

    try:
        return parse_duration(text)
    except BadParameter as err:
        raise BadParameter(f"{flag}: {err}") from None


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Format columns the way the manual prints `tctl users ls` and `tctl nodes ls`."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return " ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(headers), line(["-" * len(h) for h in headers])]
    out += [line(r) for r in rows]
    return "\n".join(out)
