"""``mm-live watch``: score a stream while it is broadcast, emit highlights as they close, cut them.

One loop, fed by a decoding thread::

    source --(live_source.StepReader, thread)--> complete steps --> comment look-back bags
        --> stepper.prepare + stepper.encode (the run's task: a highlight run's step features)
        --> stepper.push (highlight: live_head.HighlightStepper, re-alignment lag, causal temporal model)
        --> final scores
        --> scores.jsonl (+ stdout) --> HighlightTracker --> highlights.jsonl (+ clips/<start>-<end>.mp4)

A step is encoded as soon as its frames and audio are decoded; comments read by then are its
look-back (comments are expected to arrive with the stream). With re-alignment on, step ``j``'s
score can only be final when step ``j + max_comment_lag`` is in, so it is emitted that much later.

The stepper comes from the run's task (:meth:`mm_live.tasks.Task.live_stepper`, found by the task
name the run records), so this module knows no pipeline; a task without one (gifting, EM3) is
refused in one line before any model is loaded.

Memory stays flat on streams of any length: the decoder keeps a frame and a few seconds of audio,
the head a ring of ``window_steps`` inputs, the comments their look-back window, the highlight
tracker ``history`` scores. After every emitted step, ``DIR/state.pt`` (90 kB with the default config) is
replaced atomically; it holds that state plus the sizes of the output files, so a restart truncates
any line written after the last state and resumes at the next step — no step scored twice or
skipped, and the resumed scores equal an uninterrupted run's.
"""

from __future__ import annotations

import bisect
import json
import queue
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np
import torch

from mm_live.clip_cut import cut_clip
from mm_live.comment_feed import CommentFeed
from mm_live.comments import Comment, lookback_bags
from mm_live.errors import ConfigError, MMLiveError
from mm_live.fileio import atomic_path
from mm_live.live_source import StepData, StepReader, is_url, open_container, steps_to_clip
from mm_live.runs import run_task
from mm_live.tasks import get_task

STATE_VERSION = 1


@dataclass
class Highlight:
    """A closed highlight window: [start, end) seconds, its peak score and the peak step's start."""

    start: float
    end: float
    peak: float
    peak_time: float


class HighlightTracker:
    """Highlight windows online: a step is high when its score reaches the ``quantile`` of the last
    ``history`` scores (after ``min_history`` steps); high steps separated by at most ``max_gap`` low
    steps form one window (as :func:`mm_live.report.highlight_windows` offline), which closes after
    ``max_gap + 1`` low steps."""

    def __init__(self, step_seconds: float, *, quantile: float = 0.75, history: int = 300, min_history: int = 10,
                 max_gap: int = 1):
        self.step, self.q, self.min_history, self.max_gap = step_seconds, quantile, min_history, max_gap
        self.scores: deque[float] = deque(maxlen=history)
        self.open: list[float] | None = None  # [start, last high end, peak, peak time]
        self.gap = 0

    def update(self, start: float, score: float) -> Highlight | None:
        self.scores.append(score)
        high = len(self.scores) >= self.min_history and score >= float(np.quantile(np.array(self.scores), self.q))
        if high:
            if self.open is None:
                self.open = [start, start + self.step, score, start]
            else:
                self.open[1] = start + self.step
                if score > self.open[2]:
                    self.open[2], self.open[3] = score, start
            self.gap = 0
            return None
        if self.open is not None:
            self.gap += 1
            if self.gap > self.max_gap:
                return self.finish()
        return None

    def finish(self) -> Highlight | None:
        w, self.open, self.gap = self.open, None, 0
        return None if w is None else Highlight(*w)

    def state_dict(self) -> dict:
        return {"scores": list(self.scores), "open": self.open, "gap": self.gap}

    def load_state_dict(self, s: dict) -> None:
        self.scores.clear()
        self.scores.extend(s["scores"])
        self.open, self.gap = s["open"], s["gap"]


@dataclass
class WatchSummary:
    steps: int  # scores emitted by this run
    total_steps: int  # scores in DIR/scores.jsonl
    highlights: int
    clips: int
    reason: str  # end, stalled, vanished, interrupted
    seconds: float
    resumed_at: int | None = None
    latency: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: decode = the decoding thread's CPU time

    def line(self) -> str:
        lat = f", latency beyond the lag median {self.latency['median']:.2f} s / max {self.latency['max']:.2f} s" \
            if self.latency else ""
        resumed = f" (resumed at step {self.resumed_at})" if self.resumed_at is not None else ""
        return (f"watch ended ({self.reason}): {self.steps} steps scored{resumed}, {self.total_steps} in total, "
                f"{self.highlights} highlights, {self.clips} clips in {self.seconds:.1f} s{lat}")


class _Outputs:
    """scores.jsonl and highlights.jsonl, appended line by line and flushed; truncated on resume."""

    def __init__(self, out: Path, sizes: dict[str, int] | None):
        self.paths = {"scores": out / "scores.jsonl", "highlights": out / "highlights.jsonl"}
        self.fh: dict[str, TextIO] = {}
        for name, path in self.paths.items():
            if sizes is None:
                path.write_bytes(b"")
            else:
                with open(path, "ab") as fh:
                    fh.truncate(sizes[name])
            self.fh[name] = open(path, "a", encoding="utf-8")

    def write(self, name: str, record: dict) -> str:
        line = json.dumps(record, ensure_ascii=False)
        self.fh[name].write(line + "\n")
        self.fh[name].flush()
        return line

    def sizes(self) -> dict[str, int]:
        return {name: fh.tell() for name, fh in self.fh.items()}

    def close(self) -> None:
        for fh in self.fh.values():
            fh.close()


def _reader_thread(reader: StepReader, out: queue.Queue, stop: threading.Event) -> None:
    """Decode in the background; puts StepData, then ("end", None) or ("error", exc)."""
    try:
        for step in reader:
            reader.cpu_seconds = time.thread_time()
            while not stop.is_set():
                try:
                    out.put(step, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                break
        reader.cpu_seconds = time.thread_time()
        out.put(("end", None))
    except BaseException as exc:  # handed to the main thread, which raises it
        out.put(("error", exc))


def watch(source: str, checkpoint: str | Path | None, out_dir: str | Path, *, comments: str | None = None,
          cut: bool = False, json_out: bool = False, lead_in: float = 3.0, stall_timeout: float = 10.0,
          streamer_id: str | None = None, skip_bad_lines: bool = False, device: str = "auto", encode_batch: int = 8,
          model=None, stop: threading.Event | None = None, stdout: TextIO | None = None, stdin=None,
          tracker: HighlightTracker | None = None, on_step: Callable[[dict], None] | None = None) -> WatchSummary:
    """Score ``source`` step by step while it grows; see the module docstring and docs/live.md.

    ``source``: a local file being written, a local ``.m3u8`` playlist, or a URL FFmpeg opens.
    ``comments``: a ``.jsonl``/danmaku ``.xml`` file being appended to, or ``"-"`` for stdin.
    Writes ``out_dir/scores.jsonl``, ``highlights.jsonl``, ``state.pt`` and with ``cut``
    ``clips/<start>-<end>.mp4``. Ends when the source ends, stalls for ``stall_timeout`` s, vanishes,
    or ``stop`` is set (Ctrl-C sets it); returns a :class:`WatchSummary`.
    ``model``: an already loaded model of the run (its ``cfg.task.name`` picks the task).
    """
    t_begin = time.monotonic()
    if stall_timeout <= 0 or lead_in < 0:
        raise ConfigError("--stall-timeout must be > 0 and --lead-in >= 0 seconds")
    if cut and is_url(str(source)):
        raise ConfigError(f"--cut copies highlights from the recording; {source} is a URL: record it to a file or HLS "
                          "folder and watch that")
    task = get_task(model.cfg.task.name if model is not None else run_task(checkpoint))
    stepper = task.live_stepper(checkpoint, streamer_id=streamer_id, device=device, model=model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.pt"
    state = _load_state(state_path, source, checkpoint)
    comment_feed = CommentFeed(comments, skip_bad_lines=skip_bad_lines, stdin=stdin) if comments else None
    cfg = stepper.cfg
    m = cfg.media
    tracker = tracker or HighlightTracker(m.step_seconds)
    window: list[Comment] = []  # comments inside the look-back of the steps still to encode (sorted by t)
    if state is not None:
        stepper.load_state_dict(state["stepper"])
        tracker.load_state_dict(state["tracker"])
        if comments == "-":
            window = [Comment(**c) for c in state["comments"]]
    outputs = _Outputs(out, None if state is None else state["sizes"])
    stop = stop or threading.Event()
    container, feed = open_container(source, live=True, stall_timeout=stall_timeout, stop=stop)
    reader = StepReader(container, step_seconds=m.step_seconds, frames_per_step=m.frames_per_step,
                        frame_size=m.frame_size, sample_rate=m.sample_rate, keyframes_only=m.keyframes_only,
                        origin=None if state is None else state["origin"], first_step=stepper.next_in)
    steps_q: queue.Queue = queue.Queue(maxsize=64)  # back-pressure: bounded decoded steps in flight
    thread = threading.Thread(target=_reader_thread, args=(reader, steps_q, stop), daemon=True, name="watch-decode")
    thread.start()
    ready: dict[int, float] = {}  # monotonic time each encoded, not yet emitted step's data was complete
    lags: deque[float] = deque(maxlen=3600)  # the summary's latency covers the last hour of steps
    timings = dict.fromkeys(("decode", "prepare", "encode", "head", "write", "state"), 0.0)
    last_ready = [time.monotonic()]
    n_out, n_hl, n_clips = 0, 0, len(list((out / "clips").glob("*.mp4"))) if cut else 0
    total = 0 if state is None else state["total"]
    reason = "end"
    resumed_at = None if state is None else stepper.next_out

    def emit(finals: list[tuple[int, float]]) -> None:
        nonlocal n_out, total, n_hl, n_clips
        for t, logit in finals:
            start = reader.origin + t * m.step_seconds
            score = float(torch.sigmoid(torch.tensor(logit)))
            now = time.monotonic()
            need = ready.get(t + stepper.lag, last_ready[0])  # the last step this score needed (at the end: the last)
            rec = {"step": t, "start": round(start, 6), "end": round(start + m.step_seconds, 6), "score": score,
                   "latency": round(now - need, 4), "age": round(now - ready.pop(t, now), 4), "time": round(time.time(), 3)}
            lags.append(now - need)
            line = outputs.write("scores", rec)
            if json_out:
                print(line, file=stdout, flush=True)
            if on_step is not None:
                on_step(rec)
            n_out, total = n_out + 1, total + 1
            closed = tracker.update(start, score)
            if closed is not None:
                n_hl, n_clips = n_hl + 1, n_clips + _close(closed)

    def _close(h: Highlight) -> int:
        outputs.write("highlights", {"start": round(h.start, 6), "end": round(h.end, 6), "peak": h.peak,
                                     "peak_time": round(h.peak_time, 6)})
        if not cut:
            return 0
        cut_clip(source, h.start, h.end, out / "clips" / f"{h.start:.1f}-{h.end:.1f}.mp4", lead_in=lead_in)
        return 1

    def save() -> None:
        keep = [asdict(c) for c in window] if comments == "-" else []
        with atomic_path(state_path) as tmp:
            torch.save({"version": STATE_VERSION, "source": str(source), "checkpoint": str(checkpoint),
                        "origin": reader.origin, "stepper": stepper.state_dict(), "tracker": tracker.state_dict(),
                        "comments": keep, "sizes": outputs.sizes(), "total": total}, tmp)

    def take_comments() -> None:
        if comment_feed is None:
            return
        for c in comment_feed.poll():
            bisect.insort_right(window, c, key=lambda x: x.t)

    try:
        with torch.inference_mode():
            while True:
                try:
                    item = steps_q.get(timeout=0.2)
                except queue.Empty:
                    take_comments()
                    continue
                if isinstance(item, tuple):
                    if item[0] == "error":
                        raise item[1]
                    if stop.is_set():  # stopped from outside (Ctrl-C): keep the pending steps for a resume
                        raise KeyboardInterrupt
                    break
                batch: list[StepData] = [item]
                while len(batch) < encode_batch:  # catch up in batches when steps queued up
                    try:
                        nxt = steps_q.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(nxt, tuple):
                        steps_q.put(nxt)  # seen again by the outer loop
                        break
                    batch.append(nxt)
                take_comments()
                clip = steps_to_clip(batch, step_seconds=m.step_seconds, sample_rate=m.sample_rate, fps=reader.fps,
                                     path=str(source))
                bags = lookback_bags(window, clip.step_starts.numpy(), m.step_seconds, m.comment_lookback,
                                     cfg.encoders.comment.max_comments_per_step)
                t0 = time.perf_counter()
                inputs = stepper.prepare(clip, bags)
                t1 = time.perf_counter()
                for s in batch:
                    ready[s.index] = s.ready
                last_ready[0] = batch[-1].ready
                features = stepper.encode(inputs)
                t2 = time.perf_counter()
                finals = stepper.push(features)
                t3 = time.perf_counter()
                emit(finals)
                t4 = time.perf_counter()
                horizon = batch[-1].start + m.step_seconds - m.comment_lookback  # comments at or before it are spent
                del window[: bisect.bisect_right([c.t for c in window], horizon)]
                save()
                for name, dt in zip(("prepare", "encode", "head", "write", "state"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3,
                                                                                     time.perf_counter() - t4)):
                    timings[name] += dt
            emit(stepper.finish())
            closed = tracker.finish()
            if closed is not None:
                n_hl, n_clips = n_hl + 1, n_clips + _close(closed)
            save()
    except KeyboardInterrupt:
        reason = "interrupted"
        save()
    finally:
        stop.set()
        thread.join(timeout=5)
        container.close()
        outputs.close()
        if comment_feed is not None:
            comment_feed.close()
    if reason != "interrupted":
        reason = (feed.reason if feed is not None and feed.reason not in (None, "stopped") else "end")
    lat = {}
    if lags:
        a = np.array(lags)
        lat = {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}
    timings["decode"] = reader.cpu_seconds
    return WatchSummary(n_out, total, n_hl, n_clips, reason, time.monotonic() - t_begin, resumed_at, lat, timings)


def _load_state(path: Path, source: str, checkpoint: Any) -> dict | None:
    """The saved state of an interrupted watch of the same source and checkpoint, else None."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)  # tensors and plain containers only: no pickle runs
    except Exception:
        raise MMLiveError(f"{path}: the resume state is unreadable; delete it to start the watch over") from None
    if state.get("version") != STATE_VERSION or state["source"] != str(source) or state["checkpoint"] != str(checkpoint):
        raise ConfigError(f"{path} belongs to a watch of {state.get('source')} with {state.get('checkpoint')}; "
                          "use another --out or delete the folder to start over")
    return state
