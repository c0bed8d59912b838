"""mm_live.jsonl: the one reader of JSONL / text / CSV inputs and its one-line errors."""

from __future__ import annotations

import json

import pytest

from mm_live.errors import CommentsError, DataError
from mm_live.jsonl import iter_csv, iter_jsonl, iter_lines, open_text


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_yields_line_numbers_of_objects_skipping_blank_lines(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"a": 1}\n\n   \r\n{"b": "\xc3\xa9 \xf0\x9f\x94\xa5"}\r\n{"c": null}')  # CRLF, no final newline
    assert list(iter_jsonl(p, "test")) == [(1, {"a": 1}), (4, {"b": "é 🔥"}), (5, {"c": None})]


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n')
    assert [o["a"] for _, o in iter_jsonl(p, "test")] == [1, 2]


BAD = {
    "invalid": (b'{"a": 1,}', r"b\.jsonl:2: is not valid JSON \(Expecting property name .* at column 9\); fix the line$"),
    "array": (b"[1, 2]", r"b\.jsonl:2: must be a JSON object \{\.\.\.\}, got an array; fix the line$"),
    "string": (b'"hi"', r"b\.jsonl:2: must be a JSON object \{\.\.\.\}, got a string"),
    # the offset counts bytes from the start of the file (0-based): line 1 is 9 bytes, 0xe9 is byte 10 of line 2
    "latin1": (b'{"t": "caf\xe9"}', r"b\.jsonl:2: byte 0xe9 at offset 19 is not UTF-8; re-save the file as UTF-8$"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, r"b\.jsonl:2: is not valid JSON \(RecursionError"),
    "huge_int": (b'{"t": ' + b"9" * 5000 + b"}", r"b\.jsonl:2: is not valid JSON \(ValueError"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_line_raises_the_callers_error_naming_line_and_fix(tmp_path, kind):
    line, pattern = BAD[kind]
    p = tmp_path / "b.jsonl"
    p.write_bytes(b'{"a": 1}\n' + line + b'\n{"a": 3}\n')
    for error in (DataError, CommentsError):
        with pytest.raises(error, match=pattern) as err:
            list(iter_jsonl(p, "test", error=error))
        assert _one_line(err).startswith(f"{p}:2: ")


def test_skipped_list_collects_bad_lines_and_reading_goes_on(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(b'{"a": 1}\nnope\n{"a": \xff}\n[3]\n{"a": 5}\n')
    skipped: list[tuple[int, str]] = []
    assert list(iter_jsonl(p, "test", skipped=skipped)) == [(1, {"a": 1}), (5, {"a": 5})]
    assert [n for n, _ in skipped] == [2, 3, 4]
    assert "not valid JSON" in skipped[0][1] and "byte 0xff at offset 20 is not UTF-8" in skipped[1][1] and "array" in skipped[2][1]


def test_hint_is_offered_next_to_the_fix(tmp_path):
    p = tmp_path / "h.jsonl"
    p.write_text("oops\n")
    with pytest.raises(CommentsError, match=r"h\.jsonl:1: .*; fix the line or pass --skip-bad-lines$"):
        list(iter_jsonl(p, "comments", error=CommentsError, hint="pass --skip-bad-lines"))


def test_missing_file_directory_and_utf16(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: manifest file not found; check the path$"):
        list(iter_jsonl(tmp_path / "nope.jsonl", "manifest"))
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(DataError, match=r"dir\.jsonl: is a directory, not a manifest file; pass the file's path$"):
        list(iter_jsonl(tmp_path / "dir.jsonl", "manifest"))
    p = tmp_path / "u16.jsonl"
    p.write_text('{"a": 1}\n', encoding="utf-16")
    with pytest.raises(DataError, match=r"u16\.jsonl:1: is UTF-16 text, not UTF-8; re-save the file as UTF-8$"):
        list(iter_jsonl(p, "manifest"))


def test_iter_lines_strips_line_endings(tmp_path):
    p = tmp_path / "t.log"
    p.write_bytes(b"a\tb\r\n\nc")
    assert list(iter_lines(p, "log")) == [(1, "a\tb"), (2, ""), (3, "c")]


def test_csv_rows_start_lines_and_decode_errors(tmp_path):
    p = tmp_path / "c.csv"
    p.write_bytes(b'\xef\xbb\xbfa,b\n1,"two\nlines"\n\n3,x\n')
    with open_text(p, "table", newline="") as fh:
        assert list(iter_csv(fh, p)) == [(1, ["a", "b"]), (2, ["1", "two\nlines"]), (5, ["3", "x"])]
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,b\n" + b"1,2\n" * 5000 + b"3,caf\xe9\n")
    with pytest.raises(DataError, match=r"bad\.csv:5002: byte 0xe9 at offset 20009 is not UTF-8; re-save the file as UTF-8$"):
        with open_text(bad, "table", newline="") as fh:
            list(iter_csv(fh, bad))


def test_csv_error_names_its_line(tmp_path):
    p = tmp_path / "big.csv"
    p.write_text("a,b\n1,2\n3," + "x" * 200_000 + "\n", encoding="utf-8")  # over csv's field size limit
    with pytest.raises(DataError, match=r"big\.csv:3: is not valid CSV \(field larger than field limit"):
        with open_text(p, "table", newline="") as fh:
            list(iter_csv(fh, p))


def test_every_line_round_trips_json_dumps(tmp_path):
    rows = [{"t": i / 7, "text": "🔥" * i, "nested": {"k": [i, None, True]}} for i in range(50)]
    p = tmp_path / "r.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert [o for _, o in iter_jsonl(p, "test")] == rows
