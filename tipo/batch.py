"""Batch expansion as a library function: requests in, results out, resumable output.

Example:
    >>> from tipo import Expander, Request, Sampling
    >>> from tipo.batch import run_batch
    >>> with Expander("model.gguf") as ex:  # doctest: +SKIP
    ...     done = run_batch([Request("1girl"), Request("1boy")], ex, Sampling(), out="out.jsonl", base_seed=7)
    ...     print(done.records[1]["result"]["prompt"])

Input (:func:`read_batch_file`): ``.txt`` (one tag prompt per line; blank lines skipped) or
``.jsonl`` (one object per line with :class:`~tipo.request.Request` fields and an optional
``seed``). Records are split on ``\\n`` only, so JSON strings holding U+2028 or U+0085 read
correctly; the file must be UTF-8. Every line is validated before any model is loaded: a bad line
refuses the batch with its line number, or (``skip_bad``) becomes an error record.

Output: one JSON record per request, in order, each with its ``index``, input ``line``, the
``seed`` it used and the ``result`` (or an ``error``). Seeds derive from a base seed and the
index (:func:`derive_seed`) unless the record gives one, so any record can be rerun alone.

An output file is written only by this tool, for one batch: its first line is a header
``{"tipo_batch": 1, "input": {...sha256...}, "base_seed": N, "settings": {...}}``. When the file
exists the run resumes: the header must match this run's input, base seed and settings (else
the run is refused, naming what differs), finished records are kept, a torn last line is dropped,
and only the missing records are expanded. Every record is flushed and fsync'd as it is written.
A lock (``OUT.lock``, ``flock``) stops two runs from writing one output. The output is refused
when it is the input, an existing file without our header, or not a regular file (stream to
stdout with ``out="-"``, which writes the records only and cannot resume).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .errors import RequestError
from .request import Request, Sampling
from .seeds import fresh_seed, record_seed

if TYPE_CHECKING:
    from .expander import CancelHook, Expander

__all__ = [
    "HEADER_KEY", "BatchInput", "BatchItem", "BatchOutput", "BatchResult", "batch_input", "batch_settings",
    "check_output_path", "derive_seed", "expand_records",
    "model_identity", "read_batch_file", "read_request_lines", "run_batch",
]

HEADER_KEY = "tipo_batch"
FORMAT_VERSION = 1
_FIELD_ORDER = [f.name for f in fields(Request)]
_REQUEST_FIELDS = set(_FIELD_ORDER)


derive_seed = record_seed  # the batch rule lives in tipo.seeds (rule 2)


# --- input ---------------------------------------------------------------------------------------------


def split_lines(text: str) -> list[str]:
    """Records split on ``\\n`` only (a ``\\r`` before it is dropped); U+2028, U+0085 and other
    characters :meth:`str.splitlines` would split on stay inside their record."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _parse_line(line: str, name: str, number: int, defaults: Mapping[str, object] | None,
                extra: tuple[str, ...]) -> tuple[dict[str, object], dict[str, object]]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RequestError(f"{name}:{number}: not valid JSON ({exc.msg}); write one JSON object per line") from None
    except RecursionError:
        raise RequestError(f"{name}:{number}: JSON nested too deeply; write one flat object per line") from None
    if not isinstance(obj, dict):
        raise RequestError(f"{name}:{number}: expected a JSON object of Request fields, got {type(obj).__name__}")
    extras = {key: obj.pop(key) for key in extra if key in obj}
    unknown = sorted(set(obj) - _REQUEST_FIELDS)
    if unknown:
        valid = ", ".join([*extra, *_FIELD_ORDER])
        raise RequestError(f"{name}:{number}: unknown field(s) {unknown}; valid: {valid}")
    seed = extras.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise RequestError(f"{name}:{number}: seed must be a whole number in [0, 2**63), got {seed!r}")
    kw = {**(defaults or {}), **obj}
    try:
        Request(**kw)  # type: ignore[arg-type]
    except (RequestError, TypeError) as exc:
        raise RequestError(f"{name}:{number}: {exc}") from None
    return kw, extras


def read_request_lines(text: str, name: str, defaults: Mapping[str, object] | None = None,
                       extra: tuple[str, ...] = ("seed",)) -> list[tuple[int, dict[str, object], dict[str, object]]]:
    """Read JSONL request lines as ``(line number, request fields, extra fields)``.

    Each line is an object of :class:`~tipo.request.Request` fields (validated here, over
    ``defaults``) plus the keys named in ``extra`` (``seed`` must be a whole number >= 0). Blank
    lines are skipped; records are split on ``\\n`` only. The first bad line raises, naming
    ``name:line`` and the fix.
    """
    out = []
    for number, line in enumerate(split_lines(text), 1):
        if line.strip():
            kw, extras = _parse_line(line, name, number, defaults, extra)
            out.append((number, kw, extras))
    return out


@dataclass(frozen=True)
class BatchItem:
    """One record of a batch: its place, its request (or why it could not be read) and its seed."""

    index: int  # 0-based position among the batch's records
    line: int  # 1-based line of the input file; 0 for requests given in memory
    fields: Mapping[str, object]  # the request's fields as JSON values (what the record repeats)
    seed: int | None = None  # the record's own seed; None derives one from the base seed
    error: str | None = None  # the line could not be read (with skip_bad): an error record is written

    @property
    def request(self) -> Request:
        return Request(**self.fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class BatchInput:
    """The records of a batch and the digest that identifies them (stored in the output header)."""

    items: tuple[BatchItem, ...]
    digest: str
    name: str = "requests"

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "sha256": self.digest, "records": len(self.items)}


def batch_input(requests: Iterable[Request | str | tuple[Request | str, int | None]], name: str = "requests") -> BatchInput:
    """A batch from requests in memory: Request objects, tag strings, or ``(request, seed)`` pairs.

    The digest covers every field and seed, so a resume with other requests is refused.
    """
    items = []
    for index, entry in enumerate(requests):
        request, seed = entry if isinstance(entry, tuple) else (entry, None)
        if isinstance(request, str):
            request = Request(request)
        if not isinstance(request, Request):
            raise RequestError(f"request {index} must be a tipo.Request or a tag string, got {type(request).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise RequestError(f"request {index}: seed must be a whole number in [0, 2**63), got {seed!r}")
        items.append(BatchItem(index, 0, request.to_dict(), seed))
    if not items:
        raise RequestError("the batch holds no requests")
    canon = json.dumps([[dict(i.fields), i.seed] for i in items], sort_keys=True, separators=(",", ":"))
    return BatchInput(tuple(items), hashlib.sha256(canon.encode()).hexdigest(), name)


def read_batch_file(path: str | os.PathLike[str], defaults: Mapping[str, object] | None = None, *,
                    skip_bad: bool = False) -> BatchInput:
    """Read and validate a ``.txt`` or ``.jsonl`` batch file (see the module docstring).

    Args:
        defaults: request fields every record starts from (a record's own fields win).
        skip_bad: keep a line that cannot be read as an error record instead of refusing the batch.

    Raises:
        RequestError: one line naming the file (and line) and the fix.
    """
    p = Path(path)
    raw = _read_input(p)
    digest = hashlib.sha256(raw).hexdigest()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = raw[: exc.start].count(b"\n") + 1
        raise RequestError(f"{p}:{where}: not valid UTF-8 (byte {exc.start} of the file); "
                           "save the file as UTF-8") from None
    jsonl = p.suffix.lower() in (".jsonl", ".json")
    items: list[BatchItem] = []
    bad: list[str] = []
    for number, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        index = len(items)
        try:
            if jsonl:
                kw, extras = _parse_line(line, str(p), number, defaults, ("seed",))
            else:
                kw, extras = {**(defaults or {}), "tags": line.strip(" \t")}, {}
                try:
                    Request(**kw)  # type: ignore[arg-type]
                except (RequestError, TypeError) as exc:
                    raise RequestError(f"{p}:{number}: {exc}") from None
        except RequestError as exc:
            bad.append(str(exc))
            items.append(BatchItem(index, number, {}, None, str(exc)))
            continue
        fields_ = Request(**kw).to_dict()  # type: ignore[arg-type]
        items.append(BatchItem(index, number, fields_, extras.get("seed")))  # type: ignore[arg-type]
    if bad and not skip_bad:
        more = f" ({len(bad) - 1} more bad line(s))" if len(bad) > 1 else ""
        raise RequestError(f"{bad[0]}{more}; fix the line(s), or pass --skip-bad to write an error record for each")
    if not items:
        raise RequestError(f"batch file {p} holds no requests")
    return BatchInput(tuple(items), digest, p.name)


def _read_input(p: Path) -> bytes:
    try:
        st = p.stat()
    except FileNotFoundError:
        raise RequestError(f"batch file {p} does not exist; check the path") from None
    except OSError as exc:
        raise RequestError(f"cannot read batch file {p} ({exc.strerror}); check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise RequestError(f"batch file {p} is a folder; give a .txt or .jsonl file")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        raise RequestError(f"batch file {p} is not a regular file; give a .txt or .jsonl file")
    try:
        return p.read_bytes()
    except PermissionError:
        raise RequestError(f"cannot read batch file {p} (permission denied); fix its permissions") from None
    except OSError as exc:
        raise RequestError(f"cannot read batch file {p} ({exc.strerror})") from None


# --- settings ------------------------------------------------------------------------------------------


def model_identity(model: object, backend: str, known_tags_only: bool) -> dict[str, object]:
    """What identifies the loaded model in an output header: name, file (size and modification
    time for a file), backend and the known-tags rule. ``model`` is a
    :class:`~tipo.registry.ResolvedModel`."""
    path = Path(model.path).resolve()  # type: ignore[attr-defined]
    out: dict[str, object] = {"model": model.label, "file": str(path), "backend": backend,  # type: ignore[attr-defined]
                              "known_tags_only": bool(known_tags_only)}
    with contextlib.suppress(OSError):
        st = path.stat()
        if stat.S_ISREG(st.st_mode):
            out["size"] = st.st_size
            out["mtime_ns"] = st.st_mtime_ns
    return out


def batch_settings(model: Mapping[str, object], sampling: Sampling, template: object = None, task: object = None,
                   timings: bool = False, extra: Mapping[str, object] | None = None) -> dict[str, object]:
    """The settings a batch's results depend on besides its input (stored in the output header).

    ``model`` is :func:`model_identity`'s dict (known before the model is loaded).
    """
    settings = {
        "model": dict(model),
        "sampling": {k: v for k, v in asdict(sampling).items() if k != "seed"},
        "template": template,
        "task": task,
        "timings": bool(timings),
        **(extra or {}),
    }
    return json.loads(json.dumps(settings, default=_jsonable))  # as a header reads back


def _diff(old: object, new: object, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key, "(unset)"), new.get(key, "(unset)"), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {json.dumps(old)} -> {json.dumps(new)}"]


# --- output --------------------------------------------------------------------------------------------


class BatchOutput:
    """The output of one batch: a JSONL file this tool owns (header, lock, resume), or a stream.

    Open it with :meth:`open` before loading a model, so every problem with the path is reported
    first; it stays locked until :meth:`close`.
    """

    def __init__(self, path: Path | None, stream: IO[str] | None, header: dict[str, object],
                 done: dict[int, dict[str, object]], lock: IO[bytes] | None, fh: IO[bytes] | None) -> None:
        self.path, self._stream, self.header, self.done = path, stream, header, done
        self._lock, self._fh = lock, fh

    @property
    def base_seed(self) -> int:
        return int(self.header["base_seed"])  # type: ignore[call-overload]

    @classmethod
    def open(cls, out: str | os.PathLike[str], batch: BatchInput, settings: Mapping[str, object],
             base_seed: int | None = None, *, input_path: str | os.PathLike[str] | None = None) -> BatchOutput:
        """Check, lock and read (for a resume) the output; create it with its header when new.

        Args:
            out: a ``.jsonl`` path, or ``"-"`` for stdout (records only; no resume).
            batch: the batch to write (its digest goes in the header).
            settings: what the results depend on besides the input (a resume must match).
            base_seed: the base of the derived seeds; None keeps the stored one (resume) or
                draws a fresh one.
            input_path: the batch file, so the output can never be the input.
        """

        header: dict[str, object] = {HEADER_KEY: FORMAT_VERSION, "input": batch.describe(),
                                     "base_seed": base_seed, "settings": dict(settings)}
        if str(out) == "-":
            header["base_seed"] = fresh_seed() if base_seed is None else base_seed
            return cls(None, sys.stdout, header, {}, None, None)
        p = Path(out)
        check_output_path(p, input_path)
        lock = _take_lock(p)
        try:
            done: dict[int, dict[str, object]] = {}
            fh: IO[bytes]
            if p.exists() and p.stat().st_size > 0:
                old, done = _read_output(p, batch)
                problems = _diff({"input": old.get("input"), "settings": old.get("settings")},
                                 {"input": header["input"], "settings": header["settings"]})
                if old.get(HEADER_KEY) != FORMAT_VERSION:
                    problems.insert(0, f"format: {old.get(HEADER_KEY)!r} -> {FORMAT_VERSION}")
                if problems:
                    raise RequestError(f"{p} holds results of another batch or other settings, so it cannot be "
                                       f"resumed ({'; '.join(problems[:4])}); rerun with the same input and "
                                       "settings, or choose a new --out")
                stored = old.get("base_seed")
                if base_seed is not None and base_seed != stored:
                    raise RequestError(f"{p} was started with base seed {stored}; rerun with --seed {stored} "
                                       "or choose a new --out")
                header["base_seed"] = stored
                fh = open(p, "ab")  # noqa: SIM115 - closed by close()
            else:
                header["base_seed"] = fresh_seed() if base_seed is None else base_seed
                fh = _create(p, header)
        except BaseException:
            _release(lock)
            raise
        return cls(p, None, header, done, lock, fh)

    def write(self, record: Mapping[str, object]) -> None:
        """Append one record (flushed and fsync'd before returning)."""
        line = json.dumps(record, default=_jsonable) + "\n"
        if self._stream is not None:
            self._stream.write(line)
            self._stream.flush()
            return
        if self._fh is None:
            raise RequestError("this batch output is closed")
        self._fh.write(line.encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._lock is not None:
            _release(self._lock)
            self._lock = None

    def __enter__(self) -> BatchOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_output_path(out: str | os.PathLike[str], input_path: str | os.PathLike[str] | None = None) -> None:
    """Refuse, in one line, an output path that cannot be ours: a folder, a pipe or device, the
    input itself, a missing or unwritable folder. ``"-"`` (stdout) is always fine."""
    if str(out) == "-":
        return
    p = Path(out)
    _check_out_path(p, input_path)
    if not os.access(p if p.exists() else (p.parent if str(p.parent) else Path(".")), os.W_OK):
        raise RequestError(f"cannot write --out {p} (permission denied); choose a writable path")
    if p.exists() and p.stat().st_size > 0:
        try:
            with open(p, "rb") as fh:
                first = fh.readline(1 << 20)
        except OSError as exc:
            raise RequestError(f"cannot read --out {p} ({exc.strerror}); choose another path") from None
        _parse_header(p, first)


def _check_out_path(p: Path, input_path: str | os.PathLike[str] | None) -> None:
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise RequestError(f"the folder of --out {p} does not exist; create {parent} first")
    if not parent.is_dir():
        raise RequestError(f"--out {p}: {parent} is not a folder")
    try:
        st = p.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise RequestError(f"cannot use --out {p} ({exc.strerror}); choose another path") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a pipe, device or socket)"
        raise RequestError(f"--out {p} is {what}; give a .jsonl file path, or --out - to stream to stdout")
    if input_path is not None:
        same = False
        with contextlib.suppress(OSError):
            same = st is not None and os.path.samefile(p, input_path)
        if same or p.resolve() == Path(input_path).resolve():
            raise RequestError(f"--out {p} is the batch file itself; write the results to another file")


def _take_lock(p: Path) -> IO[bytes]:
    lock_path = p.with_name(p.name + ".lock")
    try:
        fh = open(lock_path, "ab")  # noqa: SIM115 - released by _release
    except PermissionError:
        raise RequestError(f"cannot write next to --out {p} (permission denied); choose a writable folder") from None
    except OSError as exc:
        raise RequestError(f"cannot write next to --out {p} ({exc.strerror}); choose another path") from None
    try:
        if sys.platform == "win32":  # pragma: no cover - POSIX CI
            import msvcrt

            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise RequestError(f"another tipo run is writing {p} (it holds {lock_path}); wait for it to finish "
                           "or choose another --out") from None
    return fh


def _release(fh: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        if sys.platform != "win32":
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    fh.close()


def _create(p: Path, header: Mapping[str, object]) -> IO[bytes]:
    """Create the output with its header (exclusive, so nothing else's file is ever replaced)."""
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_EXCL if not p.exists() else 0), 0o666)
    except FileExistsError:
        raise RequestError(f"--out {p} appeared while starting; choose another --out") from None
    except OSError as exc:
        raise RequestError(f"cannot create --out {p} ({exc.strerror}); choose a writable path") from None
    fh = os.fdopen(fd, "ab")
    fh.write((json.dumps(header, default=_jsonable) + "\n").encode("utf-8"))
    fh.flush()
    os.fsync(fh.fileno())
    with contextlib.suppress(OSError):  # make the new name durable too
        dfd = os.open(p.parent if str(p.parent) else ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return fh


def _parse_header(p: Path, first: bytes) -> dict[str, object]:
    """The header on an output's first line (with its newline), or a refusal: the file is not ours."""
    header = None
    if first.endswith(b"\n"):
        with contextlib.suppress(ValueError, RecursionError):
            header = json.loads(first)
    if not isinstance(header, dict) or HEADER_KEY not in header:
        raise RequestError(f"{p} exists and is not a tipo batch output (no tipo_batch header on its first line); "
                           "it is left untouched: choose another --out, or delete it yourself")
    return header


def _read_output(p: Path, batch: BatchInput) -> tuple[dict[str, object], dict[int, dict[str, object]]]:
    """The header and the finished records of an existing output; a torn last line is dropped."""
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise RequestError(f"cannot read --out {p} ({exc.strerror}); choose another path") from None
    first, sep, rest = raw.partition(b"\n")
    header = _parse_header(p, first + sep)
    done: dict[int, dict[str, object]] = {}
    good_end = len(first) + 1
    lines = rest.split(b"\n")
    for number, line in enumerate(lines, 2):
        if number - 2 == len(lines) - 1:  # after the last "\n": empty, or a torn record
            break
        try:
            rec = json.loads(line)
            index = rec["index"]
            ok = isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(batch.items)
        except (ValueError, TypeError, KeyError, RecursionError):
            ok = False
        if not ok or index in done:
            raise RequestError(f"{p}:{number} is not a record of this batch (edited by hand?); choose a new --out")
        done[index] = rec
        good_end += len(line) + 1
    if good_end != len(raw):
        with open(p, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return header, done


# --- the run -------------------------------------------------------------------------------------------


@dataclass
class BatchResult:
    """Every record of the batch in order (resumed ones as read back), and how many were new."""

    records: list[dict[str, object]] = field(default_factory=list)
    resumed: int = 0
    written: int = 0
    errors: int = 0
    header: dict[str, object] = field(default_factory=dict)


def run_batch(requests: BatchInput | Iterable[Request | str | tuple[Request | str, int | None]],
              expander: Expander, sampling: Sampling | None = None, *,
              out: BatchOutput | str | os.PathLike[str] | None = None, base_seed: int | None = None,
              template: object = None, task: object = None, timings: bool = False,
              settings: Mapping[str, object] | None = None, batch_size: int = 1,
              on_record: Callable[[dict[str, object]], None] | None = None,
              cancel: CancelHook | None = None) -> BatchResult:
    """Expand a batch; with ``out``, write (or resume) its output file.

    Args:
        requests: a :class:`BatchInput` (see :func:`read_batch_file`), or requests in memory.
        sampling: shared settings; each record's seed is its own or ``derive_seed(base, index)``.
        out: an output path (resumed when it exists), ``"-"`` for stdout, or an opened
            :class:`BatchOutput`; None keeps the records in memory only.
        base_seed: base of the derived seeds; None reads it from the output being resumed, or
            draws a fresh one.
        settings: more settings the results depend on (stored in the header, checked on resume).
        batch_size: requests decoded together (see :meth:`Expander.expand_batch`).
        on_record: called with each record as it is written (progress).
        cancel: the ``cancel`` hook of :meth:`Expander.expand` (an Event, or a function returning
            True): checked between model steps, it stops the batch with
            :class:`~tipo.errors.Cancelled`; the records written so far stay, and the same call
            later resumes the file.

    Returns:
        A :class:`BatchResult`; records of requests that failed hold an ``error`` instead of a
        ``result``.
    """
    batch = requests if isinstance(requests, BatchInput) else batch_input(requests)
    sampling = sampling or Sampling()
    identity = model_identity(expander.model, expander.backend_name, expander.known_tags_only)
    settings_ = batch_settings(identity, sampling, template, task, timings, settings)
    own = not isinstance(out, BatchOutput)
    output: BatchOutput | None
    if out is None:

        output = None
        base = fresh_seed() if base_seed is None else base_seed
        header: dict[str, object] = {HEADER_KEY: FORMAT_VERSION, "input": batch.describe(), "base_seed": base,
                                     "settings": settings_}
        done: dict[int, dict[str, object]] = {}
    else:
        if isinstance(out, BatchOutput):
            output = out
            problems = _diff(output.header["settings"], settings_)
            if problems:
                raise RequestError(f"the batch output was opened for other settings ({'; '.join(problems[:4])})")
        else:
            output = BatchOutput.open(out, batch, settings_, base_seed)
        header, done, base = output.header, output.done, output.base_seed
    result = BatchResult(resumed=len(done), header=header)
    try:
        todo = [item for item in batch.items if item.index not in done]
        fresh: dict[int, dict[str, object]] = {}
        for record in expand_records(todo, expander, sampling, base, template, task, timings, batch_size, cancel):
            if output is not None:
                output.write(record)
            fresh[int(record["index"])] = record  # type: ignore[call-overload]
            result.written += 1
            result.errors += "error" in record
            if on_record is not None:
                on_record(record)
    finally:
        if output is not None and own:
            output.close()
    result.records = [done.get(i.index) or fresh[i.index] for i in batch.items]
    return result


def expand_records(todo: Sequence[BatchItem], expander: Expander, sampling: Sampling, base: int,
                   template: object = None, task: object = None, timings: bool = False,
                   batch_size: int = 1, cancel: CancelHook | None = None) -> Iterator[dict[str, object]]:
    """The record of each item, in input order (results that finish early wait for those before
    them): the one rule for records and seeds shared by local batches and :mod:`tipo.ray`."""
    seeds = [item.seed if item.seed is not None else derive_seed(base, item.index) for item in todo]
    records = [{"index": item.index, "line": item.line, "base_seed": base, "seed": seed, "request": dict(item.fields)}
               for item, seed in zip(todo, seeds, strict=True)]
    runnable = [k for k, item in enumerate(todo) if item.error is None]
    for k, item in enumerate(todo):
        if item.error is not None:
            records[k]["error"] = item.error
    finished: dict[int, dict[str, object]] = {}
    nxt = 0

    def ready() -> Iterator[dict[str, object]]:
        nonlocal nxt
        while nxt < len(records) and (todo[nxt].error is not None or nxt in finished):
            yield records[nxt]
            finished.pop(nxt, None)
            nxt += 1

    yield from ready()
    results = expander.iter_expand_batch((todo[k].request for k in runnable),
                                         (sampling.with_seed(seeds[k]) for k in runnable),
                                         template=template, task=task, batch_size=batch_size,  # type: ignore[arg-type]
                                         cancel=cancel)
    for position, res in results:
        k = runnable[position]
        if isinstance(res, Exception):
            records[k]["error"] = str(res)
        else:
            records[k]["result"] = res.to_dict(timings=timings)
        finished[k] = records[k]
        yield from ready()


def _jsonable(value: object) -> object:
    if hasattr(value, "value"):
        return value.value  # enums
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


