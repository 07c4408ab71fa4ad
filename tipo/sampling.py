"""Sampling one token from logits: one rule per class, composed in a list (numpy only).

The same rules run on every backend, so llama.cpp and transformers share one semantics. Order
(that of llama.cpp's default chain): constraint mask -> repetition penalty -> top-k -> top-p ->
min-p -> temperature -> draw. Top-p and min-p see the untempered distribution. Temperature 0
is greedy. The draw uses a local ``numpy.random.Generator`` seeded from the request's seed;
no global random state is read or written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import RequestError
from .request import Sampling

__all__ = ["MinP", "RepetitionPenalty", "Sampler", "TopK", "TopP"]

NEG_INF = np.float32(-np.inf)
#: Temperatures below this behave as greedy (0): dividing logits by them overflows float32, and
#: the distribution is a point mass on the best token long before.
GREEDY_BELOW = 1e-4


class RepetitionPenalty:
    """CTRL-style penalty on every token already in the context (prompt and generated):
    positive logits are divided by the penalty, negative ones multiplied."""

    def __init__(self, penalty: float) -> None:
        if not penalty > 0:
            raise RequestError(f"repetition_penalty={penalty!r} must be > 0 (1 = off)")
        self.penalty = float(penalty)

    def __call__(self, context: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if self.penalty == 1.0 or context.size == 0:
            return logits
        return self.apply(np.unique(context), logits)

    def apply(self, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Penalise the distinct token ids ``ids`` in place."""
        vals = logits[ids]
        logits[ids] = np.where(vals > 0, vals / self.penalty, vals * self.penalty)
        return logits


class TopK:
    """Keep the k highest logits (k = 0 keeps all). Returns candidate ids, best first."""

    def __init__(self, k: int) -> None:
        if k < 0:
            raise RequestError(f"top_k={k!r} must be >= 0 (0 = off)")
        self.k = int(k)

    def candidates(self, logits: np.ndarray, banned: np.ndarray | None = None) -> np.ndarray:
        """``banned``: a mask of ids whose logits are -inf, when known (it narrows the search)."""
        k = self.k
        allowed = None if banned is None else banned.size - int(np.count_nonzero(banned))
        if k and (allowed is None or allowed > k):
            if logits.size // _BLOCK >= k:
                fast = _top_k_unique(logits, k)
            else:  # partitioning is slow with many equal values (-inf)
                fast = _top_k_small(logits, k) if allowed is None or 4 * allowed > 3 * logits.size else None
            if fast is not None:
                return fast
        if allowed is not None and 4 * allowed < logits.size:  # few left: look only at those
            ids = (~banned).nonzero()[0]  # type: ignore[operator]
            return self.among(ids, logits[ids])[0]
        return self.among(np.arange(logits.size), logits)[0]

    def among(self, ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The general path: the candidates among ``ids`` (ascending) whose logits are ``values``,
        and their logits, best first. Only finite logits count; ties are broken by token id."""
        finite = np.isfinite(values)
        ids, values = ids[finite], values[finite]
        if self.k and self.k < ids.size:
            part = np.argpartition(values, -self.k)[-self.k :]
            ids, values = ids[part], values[part]
        # Best first; ties broken by token id so results never depend on sort internals.
        order = np.lexsort((ids, -values))
        return ids[order], values[order]


def _top_k_small(logits: np.ndarray, k: int) -> np.ndarray | None:
    """TopK.candidates for a vocabulary too small for :func:`_top_k_unique`, when the answer is
    unique: the k-th largest value from one partition of the values, then the ids at or above it.
    None (the general path) when that is not exactly k finite logits (a tie at the k-th place,
    fewer than k finite logits, NaN or +inf among the largest)."""
    n = logits.size
    if logits.ndim != 1 or not 0 < k < n:
        return None
    top = logits.copy()
    top.partition(n - k)
    top = top[n - k :]
    bound = top[0]
    if not (math.isfinite(bound) and math.isfinite(top.max())):
        return None
    ids = (logits >= bound).nonzero()[0]
    if ids.size != k:
        return None
    return ids[np.lexsort((ids, -logits[ids]))]


_BLOCK = 64


def _top_k_unique(logits: np.ndarray, k: int) -> np.ndarray | None:
    """TopK.candidates without a partition of the whole vocabulary, when the answer is unique.

    The k-th largest of the per-block maxima is a lower bound of the k-th largest logit (each of
    those k blocks holds a logit at least that large), so the top k lie among the few logits above
    it. Returns None, and the caller takes the general path, whenever the fast path could differ
    from it: a tie at the k-th place (which tokens argpartition keeps is then its own choice),
    NaN or +inf logits, too few blocks, or too few finite logits.
    """
    if logits.ndim != 1:
        return None
    n = logits.size
    nb = n // _BLOCK
    if nb < k:
        return None
    maxima = logits[: nb * _BLOCK].reshape(nb, _BLOCK).max(axis=1)
    if n > nb * _BLOCK:
        maxima = np.append(maxima, logits[nb * _BLOCK :].max())
    if not (maxima < np.inf).all():  # NaN or +inf somewhere: not finite, leave it to the general path
        return None
    bound = np.partition(maxima, maxima.size - k)[maxima.size - k]
    if not np.isfinite(bound):  # fewer than k blocks hold a finite logit
        return None
    ids = np.flatnonzero(logits >= bound)  # at least k ids, all finite, holding every top-k logit
    vals = logits[ids]
    if ids.size > k:
        part = np.argpartition(vals, -k)[-k:]
        if np.count_nonzero(vals >= vals[part].min()) > k:  # tie at the k-th place
            return None
        ids = ids[part]
    order = np.lexsort((ids, -logits[ids]))
    return ids[order]


def _shifted_exp(logits: np.ndarray, best_first: bool = False) -> np.ndarray:
    """exp(logit - max) in float64: softmax before normalising. ``best_first``: the logits are
    sorted best first (candidates), so the maximum is the first."""
    top = float(logits[0]) if best_first else float(logits.max())
    return np.exp(logits.astype(np.float64) - top)


def _softmax(logits: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
    """Softmax in float64; ``z`` is :func:`_shifted_exp` of the same logits when already known."""
    z = _shifted_exp(logits) if z is None else z
    return z / float(z.sum())


class TopP:
    """Nucleus filter on candidates sorted best first: keep the smallest prefix whose
    probability reaches p (p = 1 is off)."""

    def __init__(self, p: float) -> None:
        if not 0 < p <= 1:
            raise RequestError(f"top_p={p!r} must be in (0, 1]")
        self.p = float(p)

    def keep(self, logits: np.ndarray, z: np.ndarray | None = None) -> int:
        if self.p >= 1.0:
            return logits.size
        cum = _softmax(logits, z).cumsum()
        return min(int(cum.searchsorted(self.p, side="left")) + 1, int(logits.size))


class MinP:
    """Drop candidates whose probability is below p times the best one's (p = 0 is off)."""

    def __init__(self, p: float) -> None:
        if not 0 <= p <= 1:
            raise RequestError(f"min_p={p!r} must be in [0, 1]")
        self.p = float(p)

    def keep(self, logits: np.ndarray, z: np.ndarray | None = None) -> int:
        if self.p <= 0.0:
            return logits.size
        probs = _softmax(logits, z)
        return max(1, int(np.count_nonzero(probs >= self.p * probs[0])))


class Sampler:
    """Draw tokens under a :class:`~tipo.request.Sampling` with a seeded local generator.

    Example:
        >>> s = Sampler(Sampling(temperature=0, seed=0))
        >>> s.pick(np.array([0.1, 2.0, 0.3], dtype=np.float32), [])
        1
    """

    def __init__(self, settings: Sampling) -> None:
        if settings.seed is None:
            raise RequestError("Sampler needs a seed; Expander draws one when the request has none")
        self.settings = settings
        self.penalty = RepetitionPenalty(settings.repetition_penalty)
        self.top_k = TopK(settings.top_k)
        self.top_p = TopP(settings.top_p)
        self.min_p = MinP(settings.min_p)
        self.rng = np.random.Generator(np.random.PCG64(settings.seed))
        self._work: np.ndarray | None = None
        # The context's distinct ids, kept up to date as a sequence's context grows.
        self._ctx: Sequence[int] | np.ndarray | None = None
        self._ctx_n = 0
        self._ctx_seen: np.ndarray | None = None
        self._ctx_ids = np.zeros(0, dtype=np.intp)

    def _context_ids(self, context: Sequence[int] | np.ndarray, size: int) -> np.ndarray:
        """The distinct token ids of ``context`` (any order), updated incrementally when the same
        context object has only grown since the last call."""
        seen = self._ctx_seen
        if seen is None or seen.size != size or context is not self._ctx or len(context) < self._ctx_n:
            seen = self._ctx_seen = np.zeros(size, dtype=bool)
            self._ctx_n = 0
            self._ctx_ids = np.zeros(0, dtype=np.intp)
            self._ctx = context
        new = [int(t) for t in context[self._ctx_n:]]
        self._ctx_n = len(context)
        fresh = []
        for t in new:
            if not seen[t]:
                seen[t] = True
                fresh.append(t)
        if fresh:
            self._ctx_ids = np.concatenate([self._ctx_ids, np.array(fresh, dtype=np.intp)])
        return self._ctx_ids

    def _scores(self, logits: np.ndarray, context: Sequence[int] | np.ndarray,
                banned: np.ndarray | None) -> np.ndarray:
        """The logits with banned ids at -inf and the repetition penalty applied, in a buffer
        reused from step to step."""
        work = self._work
        if work is None or work.shape != logits.shape:
            work = self._work = np.empty(logits.shape, dtype=np.float32)
        np.copyto(work, logits, casting="unsafe")
        if banned is not None:
            np.putmask(work, banned, NEG_INF)
        if self.penalty.penalty != 1.0 and len(context):
            self.penalty.apply(self._context_ids(context, work.size), work)
        return work

    def _scores_among(self, logits: np.ndarray, context: Sequence[int] | np.ndarray, ids: np.ndarray) -> np.ndarray:
        """:meth:`_scores` at ``ids`` only: the same numbers, the rest of the vocabulary untouched."""
        work = np.asarray(logits[ids], dtype=np.float32)
        if self.penalty.penalty != 1.0 and len(context):
            self._context_ids(context, logits.size)
            self.penalty.apply(self._ctx_seen[ids].nonzero()[0], work)  # type: ignore[index]
        return work

    def pick(self, logits: np.ndarray, context: Sequence[int] | np.ndarray, banned: np.ndarray | None = None,
             open_ids: np.ndarray | None = None) -> int:
        """Pick the next token id. ``banned`` is a boolean mask of forbidden ids; ``open_ids``, when
        a rule knows them, the ids it leaves open in ascending order (the other logits are then
        not looked at: the token drawn is the same)."""
        if open_ids is None:
            work = self._scores(logits, context, banned)
        else:
            work = self._scores_among(logits, context, open_ids)
        if self.settings.temperature < GREEDY_BELOW:  # too small to divide by: greedy
            if not np.isfinite(work).any():
                raise RequestError("every token is forbidden at this step; loosen the ban list or length class")
            best = int(np.argmax(work))  # the first of equal bests: the lowest id either way
            return best if open_ids is None else int(open_ids[best])
        if open_ids is None:
            ids = self.top_k.candidates(work, banned)
            cand = work[ids]
        else:
            ids, cand = self.top_k.among(open_ids, work)
        if ids.size == 0:
            raise RequestError("every token is forbidden at this step; loosen the ban list or length class")
        # candidates are sorted best first, so exp(logit - max) of a prefix is a prefix of this
        z = _shifted_exp(cand, best_first=True) if self.top_p.p < 1.0 or self.min_p.p > 0.0 else None
        n = self.top_p.keep(cand, z)
        if n > 1:  # min-p always keeps the best candidate
            n = min(n, self.min_p.keep(cand[:n], None if z is None else z[:n]))
        return self._draw(ids, cand, n)

    def _draw(self, ids: np.ndarray, cand: np.ndarray, n: int) -> int:
        if n == 1:  # a draw among one candidate picks it; the generator moves on as the draw would
            self.rng.random()
            return int(ids[0])
        ids, cand = ids[:n], cand[:n]
        z = _shifted_exp(cand / np.float32(self.settings.temperature), best_first=True)
        cum = (z / float(z.sum())).cumsum()
        r = self.rng.random() * cum[-1]
        return int(ids[min(int(cum.searchsorted(r, side="right")), n - 1)])
