"""Training samples, built only through ``tipo.planner.build_sample`` (the builder inference uses).

One :class:`Sample` per draw: a length class, a task the records can feed, and the records:

- ``very_short`` (< 18 tags): one record, all its tags (at most 17).
- ``short`` / ``long`` / ``very_long`` (18-35 / 36-47 / 48-71 tags): the tags of one record rarely
  reach 18, so a sample joins the first (lead) record with partners of the same source chosen among
  the records most similar to it (most shared tags, rarer tags weighing more: inverse document
  frequency), until the union reaches a tag count drawn from the class range (then cut to it). The
  lead record's own tags come first, so the prefix a sample gives and the first tags it asks for
  belong to one picture, and the partners' tags follow. The long caption takes one paragraph per
  record, from the first 1 / 1 / 2 / 3 records (docs/FORMAT.md's paragraph counts), 2 / 4 / 4 / 4
  sentences each; the short caption and the special tags come from the lead record only.

The class written in the ``target:`` line is the class of the sample's final tag count, with
docs/FORMAT.md's thresholds. Tags are special first, then the lead's general tags shuffled, then the
partners' shuffled; a random prefix is the input and the rest is the output. Composite tasks put
their fields in task order. The aspect ratio line comes from the lead record's image size (80% of the
time, so prompts without it stay in distribution); a user's meta-line tags are kept 80% of the time.
``<|gen_meta|>`` samples are not made: the shipped data has no meta to generate.

Example:
    >>> from models.train.corpus import Record
    >>> rec = Record("g", "user", ["1girl", "smile", "hat", "forest"], short="A girl.", long="A girl in a hat.")
    >>> s = make_samples([rec], 1, seed=0, weights={"very_short": 1.0})[0]
    >>> s.length, s.prompt.startswith("target: <|very_short|>") or s.task == "short_to_long"
    ('very_short', True)
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from tipo.planner import META_KEYS, Field, Task, build_sample
from tipo.request import Length
from tipo.tags import SPECIAL_TAGS

from .corpus import Record

__all__ = ["LENGTH_WEIGHTS", "TASK_WEIGHTS", "Sample", "length_of", "make_samples", "tag_frequencies"]

PLAIN = "plain"
#: Share of each task among the samples (renormalised over the tasks a record can feed).
TASK_WEIGHTS: dict[str, float] = {
    PLAIN: 0.2,
    Task.TAG_TO_LONG.value: 0.16,
    Task.LONG_TO_TAG.value: 0.12,
    Task.SHORT_TO_TAG.value: 0.1,
    Task.SHORT_TO_LONG.value: 0.1,
    Task.TAG_TO_SHORT_TO_LONG.value: 0.08,
    Task.SHORT_TO_TAG_TO_LONG.value: 0.14,
    Task.SHORT_TO_LONG_TO_TAG.value: 0.1,
}
#: Share of each length class among the samples.
LENGTH_WEIGHTS: dict[str, float] = {"very_short": 0.5, "short": 0.2, "long": 0.15, "very_long": 0.15}
#: The tag count each class draws from (inclusive), inside docs/FORMAT.md's ranges.
TAG_COUNTS: dict[Length, tuple[int, int]] = {
    Length.VERY_SHORT: (1, 17),
    Length.SHORT: (18, 35),
    Length.LONG: (36, 47),
    Length.VERY_LONG: (48, 71),
}
#: (paragraphs, sentences per paragraph) of the long caption by class.
CAPTION_SIZE: dict[Length, tuple[int, int]] = {
    Length.VERY_SHORT: (1, 2),
    Length.SHORT: (1, 4),
    Length.LONG: (2, 4),
    Length.VERY_LONG: (3, 4),
}
MAX_RECORDS = 16
#: Partners are drawn among this many most similar records of the lead.
NEIGHBOURS = 48
META_CATEGORY = {key: category for category, key in META_KEYS}


def length_of(n_tags: int) -> Length:
    """The size class of a sample with ``n_tags`` tags (docs/FORMAT.md: <18, 18-35, 36-47, >=48).

    Example:
        >>> [length_of(n).value for n in (0, 17, 18, 35, 36, 47, 48)]
        ['very_short', 'very_short', 'short', 'short', 'long', 'long', 'very_long']
    """
    if n_tags < 18:
        return Length.VERY_SHORT
    if n_tags < 36:
        return Length.SHORT
    if n_tags < 48:
        return Length.LONG
    return Length.VERY_LONG


@dataclass(frozen=True)
class Sample:
    """One training sample: the exact prompt and completion, and what it was built from."""

    prompt: str
    completion: str
    task: str
    length: str
    n_tags: int
    given_tags: int
    groups: list[str]
    source: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _tasks_for(rec: Record, n_tags: int) -> list[str]:
    """The tasks whose fields this record can fill."""
    out = []
    for name in TASK_WEIGHTS:
        fields = (Field.TAG,) if name == PLAIN else Task(name).fields
        if (Field.SHORT in fields and not rec.has_short) or (Field.LONG in fields and not rec.has_long):
            continue
        if Field.TAG in fields and n_tags == 0:
            continue
        out.append(name)
    return out


def _pick(rng: random.Random, weights: Mapping[str, float], allowed: Sequence[str] | None = None) -> str:
    names = [n for n in weights if (allowed is None or n in allowed) and weights[n] > 0]
    return rng.choices(names, weights=[weights[n] for n in names])[0]


class _Pool:
    """Records of one split and, per record, its most similar records of the same source."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = list(records)
        self.by_source: dict[str, list[int]] = {}
        for i, rec in enumerate(self.records):
            self.by_source.setdefault(rec.source, []).append(i)
        self._neighbours: dict[int, tuple[list[int], list[float]]] = {}
        self._matrix = None

    def _build(self) -> None:
        import numpy as np
        from scipy import sparse

        vocab: dict[str, int] = {}
        rows, cols = [], []
        for i, rec in enumerate(self.records):
            for tag in dict.fromkeys(rec.tags):
                if tag not in SPECIAL_TAGS:
                    rows.append(i)
                    cols.append(vocab.setdefault(tag, len(vocab)))
        n = len(self.records)
        x = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, max(1, len(vocab))))
        df = np.asarray(x.sum(axis=0)).ravel()
        idf = np.log((n + 1) / (df + 1)).astype(np.float32)
        self._matrix = (x, (x @ sparse.diags(idf)).T.tocsc())
        self._source = np.array([rec.source for rec in self.records])

    def neighbours(self, first: int) -> tuple[list[int], list[float]]:
        """Up to ``NEIGHBOURS`` records of the lead's source sharing a general tag with it, most
        similar first, with their similarity (sum of the shared tags' inverse document frequency)."""
        if first not in self._neighbours:
            import numpy as np

            if self._matrix is None:
                self._build()
            x, weighted_t = self._matrix
            score = np.asarray((x[first] @ weighted_t).todense()).ravel()
            score[first] = 0.0
            score[self._source != self.records[first].source] = 0.0
            k = min(NEIGHBOURS, int((score > 0).sum()))
            top = np.argsort(-score, kind="stable")[:k]
            self._neighbours[first] = ([int(i) for i in top], [float(score[i]) for i in top])
        return self._neighbours[first]

    def gather(self, first: int, target: int, rng: random.Random) -> list[int]:
        """Records to join with ``first`` until their tags reach ``target``: same source, drawn among
        its most similar records (weighted by the square of the similarity), then any record of the
        source if those run out."""
        lead = self.records[first]
        chosen = [first]
        tags = {t for t in lead.tags if t not in SPECIAL_TAGS}
        limit = min(MAX_RECORDS, len(self.by_source[lead.source]))
        near, score = self.neighbours(first)
        near, weight = list(near), [s * s for s in score]
        while len(tags) < target and len(chosen) < limit:
            if near:
                k = rng.choices(range(len(near)), weights=weight)[0]
                pick = near.pop(k)
                weight.pop(k)
            else:
                pick = rng.choice(self.by_source[lead.source])
                if pick in chosen:
                    continue
            chosen.append(pick)
            tags.update(t for t in self.records[pick].tags if t not in SPECIAL_TAGS)
        return chosen


def _frequency_first(tags: list[str], given: int, lead: set[str], freq: Mapping[str, int]) -> list[str]:
    """``tags`` with the asked-for part (after the ``given`` prefix) reordered: special tags stay
    first, then the lead record's tags, then the partners', each most frequent first (ties keep
    their shuffled order)."""
    rest = tags[given:]
    kinds = {t: 0 if t in SPECIAL_TAGS else 1 if t in lead else 2 for t in rest}
    return tags[:given] + sorted(rest, key=lambda t: (kinds[t], -freq.get(t, 0) if kinds[t] else 0))


def _captions(rec: Record, rng: random.Random, sentences: int, short_index: int | None) -> str:
    """A paragraph of up to ``sentences`` captions of a record (not the one used as the short)."""
    if rec.captions:
        pool = [c for i, c in enumerate(rec.captions) if i != short_index]
        rng.shuffle(pool)
        return " ".join(pool[:sentences])
    return " ".join(rec.long.split("\n"))


def tag_frequencies(records: Iterable[Record]) -> Counter[str]:
    """How many records carry each tag (the order ``make_samples(tag_order=...)`` writes tags in)."""
    freq: Counter[str] = Counter()
    for rec in records:
        freq.update(set(rec.tags))
    return freq


def make_samples(records: Sequence[Record], count: int, seed: int, *,
                 weights: Mapping[str, float] = LENGTH_WEIGHTS,
                 task_weights: Mapping[str, float] = TASK_WEIGHTS,
                 tag_order: Mapping[str, int] | None = None) -> list[Sample]:
    """Draw ``count`` samples from ``records`` (one split), reproducibly for a given seed.

    The first record of each sample cycles through the records in a seeded order, so every
    record leads about ``count / len(records)`` samples. ``tag_order`` (tag -> count, e.g.
    :func:`tag_frequencies` of the train split): the tags a sample asks for are written most
    frequent first (the lead's, then the partners'), so a model learns to write the tags most
    likely to belong to the picture first; the tags given stay a random choice in random order.
    """
    if not records:
        raise ValueError("make_samples needs at least one record")
    rng = random.Random(seed)
    pool = _Pool(records)
    order: list[int] = []
    out: list[Sample] = []
    while len(out) < count:
        if not order:
            order = list(range(len(pool.records)))
            rng.shuffle(order)
        first = order.pop()
        length = Length(_pick(rng, weights))
        lo, hi = TAG_COUNTS[length]
        target = rng.randint(lo, hi)
        members = pool.gather(first, target, rng) if length is not Length.VERY_SHORT else [first]
        recs = [pool.records[i] for i in members]
        lead = recs[0]
        special = [t for t in lead.tags if t in SPECIAL_TAGS]
        general: list[str] = []
        for rec in recs:  # the lead's tags first, then each partner's new tags, each part shuffled
            part = [t for t in rec.tags if t not in SPECIAL_TAGS and t not in general]
            rng.shuffle(part)
            general += part
        if length is Length.VERY_SHORT:  # all of its record's tags (at most the class's 17)
            target = TAG_COUNTS[Length.VERY_SHORT][1]
        general = general[: max(0, target - len(special))]
        tags = special + general
        length = length_of(len(tags))

        task_name = _pick(rng, task_weights, _tasks_for(lead, len(tags)))
        task = None if task_name == PLAIN else Task(task_name)

        short_index = None
        short = lead.short
        if not short and lead.captions:
            short_index = rng.randrange(len(lead.captions))
            short = lead.captions[short_index]
        paragraphs, sentences = CAPTION_SIZE[length]
        long_parts = []
        for k, rec in enumerate(recs[:paragraphs]):
            if k == 0 and lead.long and not lead.captions:
                long_parts.append(lead.long)
            elif rec.has_long:
                long_parts.append(_captions(rec, rng, sentences, short_index if k == 0 else None))
        long = "\n".join(p for p in long_parts if p)

        fields = task.fields if task is not None else (Field.TAG,)
        open_field = None
        # Sometimes all tags are given and the model writes only the caption (docs/FORMAT.md section 3,
        # "caption only, keep tags as given").
        if task in (Task.TAG_TO_LONG, Task.SHORT_TO_TAG_TO_LONG) and rng.random() < 0.15:
            open_field = Field.LONG
        given = 0
        if Field.TAG in fields and tags:
            given = len(tags) if open_field is Field.LONG else rng.randint(0, len(tags) - 1)
        if tag_order is not None and given < len(tags):
            tags = _frequency_first(tags, given, set(lead.tags), tag_order)
        meta = {META_CATEGORY[k]: list(v) for k, v in lead.meta.items() if v and rng.random() < 0.8}
        ratio = lead.ratio if rng.random() < 0.8 else None
        prompt, completion = build_sample(task, length, tags=tags, given_tags=given, short=short, long=long,
                                          meta=meta, ratio=ratio, open_field=open_field)
        out.append(Sample(prompt, completion, task_name, length.value, len(tags), given,
                          [r.group for r in recs], lead.source))
    return out

