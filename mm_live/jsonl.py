"""Reading the project's text inputs: one JSONL reader, and the UTF-8 checks every text reader shares.

Every JSONL input (manifests, annotations, predictions, comment logs) goes through :func:`iter_jsonl`;
line-based text (KLive logs) through :func:`iter_lines`; CSV through :func:`open_text` and
:func:`iter_csv`. They all
raise the caller's project error (``error=``, a :class:`~mm_live.errors.MMLiveError` subclass:
``DataError`` for datasets, ``CommentsError`` for comment logs) with ONE line in one format::

    <path>:<line>: <problem>; <fix>

Files are read as UTF-8 (a leading UTF-8 byte-order mark is accepted). Bytes that are not UTF-8 are
reported with their line and byte offset, never as a ``UnicodeDecodeError``. Readers that may skip
bad lines pass a ``skipped`` list: bad lines are then appended to it as ``(line, problem)`` and
reading goes on.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path
from typing import IO, Iterator

from mm_live.errors import DataError, MMLiveError

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
SAVE_AS_UTF8 = "re-save the file as UTF-8"


def line_error(path: str | Path, line: int | None, problem: str, fix: str | None = None, *,
               error: type[MMLiveError] = DataError) -> MMLiveError:
    """``error("<path>:<line>: <problem>; <fix>")`` -- the one format of a bad-input message."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return error(f"{where}: {problem}" + (f"; {fix}" if fix else ""))


def skip_or_raise(path: str | Path, line: int, problem: str, fix: str, *, error: type[MMLiveError] = DataError,
                  skipped: list[tuple[int, str]] | None = None, hint: str | None = None) -> None:
    """Record a bad line in ``skipped`` (when it is a list) or raise ``error`` naming it.

    ``hint`` is an alternative to the fix, e.g. ``"pass --skip-bad-lines"``.
    """
    if skipped is not None:
        skipped.append((line, problem))
        return
    raise line_error(path, line, problem, f"{fix} or {hint}" if hint else fix, error=error)


def check_file(path: str | Path, what: str, *, error: type[MMLiveError] = DataError) -> Path:
    """``path`` as a Path if it is an existing regular file, else ``error`` saying what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise line_error(path, None, f"is a directory, not a {what} file", "pass the file's path", error=error)
    if not path.is_file():
        raise line_error(path, None, f"{what} file not found", "check the path", error=error)
    return path


def _utf8_lines(fh: IO[bytes]) -> Iterator[tuple[int, str | None, str | None]]:
    """``(line number, text, None)`` per line of a binary file, or ``(line number, None, problem)``
    naming the first byte of the line that is not UTF-8 by its offset in the file."""
    offset = 0
    for line, raw in enumerate(fh, 1):
        start = len(_UTF8_BOM) if line == 1 and raw.startswith(_UTF8_BOM) else 0
        try:
            text = raw[start:].decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = start + exc.start
            utf16 = line == 1 and raw.startswith(_UTF16_BOMS)
            yield line, None, "is UTF-16 text, not UTF-8" if utf16 else f"byte 0x{raw[bad]:02x} at offset {offset + bad} is not UTF-8"
        else:
            yield line, text.rstrip("\r\n"), None
        offset += len(raw)


def _open(path: Path, *, error: type[MMLiveError], **kwargs) -> IO:
    try:
        return open(path, **kwargs)
    except OSError as exc:
        raise line_error(path, None, f"cannot be read ({exc.strerror})", "check its permissions", error=error) from None


def iter_lines(path: str | Path, what: str, *, error: type[MMLiveError] = DataError,
               skipped: list[tuple[int, str]] | None = None, hint: str | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` for every line (1-based, line ending removed), decoded as UTF-8.

    Lines are split on ``\\n`` in bytes (a newline byte never occurs inside a UTF-8 character), so a
    line that is not UTF-8 is named with its number and the byte offset of the first bad byte in the
    file; with ``skipped`` it is skipped like any other bad line.
    """
    path = check_file(path, what, error=error)
    with _open(path, error=error, mode="rb") as fh:
        for line, text, problem in _utf8_lines(fh):
            if problem is None:
                yield line, text
            else:
                skip_or_raise(path, line, problem, SAVE_AS_UTF8, error=error, skipped=skipped, hint=hint)


def read_text(path: str | Path, what: str, *, error: type[MMLiveError] = DataError) -> str:
    """The whole file as text (UTF-8, an optional byte-order mark dropped); a file that is not UTF-8
    raises ``error`` naming the line and byte offset of the first bad byte."""
    path = check_file(path, what, error=error)
    with _open(path, error=error, mode="rb") as fh:
        raw = fh.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _not_utf8(path, io.BytesIO(raw), error) from None


def _not_utf8(path: Path, fh: IO[bytes], error: type[MMLiveError]) -> MMLiveError:
    """``error`` naming the line and byte offset of the first byte of ``fh`` that is not UTF-8."""
    line, problem = next(((n, p) for n, _, p in _utf8_lines(fh) if p), (None, "is not UTF-8 text"))
    return line_error(path, line, problem, SAVE_AS_UTF8, error=error)


def _json_type(value: object) -> str:
    return {list: "an array", str: "a string", bool: "true/false", type(None): "null"}.get(type(value), "a number")


def iter_jsonl(path: str | Path, what: str, *, error: type[MMLiveError] = DataError,
               skipped: list[tuple[int, str]] | None = None, hint: str | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, object)`` for every non-blank line of a JSONL file (1-based lines).

    ``what`` names the file in messages (``"manifest"``, ``"comments"``). A line that is not UTF-8,
    not valid JSON or not a JSON object raises ``error`` naming file, line and fix -- or, when
    ``skipped`` is a list, is recorded there and skipped. ``hint`` is offered as an alternative
    fix (``"pass --skip-bad-lines"``).
    """
    path = Path(path)
    for line, text in iter_lines(path, what, error=error, skipped=skipped, hint=hint):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            problem = f"is not valid JSON ({exc.msg} at column {exc.colno})"
        except (ValueError, RecursionError) as exc:  # a 5000-digit number, [[[[... nested too deep
            problem = f"is not valid JSON ({type(exc).__name__}: {str(exc)[:80]})"
        else:
            if isinstance(obj, dict):
                yield line, obj
                continue
            problem = f"must be a JSON object {{...}}, got {_json_type(obj)}"
        skip_or_raise(path, line, problem, "fix the line", error=error, skipped=skipped, hint=hint)


@contextlib.contextmanager
def open_text(path: str | Path, what: str, *, error: type[MMLiveError] = DataError,
              newline: str | None = None) -> Iterator[IO[str]]:
    """``open(path, encoding="utf-8-sig")`` for readers that need a file object (the csv module).

    A ``UnicodeDecodeError`` raised while the block reads becomes ``error`` naming the line and
    byte offset of the first byte that is not UTF-8 (found by re-scanning the file).
    """
    path = check_file(path, what, error=error)
    with _open(path, error=error, mode="r", encoding="utf-8-sig", newline=newline) as fh:
        try:
            yield fh
        except UnicodeDecodeError:
            with open(path, "rb") as raw:
                raise _not_utf8(path, raw, error) from None


def iter_csv(fh: IO[str], path: str | Path, *, error: type[MMLiveError] = DataError) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number where the row starts, row)`` for every non-empty row of an open CSV file
    (:func:`open_text` with ``newline=""``), the header included; a ``csv.Error`` names its line."""
    reader = csv.reader(fh)
    end = 0
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:
            raise line_error(path, reader.line_num, f"is not valid CSV ({exc})", "fix the line", error=error) from None
        if row is None:
            return
        start, end = end + 1, reader.line_num  # a quoted field may span lines
        if row:
            yield start, row
