"""Continuous batching: many :class:`~tipo.decoding.Sequence` objects over one batch engine.

Each sequence keeps its own decode rules, incremental state, sampler and random generator; only
the model evaluation is shared. Every step feeds, in one engine call, the prompt of each sequence
that joins and the last token of each running one; a sequence that finishes leaves at once and
frees its slot for the next waiting one. At most ``engine.capacity`` sequences hold KV memory.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from .backends.base import BatchEngine
from .decoding import DecodeResult, Sequence

__all__ = ["Finished", "decode_batch"]

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
class _Running:
    key: object
    seq: Sequence
    pos: int
    feed: list[int]
    t_join: float
    t_first: float = 0.0


def decode_batch(engine: BatchEngine, jobs: Iterable[tuple[K, Sequence, list[int]]]) -> Iterator[Finished[K]]:
    """Decode ``(key, sequence, prompt ids)`` jobs together; yield each as it finishes.

    Jobs are taken from the iterable only when a slot is free, so a long iterable is never
    held in memory at once.
    """
    waiting = iter(jobs)
    free = deque(range(engine.capacity))
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
            running[free.popleft()] = _Running(key, seq, 0, list(ids), now)
        if not running:
            return
        slots = list(running)
        logits = engine.forward([(s, running[s].pos, running[s].feed) for s in slots])
        now = time.perf_counter()
        for slot, row in zip(slots, logits, strict=True):
            r = running[slot]
            if not r.t_first:
                r.t_first = now
            r.pos += len(r.feed)
            token = r.seq.step(row)
            if token is None:
                del running[slot]
                engine.free(slot)
                free.append(slot)
                yield Finished(r.key, r.seq.result(), r.t_join, r.t_first, time.perf_counter())  # type: ignore[arg-type]
            else:
                r.feed = [token]
