"""Comments that keep arriving: a JSONL or danmaku-XML file being appended to, or standard input.

:meth:`CommentFeed.poll` never blocks: it returns the comments completed since the last call (a
JSONL line counts once its newline is written; an XML ``<d>`` once it is closed). Standard input is
read by a daemon thread into a queue. JSONL lines are checked like ``mm-live score``'s comment
logs (:mod:`mm_live.comments`): a malformed line stops with one line naming it unless
``skip_bad_lines``. Stdin is XML when its first byte is ``<``, JSONL otherwise.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from pathlib import Path
from typing import BinaryIO

from mm_live.comments import Comment, _BadLine, _parse
from mm_live.danmaku import DanmakuParser
from mm_live.errors import CommentsError
from mm_live.jsonl import skip_or_raise

_HINT = "pass --skip-bad-lines"


class CommentFeed:
    """Tail ``source`` (a path, or ``"-"`` for stdin); ``poll()`` -> new comments in arrival order."""

    def __init__(self, source: str | Path, *, skip_bad_lines: bool = False, stdin: BinaryIO | None = None):
        self.name = "<stdin>" if str(source) == "-" else str(source)
        self.skip_bad, self.skipped = skip_bad_lines, []
        self.lineno, self._rest, self._xml = 0, b"", None
        self.closed = False
        self._fh = None
        self._queue: queue.Queue[bytes | None] | None = None
        if str(source) == "-":
            self._queue = queue.Queue()
            stream = stdin if stdin is not None else sys.stdin.buffer
            threading.Thread(target=self._pump, args=(stream,), daemon=True, name="comments-stdin").start()
        else:
            path = Path(source)
            if not path.is_file():
                raise CommentsError(f"{path}: no such comments file; pass a .jsonl or danmaku .xml file, or - for stdin")
            if path.suffix.lower() not in (".jsonl", ".json", ".xml"):
                raise CommentsError(f"{path}: live comments must be .jsonl or danmaku .xml; convert or rename the file")
            if path.suffix.lower() == ".xml":
                self._xml = DanmakuParser(self.name, skip_bad_lines=skip_bad_lines)
            self._fh = open(path, "rb")

    def _pump(self, stream: BinaryIO) -> None:
        for line in iter(stream.readline, b""):
            self._queue.put(line)
        self._queue.put(None)

    def _read(self) -> bytes:
        if self._fh is not None:
            return self._fh.read()
        parts = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self.closed = True
                break
            parts.append(item)
        return b"".join(parts)

    def poll(self) -> list[Comment]:
        data = self._read()
        if not data:
            return []
        if self._xml is None and self.lineno == 0 and not self._rest and data.lstrip().startswith(b"<"):
            self._xml = DanmakuParser(self.name, skip_bad_lines=self.skip_bad)
        if self._xml is not None:
            return self._xml.feed(data)
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()  # an unfinished last line waits for its newline
        out = []
        for raw in lines:
            self.lineno += 1
            c = self._line(raw)
            if c is not None:
                out.append(c)
        return out

    def _line(self, raw: bytes) -> Comment | None:
        text = raw.decode("utf-8", errors="replace").strip().lstrip("\ufeff")
        if not text:
            return None
        try:
            record = json.loads(text)
            if not isinstance(record, dict):
                raise _BadLine("each line must be a JSON object {\"t\", \"user_id\", \"text\"}")
            return _parse(record)
        except (ValueError, _BadLine) as exc:
            problem = str(exc) if isinstance(exc, _BadLine) else "not valid JSON"
            skip_or_raise(self.name, self.lineno, problem, "fix the line", error=CommentsError,
                          skipped=self.skipped if self.skip_bad else None, hint=_HINT)
            return None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
