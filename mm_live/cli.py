"""The ``mm-live`` command line.

Each subcommand only parses its arguments and calls an importable library function; the function's
module is imported inside the subcommand so ``mm-live --help`` answers without importing torch.
User errors (:class:`~mm_live.errors.MMLiveError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mm_live import __version__
from mm_live.errors import MMLiveError

# Subcommands whose library side has not landed yet, with the issue that builds them.
_NOT_BUILT = {
    "train": "issue #5 (highlight CTR end to end)",
    "score": "issue #5 (highlight CTR end to end)",
    "export-index": "the retrieval/export issue (product quantization + FAISS)",
    "search": "the retrieval/export issue (product quantization + FAISS)",
}


class _NotBuilt(MMLiveError):
    pass


def _not_built(name: str):
    def run(args: argparse.Namespace) -> int:
        raise _NotBuilt(f"'mm-live {name}' is not built yet; it lands with {_NOT_BUILT[name]}")

    return run


# ----------------------------------------------------------------------------- commands


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from mm_live.data.synthetic import SynthConfig, synthesize

    cfg = SynthConfig(streams=args.streams, seconds=args.seconds, seed=args.seed, width=args.width, height=args.height)
    summary = synthesize(args.out, cfg)
    print(summary.describe())
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from mm_live.data.evaluate import evaluate

    result = evaluate(args.dataset, predictions=args.predictions, annotations=args.annotations)
    print(result.table())
    if args.out:
        from mm_live.fileio import write_json

        write_json(args.out, result.to_dict())
        print(f"metrics written to {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mm_live.pipelines.demo import run_demo

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

    s = sub.add_parser("train", help="train a pipeline (not built yet: issue #5)")
    s.add_argument("pipeline", choices=["highlight", "gifting", "em3"])
    s.set_defaults(func=_not_built("train"))

    s = sub.add_parser("score", help="score a live-stream clip (not built yet: issue #5)")
    s.add_argument("clip", type=Path)
    s.set_defaults(func=_not_built("score"))

    s = sub.add_parser(
        "eval",
        help="evaluate saliency predictions against a public dataset's annotations",
        description="Score Moment-DETR-style predictions ({qid, vid, pred_saliency_scores}) the way "
        "the dataset's official evaluator does; print a table, optionally write JSON.",
    )
    s.add_argument("--dataset", required=True, choices=["qvhighlights", "tvsum", "youtube_highlights", "klive", "own"])
    s.add_argument("--predictions", required=True, type=Path, help="prediction JSONL")
    s.add_argument("--annotations", required=True, type=Path, help="annotation file of the dataset")
    s.add_argument("--out", type=Path, help="write the metrics as JSON here")
    s.set_defaults(func=_cmd_eval)

    s = sub.add_parser("export-index", help="export quantized embeddings to a FAISS index (not built yet)")
    s.set_defaults(func=_not_built("export-index"))

    s = sub.add_parser("search", help="query an exported FAISS index (not built yet)")
    s.set_defaults(func=_not_built("search"))

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
    d.add_argument("--seconds", type=float, default=30.0, help="length of each stream in seconds (default 30)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument("--width", type=int, default=320, help="frame width in pixels (default 320)")
    d.add_argument("--height", type=int, default=180, help="frame height in pixels (default 180)")
    d.set_defaults(func=_cmd_data_synth)

    s = sub.add_parser("demo", help="the README's main job (make demo)")
    s.add_argument("--out", type=Path, default=Path("demo_out"), help="where outputs go (default ./demo_out)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
