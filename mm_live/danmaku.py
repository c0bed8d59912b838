"""Bilibili-style XML danmaku (the comment format live recorders save), read incrementally.

A danmaku file is ``<i> ... <d p="time,mode,size,color,timestamp,pool,user,id">text</d> ... </i>``;
``time`` is seconds from the start of the stream and the 7th field is the sender's (hashed) id.
Recorders append ``<d>`` elements while the stream runs and close ``</i>`` at the end, so the file
is parsed with the standard library's incremental :class:`xml.etree.ElementTree.XMLPullParser`
(bytes are fed as they arrive; complete ``<d>`` elements come out).
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.etree.ElementTree import ParseError, XMLPullParser

from mm_live.comments import Comment
from mm_live.errors import CommentsError


class DanmakuParser:
    """Feed XML bytes in any pieces; :meth:`feed` returns the comments completed by them."""

    def __init__(self, name: str = "<danmaku>", *, skip_bad_lines: bool = False):
        self.name, self.skip_bad = name, skip_bad_lines
        self.parser = XMLPullParser(events=("end",))
        self.skipped = 0

    def feed(self, data: bytes) -> list[Comment]:
        try:
            self.parser.feed(data)
            events = list(self.parser.read_events())
        except ParseError as exc:
            raise CommentsError(f"{self.name}: not valid danmaku XML ({exc}); pass the recorder's .xml file") from None
        out = []
        for _, el in events:
            if el.tag != "d":
                continue
            c = self._comment(el)
            el.clear()  # keep the parsed tree small on long streams
            if c is not None:
                out.append(c)
        return out

    def _comment(self, el) -> Comment | None:
        fields = (el.get("p") or "").split(",")
        try:
            t = float(fields[0])
            if not math.isfinite(t) or t < 0:
                raise ValueError
        except ValueError:
            if self.skip_bad:
                self.skipped += 1
                return None
            raise CommentsError(f"{self.name}: a <d> element has p={el.get('p')!r}, whose first field must be "
                                "seconds >= 0; fix it or pass --skip-bad-lines") from None
        return Comment(t=t, user_id=fields[6] if len(fields) > 6 else "", text=el.text or "")


def read_danmaku(path: str | Path, *, skip_bad_lines: bool = False) -> list[Comment]:
    """All comments of a danmaku XML file, sorted by time (stable)."""
    path = Path(path)
    if not path.is_file():
        raise CommentsError(f"{path}: no such danmaku file; check the path")
    parser = DanmakuParser(str(path), skip_bad_lines=skip_bad_lines)
    return sorted(parser.feed(path.read_bytes()), key=lambda c: c.t)
