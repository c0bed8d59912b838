"""mm-live watch: streams written in real time (1 s segments), resume, cuts, comment feeds, stalls.

The stream is an 8 s MPEG-TS (10 fps, 1 s GOP, audio) cut into per-second byte chunks; a background
writer appends one chunk per second (comments of that second first), as a recorder would.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mm_live.checkpoint import save_checkpoint
from mm_live.cli import main
from mm_live.comment_feed import CommentFeed
from mm_live.config import Config
from mm_live.danmaku import DanmakuParser, read_danmaku
from mm_live.errors import CommentsError, MediaError, MMLiveError
from mm_live.live import HighlightTracker, watch
from mm_live.live_head import HighlightStepper
from mm_live.pipelines.highlight import build_model, score_clip
from mm_live.steps import StepFeatures
from mm_live.video_writer import write_video

sys.path.insert(0, str(Path(__file__).parent / "pipelines"))
from tiny_config import TINY  # noqa: E402 (tests/pipelines/tiny_config.py)

SECONDS, FPS, LAG = 8, 10, 2
PROCESSING = 3.0  # generous allowance for a loaded machine (no timing is asserted tighter than this)


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """Run dir of an (untrained) tiny clip-route model, the stream's 1 s chunks, its comments."""
    root = tmp_path_factory.mktemp("live")
    cfg = Config.from_dict(TINY).replace(**{"task.name": "highlight", "task.route": "clips", "media.max_comment_lag": LAG,
                                            "highlight.window_steps": 4})
    torch.manual_seed(0)
    save_checkpoint(root / "run" / "best", config=cfg, model=build_model(cfg), kind="highlight")
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.normal(40 + 25 * (i // FPS), 30, (48, 64, 3)), 0, 255).astype(np.uint8) for i in range(FPS * SECONDS)]
    audio = (0.2 * np.sin(np.arange(16000 * SECONDS) / 16000 * 2 * np.pi * 330)).astype(np.float32)
    write_video(root / "src.mp4", frames, fps=FPS, audio=audio, gop=FPS, fixed_gop=True)
    buf, marks = io.BytesIO(), []
    with av.open(str(root / "src.mp4")) as src, av.open(buf, "w", format="mpegts") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for p in src.demux():
            if p.dts is not None:
                t, p.stream = float(p.dts * p.time_base), streams[p.stream.index]
                dst.mux(p)
                marks.append((t, buf.tell()))
    data = buf.getvalue()
    ends = [max([pos for t, pos in marks if t < k + 1] or [0]) for k in range(SECONDS - 1)] + [len(data)]
    chunks = [data[a:b] for a, b in zip([0] + ends[:-1], ends)]
    (root / "full.ts").write_bytes(data)
    times = np.sort(rng.uniform(0, SECONDS - 0.5, 24))
    comments = [{"t": round(float(t), 3), "user_id": f"u{k % 3}", "text": f"wow & <{k}>"} for k, t in enumerate(times)]
    (root / "full.jsonl").write_text("".join(json.dumps(c) + "\n" for c in comments))
    reference = score_clip(root / "full.ts", root / "run", comments=root / "full.jsonl").scores
    return {"root": root, "run": root / "run", "chunks": chunks, "comments": comments, "reference": reference}


def _second(comments, k):
    return [c for c in comments if k <= c["t"] < k + 1]


class Writer(threading.Thread):
    """Appends chunk k at t0 + k + 1 s (after its comments); ``written[k]`` = monotonic time."""

    def __init__(self, chunks, write_chunk, write_comments, comments, finish=None):
        super().__init__(daemon=True)
        self.chunks, self.write_chunk, self.write_comments, self.comments, self.finish = chunks, write_chunk, write_comments, comments, finish
        self.written: list[float] = []

    def run(self):
        t0 = time.monotonic()
        for k, chunk in enumerate(self.chunks):
            time.sleep(max(0.0, t0 + k + 1 - time.monotonic()))
            self.write_comments(_second(self.comments, k))
            self.write_chunk(k, chunk)
            self.written.append(time.monotonic())
        if self.finish is not None:
            self.finish()


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_growing_file_resume_and_cut(stream, tmp_path):
    """Real-time growing .ts + JSONL comments; stopped after step 2 and restarted: every step once, in
    order, equal to `score` on the final file; latency bounded; highlights cut by stream copy."""
    video, comments, out = tmp_path / "rec.ts", tmp_path / "rec.jsonl", tmp_path / "out"
    video.write_bytes(b"")
    comments.write_text("")

    def append(path, data):
        with open(path, "ab") as fh:
            fh.write(data)

    writer = Writer(stream["chunks"], lambda k, c: append(video, c),
                    lambda cs: append(comments, "".join(json.dumps(c) + "\n" for c in cs).encode()), stream["comments"])
    emitted: dict[int, float] = {}
    stop = threading.Event()

    def on_step(rec):
        emitted[rec["step"]] = time.monotonic()
        if rec["step"] == 2:
            stop.set()

    writer.start()
    # Every step from the 4th on is "high" (quantile 0), so the windows do not hang on what an untrained
    # model happens to score; tests/test_highlight_tracker.py checks the tracker's own decisions.
    tracker = lambda: HighlightTracker(1.0, quantile=0.0, min_history=4)  # noqa: E731
    first = watch(str(video), stream["run"], out, comments=str(comments), cut=True, lead_in=1.0, stall_timeout=3.0,
                  stop=stop, on_step=on_step, tracker=tracker())
    assert first.reason == "interrupted" and first.steps >= 3 and (out / "state.pt").is_file()
    for step, at in emitted.items():  # each score is out within step + lag + processing of its step's data
        assert at - writer.written[min(step, SECONDS - 1)] <= 1.0 + LAG + PROCESSING
    second = watch(str(video), stream["run"], out, comments=str(comments), cut=True, lead_in=1.0, stall_timeout=3.0,
                   tracker=tracker())
    writer.join()
    assert second.resumed_at == first.total_steps and second.reason == "stalled"
    rows = _lines(out / "scores.jsonl")
    assert [r["step"] for r in rows] == list(range(SECONDS))  # no gap, no duplicate, in order
    np.testing.assert_allclose([r["score"] for r in rows], stream["reference"], atol=1e-5)
    highlights = _lines(out / "highlights.jsonl")
    assert highlights and all(h["start"] < h["end"] and h["peak"] > 0 for h in highlights)
    first_frame = rows[0]["start"]
    for h in highlights:
        clip = out / "clips" / f"{h['start']:.1f}-{h['end']:.1f}.mp4"
        with av.open(str(clip)) as c:
            times = [f.time for f in c.decode(video=0)]
        shown = times[-1] + 1 / FPS - times[0]  # the clip's video length
        want = h["end"] - max(h["start"] - 1.0, first_frame)  # window + lead-in
        assert want - 0.15 <= shown <= want + 1.0 + 0.15  # starts at most one GOP (1 s) early, lasts as long


def test_hls_playlist_with_danmaku_on_stdin(stream, tmp_path):
    """A local HLS folder growing segment by segment; danmaku XML arriving on stdin; ENDLIST ends it."""
    hls, out = tmp_path / "hls", tmp_path / "out"
    hls.mkdir()
    playlist = hls / "live.m3u8"
    names: list[str] = []

    def write_playlist(end=False):
        body = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
        body += "".join(f"#EXTINF:1.0,\n{n}\n" for n in names) + ("#EXT-X-ENDLIST\n" if end else "")
        tmp = hls / ".live.m3u8.tmp"
        tmp.write_text(body)
        os.replace(tmp, playlist)

    def segment(k, data):
        (hls / f"seg{k:03d}.ts").write_bytes(data)
        names.append(f"seg{k:03d}.ts")
        write_playlist()

    r, w = os.pipe()
    stdin, pipe = os.fdopen(r, "rb"), os.fdopen(w, "wb")
    pipe.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<i><chatserver>live</chatserver>\n')

    def danmaku(cs):
        for c in cs:
            text = c["text"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            pipe.write(f'<d p="{c["t"]},1,25,16777215,1700000000,0,{c["user_id"]},1">{text}</d>\n'.encode())
        pipe.flush()

    write_playlist()
    writer = Writer(stream["chunks"], segment, danmaku, stream["comments"], finish=lambda: write_playlist(end=True))
    emitted: dict[int, float] = {}
    writer.start()
    summary = watch(str(playlist), stream["run"], out, comments="-", stdin=stdin, stall_timeout=5.0, json_out=True,
                    stdout=io.StringIO(), on_step=lambda rec: emitted.setdefault(rec["step"], time.monotonic()))
    writer.join()
    pipe.close()
    assert summary.reason == "end" and summary.steps == SECONDS
    rows = _lines(out / "scores.jsonl")
    assert [r["step"] for r in rows] == list(range(SECONDS))
    np.testing.assert_allclose([r["score"] for r in rows], stream["reference"], atol=1e-5)
    for step, at in emitted.items():
        assert at - writer.written[min(step, SECONDS - 1)] <= 1.0 + LAG + PROCESSING


def test_finished_file_cli_equals_score_and_stall_ends(stream, tmp_path, capsys):
    """`watch` on a finished file = `score` on it (1e-5); the source then stalls: clean end, one summary line."""
    full = stream["root"] / "full.ts"
    assert main(["watch", str(full), "--checkpoint", str(stream["run"]), "--out", str(tmp_path / "w"), "--json",
                 "--comments", str(stream["root"] / "full.jsonl"), "--stall-timeout", "0.5"]) == 0
    cap = capsys.readouterr()
    printed = [json.loads(line) for line in cap.out.splitlines()]
    assert [p["step"] for p in printed] == list(range(SECONDS))
    assert cap.err.startswith("watch ended (stalled)") and cap.err.count("\n") == 1
    assert main(["score", str(full), "--checkpoint", str(stream["run"]), "--out", str(tmp_path / "s"),
                 "--comments", str(stream["root"] / "full.jsonl")]) == 0
    offline = json.loads((tmp_path / "s" / "scores.json").read_text())["scores"]
    np.testing.assert_allclose([p["score"] for p in printed], offline, atol=1e-5)
    # a second watch into the same folder resumes after the last step: nothing is scored twice
    summary = watch(str(full), stream["run"], tmp_path / "w", comments=str(stream["root"] / "full.jsonl"), stall_timeout=0.5)
    assert summary.steps == 0 and summary.total_steps == SECONDS


def test_plain_mp4_finished_is_read_whole_and_growing_is_refused(stream, tmp_path):
    src = stream["root"] / "src.mp4"  # index (moov) after the media data, as a non-faststart recorder leaves it
    summary = watch(str(src), stream["run"], tmp_path / "w", stall_timeout=0.5)
    assert summary.reason == "end" and summary.steps == SECONDS
    rows = _lines(tmp_path / "w" / "scores.jsonl")
    np.testing.assert_allclose([r["score"] for r in rows], score_clip(src, stream["run"]).scores, atol=1e-5)
    growing = tmp_path / "rec.mp4"
    growing.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(MediaError, match="fragmented mp4"):
        watch(str(growing), stream["run"], tmp_path / "w2", stall_timeout=0.5)


class _Payload:
    """Pickles into a call that creates ``marker``: loading it must never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_resume_state_is_loaded_without_unpickling(stream, tmp_path):
    marker, out = tmp_path / "PWNED", tmp_path / "out"
    out.mkdir()
    torch.save({"version": 1, "evil": _Payload(marker)}, out / "state.pt")
    with pytest.raises(MMLiveError, match="state.pt: the resume state is unreadable"):
        watch(str(stream["root"] / "full.ts"), stream["run"], out, stall_timeout=0.5)
    assert not marker.exists()


def test_vanished_source_ends_cleanly(stream, tmp_path):
    video = tmp_path / "rec.ts"
    video.write_bytes(b"".join(stream["chunks"][:4]))
    timer = threading.Timer(2.0, video.unlink)
    timer.start()
    summary = watch(str(video), stream["run"], tmp_path / "out", stall_timeout=30.0)
    timer.join()
    assert summary.reason == "vanished" and summary.total_steps == 4
    assert summary.line().startswith("watch ended (vanished): 4 steps scored")


@pytest.mark.parametrize("kind", ["gifting", "em3"])
def test_watch_refuses_a_run_whose_task_cannot_score_live(stream, tmp_path, capsys, kind):
    """The run's task decides (Task.live_stepper): a gifting or EM3 run is refused in one line that
    names the task and the command that works, before any model is built or --out is created."""
    run = tmp_path / "run"
    save_checkpoint(run / "best", config=Config().replace(**{"task.name": kind}), model=torch.nn.Linear(1, 1), kind=kind)
    out = tmp_path / "out"
    assert main(["watch", str(stream["root"] / "full.ts"), "--checkpoint", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"'{kind}' runs cannot score a live stream" in err and "mm-live score CLIP --checkpoint RUN" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_watch_refuses_a_feature_route_highlight_run(stream, tmp_path):
    cfg = Config.from_dict(TINY).replace(**{"task.name": "highlight", "task.route": "features",
                                            "task.feature_dims": [6, 0]})
    save_checkpoint(tmp_path / "run" / "best", config=cfg, model=build_model(cfg), kind="highlight")
    with pytest.raises(MMLiveError, match="'score' and 'watch' need a clip-route model"):
        watch(str(stream["root"] / "full.ts"), tmp_path / "run", tmp_path / "out", stall_timeout=0.5)


@pytest.mark.parametrize("realign,level_skip,realign_by", [(True, False, "dtw"), (False, False, "dtw"), (True, True, "dtw"),
                                                        (True, False, "shift")])
def test_stepper_equals_forward_steps(realign, level_skip, realign_by):
    """The incremental head gives forward_steps' logits over a stream longer than its chunks (with
    highlight.level_skip too: each step's loudness term follows it to the step it is emitted as; and
    with highlight.realign_by: shift)."""
    torch.manual_seed(0)
    cfg = Config.from_dict(TINY).replace(**{"highlight.realign": realign, "highlight.comment_lookahead": False,
                                            "highlight.level_skip": level_skip, "highlight.realign_by": realign_by,
                                            "fusion.d": 8, "fusion.n_heads": 2,
                                            "media.max_comment_lag": 3, "task.route": "features",
                                            "task.feature_dims": [6, 5], "highlight.window_steps": 8})
    model = build_model(cfg).eval()
    g, t = torch.Generator().manual_seed(1), 40
    f = StepFeatures(torch.randn(1, t, 8, generator=g), torch.randn(1, t, 5, generator=g),
                     torch.rand(1, t, generator=g) > 0.5, torch.randn(1, t, 6, generator=g),
                     level=torch.rand(1, t, generator=g) * 2 - 1)
    with torch.no_grad():
        want = model.forward_steps(f, torch.tensor([t]), torch.tensor([3])).logits[0]
        if level_skip:  # the level term is in the logits
            f0 = StepFeatures(f.fused, f.text, f.has_text, f.video)
            assert not torch.allclose(want, model.forward_steps(f0, torch.tensor([t]), torch.tensor([3])).logits[0])
    stepper = HighlightStepper(model, torch.tensor([3]))
    got = []
    for a in range(0, t, 3):
        got += stepper.push(StepFeatures(f.fused[:, a : a + 3], f.text[:, a : a + 3], f.has_text[:, a : a + 3],
                                         f.video[:, a : a + 3], level=f.level[:, a : a + 3]))
        assert len(got) == max(0, min(a + 3, t) - (3 if realign else 0))  # scores lag exactly max_comment_lag
        if a == 18:  # a restart mid-stream: the state round-trips
            state = stepper.state_dict()
            stepper = HighlightStepper(model, torch.tensor([3]))
            stepper.load_state_dict(state)
    got += stepper.finish()
    assert [i for i, _ in got] == list(range(t))
    np.testing.assert_allclose([x for _, x in got], want.numpy(), atol=1e-5)


def test_danmaku_xml_parses_incrementally(tmp_path):
    xml = ('<?xml version="1.0" encoding="UTF-8"?><i><chatid>1</chatid>'
           '<d p="12.5,1,25,16777215,1700000000,0,abc123,99">好耶 &amp; 🎉</d>'
           '<d p="3.0,5,25,255,1700000001,0,def456,100">second</d></i>')
    path = tmp_path / "live.xml"
    path.write_text(xml, encoding="utf-8")
    got = read_danmaku(path)
    assert [(c.t, c.user_id, c.text) for c in got] == [(3.0, "def456", "second"), (12.5, "abc123", "好耶 & 🎉")]
    parser, data = DanmakuParser(), xml.encode()
    pieces = [parser.feed(data[a : a + 7]) for a in range(0, len(data), 7)]  # split mid-element and mid-character
    assert [c.text for part in pieces for c in part] == ["好耶 & 🎉", "second"]
    with pytest.raises(CommentsError, match="first field"):
        DanmakuParser("x.xml").feed(b'<i><d p="soon,1">x</d>')


def test_comment_feed_tails_jsonl_and_stdin(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"t": 1.5, "user_id": 7, "text": "a"}\n{"t": 2, "user')
    feed = CommentFeed(path)
    assert [(c.t, c.user_id) for c in feed.poll()] == [(1.5, "7")]  # the unfinished line waits
    with open(path, "a") as fh:
        fh.write('_id": "x", "text": "b"}\nnot json\n')
    with pytest.raises(CommentsError, match=r"c\.jsonl:3: not valid JSON"):
        feed.poll()
    r, w = os.pipe()
    with os.fdopen(w, "wb") as pipe:
        pipe.write(b'{"t": 4, "user_id": "u", "text": "from stdin"}\n')
    feed = CommentFeed("-", stdin=os.fdopen(r, "rb"))
    got = []
    for _ in range(100):
        got += feed.poll()
        if feed.closed:
            break
        time.sleep(0.01)
    assert [c.text for c in got] == ["from stdin"] and feed.closed
