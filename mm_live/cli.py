"""The ``mm-live`` command line.

Each subcommand only parses its arguments and calls an importable library function; the function's
module is imported inside the subcommand so ``mm-live --help`` answers without importing torch.
User errors (:class:`~mm_live.errors.MMLiveError`) print one line and exit with code 2; any other
exception prints one line pointing at a crash log and exits 1 (:mod:`mm_live.crash`, docs/errors.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mm_live import __version__
from mm_live.errors import MMLiveError
from mm_live.fileio import check_output

# Tasks `mm-live train` knows; each is the pipeline module mm_live.pipelines.<name> (see mm_live.tasks).
_TASKS = ("highlight", "gifting", "em3")


# ----------------------------------------------------------------------------- commands


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from mm_live.data.synthetic import SynthConfig, synthesize

    check_output(args.out)
    kw = dict(streams=args.streams, seed=args.seed, width=args.width, height=args.height)
    if args.seconds is not None:
        kw["seconds"] = args.seconds
    cfg = SynthConfig.hard(**kw) if args.difficulty == "hard" else SynthConfig(**kw)
    summary = synthesize(args.out, cfg)
    print(summary.describe())
    return 0


def _cmd_data_rooms(args: argparse.Namespace) -> int:
    import json

    from mm_live.data.rooms import RoomsConfig, synthesize_rooms

    check_output(args.out)
    given = {k: getattr(args, k) for k in ("rooms", "users", "groups", "impressions_per_user", "seed")}
    cfg = RoomsConfig(**{k: v for k, v in given.items() if v is not None})
    print(json.dumps(synthesize_rooms(args.out, cfg), indent=2))
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from mm_live.data.fetch import fetch

    check_output(args.out)
    res = fetch(args.dataset, args.out, features=args.features, allow_unverified=args.allow_unverified)
    print(f"{len(res.files)} files in {res.out} ({len(res.skipped)} already there); licence: {res.licence}")
    return 0


def _cmd_data_manifest(args: argparse.Namespace) -> int:
    from mm_live.data.public_manifest import write_public_manifest

    check_output(args.out, kind="file")
    summary = write_public_manifest(args.dataset, args.annotations, args.videos, args.out, strict=args.strict)
    print(summary.describe())
    return 0


def _cmd_data_features(args: argparse.Namespace) -> int:
    from mm_live.data.features import extract_features

    check_output(args.out)
    summary = extract_features(args.videos, args.out, checkpoint=args.checkpoint, config=args.config,
                               dataset=args.dataset, step_seconds=args.step_seconds, batch=args.batch,
                               device=args.device)
    print(summary.describe())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mm_live.distributed import is_main
    from mm_live.runs import train
    from mm_live.tasks import get_task

    check_output(args.out)
    task = get_task(args.pipeline)
    options = {"dataset": args.dataset, "features": args.features} if args.dataset else {}
    result = train(args.pipeline, args.data, args.out, config=args.config, resume=args.resume, device=args.device,
                   overrides={"train.epochs": args.epochs, "train.seed": args.seed}, **options)
    if not is_main():  # under torchrun: rank 0 reports for the run
        return 0
    best = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
    print(f"trained {result.steps} steps; best held-out {task.metric} {best} at step {result.best_step}")
    print(f"checkpoints: {result.out_dir}/best  {result.out_dir}/last   log: {result.out_dir}/metrics.jsonl")
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from mm_live.live import watch

    check_output(args.out)
    summary = watch(args.source, args.checkpoint, args.out, comments=args.comments, cut=args.cut, json_out=args.json,
                    lead_in=args.lead_in, stall_timeout=args.stall_timeout, streamer_id=args.streamer_id,
                    skip_bad_lines=args.skip_bad_lines, device=args.device)
    print(summary.line(), file=sys.stderr if args.json else sys.stdout)
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from mm_live.comments import check_comment_times
    from mm_live.runs import run_task
    from mm_live.scoring import ClipSource
    from mm_live.tasks import get_task

    check_output(args.out)
    source = ClipSource.open(args.clip, args.comments, skip_bad_lines=args.skip_bad_lines)  # bad input fails before the model
    if args.comments:
        check_comment_times(source.comments, source.info.start_time + source.info.duration, args.comments)
    task = get_task(run_task(args.checkpoint))
    res = task.score(args.clip, args.checkpoint, comments=args.comments, out_dir=args.out, top_k=args.top_k,
                     streamer_id=args.streamer_id, user_id=args.user, skip_bad_lines=args.skip_bad_lines,
                     device=args.device)
    total = sum(res.timings.values())
    dur = len(res.scores) * res.step_seconds
    print(f"scored {len(res.scores)} steps of {res.clip.name} in {total:.1f} s ({dur / max(total, 1e-9):.1f}x real time)")
    for rank, w in enumerate(res.windows, 1):
        print(f"  #{rank}  {w.start:8.1f} s - {w.end:8.1f} s   score {w.score:.3f}")
    for name, path in res.outputs.items():
        print(f"  {name:18s} {path}")
    return 0


def _cmd_export_index(args: argparse.Namespace) -> int:
    from mm_live.data.windows import clip_collection
    from mm_live.distributed import is_main
    from mm_live.export import export_index

    check_output(args.out)
    out = export_index(args.checkpoint, clip_collection(args.data), args.out, segment_seconds=args.segment_seconds,
                       ivf_lists=args.ivf_lists, m=args.m, nbits=args.nbits, refine=args.refine, device=args.device)
    import json

    if not is_main():  # under torchrun: rank 0 reports for the run
        return 0
    meta = json.loads((out / "index.json").read_text(encoding="utf-8"))
    print(f"indexed {meta['count']} vectors ({meta['kind']}, {meta['m']}x{meta['nbits']} bits, refine {meta['refine']}) -> {out}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    import json

    from mm_live.export import search_index

    res = search_index(args.index, k=args.k, checkpoint=args.checkpoint, clip=args.clip, comments=args.comments,
                       item_id=args.id, vector=args.vector, nprobe=args.nprobe, device=args.device)
    hits = res.hits[0]
    if args.json:
        print(json.dumps([{"id": h.id, "score": round(h.score, 6), "stream_id": h.stream_id, "start": h.start,
                           "end": h.end} for h in hits]))
        return 0
    print(f"{'rank':>4s}  {'score':>7s}  {'id':>8s}  {'stream':20s} {'start s':>8s} {'end s':>8s}")
    for rank, h in enumerate(hits, 1):
        print(f"{rank:4d}  {h.score:7.4f}  {h.id:8d}  {h.stream_id:20s} {h.start:8.1f} {h.end:8.1f}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from mm_live.data.evaluate import evaluate

    if args.out:
        check_output(args.out, kind="file")
    if args.checkpoint is not None:  # predict with the run first (public datasets)
        from mm_live.pipelines.public_eval import evaluate_run

        result = evaluate_run(args.checkpoint, args.dataset, args.annotations, manifest=args.data,
                              features=args.features, out=args.out_dir, device=args.device)
    else:
        result = evaluate(args.dataset, predictions=args.predictions, annotations=args.annotations)
    print(result.table())
    if args.out:
        from mm_live.fileio import write_json

        write_json(args.out, result.to_dict())
        print(f"metrics written to {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mm_live.pipelines.demo import run_demo

    check_output(args.out)
    run_demo(out_dir=args.out, seed=args.seed)
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mm-live",
        description="End-to-end multimodal ranking for live streaming: highlight CTR, gifting, "
        "content-ID alignment, product-quantized retrieval.",
    )
    p.add_argument("--version", action="version", version=f"mm-live {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser(
        "train",
        help="train a pipeline (highlight, gifting, em3)",
        description="Train the highlight CTR model. Clip route: --data is an own-logs manifest (JSONL; "
        "lines with \"split\": \"test\" are held out, else every 4th stream). Feature route: --dataset names "
        "the reader of the annotation file --data and --features the per-video feature folder (KLive logs "
        "carry their own features). Writes RUN_DIR/best, RUN_DIR/last and RUN_DIR/metrics.jsonl.",
    )
    s.add_argument("pipeline", choices=_TASKS)
    s.add_argument("--data", required=True, type=Path, help="own-logs manifest, or the annotation file with --dataset")
    s.add_argument("--out", required=True, type=Path, help="run directory (created)")
    s.add_argument("--config", type=Path, help="JSON/YAML config (defaults otherwise)")
    s.add_argument("--epochs", type=int, help="override train.epochs")
    s.add_argument("--seed", type=int, help="override train.seed")
    s.add_argument("--resume", action="store_true",
                   help="continue from RUN_DIR/last; refused unless config and data shapes are the same")
    s.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default auto)")
    s.add_argument("--dataset", choices=["klive", "qvhighlights", "tvsum", "youtube_highlights"],
                   help="train on precomputed features of this dataset (feature route)")
    s.add_argument("--features", type=Path, help="folder of per-video .npz/.npy features (feature route)")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser(
        "score",
        help="score a live-stream clip with a trained run (highlight, gifting or em3)",
        description="Score every step of CLIP with the run's task (highlight CTR; P(gift) for --user and "
        "--streamer with a gifting run; the room embedding and, with --user, P(click) with an EM3 run) and "
        "write scores.json, scores.csv, a PNG plot and predictions.jsonl into --out. Works without comments "
        "and on clips without audio.",
    )
    s.add_argument("clip", type=Path, help="video file (mp4/mkv/...)")
    s.add_argument("--comments", type=Path, help="comments JSONL/CSV ({t, user_id, text})")
    s.add_argument("--checkpoint", required=True, type=Path, help="run directory written by 'mm-live train'")
    s.add_argument("--out", required=True, type=Path, help="output directory (created)")
    s.add_argument("--top-k", type=int, help="highlight windows to report (default: highlight.top_k)")
    s.add_argument("--streamer-id", "--streamer", dest="streamer_id", help="streamer id of the stream")
    s.add_argument("--user", help="user id (gifting and EM3 runs: score for this user)")
    s.add_argument("--skip-bad-lines", action="store_true", help="skip malformed comment lines instead of failing")
    s.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default auto)")
    s.set_defaults(func=_cmd_score)

    s = sub.add_parser(
        "watch",
        help="score a stream while it is broadcast; emit and cut highlights as they close",
        description="Score every step of SOURCE (a file being recorded, a local .m3u8 playlist, or a URL FFmpeg "
        "opens) as soon as it is in, into --out/scores.jsonl; closed highlight windows go to highlights.jsonl "
        "(and with --cut to clips/<start>-<end>.mp4, stream copy). Run it again with the same --out to resume.",
    )
    s.add_argument("source", help="growing .ts/.flv/fragmented .mp4 file, local .m3u8 playlist, or URL")
    s.add_argument("--checkpoint", required=True, type=Path, help="highlight run directory written by 'mm-live train'")
    s.add_argument("--out", required=True, type=Path, help="output directory (created; holds the resume state)")
    s.add_argument("--comments", help="comments being appended: .jsonl ({t, user_id, text}) or danmaku .xml; - = stdin")
    s.add_argument("--cut", action="store_true", help="write each highlight as an mp4 by stream copy")
    s.add_argument("--json", action="store_true", help="also print each score line (JSON) to stdout")
    s.add_argument("--lead-in", type=float, default=3.0, help="seconds of lead-in before a cut highlight (default 3)")
    s.add_argument("--stall-timeout", type=float, default=10.0,
                   help="end when the source brings nothing new for this many seconds (default 10)")
    s.add_argument("--streamer-id", "--streamer", dest="streamer_id", help="streamer id of the stream")
    s.add_argument("--skip-bad-lines", action="store_true", help="skip malformed comment lines instead of failing")
    s.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default auto)")
    s.set_defaults(func=_cmd_watch)

    s = sub.add_parser(
        "eval",
        help="evaluate saliency predictions against a public dataset's annotations",
        description="Score Moment-DETR-style predictions ({qid, vid, pred_saliency_scores}) the way "
        "the dataset's official evaluator does; print a table, optionally write JSON. With --checkpoint a "
        "highlight run makes the predictions first (clip route: --data MANIFEST; feature route: --features DIR).",
    )
    s.add_argument("--dataset", required=True, choices=["qvhighlights", "tvsum", "youtube_highlights", "klive", "own"])
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--predictions", type=Path, help="prediction JSONL")
    q.add_argument("--checkpoint", type=Path, help="highlight run to predict with (qvhighlights, tvsum, youtube_highlights)")
    s.add_argument("--annotations", required=True, type=Path, help="annotation file of the dataset")
    s.add_argument("--data", type=Path, help="with --checkpoint, clip route: the manifest from 'mm-live data manifest'")
    s.add_argument("--features", type=Path, help="with --checkpoint, feature route: the per-video features folder")
    s.add_argument("--out-dir", type=Path, help="with --checkpoint: where predictions.jsonl and metrics.json go "
                   "(default RUN/eval_<dataset>)")
    s.add_argument("--device", default="auto", help="with --checkpoint: auto, cpu, cuda or cuda:N (default auto)")
    s.add_argument("--out", type=Path, help="write the metrics as JSON here")
    s.set_defaults(func=_cmd_eval)

    s = sub.add_parser(
        "export-index", help="embed clips with a trained run and export product-quantized vectors to FAISS",
        description="Embed every clip of --data (an own-logs manifest, or a folder of videos with optional "
        "<name>.comments.jsonl) with the run, one vector per clip or per --segment-seconds segment, and write "
        "OUT/index.faiss + OUT/index.json (sidecar: model config hash, dims, metric, PQ shape, id -> stream/start/end). "
        "Killed mid-way, nothing appears at OUT; the same command again resumes where it stopped.")
    s.add_argument("--checkpoint", required=True, type=Path, help="run directory written by 'mm-live train'")
    s.add_argument("--data", required=True, type=Path, help="manifest JSONL or folder of videos")
    s.add_argument("--out", required=True, type=Path, help="index directory (written atomically)")
    s.add_argument("--segment-seconds", type=float, help="one vector per segment of this length (default: per clip)")
    s.add_argument("--ivf-lists", type=int, help="IndexIVFPQ with this many coarse lists (default quant.ivf_lists; 0 = IndexPQ)")
    s.add_argument("--m", type=int, help="PQ sub-vectors = bytes per vector at 8 bits (default quant.m)")
    s.add_argument("--nbits", type=int, help="bits per sub-vector code (default quant.nbits)")
    s.add_argument("--refine", default="none", help="re-rank with none, sq8, flat or pq<bytes> (default none)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    s.set_defaults(func=_cmd_export_index)

    s = sub.add_parser(
        "search", help="query an exported FAISS index with a clip, an indexed id or a vector",
        description="Print the top-K items of the index for one query: --clip (embedded with --checkpoint, the run "
        "that built the index), --id of an indexed item, or --vector FILE.npy.")
    s.add_argument("--index", required=True, type=Path, help="index directory written by export-index")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--clip", type=Path, help="query clip")
    q.add_argument("--id", type=int, help="query by an indexed item's id")
    q.add_argument("--vector", type=Path, help="query vector saved with numpy.save")
    s.add_argument("--comments", type=Path, help="comments of the query clip")
    s.add_argument("--checkpoint", type=Path, help="run that built the index (needed with --clip)")
    s.add_argument("-k", type=int, default=10, help="results to print (default 10)")
    s.add_argument("--nprobe", type=int, help="IVF lists visited per query (default: the index's)")
    s.add_argument("--json", action="store_true", help="print the hits as one JSON list")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    s.set_defaults(func=_cmd_search)

    s = sub.add_parser("data", help="dataset tools")
    dsub = s.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    d = dsub.add_parser(
        "synth",
        help="write synthetic live streams (mp4 + comments + labels + KuaiLive CSVs + manifest)",
        description="Write deterministic synthetic live streams with planted highlights visible in "
        "frames, audio and (lagging) comments, plus distractors; same seed, same bytes.",
    )
    d.add_argument("--out", required=True, type=Path, help="output directory (created)")
    d.add_argument("--streams", type=int, default=4, help="number of streams (default 4)")
    d.add_argument("--seconds", type=float, default=None, help="length of each stream in seconds (default 30; hard: 60)")
    d.add_argument("--difficulty", choices=("easy", "hard"), default="easy",
                   help="easy: every highlight shows in frames, audio and comments (the demo); hard: each event's cue "
                   "sits in a subset of modalities, distractors mimic one, lag 1-8 s, realistic chat text (the ablation)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument("--width", type=int, default=320, help="frame width in pixels (default 320)")
    d.add_argument("--height", type=int, default=180, help="frame height in pixels (default 180)")
    d.set_defaults(func=_cmd_data_synth)

    d = dsub.add_parser(
        "rooms", help="write synthetic live rooms with content-driven clicks (EM3 data, KuaiLive schema)",
        description="Write rooms (clips + comments), users and impressions whose clicks follow what the room "
        "shows and the user's taste group; some rooms go live only after the train/test split (cold start); "
        "the truth is written to truth.json. Train on it with 'mm-live train em3 --data DIR'.")
    d.add_argument("--out", required=True, type=Path, help="output directory (created)")
    for name in ("rooms", "users", "groups", "impressions-per-user", "seed"):
        d.add_argument(f"--{name}", type=int, help="(default: the generator's RoomsConfig)")
    d.set_defaults(func=_cmd_data_rooms)

    d = dsub.add_parser(
        "fetch", help="download a public dataset's annotations (and features), verified, with its licence",
        description="Download the files of DATASET listed in mm_live/data/fetch.py (URL, sha256, licence, source) "
        "into --out: resumable (.part + HTTP Range), sha256 checked before the rename, archives unpacked, "
        "LICENCE.txt written. MM_LIVE_FETCH_MIRROR=<url> fetches <url>/<dataset>/<file> instead.")
    d.add_argument("dataset", choices=["qvhighlights", "tvsum", "youtube_highlights", "kuailive", "klive"])
    d.add_argument("--out", required=True, type=Path, help="output directory (created)")
    d.add_argument("--features", action="store_true", help="also fetch the authors' precomputed features (GBs)")
    d.add_argument("--allow-unverified", action="store_true",
                   help="download files that have no published checksum (the sha256 received is recorded)")
    d.set_defaults(func=_cmd_data_fetch)

    d = dsub.add_parser(
        "manifest", help="own-logs manifest for a public dataset's raw videos (clip route)",
        description="Write an own-logs manifest (one line per query/video: clip, step_seconds = the dataset's "
        "unit, labels.ctr in [0, 1] from the saliency annotations, split, qid/vid) for the videos found in "
        "--videos; missing videos are listed in one line and skipped (refused with --strict).")
    d.add_argument("--dataset", required=True, choices=["qvhighlights", "tvsum", "youtube_highlights"])
    d.add_argument("--annotations", required=True, type=Path, nargs="+",
                   help="annotation file(s); the split is read from the name (_train_/_val_/_test_)")
    d.add_argument("--videos", required=True, type=Path, help="folder of <vid>.mp4 (.mkv/.webm/...)")
    d.add_argument("--out", required=True, type=Path, help="manifest JSONL to write")
    d.add_argument("--strict", action="store_true", help="refuse when any annotated video is missing")
    d.set_defaults(func=_cmd_data_manifest)

    d = dsub.add_parser(
        "features", help="per-step features of a folder of videos from our encoders (feature route)",
        description="Encode every video of --videos with the run's multimodal encoder (or, with 'default', the "
        "untrained encoders of the default/--config config) and write OUT/<video stem>.npz (key 'features', "
        "[steps, d]); videos already written are skipped, so a stopped run resumes.")
    d.add_argument("--checkpoint", default="default", help="run directory, or 'default' (default)")
    d.add_argument("--videos", required=True, type=Path, help="folder of videos")
    d.add_argument("--out", required=True, type=Path, help="features folder (created)")
    d.add_argument("--config", type=Path, help="config for 'default' (JSON/YAML)")
    d.add_argument("--dataset", choices=["qvhighlights", "tvsum", "youtube_highlights"],
                   help="use this dataset's step length (QVHighlights/TVSum 2 s, YouTube Highlights 50 frames at 30 fps)")
    d.add_argument("--step-seconds", type=float, help="step length (default: the dataset's, else the config's)")
    d.add_argument("--batch", type=int, default=32, help="steps encoded per batch (default 32)")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    d.set_defaults(func=_cmd_data_features)

    s = sub.add_parser("demo", help="the README's main job (make demo)")
    s.add_argument("--out", type=Path, default=Path("demo_out"), help="where outputs go (default ./demo_out)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    # Before torch is imported: idle OpenMP workers otherwise spin and steal the cores that
    # serial work (decoding, DTW, Python) needs; measured 5-10x slowdowns on 2 cores (bench_dtw).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a model hub at run time
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MMLiveError as exc:
        print(f"mm-live: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mm-live: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (mm-live search ... | head): not a bug
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush stays quiet
        return 141
    except Exception as exc:  # the last resort: a bug, not a user error -> one line + a crash log, exit 1
        from mm_live import crash

        if crash.debugging():
            raise
        try:
            log, reason = crash.write_crash_log(exc, argv), None
        except OSError as err:
            log, reason = None, f"{crash.crash_dir()}: {err.strerror or err}"
        print(crash.one_line(exc, log, reason), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
