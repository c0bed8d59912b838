"""Property tests of every reader of user files (issue #13, item 5): given arbitrary bytes, text or
structured junk, a reader either parses or raises the project's own error (MMLiveError, with a
one-line message) -- never a KeyError, UnicodeDecodeError, OverflowError, ...

Bounded (a few dozen examples per reader, no deadline) so the file runs in seconds;
``MM_LIVE_FUZZ_EXAMPLES=N`` runs N per reader. Inputs the fuzzer once broke are pinned with ``@example``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mm_live.comments import read_comments
from mm_live.config import Config, load_config
from mm_live.data.evaluate import read_predictions
from mm_live.data.klive import read_klive_log, read_live_id2aid
from mm_live.data.kuailive import REQUIRED, read_kuailive, read_table
from mm_live.data.manifest import read_manifest
from mm_live.data.qvhighlights import read_qvhighlights
from mm_live.errors import MMLiveError

# MM_LIVE_FUZZ_EXAMPLES=2000 for a longer hunt (CI keeps the default)
FUZZ = settings(max_examples=int(os.environ.get("MM_LIVE_FUZZ_EXAMPLES", 40)), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def parses_or_refuses(fn, *args, **kwargs):
    """``fn(*args)``'s result, or None when it raised MMLiveError; anything else fails the test."""
    try:
        return fn(*args, **kwargs)
    except MMLiveError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, repr(msg)
        return None


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _put(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return path


# ----------------------------------------------------------------------------- strategies

# any JSON value, including the awkward ones: huge/negative numbers, NaN-like floats, deep nesting
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**30), max_value=10**30)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


def records(keys: tuple[str, ...]) -> st.SearchStrategy[dict]:
    """Objects with the reader's own keys (so parsing gets past 'missing field') holding junk, plus extras."""
    known = st.fixed_dictionaries({}, optional={k: json_values for k in keys})
    return st.tuples(known, st.dictionaries(st.text(max_size=6), json_values, max_size=2)).map(lambda t: {**t[1], **t[0]})


def jsonl(keys: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """JSONL bytes: mostly well-formed objects of the reader's keys, sometimes broken lines or raw bytes."""
    line = st.one_of(
        records(keys).map(lambda d: json.dumps(d, allow_nan=True)),
        json_values.map(lambda v: json.dumps(v, allow_nan=True)),
        st.text(max_size=30),
    ).map(lambda s: s.encode("utf-8", "surrogatepass"))
    return st.one_of(st.lists(line | st.binary(max_size=20), max_size=5).map(b"\n".join), st.binary(max_size=200))


def csv_text(columns: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """A CSV with the given header (sometimes mangled) and rows of junk cells (quotes, commas, numbers)."""
    cell = st.one_of(st.integers(-(10**20), 10**20).map(str), st.floats().map(repr), st.text(max_size=8),
                     st.sampled_from(['"', '""', '"a,b"', "", " ", "1e999", "nan", "-0", "9" * 25]))
    header = st.one_of(st.just(list(columns)), st.permutations(columns).map(list), st.lists(st.text(max_size=6), max_size=4))
    rows = st.lists(st.lists(cell, min_size=0, max_size=len(columns) + 1), max_size=4)
    text = st.tuples(header, rows).map(lambda t: "\n".join(",".join(r) for r in [t[0], *t[1]]) + "\n")
    return st.one_of(text.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=120))


# ----------------------------------------------------------------------------- comments


@FUZZ
@given(data=jsonl(("t", "user_id", "text")), skip=st.booleans())
@example(data=b'{"t": 1e400, "user_id": 1, "text": "x"}', skip=False)
@example(data=b'{"t": "NaN", "user_id": 1, "text": "x"}', skip=False)
@example(data=b'{"t": 1, "user_id": 1, "text": "\xf0\x9f\x94\xa5 \xe5\xa4\xaa\xe6\xa3\x92"}', skip=False)
@example(data=b"[" * 5000 + b"]" * 5000, skip=False)
def test_comment_jsonl(folder, data, skip):
    log = parses_or_refuses(read_comments, _put(folder, "c.jsonl", data), skip_bad_lines=skip)
    if log is not None:
        assert all(math.isfinite(c.t) and c.t >= 0 and isinstance(c.text, str) for c in log.comments)
        assert [c.t for c in log.comments] == sorted(c.t for c in log.comments)


@FUZZ
@given(data=csv_text(("t", "user_id", "text")), skip=st.booleans())
@example(data=b't,user_id,text\n"unterminated,1,2\n', skip=False)
def test_comment_csv(folder, data, skip):
    parses_or_refuses(read_comments, _put(folder, "c.csv", data), skip_bad_lines=skip)


# ----------------------------------------------------------------------------- manifest, annotations, predictions


MANIFEST_KEYS = ("stream_id", "clip", "comments", "streamer_id", "step_seconds", "labels", "split")


@FUZZ
@given(data=jsonl(MANIFEST_KEYS), labels=st.lists(st.floats(), max_size=4))
@example(data=b'{"stream_id": "a", "clip": "a.mp4", "step_seconds": 1, "labels": {"ctr": [[1], 2]}}', labels=[])
@example(data=b"", labels=[3.4028235677973366e+38])  # overflowed float32 (fuzzer find)
def test_manifest(folder, data, labels):
    path = _put(folder, "manifest.jsonl", data + b"\n" + json.dumps(
        {"stream_id": "z", "clip": "z.mp4", "step_seconds": 1.0, "labels": {"ctr": labels}}).encode())
    records = parses_or_refuses(read_manifest, path)
    if records is not None:
        assert records and len({r.id for r in records}) == len(records)
        assert all(np.isfinite(r.labels).all() and r.step_seconds > 0 for r in records)


@FUZZ
@given(data=jsonl(("qid", "vid", "query", "duration", "relevant_clip_ids", "saliency_scores", "relevant_windows")))
def test_qvhighlights_annotations(folder, data):
    parses_or_refuses(read_qvhighlights, _put(folder, "qvh.jsonl", data))


@FUZZ
@given(data=jsonl(("qid", "vid", "query", "domain", "duration", "label", "match")), reader=st.sampled_from(["tvsum", "youtube"]))
def test_tvsum_and_youtube_annotations(folder, data, reader):
    from mm_live.data.tvsum import read_tvsum_jsonl
    from mm_live.data.youtube_highlights import read_youtube_highlights

    fn = read_tvsum_jsonl if reader == "tvsum" else read_youtube_highlights
    parses_or_refuses(fn, _put(folder, "ann.jsonl", data))


@FUZZ
@given(data=jsonl(("qid", "vid", "pred_saliency_scores")))
def test_predictions(folder, data):
    parses_or_refuses(read_predictions, _put(folder, "pred.jsonl", data))


# ----------------------------------------------------------------------------- KLive


def _vector(xs: list[float]) -> str:
    return "[" + ", ".join(repr(x) for x in xs) + "]"


klive_cell = st.one_of(st.integers(-(10**20), 10**20).map(str), st.floats().map(repr), st.text(max_size=6),
                       st.lists(st.floats(), max_size=3).map(_vector), st.sampled_from(["[", "]", "[1,,2]", "", "[]"]))
klive_row = st.one_of(
    st.lists(klive_cell, min_size=1, max_size=6).map("\t".join),
    st.lists(klive_cell, min_size=1, max_size=6).map(" ".join),
    st.tuples(st.integers(0, 3), st.integers(-2, 5), st.floats(), st.lists(st.floats(), min_size=1, max_size=3),
              st.lists(st.floats(), min_size=1, max_size=3)).map(
        lambda r: f"{r[0]}\t{r[1]}\t{r[2]!r}\t{_vector(r[3])}\t{_vector(r[4])}"),
)


@FUZZ
@given(rows=st.lists(klive_row, max_size=6), header=st.booleans(), raw=st.binary(max_size=40))
@example(rows=["1\t99999999999999999999999\t0.5\t[1]\t[2]"], header=False, raw=b"")
@example(rows=["1 2 0.5 [1] [2]", "1 2 0.5 [1] [2]"], header=True, raw=b"")
@example(rows=["1\t2\t1e39\t[1]\t[3.5e38]"], header=False, raw=b"")  # overflowed float32 (fuzzer find)
def test_klive_log(folder, rows, header, raw):
    text = ("live_id\ttimestamp\tlvtr\timage_feature\ttext_feature\n" if header else "") + "\n".join(rows) + "\n"
    path = _put(folder, "0_test_score_infer_output.log", text.encode("utf-8", "surrogatepass") + raw)
    records = parses_or_refuses(read_klive_log, path)
    for r in records or []:
        assert len(r.labels) == len(r.features["image"]) == len(r.features["text"])


@FUZZ
@given(data=st.one_of(st.lists(st.lists(klive_cell, max_size=3).map(" ".join), max_size=4).map("\n".join)
                      .map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=60)))
def test_klive_live_id2aid(folder, data):
    parses_or_refuses(read_live_id2aid, _put(folder, "live_id2aid.txt", data))


# ----------------------------------------------------------------------------- KuaiLive


@FUZZ
@given(table=st.sampled_from(sorted(REQUIRED)), data=st.data())
def test_kuailive_table(folder, table, data):
    cols = REQUIRED[table]
    body = data.draw(csv_text(cols))
    parses_or_refuses(read_table, _put(folder, f"{table}.csv", body), cols)


@FUZZ
@given(rows=st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), max_size=4),
       titles=st.sampled_from(["ok", "ragged", "pickle", "junk", "3d", "ints", "nan", "text"]))
def test_kuailive_folder(folder, rows, titles):
    """Room ids against the title matrix (live_name_id out of range, wrong shapes, pickled or junk files)."""
    root = folder / "kuailive"
    root.mkdir(exist_ok=True)
    for name, cols in REQUIRED.items():
        body = ",".join(cols + (("live_name_id",) if name == "room" else ())) + "\n"
        if name == "room":
            body += "".join(f"{i},1,0,c,{a},{b},{a}\n" for i, (a, b) in enumerate(rows))
        _put(root, f"{name}.csv", body)
    path = root / "title_embeddings.npy"
    if titles == "pickle":
        np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    elif titles == "junk":
        path.write_bytes(b"\x93NUMPY\x01\x00{'descr': '<f4', 'fortran_order': False, 'shape': (9, 9), }  \n")
    else:
        np.save(path, {"ok": np.zeros((3, 4), np.float32), "ragged": np.zeros((3, 4), np.float32)[:, :0],
                       "3d": np.zeros((2, 2, 2), np.float32), "ints": np.zeros((3, 4), np.int64),
                       "nan": np.full((3, 4), np.nan, np.float32), "text": np.full((3, 4), "a")}[titles])
    parses_or_refuses(read_kuailive, root)


# ----------------------------------------------------------------------------- config


SECTIONS = {f: sorted(getattr(Config(), f).__dataclass_fields__) for f in Config.__dataclass_fields__}
config_tree = st.dictionaries(
    st.sampled_from(sorted(SECTIONS)) | st.text(max_size=6),
    st.one_of(json_values, st.sampled_from(sorted(SECTIONS)).flatmap(
        lambda sec: st.dictionaries(st.sampled_from(SECTIONS[sec]) | st.text(max_size=5), json_values, max_size=3))),
    max_size=3)


@FUZZ
@given(tree=config_tree)
@example(tree={"media": {"frame_size": 10**400}})
@example(tree={"fusion": {"n_heads": 0, "d": 0}})
@example(tree={"train": {"lr": float("inf")}})
def test_config_from_structured_junk(tree):
    cfg = parses_or_refuses(Config.from_dict, tree)
    if cfg is not None:  # whatever is accepted round-trips
        assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@FUZZ
@given(tree=config_tree, suffix=st.sampled_from([".json", ".yaml", ".yml", ""]), raw=st.binary(max_size=40),
       use_raw=st.booleans())
@example(tree={}, suffix=".yaml", raw=b"!!python/object/apply:os.system ['echo pwned']", use_raw=True)
@example(tree={}, suffix=".yaml", raw=b"a: &a [*a]", use_raw=True)
@example(tree={}, suffix=".yaml", raw=b"media: {frame_size: !!binary aGVsbG8=}", use_raw=True)
def test_config_file(folder, tree, suffix, raw, use_raw):
    if use_raw:
        data = raw
    elif suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_dump(tree, allow_unicode=True).encode("utf-8", "surrogatepass")
    else:
        data = json.dumps(tree).encode("utf-8", "surrogatepass")
    parses_or_refuses(load_config, _put(folder, f"cfg{suffix}", data))
