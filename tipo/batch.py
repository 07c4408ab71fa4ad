"""Batch expansion: a text or JSONL file of requests in, JSONL out, resumable.

Input: ``.txt`` (one tag prompt per line; blank lines skipped) or ``.jsonl`` (one object per
line with :class:`~tipo.request.Request` fields, e.g. ``{"tags": "1girl", "length": "short"}``,
and an optional ``seed``). Output: one JSON record per input line, in order, each with its
``index`` and the ``seed`` it used. Seeds derive from a base seed (``--seed``, else a fresh one)
and the line index, so any record can be rerun alone. When the output file exists the run
resumes: finished records are kept, a half-written last line is dropped, and only the missing
records are expanded (with the same base seed, read back from the file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

from .errors import RequestError
from .request import Request

__all__ = ["derive_seed", "read_request_lines", "read_requests", "run_batch"]

_FIELD_ORDER = [f.name for f in fields(Request)]
_REQUEST_FIELDS = set(_FIELD_ORDER)


def derive_seed(base: int, index: int) -> int:
    """The seed of record ``index`` under a base seed (stable across versions and machines).

    Example:
        >>> derive_seed(1, 0) == derive_seed(1, 0) != derive_seed(1, 1)
        True
    """
    digest = hashlib.sha256(f"tipo-batch:{base}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def read_request_lines(text: str, name: str, defaults: dict[str, object] | None = None,
                       extra: tuple[str, ...] = ("seed",)) -> list[tuple[int, dict[str, object], dict[str, object]]]:
    """Read JSONL request lines as ``(line number, request fields, extra fields)``.

    Each line is an object of :class:`~tipo.request.Request` fields (validated here, over
    ``defaults``) plus the keys named in ``extra`` (``seed`` must be a whole number >= 0). Blank
    lines are skipped. Errors name ``name:line`` and the fix.
    """
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RequestError(f"{name}:{number}: not valid JSON ({exc.msg}); write one JSON object per line") from None
        if not isinstance(obj, dict):
            raise RequestError(f"{name}:{number}: expected a JSON object of Request fields, got {type(obj).__name__}")
        extras = {key: obj.pop(key) for key in extra if key in obj}
        unknown = sorted(set(obj) - _REQUEST_FIELDS)
        if unknown:
            valid = ", ".join([*extra, *_FIELD_ORDER])
            raise RequestError(f"{name}:{number}: unknown field(s) {unknown}; valid: {valid}")
        seed = extras.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise RequestError(f"{name}:{number}: seed must be a whole number >= 0, got {seed!r}")
        kw = {**(defaults or {}), **obj}
        try:
            Request(**kw)  # type: ignore[arg-type]
        except (RequestError, TypeError) as exc:
            raise RequestError(f"{name}:{number}: {exc}") from None
        out.append((number, kw, extras))
    return out


def read_requests(path: Path, defaults: dict[str, object]) -> list[tuple[dict[str, object], int | None]]:
    """Read requests as (request fields, explicit seed or None) pairs; errors name the line."""
    if not path.exists():
        raise RequestError(f"batch file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    out: list[tuple[dict[str, object], int | None]]
    if path.suffix.lower() in (".jsonl", ".json"):
        out = [(kw, extras.get("seed")) for _, kw, extras in read_request_lines(text, str(path), defaults)]  # type: ignore[misc]
    else:
        out = [({**defaults, "tags": line.strip()}, None) for line in text.splitlines() if line.strip()]
    if not out:
        raise RequestError(f"batch file {path} holds no requests")
    return out


def _load_done(out_path: Path) -> tuple[dict[int, str], int | None]:
    """Finished records by index, and the base seed they used. Drops a torn last line."""
    done: dict[int, str] = {}
    base = None
    if not out_path.exists():
        return done, base
    raw = out_path.read_bytes()
    good_end = 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break
        done[int(rec["index"])] = line.decode("utf-8")
        base = rec.get("base_seed", base)
        good_end += len(line)
    if good_end != len(raw):
        with open(out_path, "r+b") as fh:
            fh.truncate(good_end)
    return done, base


def run_batch(args: argparse.Namespace) -> int:
    """The ``tipo expand --batch FILE --out FILE`` command."""
    from .cli import _task, _template, options_from_args
    from .expander import Expander, fresh_seed

    if not args.out:
        raise RequestError("--batch needs --out FILE.jsonl for the results")
    if args.dry_run:
        raise RequestError("--dry-run is for single prompts; drop it for --batch")
    template_req, sampling = options_from_args(args)
    defaults = {k: getattr(template_req, k) for k in _FIELD_ORDER if k != "tags"}
    if not args.caption:
        defaults.pop("caption", None)
    requests = read_requests(Path(args.batch), defaults)
    out_path = Path(args.out)
    done, old_base = _load_done(out_path)
    base = args.seed if args.seed is not None else (old_base if old_base is not None else fresh_seed())
    if old_base is not None and base != old_base:
        raise RequestError(f"{out_path} was started with base seed {old_base}; rerun with --seed {old_base} "
                           "or write to a new file")
    todo = [i for i in range(len(requests)) if i not in done]
    if not todo:
        print(f"tipo: {out_path} already holds all {len(requests)} records", file=sys.stderr)
        return 0
    bar = _progress(len(requests), len(done))
    with Expander(args.model or None, backend=args.backend, n_threads=args.threads,
                  known_tags_only=args.known_tags_only) as expander, \
            open(out_path, "a", encoding="utf-8") as fh:
        for i in todo:
            kw, seed = requests[i]
            seed = seed if seed is not None else derive_seed(base, i)
            result = expander.expand(Request(**kw), sampling.with_seed(seed), template=_template(args),  # type: ignore[arg-type]
                                     task=_task(args))
            rec = {"index": i, "base_seed": base, "seed": seed, "request": {k: kw[k] for k in _FIELD_ORDER if k in kw},
                   "result": result.to_dict(timings=args.timings)}
            fh.write(json.dumps(rec, default=_jsonable) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(1)
    bar.close()
    return 0


def _jsonable(value: object) -> object:
    if hasattr(value, "value"):
        return value.value  # enums
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


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
