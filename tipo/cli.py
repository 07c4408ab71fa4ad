"""The ``tipo`` command line: expand, parse, models (and generate, when the image extra is in).

Errors print one readable line on stderr and exit non-zero; set ``TIPO_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .errors import RequestError, TipoError

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_ERROR = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        raise RequestError(f"{message} (see '{self.prog} --help')")


def _check_utf8(values: Sequence[str]) -> None:
    for value in values:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(
                f"argument {value.encode('utf-8', 'backslashreplace').decode('ascii', 'replace')!r} "
                "is not valid UTF-8; pass text in UTF-8"
            ) from None


def _add_request_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("request")
    g.add_argument("tags", nargs="?", default="", help="the tag text as typed in a host app (weights, LoRA tags, BREAK kept)")
    g.add_argument("--caption", default="", help="natural-language text to extend or to take tags from")
    g.add_argument("--caption-kind", choices=["short", "long", "auto"], default="auto",
                   help="is the caption short (to be extended) or already long (default: auto: long when it "
                        "has several lines, more than 3 sentences or more than 60 words)")
    g.add_argument("--length", choices=["very_short", "short", "long", "very_long"], default="long",
                   help="size class of the result (default: long)")
    g.add_argument("--width", type=int, help="image width in pixels (with --height: the aspect ratio line)")
    g.add_argument("--height", type=int, help="image height in pixels")
    g.add_argument("--aspect-ratio", type=float, help="width / height, instead of --width/--height")
    g.add_argument("--output", choices=["both", "tags", "caption"], default="both",
                   help="what to get back: more tags and a caption, tags only, or a caption only (default: both)")
    g.add_argument("--gen-meta", action="store_true", help="let the model fill in missing meta lines")
    g.add_argument("--ban", default="", help="comma-separated tags that must not be generated")
    g.add_argument("--ban-regex", action="append", default=[], metavar="REGEX",
                   help="a regular expression; generated tags that fully match it are dropped (repeatable)")
    g.add_argument("--task", help="force one trained task (e.g. short_to_long_to_tag) instead of the automatic plan")
    g.add_argument("--template", help="a template text with <|placeholders|>, or a preset: tags, caption, both, caption_first")


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    from .request import Sampling

    d = Sampling()
    g = p.add_argument_group("model and sampling")
    g.add_argument("--model", help="registry name, local .gguf file or HF folder, or HF repo id (default: the built-in model)")
    g.add_argument("--backend", choices=["auto", "llama", "hf"], default="auto",
                   help="llama.cpp (GGUF) or transformers (HF folder); auto picks by the model")
    g.add_argument("--seed", type=int, help="seed (any integer >= 0; omitted: a fresh one, reported in the result)")
    g.add_argument("--temperature", type=float, default=d.temperature, help=f"default {d.temperature}; 0 = greedy")
    g.add_argument("--top-p", type=float, default=d.top_p, help=f"default {d.top_p}")
    g.add_argument("--top-k", type=int, default=d.top_k, help=f"default {d.top_k}; 0 = off")
    g.add_argument("--min-p", type=float, default=d.min_p, help=f"default {d.min_p}")
    g.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty, help=f"default {d.repetition_penalty}")
    g.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help=f"default {d.max_new_tokens}")
    g.add_argument("--threads", type=int, help="CPU threads for llama.cpp (default: all cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tipo", description="Presample better text-to-image prompts with TIPO models.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    ex = sub.add_parser("expand", help="expand a prompt (or plan it with --dry-run)",
                        description="Expand tags and/or a caption into a richer prompt in one model pass.")
    _add_request_flags(ex)
    _add_model_flags(ex)
    ex.add_argument("--dry-run", action="store_true", help="load nothing; print the planned model input")
    ex.add_argument("--json", action="store_true", help="print one JSON object")
    ex.add_argument("--timings", action="store_true", help="with --json: include the timings (they differ run to run)")
    ex.add_argument("--batch", metavar="FILE", help="a .txt (one tag prompt per line) or .jsonl file of requests")
    ex.add_argument("--out", metavar="FILE", help="with --batch: the JSONL file to write (resumes if it exists)")
    ex.set_defaults(func=_cmd_expand)

    pa = sub.add_parser("parse", help="parse a model text (prompt plus completion) from stdin into JSON fields")
    pa.add_argument("--json", action="store_true", help="(default) print JSON")
    pa.set_defaults(func=_cmd_parse)

    mo = sub.add_parser("models", help="list the built-in model, the registry and local model files")
    mo.add_argument("--json", action="store_true", help="print JSON")
    mo.set_defaults(func=_cmd_models)
    return parser


def _version() -> str:
    from . import __version__

    return f"tipo {__version__}"


def request_from_args(args: argparse.Namespace):  # noqa: ANN201
    """Translate parsed flags into a :class:`~tipo.request.Request`."""
    from .request import Request

    ban = tuple(t for t in args.ban.split(",") if t.strip()) if args.ban else ()
    return Request(
        tags=args.tags,
        caption=args.caption,
        caption_kind=None if args.caption_kind == "auto" else args.caption_kind,
        length=args.length,
        width=args.width,
        height=args.height,
        aspect_ratio=args.aspect_ratio,
        output=args.output,
        gen_meta=args.gen_meta,
        ban=ban,
        ban_regex=tuple(args.ban_regex),
    )


def sampling_from_args(args: argparse.Namespace):  # noqa: ANN201
    from .request import Sampling

    return Sampling(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )


def _cmd_expand(args: argparse.Namespace) -> int:
    from .planner import plan
    from .template import resolve_template

    if args.batch:
        from .batch import run_batch

        return run_batch(args)
    if args.out:
        raise RequestError("--out is only for --batch; without --batch the result goes to stdout")
    request = request_from_args(args)
    if args.template is not None:
        resolve_template(args.template)
    sampling = sampling_from_args(args)
    planned = plan(request, task=args.task)
    if args.dry_run:
        if args.json:
            _print_json(planned.to_dict())
        else:
            print(planned.prompt)
        return 0
    from .expander import Expander

    with Expander(args.model, backend=args.backend, n_threads=args.threads) as expander:
        result = expander.expand(request, sampling, template=args.template, task=args.task)
    if args.json:
        _print_json(result.to_dict(timings=args.timings))
    else:
        print(result.prompt)
        if result.provenance is not None and sys.stderr.isatty():
            print(f"(seed {result.provenance.seed})", file=sys.stderr)
    return 0


def _cmd_parse(args: argparse.Namespace) -> int:
    from .parse import parse_text

    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"stdin is not valid UTF-8 (byte {exc.start}); pass the model text in UTF-8") from None
    _print_json(parse_text(text).to_json())
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .registry import list_models

    rows = list_models()
    if args.json:
        _print_json([r.to_dict() for r in rows])
        return 0
    for r in rows:
        print(r.describe())
    return 0


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(os.environ.get("TIPO_DEBUG"))
    parser = build_parser()
    try:
        _check_utf8(argv)
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args))
    except TipoError as exc:
        if debug:
            raise
        print(f"tipo: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, RequestError) else EXIT_ERROR
    except KeyboardInterrupt:
        print("tipo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # never a traceback for users; TIPO_DEBUG=1 shows it
        if debug:
            raise
        print(f"tipo: error: unexpected {type(exc).__name__}: {exc} (rerun with TIPO_DEBUG=1 for details)",
              file=sys.stderr)
        return EXIT_ERROR
