"""The Expander: load a TIPO model once, expand many requests, one model pass each.

Example:
    >>> from tipo import Expander, Request, Sampling
    >>> with Expander("model.gguf") as ex:  # doctest: +SKIP
    ...     result = ex.expand(Request("1girl, forest", length="short"), Sampling(seed=1))
    ...     print(result.prompt)
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import asdict, dataclass
from pathlib import Path

from .backends import Backend, open_backend, pick_backend
from .backends.base import BatchEngine
from .batching import BatchStats, decode_batch
from .decoding import DecodeResult, DecodeRules, Sequence, decode
from .errors import Cancelled, ModelError, RequestError, TipoError
from .parse import parse_completion
from .planner import META_KEYS, Field, Plan, Task, model_meta, plan, rebuild
from .rating import Forbidden, rating_key
from .registry import BUILTIN, ResolvedModel, license_notice, resolve
from .request import Request, Sampling
from .result import Expansion, Provenance, finish
from .sampling import Sampler
from .seeds import fresh_seed
from .tags import Category, TagTable, cache_table, cached_table, default_table, read_tag_list
from .template import Preset, resolve_template

__all__ = ["Expander", "expand", "fresh_seed"]

#: What ``cancel`` accepts: a ``threading.Event`` or a function returning True to stop.
CancelHook = threading.Event | Callable[[], bool]
#: ``progress(tokens_written, at_most)``, called after each token; an exception it raises stops the expansion.
ProgressHook = Callable[[int, int], None]

def known_tags_rule(model: ResolvedModel, known_tags_only: bool | None) -> bool:
    """Whether tag lines keep to the tag table: as asked, else on for the built-in model only."""
    return (model.info is BUILTIN) if known_tags_only is None else bool(known_tags_only)


def trained_tag_file(path: Path) -> Path | None:
    """The list of the tags a model was trained on, beside it (``model.gguf`` -> ``model.tags.txt``;
    an HF folder's ``tags.txt``), or None when there is none."""
    candidate = path / "tags.txt" if path.is_dir() else path.with_suffix(".tags.txt")
    return candidate if candidate.is_file() else None


def trained_tag_list(path: Path) -> list[str] | None:
    """The tags a model was trained on (see :func:`trained_tag_file`), or None."""
    found = trained_tag_file(path)
    return read_tag_list(found) if found is not None else None


class Expander:
    """A loaded TIPO model. Load once, expand many; thread-safe; close() frees the memory.

    Args:
        model: registry name, local ``.gguf`` file or HF folder, or HF repo id; None is the
            built-in model.
        backend: ``"auto"`` (GGUF -> llama.cpp, folder -> transformers), ``"llama"`` or ``"hf"``.
        n_threads: CPU threads for llama.cpp; None is the physical cores minus one, at least 1 and
            at most 8 (see :func:`tipo.backends.validate.default_threads`); more than the cores
            are capped to them.
        n_ctx: context length; None is the format's trained context (1024 tokens), never more
            than the model file declares; a larger value raises it explicitly (at most to the
            file's declared context).
        known_tags_only: in tag lines, only let the model write known tags (and their aliases):
            the tags it was trained on when a list of them lies beside the model
            (``<model>.tags.txt``; the built-in model ships one), else the tag table; tags banned
            or above the request's content rating are never among them. None turns it on for the
            built-in model, whose small vocabulary of tags benefits, and off for the official TIPO
            models, which know rarer tags too.
        **options: passed to the backend (``n_gpu_layers`` for llama.cpp, ``device`` and
            ``dtype`` for transformers).
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, *, backend: str = "auto",
                 n_threads: int | None = None, n_ctx: int | None = None, table: TagTable | None = None,
                 known_tags_only: bool | None = None, **options: object) -> None:
        self.model: ResolvedModel = resolve(model, backend)
        self.known_tags_only = known_tags_rule(self.model, known_tags_only)
        self.backend_name = pick_backend(self.model.path, backend)
        license_notice(self.model)
        self.table = table or default_table()
        self._trained_file = trained_tag_file(self.model.path)
        self._known_base_table: TagTable | None = None
        self._known: dict[tuple[object, ...], TagTable] = {}  # per rating and ban box (small; cleared by close)
        self._lock = threading.Lock()
        self._batch_engine: BatchEngine | None = None
        #: What the last :meth:`iter_expand_batch` evaluated (prompt tokens evaluated and shared, steps).
        self.batch_stats = BatchStats()
        t0 = time.perf_counter()
        self._backend: Backend | None = open_backend(self.backend_name, self.model.path, n_threads=n_threads,
                                                     n_ctx=n_ctx, **options)
        self.load_seconds = time.perf_counter() - t0

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise ModelError("this Expander was closed; create a new one to expand again")
        return self._backend

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    def close(self) -> None:
        """Free the model's memory. Safe to call twice."""
        with self._lock:
            if self._batch_engine is not None:
                self._batch_engine.close()
                self._batch_engine = None
            if self._backend is not None:
                self._backend.close()
                self._backend = None
            self._known.clear()

    unload = close

    def __enter__(self) -> Expander:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "closed"
        return f"Expander({self.model.label!r}, backend={self.backend_name!r}, {state})"

    # -- expansion -------------------------------------------------------------------------
    def expand(self, request: Request | str, sampling: Sampling | None = None, *,
               template: str | Preset | None = None, task: Task | str | None = None,
               cancel: CancelHook | None = None, progress: ProgressHook | None = None) -> Expansion:
        """Expand one request in one model pass.

        Args:
            request: a :class:`Request`, or a tag string.
            sampling: settings and seed; None uses the defaults with a fresh seed.
            template: a template text, a :class:`Preset` or its name; None follows ``output``.
            task: force a trained task instead of the automatic plan.
            cancel: checked between tokens; when set (or returning True) the expansion stops with
                :class:`~tipo.errors.Cancelled` and the model is free for the next request.
            progress: called after each token with (tokens written, at most); whatever it raises
                (a host's own interrupt exception, say) stops the expansion and propagates.

        Returns:
            An :class:`Expansion`; ``result.seed`` repeats the run.
        """
        job = self._prepare(request, sampling, template)
        t_start = time.perf_counter()
        with self._lock:
            backend = self.backend
            planned, ids, trimmed = self._fit(backend, plan(job.request, task=task, table=self.table),
                                              job.sampling.max_new_tokens)
            t_tok = time.perf_counter()
            out, t_prompt, t_gen = self._decode_alone(backend, planned, ids, Sampler(job.sampling),
                                                      _watch(cancel, progress))
        seconds = {"tokenize": t_tok - t_start, "prompt": t_prompt, "generate": t_gen,
                   "total": time.perf_counter() - t_start}
        return self._finish(job, planned, ids, trimmed, out, seconds)

    def _decode_alone(self, backend: Backend, planned: Plan, ids: list[int], sampler: Sampler,
                      watch: ProgressHook | None = None) -> tuple[DecodeResult, float, float]:
        """One sequence on the backend's own loop: (result, prompt seconds, generate seconds)."""
        started: list[float] = []
        budget = min(sampler.settings.max_new_tokens, backend.n_ctx - len(ids))
        written = [0]

        def on_start() -> None:
            started.append(time.perf_counter())
            if watch is not None:
                watch(0, budget)

        def between_tokens() -> bool:  # called once per token written; the hooks raise to stop
            written[0] += 1
            if watch is not None:
                watch(written[0], budget)
            return False

        t0 = time.perf_counter()
        out = decode(backend, self._rules(planned, backend), sampler, ids, sampler.settings.max_new_tokens,
                     on_start=on_start, should_stop=between_tokens if watch is not None else None)
        return out, started[0] - t0, time.perf_counter() - started[0]

    def expand_batch(self, requests: Iterable[Request | str], sampling: Sampling | Iterable[Sampling] | None = None,
                     *, template: str | Preset | None = None, task: Task | str | None = None,
                     batch_size: int = 16, share_prefixes: bool = True, cancel: CancelHook | None = None,
                     progress: ProgressHook | None = None) -> list[Expansion]:
        """Expand many requests, decoding up to ``batch_size`` of them together.

        Every result is the one :meth:`expand` gives for that request and seed alone (each
        sequence keeps its own decode rules, sampler and random generator; see docs/scale.md for
        the backends and formats where the shared evaluation is bit-exact). Finished sequences
        leave the batch and waiting ones join it; at most ``batch_size`` hold memory at a time.

        Args:
            requests: Requests or tag strings.
            sampling: one Sampling for all (a request without a seed gets a fresh one), or one per
                request.
            batch_size: sequences decoded together; 1 decodes one at a time.
            share_prefixes: requests whose prompts start alike (the same meta and target lines;
                identical requests with other seeds) evaluate the common start once (llama.cpp
                with F16 or quantised weights; the results are the same either way).
            cancel: checked between model steps, as in :meth:`expand`: when set (or returning
                True) the batch stops with :class:`~tipo.errors.Cancelled`; results already
                yielded by :meth:`iter_expand_batch` stay valid, the running ones are dropped.
            progress: called between model steps with (requests finished, requests in all; the
                requests read so far when ``requests`` has no length); whatever it raises stops
                the batch and propagates.

        Returns:
            The Expansions in the order of ``requests``. The first request that fails raises
            (use :meth:`iter_expand_batch` to keep going past failures).
        """
        results = sorted(self.iter_expand_batch(requests, sampling, template=template, task=task,
                                                batch_size=batch_size, share_prefixes=share_prefixes,
                                                cancel=cancel, progress=progress), key=lambda r: r[0])
        for _, res in results:
            if isinstance(res, Exception):
                raise res
        return [res for _, res in results]  # type: ignore[misc]

    def iter_expand_batch(self, requests: Iterable[Request | str], sampling: Sampling | Iterable[Sampling] | None = None,
                          *, template: str | Preset | None = None, task: Task | str | None = None,
                          batch_size: int = 16, share_prefixes: bool = True, cancel: CancelHook | None = None,
                          progress: ProgressHook | None = None) -> Iterator[tuple[int, Expansion | TipoError]]:
        """:meth:`expand_batch` as ``(position, Expansion or the error)`` pairs in the order they finish.

        Requests are read from the iterable as slots free up; a request that cannot be planned
        or fit yields its :class:`~tipo.errors.TipoError` and the others go on.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise RequestError(f"batch_size={batch_size!r} is not valid; give a whole number >= 1")
        if template is not None:
            resolve_template(template)
        samplings = _samplings(sampling)
        window = max(4 * batch_size, 64)  # requests prepared ahead: bounded memory for any input size
        total = len(requests) if isinstance(requests, Sized) else None
        it = iter(requests)
        position = 0
        finished = 0
        watch = _watch(cancel, progress)

        def between() -> None:  # before every model step: the hooks raise to stop
            if watch is not None:
                watch(finished, position if total is None else total)

        stats = self.batch_stats = BatchStats()
        with self._lock:
            backend = self.backend
            while True:
                chunk = []
                for request in it:
                    chunk.append((position, request, next(samplings, None)))
                    position += 1
                    if len(chunk) >= window:
                        break
                if not chunk:
                    if progress is not None:  # the final count (a cancel this late drops nothing)
                        progress(finished, position)
                    return
                for item in self._decode_chunk(backend, chunk, template, task, batch_size, share_prefixes,
                                               stats, between if watch is not None else None):
                    finished += 1
                    yield item

    def _decode_chunk(self, backend: Backend, chunk: list, template: object, task: Task | str | None,  # noqa: ANN001
                      batch_size: int, share: bool, stats: BatchStats,
                      between: Callable[[], None] | None) -> Iterator[tuple[int, Expansion | TipoError]]:
        jobs = []
        for position, request, samp in chunk:
            t_start = time.perf_counter()
            try:
                if samp is _MISSING:
                    raise RequestError(f"sampling has fewer entries than requests (none for request {position})")
                job = self._prepare(request, samp, template)  # type: ignore[arg-type]
                planned, ids, trimmed = self._fit(backend, plan(job.request, task=task, table=self.table),
                                                  job.sampling.max_new_tokens)
            except TipoError as exc:
                yield position, exc
                continue
            budget = min(job.sampling.max_new_tokens, backend.n_ctx - len(ids))
            seq = Sequence(self._rules(planned, backend), Sampler(job.sampling), ids, budget)
            jobs.append((position, job, planned, ids, trimmed, seq, time.perf_counter() - t_start))
        if not jobs:
            return
        need = max(len(j[3]) + j[5].budget for j in jobs)
        engine = self._engine(backend, min(batch_size, len(jobs)), need) if batch_size > 1 else None
        by_key = {j[0]: j for j in jobs}
        if engine is None:  # one at a time, on the backend's own loop
            for position, job, planned, ids, trimmed, seq, t_tok in jobs:
                if between is not None:
                    between()
                out, t_prompt, t_gen = self._decode_alone(backend, planned, ids, seq.sampler,
                                                          None if between is None else lambda _n, _t: between())
                stats.prompt_tokens += len(ids)
                stats.generated_tokens += out.generated
                yield position, self._finish(job, planned, ids, trimmed, out, {
                    "tokenize": t_tok, "prompt": t_prompt, "generate": t_gen, "total": t_tok + t_prompt + t_gen})
            return
        for done in decode_batch(engine, ((j[0], j[5], j[3]) for j in jobs), share=share, stats=stats,
                                 between=between):
            position, job, planned, ids, trimmed, _seq, t_tok = by_key[done.key]
            yield position, self._finish(job, planned, ids, trimmed, done.result, {
                "tokenize": t_tok, "prompt": done.t_first - done.t_join, "generate": done.t_end - done.t_first,
                "total": t_tok + done.t_end - done.t_join})

    def _engine(self, backend: Backend, n_seq: int, need: int) -> BatchEngine | None:
        """The backend's batch engine for n_seq sequences of ``need`` tokens (kept between calls
        while it is big enough; cells are rounded up to 256 so similar batches share one)."""
        cells = min(backend.n_ctx, -(-need // 256) * 256)
        have = self._batch_engine
        if have is not None and have.capacity >= n_seq and have.n_ctx_seq >= cells:
            return have
        if have is not None:
            have.close()
            self._batch_engine = None
        self._batch_engine = backend.batched(n_seq, cells)
        return self._batch_engine

    def _prepare(self, request: Request | str, sampling: Sampling | None, template: object) -> _Job:
        if isinstance(request, str):
            request = Request(request)
        if not isinstance(request, Request):
            raise RequestError(f"request must be a tipo.Request or a tag string, got {type(request).__name__}")
        if sampling is not None and not isinstance(sampling, Sampling):
            raise RequestError(f"sampling must be a tipo.Sampling or None, got {type(sampling).__name__}")
        sampling = sampling or Sampling()
        if template is not None:
            resolve_template(template)  # type: ignore[arg-type]
        seed = sampling.seed if sampling.seed is not None else fresh_seed()
        return _Job(request, sampling.with_seed(seed), template)

    def _rules(self, planned: Plan, backend: Backend) -> DecodeRules:
        forbidden = Forbidden.for_request(planned.request, planned.rating, self.table)
        return DecodeRules(planned, backend.vocab, self.table, known_tags_only=self.known_tags_only,
                           forbidden=forbidden, known=self._known_tags(planned, forbidden))

    @property
    def trained_tags(self) -> list[str] | None:
        """The tags the model was trained on (the list beside it), or None when it has none."""
        return read_tag_list(self._trained_file) if self._trained_file is not None else None

    def _known_base(self) -> TagTable:
        """The trained tags as a table (the whole table when the model has no list), made on first use."""
        if self._known_base_table is None:
            trained = self.trained_tags
            self._known_base_table = self.table.restricted(trained) if trained else self.table
        return self._known_base_table

    def _known_tags(self, p: Plan, forbidden: Forbidden | None = None) -> TagTable | None:
        """The known tags for known-tags-only decoding: the trained (or table) tags minus those
        forbidden for this request; cached per rating and ban box, and for requests without bans
        also in tipo's cache folder (see :func:`_known_cache_key`). None when the rule is off."""
        if not self.known_tags_only:
            return None
        key = (p.rating, p.request.ban, p.request.ban_regex)
        known = self._known.get(key)
        if known is None:
            disk = None if (p.request.ban or p.request.ban_regex) else _known_cache_key(self.table, self._trained_file,
                                                                                       p.rating)
            known = cached_table("known-tags", disk) if disk else None
            if known is None:
                forbidden = forbidden or Forbidden.for_request(p.request, p.rating, self.table)
                base = self._known_base()
                known = base.restricted(n for n in base.categories if forbidden.tag_reason(n) is None)
                if disk:
                    cache_table("known-tags", disk, known)
            if len(self._known) > 32:
                self._known.clear()
            self._known[key] = known
        return known

    def _finish(self, job: _Job, planned: Plan, ids: list[int], trimmed: list[str], out: DecodeResult,
                seconds: dict[str, float]) -> Expansion:
        parsed = parse_completion(planned, out.completion, self.table)
        prov = Provenance(
            model=self.model.label, model_file=str(self.model.path), backend=self.backend_name,
            sampling={k: v for k, v in asdict(job.sampling).items() if k != "seed"}, seed=job.sampling.seed,
            prompt_tokens=len(ids), generated_tokens=out.generated,
            seconds={k: round(v, 6) for k, v in seconds.items()}, trimmed=tuple(trimmed), stop_reason=out.reason,
            neutralised=planned.neutralised,
        )
        return finish(planned, parsed, template=job.template, completion=out.completion,  # type: ignore[arg-type]
                      provenance=prov, table=self.table, known_only=self.known_tags_only,
                      known=self._known_tags(planned))

    def _fit(self, backend: Backend, p: Plan, max_new: int) -> tuple[Plan, list[int], list[str]]:
        """Keep the prompt within the context, leaving room to write.

        Priority when it does not fit (each step only as far as needed): 1. drop the user's
        general tags from the end of the ``tag:`` line (special tags stay); 2. shorten the
        caption to fewer sentences; 3. drop meta-line tags from the end. Dropped input is
        reported in ``provenance.trimmed``; the user's tags stay in the result regardless.
        """
        reserve = min(max_new, backend.n_ctx // 4)
        limit = backend.n_ctx - reserve
        ids = backend.encode(p.prompt)
        if len(ids) <= limit:
            return p, ids, []
        trimmed: list[str] = []
        special = p.user.by_category(Category.SPECIAL)
        general = [t for t in p.user.content if t not in special]
        inputs_tag = Field.TAG in p.inputs

        def fits(candidate: Plan) -> list[int] | None:
            enc = backend.encode(candidate.prompt)
            return enc if len(enc) <= limit else None

        # 1. general tags of the tag line
        if inputs_tag and general:
            k = _largest(len(general), lambda k: fits(rebuild(p, content=special + general[:k])) is not None)
            if k is not None:
                trimmed.append(f"{len(general) - k} of the user's general tags (kept in the result)")
                p2 = rebuild(p, content=special + general[:k])
                return p2, backend.encode(p2.prompt), trimmed
            trimmed.append(f"{len(general)} of the user's general tags (kept in the result)")
            p = rebuild(p, content=special)
        # 2. the caption, by sentences
        caption_field = next((f for f in (Field.SHORT, Field.LONG) if f in p.inputs), None)
        if caption_field is not None:
            sentences = re.split(r"(?<=[.!?])\s+", p.inputs[caption_field])
            k = _largest(len(sentences) - 1, lambda k: fits(rebuild(p, caption=" ".join(sentences[: k + 1]))) is not None)
            keep = (k if k is not None else 0) + 1
            cut = " ".join(sentences[:keep])
            if k is None:
                cut = cut[: 400]
            trimmed.append(f"the caption to {keep} of {len(sentences)} sentences")
            p = rebuild(p, caption=cut)
            enc = fits(p)
            if enc is not None:
                return p, enc, trimmed
        # 3. meta lines
        meta = model_meta(p.user, p.request)
        flat = [(c, t) for c, _ in META_KEYS for t in meta[c]]

        def meta_upto(k: int) -> dict:
            out: dict = {c: [] for c, _ in META_KEYS}
            for c, t in flat[:k]:
                out[c].append(t)
            return out

        k = _largest(len(flat), lambda k: fits(rebuild(p, meta=meta_upto(k))) is not None)
        if k is not None:
            trimmed.append(f"{len(flat) - k} meta-line tags (kept in the result)")
            p = rebuild(p, meta=meta_upto(k))
            return p, backend.encode(p.prompt), trimmed
        raise ModelError(f"the request does not fit the model's context of {backend.n_ctx} tokens even after "
                         "trimming tags, caption and meta lines; shorten the input")


def _known_cache_key(table: TagTable, trained: Path | None, rating: object) -> str | None:
    """What the known tags of a request without bans depend on, as one digest: the tag table's
    content, the trained-tag list's bytes (a retrained model with another list never reuses the
    old tags), the rating vocabulary and the code that applies it, and the rating. None when the
    table's content has no digest (a table built by the caller) or a file cannot be read."""
    if table.source_key is None:
        return None
    try:
        listed = trained.read_bytes() if trained is not None else b"(the whole table)"
        code = Path(__file__).read_bytes()
    except OSError:
        return None
    h = hashlib.sha256(b"known-tags 1\0" + code + b"\0" + table.source_key.encode() + b"\0" + rating_key().encode() + b"\0"
                       + str(getattr(rating, "value", rating)).encode() + b"\0" + listed)
    return h.hexdigest()[:32]


def _watch(cancel: CancelHook | None, progress: ProgressHook | None) -> ProgressHook | None:
    """One per-token callback from the two hooks (None when neither is given: no cost per token)."""
    if cancel is None and progress is None:
        return None
    stop = cancel.is_set if isinstance(cancel, threading.Event) else cancel

    def watch(n: int, total: int) -> None:
        if stop is not None and stop():
            raise Cancelled(f"expansion cancelled after {n} of at most {total} tokens; nothing was returned")
        if progress is not None:
            progress(n, total)

    return watch


@dataclass(frozen=True)
class _Job:
    request: Request
    sampling: Sampling  # with its seed
    template: object


_MISSING = object()


def _samplings(sampling: Sampling | Iterable[Sampling] | None) -> Iterator[Sampling | None]:
    """One sampling per request: the same one for all, or the given ones (then _MISSING past the end)."""
    if sampling is None or isinstance(sampling, Sampling):
        return itertools.repeat(sampling)
    return itertools.chain(iter(sampling), itertools.repeat(_MISSING))  # type: ignore[arg-type]


def _largest(n: int, ok) -> int | None:  # noqa: ANN001
    """Largest k in [0, n] with ok(k) (ok is monotone: true up to some k); None if not even 0."""
    if not ok(0):
        return None
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def expand(request: Request | str, sampling: Sampling | None = None, *, model: str | Path | None = None,
           backend: str = "auto", template: str | Preset | None = None, **request_fields: object) -> Expansion:
    """Expand one prompt with a model loaded for this call (use :class:`Expander` for many).

    Example:
        >>> print(expand("1girl, forest", length="short", seed=1).prompt)  # doctest: +SKIP
    """
    seed = request_fields.pop("seed", None)
    if isinstance(request, str):
        request = Request(request, **request_fields)  # type: ignore[arg-type]
    elif request_fields:
        raise RequestError("give request fields either in the Request or as keywords, not both")
    if seed is not None:
        sampling = (sampling or Sampling()).with_seed(seed)  # type: ignore[arg-type]
    with Expander(model, backend=backend) as ex:
        return ex.expand(request, sampling, template=template)
