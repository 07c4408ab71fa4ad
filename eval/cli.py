"""``python -m eval``: run an evaluation (``run``) or rebuild a run's report (``report``).

The request and sampling flags are generated from ``tipo.options.OPTIONS``, the one declaration of
tipo's options, so they read exactly as ``tipo expand``'s. Errors print one line on stderr and exit 1;
set ``TIPO_DEBUG=1`` for tracebacks.

Examples::

    python -m eval run --prompts partiprompts --methods none,tipo --limit 50 --length short --out runs/eval/parti
    python -m eval run --prompts prompts.txt --methods "none,cmd:python my_expander.py" --out runs/eval/mine
    python -m eval run --prompts scenery --methods none,tipo --images --pipeline ./sd15 --steps 20 \\
        --clip openai/clip-vit-large-patch14 --dino facebook/dinov2-base --out runs/eval/scenery
    python -m eval report runs/eval/parti
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from tipo.flags import add_option_flags

from .errors import EvalError

__all__ = ["build_parser", "main"]

# tipo options the runner sets per item (tags, caption, seed) or that it does not offer.
_NOT_FLAGS = ("tags", "caption", "seed", "device", "known_tags")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        raise EvalError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m eval", description="Evaluate prompt-expansion methods on prompt sets: "
                     "text metrics, optional images and image metrics, a JSON file and a Markdown report.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, required=True)
    r = sub.add_parser("run", help="run or resume an evaluation", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Expand every prompt of a set with every method, score, and report. "
                       "Resumable: rerun the same command to finish an interrupted run.",
                       epilog=__doc__.split("Examples::", 1)[1])
    g = r.add_argument_group("what to run")
    g.add_argument("--prompts", required=True, metavar="SET",
                   help="partiprompts, coco, scenery, or a .txt (one prompt per line) / .jsonl (tipo Request fields) file")
    g.add_argument("--methods", required=True, action="append", metavar="M1,M2",
                   help="none, tipo, kgen, cmd:<command> (comma-separated; everything after cmd: is the command, "
                   "so put it last or in its own --methods)")
    g.add_argument("--out", required=True, metavar="DIR", help="output folder (an existing run there is resumed)")
    g.add_argument("--data-dir", metavar="DIR", help="the shared data folder (default: ../shared/data)")
    g.add_argument("--split", metavar="FILE", help="coco only: a held-out corpus .jsonl (groups coco:<image id>)")
    g.add_argument("--limit", type=int, metavar="N", help="a fixed sample of N items")
    g.add_argument("--seed", type=int, default=0, metavar="S", help="base seed of the per-item seeds (default: 0)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    m = r.add_argument_group("methods")
    m.add_argument("--batch-size", type=int, default=1, metavar="N",
                   help="items tipo decodes together (same outputs as one at a time; default: 1)")
    m.add_argument("--kgen-model", metavar="GGUF", help="the .gguf for kgen (default: --model)")
    m.add_argument("--kgen-max-retry", type=int, default=10, metavar="N",
                   help="kgen's retries when a result misses its length target (default: 10, as kgen)")
    m.add_argument("--cmd-timeout", type=float, default=60.0, metavar="S", help="seconds per item for cmd: (default: 60)")
    # tipo's settings, from tipo.options (request ones are defaults; an item's own .jsonl fields win).
    add_option_flags(r, ("request", "sampling", "expand", "loading"), exclude=_NOT_FLAGS, positional=())
    i = r.add_argument_group("images")
    i.add_argument("--images", action="store_true", help="generate one image per (method, item)")
    i.add_argument("--pipeline", metavar="PATH",
                   help="diffusers pipeline folder, hub id, or single-file .safetensors/.ckpt checkpoint for --images")
    i.add_argument("--pipeline-config", metavar="PATH",
                   help="single-file checkpoints: a diffusers folder of the same family for its configs and tokenizers")
    i.add_argument("--steps", type=int, help="denoising steps (default: tipo.image's, 30)")
    i.add_argument("--guidance", type=float, help="guidance scale (default: the pipeline's)")
    i.add_argument("--image-width", type=int, metavar="PX", help="image width (default: the pipeline's)")
    i.add_argument("--image-height", type=int, metavar="PX", help="image height (default: the pipeline's)")
    s = r.add_argument_group("metrics (models are local folders or hub ids; nothing is downloaded offline)")
    s.add_argument("--metrics", metavar="LIST",
                   help="optional groups to compute: tokens,clip,dino,aesthetic,nudity (default: every group whose "
                   "models are given; nudity when nudenet is installed); text metrics are always computed")
    s.add_argument("--nudity-threshold", type=float, default=0.6, metavar="P",
                   help="NudeNet score at which an exposed-nudity detection flags an image (default: 0.6)")
    s.add_argument("--clip", metavar="PATH", help="CLIP checkpoint for the CLIP score")
    s.add_argument("--dino", metavar="PATH", help="DINOv2 checkpoint for image Vendi and FDD")
    s.add_argument("--siglip", metavar="PATH", help="SigLIP so400m checkpoint for the aesthetic score")
    s.add_argument("--aesthetic-head", metavar="FILE", help="Aesthetic Predictor V2.5 head file")
    s.add_argument("--reference", metavar="DIR", help="reference images for FDD")
    s.add_argument("--clip-tokenizer", metavar="PATH",
                   help="CLIP tokenizer for the 77-token budget (default: --clip's, the pipeline's, or the HF cache)")
    s.add_argument("--t5-tokenizer", metavar="PATH", help="T5 tokenizer for the 512-token budget (default: the HF cache)")
    s.add_argument("--device", default="cpu", help="device of the metric models (default: cpu)")
    r.set_defaults(func=_cmd_run)

    rp = sub.add_parser("report", help="rebuild results.json, report.md and the plots of a run folder")
    rp.add_argument("dir", metavar="DIR", help="the --out folder of a run")
    rp.set_defaults(func=_cmd_report)
    return parser


def config_from_args(args: argparse.Namespace):  # noqa: ANN201 - returns a RunConfig
    """The RunConfig the flags describe (request and sampling flags through tipo.options)."""
    from tipo.flags import values_from_args
    from tipo.options import Dest, by_name
    from tipo.settings import from_values

    from .methods import MethodSettings
    from .runner import ImageSettings, RunConfig, ScoringSettings

    given = values_from_args(args)
    tipo = from_values(given)
    as_json = tipo.request.to_dict()
    defaults = {name: as_json[name] for name in given if by_name(name).dest is Dest.REQUEST}
    loading = tipo.loading
    settings = MethodSettings(model=loading["model"], backend=loading["backend"], threads=loading["n_threads"],
                              sampling=tipo.sampling, template=tipo.template, task=tipo.task, kgen_model=args.kgen_model,
                              kgen_max_retry=args.kgen_max_retry, cmd_timeout=args.cmd_timeout,
                              batch_size=args.batch_size)
    images = None
    if args.images:
        images = ImageSettings(pipeline=args.pipeline or "", steps=args.steps, guidance=args.guidance,
                               config=args.pipeline_config,
                               width=args.image_width, height=args.image_height)
    elif args.pipeline or args.steps or args.guidance is not None:
        raise EvalError("--pipeline, --steps and --guidance are for --images; add --images")
    metrics = tuple(x.strip() for x in args.metrics.split(",") if x.strip()) if args.metrics else None
    scoring = ScoringSettings(clip=args.clip, dino=args.dino, siglip=args.siglip, aesthetic_head=args.aesthetic_head,
                              reference=args.reference, clip_tokenizer=args.clip_tokenizer,
                              t5_tokenizer=args.t5_tokenizer, metrics=metrics, device=args.device,
                              nudity_threshold=args.nudity_threshold)
    return RunConfig(prompts=args.prompts, methods=tuple(args.methods), out=Path(args.out), data_dir=args.data_dir,
                     split=args.split, limit=args.limit, seed=args.seed, request=defaults, settings=settings,
                     images=images, scoring=scoring, progress=not args.quiet)


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import run

    result = run(config_from_args(args))
    done = ", ".join(f"{m}: {n}" for m, n in result.computed.items())
    print(f"expanded this time: {done} (found {result.resumed} finished records)", file=sys.stderr)
    _print_summary(result.results)
    print(f"results: {result.results_path}\nreport:  {result.report_path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .runner import build_results

    results = build_results(args.dir)
    _print_summary(results)
    print(f"results: {Path(args.dir) / 'results.json'}\nreport:  {Path(args.dir) / 'report.md'}")
    return 0


def _print_summary(results: dict) -> None:
    keys = ("known_tag_rate", "alias_duplicate_rate", "length_class_hit_rate", "mean_content_tags", "mean_caption_words")
    for method, entry in results["methods"].items():
        parts = []
        for key in keys:
            value = entry["metrics"].get(key, {}).get("value")
            parts.append(f"{key}={value:.3g}" if value is not None else f"{key}=n/a")
        print(f"{method}: {entry['finished']} done, {entry['failed']} failed; " + ", ".join(parts), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m eval``; returns the exit status."""
    from tipo.errors import TipoError

    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (EvalError, TipoError) as exc:
        if os.environ.get("TIPO_DEBUG"):
            raise
        print(f"python -m eval: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("python -m eval: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except json.JSONDecodeError as exc:  # a hand-edited results file
        print(f"python -m eval: error: invalid JSON: {exc}", file=sys.stderr)
        return 1
