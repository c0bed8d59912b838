"""mm_live.comments: reading comment logs and per-step look-back bags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mm_live.comments import Comment, CommentLog, lookback_bags, read_comments
from mm_live.errors import CommentsError


def write_jsonl(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_jsonl_sorted_with_str_user_ids(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        json.dumps({"t": 3.5, "user_id": 7, "text": "later"}),
        "",
        json.dumps({"t": 1, "user_id": "u1", "text": "first"}),
        "   ",
        json.dumps({"t": 2.0, "user_id": "u2", "text": "second"}),
    ])
    log = read_comments(path)
    assert isinstance(log, CommentLog) and log.path == str(path) and log.skipped == []
    assert log.comments == [Comment(1.0, "u1", "first"), Comment(2.0, "u2", "second"), Comment(3.5, "7", "later")]


def test_reads_csv_with_quoted_fields(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('t,user_id,text\n2.5,u2,"hello, world"\n\n0.5,11,"two\nlines"\n', encoding="utf-8")
    log = read_comments(path)
    assert log.comments == [Comment(0.5, "11", "two\nlines"), Comment(2.5, "u2", "hello, world")]


def test_emoji_and_non_latin_text_round_trip(tmp_path):
    texts = ["🔥🔥 nice", "太棒了", "Привет", "مرحبا", "👍🏽"]
    path = write_jsonl(tmp_path / "c.jsonl", [json.dumps({"t": i, "user_id": "u", "text": x}) for i, x in enumerate(texts)])
    assert [c.text for c in read_comments(path).comments] == texts
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("t,user_id,text\n" + "".join(f"{i},u,{x}\n" for i, x in enumerate(texts)), encoding="utf-8")
    assert [c.text for c in read_comments(csv_path).comments] == texts


def test_empty_file_is_empty_log(tmp_path):
    for name in ("c.jsonl", "c.csv"):
        (tmp_path / name).write_text("")
        log = read_comments(tmp_path / name)
        assert log.comments == [] and log.skipped == []


BAD_LINES = {
    2: "{not json",
    3: json.dumps({"t": 1.0, "text": "no user"}),
    4: json.dumps({"t": "soon", "user_id": "u", "text": "x"}),
    5: json.dumps({"t": -1, "user_id": "u", "text": "x"}),
    6: '{"t": NaN, "user_id": "u", "text": "x"}',
    7: json.dumps({"t": 1.0, "user_id": "u", "text": 5}),
    8: json.dumps([1, 2, 3]),
}


@pytest.fixture
def bad_jsonl(tmp_path):
    lines = [json.dumps({"t": 0.5, "user_id": "u", "text": "ok"})]
    lines += [BAD_LINES[n] for n in sorted(BAD_LINES)]
    lines += [json.dumps({"t": 9.0, "user_id": "u", "text": "ok too"})]
    return write_jsonl(tmp_path / "bad.jsonl", lines)


@pytest.mark.parametrize("lineno", sorted(BAD_LINES))
def test_malformed_line_raises_with_line_number(tmp_path, lineno):
    good = json.dumps({"t": 0.5, "user_id": "u", "text": "ok"})
    path = write_jsonl(tmp_path / "c.jsonl", [good] * (lineno - 1) + [BAD_LINES[lineno], good])
    with pytest.raises(CommentsError) as err:
        read_comments(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{lineno}: ") and msg.endswith("fix the line or pass --skip-bad-lines") and "\n" not in msg


def test_skip_bad_lines_records_them(bad_jsonl):
    log = read_comments(bad_jsonl, skip_bad_lines=True)
    assert [c.text for c in log.comments] == ["ok", "ok too"]
    assert [n for n, _ in log.skipped] == sorted(BAD_LINES)
    assert "JSON" in log.skipped[0][1] and "user_id" in log.skipped[1][1]


def test_csv_malformed_line_numbers(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('t,user_id,text\n1,u,"a\nb"\nx,u,bad t\n2,u\n3,u,fine\n', encoding="utf-8")
    with pytest.raises(CommentsError, match=r"c\.csv:4: 't' must be a number of seconds, got 'x'"):
        read_comments(path)
    log = read_comments(path, skip_bad_lines=True)
    assert [n for n, _ in log.skipped] == [4, 5]
    assert [c.text for c in log.comments] == ["a\nb", "fine"]


def test_csv_wrong_header_and_missing_file(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("time,user,text\n1,u,x\n")
    with pytest.raises(CommentsError, match="header"):
        read_comments(path)
    with pytest.raises(CommentsError, match="not found"):
        read_comments(tmp_path / "none.jsonl")


def test_bag_boundaries_are_causal():
    c = [Comment(t, "u", f"c{t}") for t in (0.0, 0.5, 1.0, 1.0001, 1.999, 2.0, 3.5)]
    bags = lookback_bags(c, step_starts=[0.0, 1.0, 2.0], step_seconds=1.0, lookback=1.0)
    # step 0 ends at 1.0: (0, 1] -> a comment exactly at the end is in, one just after is not
    assert [x.t for x in bags[0]] == [0.5, 1.0]
    assert [x.t for x in bags[1]] == [1.0001, 1.999, 2.0]
    assert [x.t for x in bags[2]] == []  # (2, 3]
    longer = lookback_bags(c, step_starts=np.array([0.0, 1.0, 2.0]), step_seconds=1.0, lookback=2.5)
    assert [x.t for x in longer[2]] == [1.0, 1.0001, 1.999, 2.0]  # (0.5, 3]: 0.5 itself is out


def test_max_per_step_keeps_most_recent():
    c = [Comment(0.1 * i, "u", str(i)) for i in range(1, 10)]
    bags = lookback_bags(c, step_starts=[0.0], step_seconds=1.0, lookback=5.0, max_per_step=3)
    assert [x.text for x in bags[0]] == ["7", "8", "9"]
    assert lookback_bags([], [0.0, 1.0], 1.0, 5.0) == [[], []]


def test_bags_on_a_long_stream_match_a_direct_filter():
    rng = np.random.default_rng(0)
    c = [Comment(float(t), "u", "x") for t in np.sort(rng.uniform(0, 600, 5000))]
    starts = np.arange(600.0)
    bags = lookback_bags(c, starts, 1.0, 5.0, max_per_step=16)
    for i in (0, 3, 250, 599):
        direct = [x for x in c if starts[i] + 1 - 5 < x.t <= starts[i] + 1][-16:]
        assert bags[i] == direct


# ----------------------------------------------------------------------------- bad and unusual files


def test_non_utf8_line_is_named_and_skippable(tmp_path):
    path = tmp_path / "c.jsonl"
    good = json.dumps({"t": 1.0, "user_id": "u", "text": "ok"}).encode()
    path.write_bytes(good + b"\n" + b'{"t": 2.0, "user_id": "u", "text": "caf\xe9"}\n' + good + b"\n")
    with pytest.raises(CommentsError) as err:
        read_comments(path)
    offset = len(good) + 1 + len('{"t": 2.0, "user_id": "u", "text": "caf')
    assert str(err.value) == (f"{path}:2: byte 0xe9 at offset {offset} is not UTF-8; "
                              "re-save the file as UTF-8 or pass --skip-bad-lines")
    log = read_comments(path, skip_bad_lines=True)
    assert len(log) == 2 and [n for n, _ in log.skipped] == [2]


def test_non_utf8_csv_and_utf16_file_are_one_line_errors(tmp_path):
    csv_path = tmp_path / "c.csv"
    csv_path.write_bytes(b"t,user_id,text\n1,u,ok\n2,u,\x80\x81\n")
    with pytest.raises(CommentsError, match=r"c\.csv:3: byte 0x80 at offset 26 is not UTF-8; re-save the file as UTF-8$"):
        read_comments(csv_path)
    u16 = tmp_path / "u.jsonl"
    u16.write_text(json.dumps({"t": 1, "user_id": "u", "text": "x"}) + "\n", encoding="utf-16")
    with pytest.raises(CommentsError, match=r"u\.jsonl:1: is UTF-16 text, not UTF-8"):
        read_comments(u16)


def test_byte_order_mark_is_accepted_in_jsonl_and_csv(tmp_path):
    (tmp_path / "c.jsonl").write_bytes(b'\xef\xbb\xbf{"t": 1, "user_id": "u", "text": "x"}\n')
    (tmp_path / "c.csv").write_bytes(b"\xef\xbb\xbft,user_id,text\n1,u,x\n")  # Excel's "CSV UTF-8"
    for name in ("c.jsonl", "c.csv"):
        assert read_comments(tmp_path / name).comments == [Comment(1.0, "u", "x")]


@pytest.mark.parametrize("line", [
    '{"t": 1, "user_id": "u"}',  # missing text
    '{"user_id": "u", "text": "x"}',  # missing t
    '{"t": 1e999, "user_id": "u", "text": "x"}',  # infinite
    '{"t": ' + "1" * 5000 + ', "user_id": "u", "text": "x"}',  # a number Python refuses to parse
    '{"t": 1, "user_id": {"id": 3}, "text": "x"}',
    "[" * 50_000 + "]" * 50_000,
    "",  # (blank: not an error, see below)
])
def test_every_malformed_record_is_a_one_line_comments_error(tmp_path, line):
    path = write_jsonl(tmp_path / "c.jsonl", [json.dumps({"t": 0.5, "user_id": "u", "text": "ok"}), line])
    if not line:
        assert len(read_comments(path)) == 1
        return
    with pytest.raises(CommentsError) as err:
        read_comments(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:2: ") and "\n" not in msg and len(msg) < 300


def test_directory_and_wrong_suffix(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(CommentsError, match=r"dir\.jsonl: is a directory, not a comments file"):
        read_comments(tmp_path / "dir.jsonl")
    (tmp_path / "c.txt").write_text("hello\n")
    with pytest.raises(CommentsError, match="must be a .jsonl or .csv file"):
        read_comments(tmp_path / "c.txt")


def test_comments_after_the_clip_end_are_read_but_fall_in_no_bag(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        json.dumps({"t": t, "user_id": "u", "text": "🎉 after" if t > 10 else "during"}) for t in (2.0, 9.5, 10.5, 3600.0)
    ])
    log = read_comments(path)
    assert [c.t for c in log.comments] == [2.0, 9.5, 10.5, 3600.0] and log.skipped == []
    bags = lookback_bags(log.comments, step_starts=np.arange(10.0), step_seconds=1.0, lookback=5.0)  # a 10 s clip
    used = [c for bag in bags for c in bag]
    assert {c.text for c in used} == {"during"} and {c.t for c in used} == {2.0, 9.5}
