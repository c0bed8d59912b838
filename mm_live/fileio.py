"""Atomic file and directory writes: a reader never sees a half-written output.

Outputs are written to a temporary sibling and renamed into place (``os.replace`` is atomic on
POSIX within one filesystem). Directories (checkpoints, indexes) are built in a temporary sibling
directory and swapped in with a rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    Use for libraries that want a filename (faiss, matplotlib, safetensors). On error the
    temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any):
    """``open`` that writes to a temporary file and renames it onto ``path`` on success."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent, ensure_ascii=False)
        fh.write("\n")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Python's ``os`` module has no exchange-rename, so it is called through libc; returns False
    where the call is unavailable (non-Linux, old kernels, filesystems without support).
    """
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``path``; on success it replaces ``path``.

    A new ``path`` appears with one rename. An existing one is swapped with the new directory in a
    single atomic exchange (``renameat2``), so at every moment a complete directory, old or new,
    stands at ``path``; the old one is deleted afterwards. Where the exchange is unavailable the
    old directory is renamed aside first and a reader may, for that instant, find none: use
    :func:`existing_dir` to read, which falls back to the set-aside copy.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not path.exists():
        os.replace(tmp, path)
        return
    if _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old directory
        return
    old = _aside(path)
    shutil.rmtree(old, ignore_errors=True)
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _aside(path: Path) -> Path:
    return path.parent / f".{path.name}.old"


def existing_dir(path: str | os.PathLike) -> Path:
    """``path``, or the copy :func:`atomic_dir` set aside while replacing it (non-exchange fallback)."""
    path = Path(path)
    if not path.exists() and _aside(path).is_dir():
        return _aside(path)
    return path


def check_output(path: str | os.PathLike, *, kind: str = "dir", flag: str = "--out") -> Path:
    """Refuse, before any work, an output path that cannot be written; return it as a Path.

    ``kind="dir"``: a folder that is created (or replaced); ``"file"``: a file. Whether the folder
    it goes in can be written is found out by creating (and at once deleting) a temporary file in the
    nearest existing ancestor: permission bits say nothing to root, read-only mounts or sysfs.
    Raises :class:`~mm_live.errors.OutputError` naming the path (as ``flag``) and the fix.
    """
    from mm_live.errors import OutputError

    path = Path(path)
    if kind == "dir" and path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a directory: pass a folder path (or move the file away)")
    if kind == "file" and path.is_dir():
        raise OutputError(f"{flag} {path} is a directory: pass a file path such as {path / 'out.json'}")
    where = path if kind == "dir" and path.is_dir() else path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise OutputError(f"{flag} {path}: {where} is a file, not a directory; choose another {flag}")
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as exc:
        raise OutputError(f"{flag} {path} cannot be written ({exc.strerror or type(exc).__name__} in {where}); "
                          f"choose a {flag} you can write to") from None
    return path
