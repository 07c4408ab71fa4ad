"""The ``tipo`` command line: expand, parse, models (and generate, when the image extra is in).

Errors print one readable line on stderr and exit non-zero; set ``TIPO_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

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


def _add_option_flags(p: argparse.ArgumentParser, groups: tuple[str, ...]) -> None:
    """Flags generated from tipo.options.OPTIONS (the one declaration of every option)."""
    from .options import OPTIONS, Kind

    titles = {"request": "request", "sampling": "sampling", "model": "model"}
    arg_groups = {g: p.add_argument_group(titles[g]) for g in groups}
    for o in OPTIONS:
        if o.group not in groups:
            continue
        g = arg_groups[o.group]
        helptext = o.help + (f" (default: {o.default})" if o.default not in ("", None) else "")
        if o.name == "tags":
            g.add_argument("tags", nargs="?", default="", help=o.help)
        elif o.name == "ban_regex":
            g.add_argument(o.flag, action="append", default=[], metavar="REGEX", help=o.help + " (repeatable)")
        elif o.kind is Kind.BOOL:
            g.add_argument(o.flag, action="store_true", help=o.help)
        elif o.kind is Kind.CHOICE:
            g.add_argument(o.flag, choices=o.choices, default=o.default, help=helptext)
        elif o.kind is Kind.INT:
            g.add_argument(o.flag, type=int, default=None, help=helptext)
        elif o.kind is Kind.FLOAT:
            g.add_argument(o.flag, type=float, default=None, help=helptext)
        else:
            g.add_argument(o.flag, default=None, help=helptext)
    if "model" in groups:
        arg_groups["model"].add_argument("--threads", type=int,
                                         help="CPU threads for the model (default: physical cores minus one, at most 8; more than the cores are capped)")
        arg_groups["model"].add_argument("--n-ctx", type=int, dest="n_ctx", default=None,
                                         help="context in tokens (default: the format's 1024; at most what the "
                                              "model file declares)")
        arg_groups["model"].add_argument("--allow-pickle", action="store_true",
                                         help="let the transformers backend load pickled .bin weights, which can run "
                                              "code (default: safetensors only)")
        arg_groups["model"].add_argument(
            "--known-tags", dest="known_tags_only", action=argparse.BooleanOptionalAction, default=None,
            help="only let the model write tags of the tag table (default: on for the built-in model, "
                 "off for the official TIPO models)")


# Commands that never touch the image stage: their runs do not import it (a faster start).
_TEXT_COMMANDS = frozenset(("expand", "parse", "models", "ui"))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``tipo`` parser; for one of the text-only commands, without the image stage's ``generate``."""
    parser = _Parser(prog="tipo", description="Presample better text-to-image prompts with TIPO models.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    ex = sub.add_parser("expand", help="expand a prompt (or plan it with --dry-run)",
                        description="Expand tags and/or a caption into a richer prompt in one model pass.")
    _add_option_flags(ex, ("request", "sampling", "model"))
    ex.add_argument("--dry-run", action="store_true", help="load nothing; print the planned model input")
    ex.add_argument("--json", action="store_true", help="print one JSON object")
    ex.add_argument("--timings", action="store_true", help="with --json: include the timings (they differ run to run)")
    ex.add_argument("--batch", metavar="FILE", help="a .txt (one tag prompt per line) or .jsonl file of requests")
    ex.add_argument("--out", metavar="FILE",
                    help="with --batch: the JSONL file to write (resumes a run of the same batch; - for stdout)")
    ex.add_argument("--skip-bad", action="store_true",
                    help="with --batch: write an error record for a line that cannot be read instead of refusing")
    ex.add_argument("--batch-size", type=int, default=1, metavar="N",
                    help="with --batch: requests decoded together (default: 1)")
    ex.set_defaults(func=_cmd_expand)

    pa = sub.add_parser("parse", help="parse a model text (prompt plus completion) from stdin into JSON fields")
    pa.add_argument("--json", action="store_true", help="(default) print JSON")
    pa.set_defaults(func=_cmd_parse)

    mo = sub.add_parser("models", help="list the built-in model, the registry and local model files")
    mo.add_argument("--json", action="store_true", help="print JSON")
    mo.set_defaults(func=_cmd_models)

    ui = sub.add_parser("ui", help="serve the web UI on 127.0.0.1 (needs the ui extra)",
                        description="Serve a Gradio page for expanding prompts (and making images with --pipeline) "
                                    "on 127.0.0.1; its HTTP API is at /gradio_api/.")
    _add_model_flags(ui)
    ui.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default: 7860)")
    ui.add_argument("--pipeline", metavar="PATH_OR_ID", help="a diffusers pipeline: also render images (image extra)")
    ui.set_defaults(func=_cmd_ui)

    if command not in _TEXT_COMMANDS:
        from .image.cli import add_generate_command

        add_generate_command(sub)
    return parser


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    """The model group alone (the UI's default model; the page renders the other options)."""
    _add_option_flags(p, ("model",))


def _version() -> str:
    from . import __version__

    return f"tipo {__version__}"


def options_from_args(args: argparse.Namespace):  # noqa: ANN201
    """The request and sampling settings the flags describe (through tipo.options)."""
    from .options import OPTIONS, from_values

    values = {o.name: getattr(args, o.name) for o in OPTIONS
              if o.group in ("request", "sampling") and getattr(args, o.name, None) is not None}
    # On the command line a given size must be real: 0 is the host apps' "unset", not a size.
    for name in ("width", "height", "aspect_ratio"):
        value = values.get(name)
        if value is not None and value <= 0:
            raise RequestError(f"{name}={value} is not valid; give a positive number (or leave the flag out)")
    return from_values(values)


def request_from_args(args: argparse.Namespace):  # noqa: ANN201
    return options_from_args(args)[0]


def sampling_from_args(args: argparse.Namespace):  # noqa: ANN201
    return options_from_args(args)[1]


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """Backend options from the model flags that are set (--n-ctx, --allow-pickle)."""
    out: dict[str, Any] = {}
    if getattr(args, "n_ctx", None) is not None:
        out["n_ctx"] = args.n_ctx
    if getattr(args, "allow_pickle", False):
        out["allow_pickle"] = True
    return out


def _task(args: argparse.Namespace) -> str | None:
    return None if args.task in (None, "auto") else args.task


def _template(args: argparse.Namespace) -> str | None:
    return args.template or None


def _cmd_expand(args: argparse.Namespace) -> int:
    from .planner import plan
    from .template import resolve_template

    if args.batch:
        return _cmd_batch(args)
    if args.out:
        raise RequestError("--out is only for --batch; without --batch the result goes to stdout")
    request, sampling = options_from_args(args)
    if _template(args) is not None:
        resolve_template(_template(args))
    planned = plan(request, task=_task(args))
    if args.dry_run:
        if args.json:
            _print_json(planned.to_dict())
        else:
            print(planned.prompt)
        return 0
    from .expander import Expander

    with Expander(args.model or None, backend=args.backend, n_threads=args.threads,
                  known_tags_only=args.known_tags_only, **model_options(args)) as expander:
        result = expander.expand(request, sampling, template=_template(args), task=_task(args))
    if args.json:
        _print_json(result.to_dict(timings=args.timings))
    else:
        print(result.prompt)
        if result.provenance is not None and sys.stderr.isatty():
            print(f"(seed {result.provenance.seed})", file=sys.stderr)
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    """``tipo expand --batch FILE --out FILE``: every check before the model loads, then tipo.batch."""
    from dataclasses import fields

    from . import batch
    from .backends import pick_backend
    from .expander import Expander, known_tags_rule
    from .registry import resolve
    from .request import Request

    if not args.out:
        raise RequestError("--batch needs --out FILE.jsonl for the results (or --out - for stdout)")
    if args.dry_run:
        raise RequestError("--dry-run is for single prompts; drop it for --batch")
    if args.tags:
        raise RequestError("give the prompts in the --batch file, not as an argument")
    if args.batch_size < 1:
        raise RequestError(f"--batch-size {args.batch_size} is not valid; give a whole number >= 1")
    template_req, sampling = options_from_args(args)
    defaults = {f.name: getattr(template_req, f.name) for f in fields(Request) if f.name != "tags"}
    if not args.caption:
        defaults.pop("caption", None)
    requests = batch.read_batch_file(args.batch, defaults, skip_bad=args.skip_bad)
    batch.check_output_path(args.out, args.batch)
    model = resolve(args.model or None, args.backend)
    backend = pick_backend(model.path, args.backend)
    identity = batch.model_identity(model, backend, known_tags_rule(model, args.known_tags_only))
    extra = {"request_defaults": defaults}
    settings = batch.batch_settings(identity, sampling, _template(args), _task(args), args.timings, extra)
    with batch.BatchOutput.open(args.out, requests, settings, args.seed, input_path=args.batch) as out:
        total = len(requests.items)
        if len(out.done) == total:
            print(f"tipo: {args.out} already holds all {total} records", file=sys.stderr)
            return 0
        bar = _progress(total, len(out.done)) if out.path is not None else None
        with Expander(args.model or None, backend=args.backend, n_threads=args.threads,
                      known_tags_only=args.known_tags_only, **model_options(args)) as expander:
            done = batch.run_batch(requests, expander, sampling, out=out, template=_template(args),
                                   task=_task(args), timings=args.timings, settings=extra,
                                   batch_size=args.batch_size, on_record=(lambda _: bar.update(1)) if bar else None)
        if bar is not None:
            bar.close()
    if done.errors:
        print(f"tipo: {done.errors} record(s) hold an error instead of a result (see their 'error')", file=sys.stderr)
    return 0


class _Counter:
    def __init__(self, total: int, initial: int) -> None:
        self.total, self.n = total, initial

    def update(self, k: int) -> None:
        self.n += k
        print(f"\rtipo: {self.n}/{self.total}", end="", file=sys.stderr)

    def close(self) -> None:
        print(file=sys.stderr)


def _progress(total: int, initial: int):  # noqa: ANN202
    try:
        from tqdm import tqdm
    except ImportError:
        return _Counter(total, initial)
    return tqdm(total=total, initial=initial, unit="prompt", desc="tipo", file=sys.stderr)


def _cmd_ui(args: argparse.Namespace) -> int:
    from .errors import require

    require("gradio", "ui", "The web UI")
    if not 0 < args.port < 65536:
        raise RequestError(f"--port {args.port} is not valid; give a port between 1 and 65535")
    from .ui import HOST, WebApp, serve

    app = WebApp(args.model or None, args.backend, pipeline=args.pipeline, n_threads=args.threads,
                 known_tags_only=args.known_tags_only)
    print(f"tipo: serving the web UI on http://{HOST}:{args.port} (Ctrl+C stops it)", file=sys.stderr)
    serve(app, port=args.port)
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
    parser = build_parser(argv[0] if argv else None)
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
