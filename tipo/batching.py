"""Continuous batching: many :class:`~tipo.decoding.Sequence` objects over one batch engine.

Each sequence keeps its own decode rules, incremental state, sampler and random generator; only
the model evaluation is shared. Every step feeds, in one engine call, the prompt of each sequence
that joins and the last token of each running one; a sequence that finishes leaves at once and
frees its slot for the next waiting one. At most ``engine.capacity`` sequences hold KV memory.

Prefill sharing (``engine.sharing``): a joining sequence whose prompt starts with tokens a slot
already holds takes them from that slot (:meth:`~tipo.backends.base.BatchEngine.share`) instead
of evaluating them. With ``"prefixes"`` any common start counts (the same meta and target lines),
and the sequence evaluates the rest, at least its last prompt token; with ``"prompts"`` only a
whole prompt does. A whole prompt evaluated before (identical requests with other seeds) costs
nothing: its first logits are kept, so the sequence starts sampling at once. A slot keeps what
its finished sequence left until it is reused, so the next sequence in it keeps a common prefix
without any copy; a sequence whose prefix another joining sequence is about to evaluate waits
one step for it. The engine guarantees that the numbers are those of evaluating the tokens in
the slot itself, so results never depend on what was shared.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from .backends.base import BatchEngine
from .decoding import DecodeResult, Sequence

__all__ = ["BatchStats", "Finished", "decode_batch"]

K = TypeVar("K")


@dataclass(frozen=True)
class Finished(Generic[K]):
    """A sequence that left the batch: its key, result and when it joined, got its first
    logits and finished (``time.perf_counter``)."""

    key: K
    result: DecodeResult
    t_join: float
    t_first: float
    t_end: float


@dataclass
class BatchStats:
    """What decoding evaluated: engine calls, prompt tokens evaluated, prompt tokens taken from
    a shared prefix instead, and tokens generated."""

    steps: int = 0
    prompt_tokens: int = 0
    shared_tokens: int = 0
    generated_tokens: int = 0


@dataclass
class _Running:
    key: object
    seq: Sequence
    prompt: list[int]
    t_join: float
    pos: int = 0
    feed: list[int] | None = None  # None: how the prompt starts is not planned yet
    ready: np.ndarray | None = None  # the first logits, when the whole prompt was shared
    t_first: float = 0.0


def _common(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class _Sharing:
    """The prefix plan of one run: what each slot holds, and the first logits of recent prompts."""

    def __init__(self, engine: BatchEngine, on: bool) -> None:
        self.engine = engine
        self.mode = engine.sharing if on else "none"
        self.held: list[list[int]] = [[] for _ in range(engine.capacity)]  # tokens in each slot's cache
        self.first: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self.keep_first = 2 * engine.capacity

    def remember(self, prompt: list[int], logits: np.ndarray) -> None:
        if self.mode == "none":
            return
        self.first[tuple(prompt)] = logits.copy()  # a copy: samplers may change their row
        if len(self.first) > self.keep_first:
            self.first.popitem(last=False)

    def usable(self, common: int, prompt: list[int], whole: bool) -> int:
        """How many tokens of a ``common``-token match a sequence may take."""
        if common >= len(prompt) and whole:
            return len(prompt)
        return min(common, len(prompt) - 1) if self.mode == "prefixes" else 0

    def plan(self, running: dict[int, _Running], stats: BatchStats) -> None:
        """Decide what each joining sequence evaluates (see the module's doc)."""
        engine, held = self.engine, self.held
        fresh = [s for s, r in running.items() if r.feed is None]
        unsettled = set(fresh)  # slots whose cache this step may still cut: never a source
        coming: list[list[int]] = []  # prompts evaluated this step (their logits are known after it)
        for slot in fresh:
            r = running[slot]
            n = len(r.prompt)
            keep, source = 0, None
            if self.mode != "none":
                whole = tuple(r.prompt) in self.first
                keep = self.usable(_common(held[slot], r.prompt), r.prompt, whole)
                for s in range(len(held)):
                    if s != slot and s not in unsettled:
                        m = self.usable(_common(held[s], r.prompt), r.prompt, whole)
                        if m > keep and m >= engine.min_shared:
                            keep, source = m, s
                soon = max((self.usable(_common(p, r.prompt), r.prompt, True) for p in coming), default=0)
                if soon - keep >= engine.min_shared:
                    continue  # wait one step: then a slot holds that prefix
            engine.share(slot, keep, source)
            held[slot] = r.prompt[:keep]
            unsettled.discard(slot)  # from now on it only grows past ``keep``
            r.pos = keep
            if keep == n:
                r.feed, r.ready = [], self.first[tuple(r.prompt)]
            else:
                r.feed = r.prompt[keep:]
                coming.append(r.prompt)
            stats.prompt_tokens += n - keep
            stats.shared_tokens += keep


def decode_batch(engine: BatchEngine, jobs: Iterable[tuple[K, Sequence, list[int]]], *,
                 share: bool = True, stats: BatchStats | None = None,
                 between: Callable[[], None] | None = None) -> Iterator[Finished[K]]:
    """Decode ``(key, sequence, prompt ids)`` jobs together; yield each as it finishes.

    Jobs are taken from the iterable only when a slot is free, so a long iterable is never
    held in memory at once. ``share`` lets sequences reuse common prompt prefixes as far as the
    engine allows (results are the same either way). ``stats`` is filled in as the run goes;
    ``between`` is called before every engine call (what it raises stops the run).
    """
    stats = stats if stats is not None else BatchStats()
    for slot in range(engine.capacity):  # a clean start, whatever an earlier run left
        engine.free(slot)
    sharing = _Sharing(engine, share)
    held = sharing.held
    waiting = iter(jobs)
    free = list(range(engine.capacity))
    running: dict[int, _Running] = {}
    exhausted = False
    while True:
        while free and not exhausted:
            job = next(waiting, None)
            if job is None:
                exhausted = True
                break
            key, seq, ids = job
            now = time.perf_counter()
            if seq.done:  # nothing to write (no room left in the context)
                yield Finished(key, seq.result(), now, now, now)
                continue
            if len(ids) + seq.budget > engine.n_ctx_seq:
                raise ValueError(f"a sequence of {len(ids)} + {seq.budget} tokens does not fit the engine's "
                                 f"{engine.n_ctx_seq} cells")
            ids = list(ids)
            # the free slot already holding the longest start of this prompt
            slot = max(free, key=lambda s: _common(held[s], ids)) if sharing.mode != "none" else free[0]
            free.remove(slot)
            running[slot] = _Running(key, seq, ids, now)
        if not running:
            return
        sharing.plan(running, stats)
        if between is not None:
            between()
        slots = [s for s, r in running.items() if r.feed]
        rows = engine.forward([(s, running[s].pos, running[s].feed) for s in slots]) if slots else []  # type: ignore[misc]
        stats.steps += bool(slots)
        now = time.perf_counter()
        results = list(zip(slots, rows, strict=True))
        for s, r in running.items():
            if r.ready is not None:
                results.append((s, r.ready))
                r.ready = None
        for slot, row in results:
            r = running[slot]
            feed: list[int] = r.feed  # type: ignore[assignment]
            if not r.t_first:
                r.t_first = now
                if feed:
                    sharing.remember(r.prompt, row)
            r.pos += len(feed)
            held[slot].extend(feed)
            token = r.seq.step(row)
            if token is None:
                del running[slot]
                free.append(slot)  # its cache stays as a prefix source until the slot is reused
                stats.generated_tokens += len(r.seq.generated)
                yield Finished(r.key, r.seq.result(), r.t_join, r.t_first, time.perf_counter())  # type: ignore[arg-type]
            else:
                r.feed = [token]
