"""The CLI's last resort: an exception that is not a user error is a bug, and a user gets one line.

:func:`write_crash_log` saves the full traceback with what was run (version, command line, Python,
platform) to a file the user can attach to a bug report; the CLI prints one line pointing at it and
exits 1. The folder is ``$MM_LIVE_CRASH_DIR``, else ``<system temp dir>/mm-live-crashes``.
``MM_LIVE_DEBUG=1`` makes the CLI re-raise instead, for developers.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

CRASH_DIR_ENV = "MM_LIVE_CRASH_DIR"
DEBUG_ENV = "MM_LIVE_DEBUG"


def debugging() -> bool:
    """True when ``MM_LIVE_DEBUG`` asks for raw tracebacks (any value but empty, 0, false, no)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def crash_dir() -> Path:
    return Path(os.environ.get(CRASH_DIR_ENV) or Path(tempfile.gettempdir()) / "mm-live-crashes")


def write_crash_log(exc: BaseException, argv: list[str] | None) -> Path:
    """Write the traceback of ``exc`` and the context it happened in; return the log's path.

    Raises OSError when the folder cannot be written (the caller says so in its one line).
    """
    from mm_live import __version__

    folder = crash_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    # exclusive create: two crashes in the same second (or process) never overwrite each other
    fd, name = tempfile.mkstemp(prefix=f"crash-{stamp}-{os.getpid()}-", suffix=".log", dir=folder)
    header = [
        f"mm-live {__version__} crashed at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        f"command: mm-live {' '.join(sys.argv[1:] if argv is None else argv)}",
        f"cwd: {os.getcwd()}",
        f"python: {sys.version.split()[0]} ({sys.executable}) on {platform.platform()}",
        "",
    ]
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(header) + "\n")
        fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return Path(name)


def one_line(exc: BaseException, log: Path | None, reason: str | None = None) -> str:
    """The line a user sees: exception type and message, and where the details are."""
    msg = " ".join(str(exc).split())
    msg = msg if len(msg) <= 300 else msg[:297] + "..."
    where = f"details in {log}" if log is not None else f"no crash log ({reason}); set {DEBUG_ENV}=1 to see the traceback"
    return f"mm-live: internal error: {type(exc).__name__}: {msg} ({where})"
