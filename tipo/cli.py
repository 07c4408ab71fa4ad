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
from .flags import add_option_flags, settings_from_args

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


# Commands that never touch the image stage: their runs do not import it (a faster start).
_TEXT_COMMANDS = frozenset(("expand", "parse", "models", "ui"))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``tipo`` parser; for one of the text-only commands, without the image stage's ``generate``."""
    parser = _Parser(prog="tipo", description="Presample better text-to-image prompts with TIPO models.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    ex = sub.add_parser("expand", help="expand a prompt (or plan it with --dry-run)",
                        description="Expand tags and/or a caption into a richer prompt in one model pass.")
    add_option_flags(ex, ("request", "sampling", "expand", "loading"))
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
    ex.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="with --batch: expand on Ray (a cluster address, or a local Ray without one); "
                         "--out is then a new folder of Parquet parts")
    ex.add_argument("--ray-actors", type=int, default=2, metavar="N",
                    help="with --ray: actors, each holding one model (default: 2)")
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
    """The loading settings alone (the UI's default model; the page renders the other options)."""
    add_option_flags(p, ("loading",), exclude=("device",))


def _version() -> str:
    from . import __version__

    return f"tipo {__version__}"


def _cmd_expand(args: argparse.Namespace) -> int:
    from .planner import plan
    from .template import resolve_template

    if args.batch:
        return _cmd_batch(args)
    if args.out:
        raise RequestError("--out is only for --batch; without --batch the result goes to stdout")
    settings = settings_from_args(args)
    if settings.template is not None:
        resolve_template(settings.template)
    planned = plan(settings.request, task=settings.task)
    if args.dry_run:
        if args.json:
            _print_json(planned.to_dict())
        else:
            print(planned.prompt)
        return 0
    from .pool import open_expander

    with open_expander(**settings.loading) as expander:
        result = expander.expand(settings.request, settings.sampling, **settings.expand)
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
    from .expander import known_tags_rule
    from .pool import open_expander
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
    run = settings_from_args(args)
    template_req, sampling, loading = run.request, run.sampling, run.loading
    defaults = {f.name: getattr(template_req, f.name) for f in fields(Request) if f.name != "tags"}
    if not args.caption:
        defaults.pop("caption", None)
    requests = batch.read_batch_file(args.batch, defaults, skip_bad=args.skip_bad)
    if args.ray is not None:
        return _cmd_batch_ray(args, requests, run)
    batch.check_output_path(args.out, args.batch)
    model = resolve(loading["model"], loading["backend"])
    backend = pick_backend(model.path, loading["backend"])
    identity = batch.model_identity(model, backend, known_tags_rule(model, loading["known_tags_only"]))
    extra = {"request_defaults": defaults}
    settings = batch.batch_settings(identity, sampling, run.template, run.task, args.timings, extra)
    with batch.BatchOutput.open(args.out, requests, settings, sampling.seed, input_path=args.batch) as out:
        total = len(requests.items)
        if len(out.done) == total:
            print(f"tipo: {args.out} already holds all {total} records", file=sys.stderr)
            return 0
        bar = _progress(total, len(out.done)) if out.path is not None else None
        with open_expander(**loading) as expander:
            done = batch.run_batch(requests, expander, sampling, out=out, template=run.template,
                                   task=run.task, timings=args.timings, settings=extra,
                                   batch_size=args.batch_size, on_record=(lambda _: bar.update(1)) if bar else None)
        if bar is not None:
            bar.close()
    if done.errors:
        print(f"tipo: {done.errors} record(s) hold an error instead of a result (see their 'error')", file=sys.stderr)
    return 0


def _cmd_batch_ray(args: argparse.Namespace, requests, run) -> int:  # noqa: ANN001
    """``--batch FILE --out DIR --ray [ADDRESS]``: the same records as a local batch, on Ray actors."""
    from .ray import run as run_ray
    from .seeds import fresh_seed

    if args.out == "-":
        raise RequestError("--ray writes a folder of Parquet parts; give --out DIR")
    loading = dict(run.loading)
    base = run.sampling.seed if run.sampling.seed is not None else fresh_seed()
    options = {k: v for k, v in loading.items() if k == "n_ctx" and v is not None}
    n = run_ray(requests, args.out, address=args.ray or None, model=loading.get("model") or None,
                backend=loading.get("backend", "auto"), sampling=run.sampling, base_seed=base, template=run.template,
                task=run.task, timings=args.timings, num_actors=args.ray_actors, batch_size=args.batch_size,
                n_threads=loading.get("n_threads") or 1, known_tags_only=loading.get("known_tags_only"), **options)
    print(f"tipo: {n} records in {args.out} (base seed {base}; tipo.ray.read_output reads them in order)",
          file=sys.stderr)
    return 0


def _progress(total: int, initial: int):  # noqa: ANN202
    from .progress import progress_bar

    return progress_bar(total, initial=initial, unit="prompt", desc="tipo", enabled=True)


def _cmd_ui(args: argparse.Namespace) -> int:
    from .errors import require

    require("gradio", "ui", "The web UI")
    if not 0 < args.port < 65536:
        raise RequestError(f"--port {args.port} is not valid; give a port between 1 and 65535")
    from .ui import HOST, WebApp, serve

    loading = settings_from_args(args).loading
    app = WebApp(loading["model"], loading["backend"], pipeline=args.pipeline, n_threads=loading["n_threads"],
                 known_tags_only=loading["known_tags_only"])
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
