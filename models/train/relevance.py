"""Relevance of a model's expansions to what the user gave, against two baselines.

For held-out records (never seen in training) the model is given a part of the truth and asked
for the rest, at the record's own length class:

- ``tags`` items: a few of the record's tags (1-3, at most a third, at random); the model writes
  more tags and a long caption (``tag_to_long``);
- ``caption`` items: one of the record's short captions; the model writes tags and a long caption
  (``short_to_tag_to_long``). The tags found in that caption count as given.

What is measured, pooled over items (micro-averaged):

- tags: of the new tags, how many are among the record's remaining true tags (precision), and how
  many of the remaining true tags were written (recall); tags compared by canonical name
  (aliases resolved);
- caption content words: the distinct content words (lower-cased, alphabetic, 3+ letters, not an
  English stop word) of the generated caption against those of the record's captions, minus the
  words the user gave;
- caption word validity: the share of generated caption words (all of them) that occur in the
  training captions.

Both baselines are fitted on the training split of the same run and, for each item, write exactly
as many tags (and caption words) as the model wrote for it, so precision and recall compare at an
equal budget:

- ``unigram``: the most frequent training tags (words) not given;
- ``cooccurrence``: tags (words) ranked by ``sum over given tags u of P(t | u)`` counted over
  training records (the unigram frequency breaks ties and fills up when no given tag was seen).

Precision of the first k new tags (k = 1, 2, 3, 5, 8) is reported too, for the model, for
co-occurrence and, to show how much room counting leaves, for a second count-based estimator:
``neighbours`` ranks tags by the training pictures that carry them, each weighing the cube of the
share of the given tags it carries (the pictures that carry all of them count most).

:func:`direct_ranker_precision` asks how far any model sized for the data could go: a small
network trained on nothing but this task (the given tags in, the remaining tags out) on the same
training split, its precision at k next to co-occurrence's.

Example:
    >>> from models.train.corpus import Record
    >>> train = [Record("a", "coco", ["cat", "window", "sill"], captions=["A cat on a window sill."] * 2),
    ...          Record("b", "coco", ["dog", "grass"], captions=["A dog on grass."] * 2)]
    >>> base = Baselines.fit(train)
    >>> base.tags(["cat"], 2, "cooccurrence"), base.tags(["cat"], 1, "unigram")
    (['sill', 'window'], ['dog'])
    >>> content_words("The cats sat on the window sill.")
    ['cats', 'sat', 'window', 'sill']
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tipo.request import Length

from .corpus import Record
from .samples import length_of

__all__ = ["Baselines", "RelevanceItem", "build_relevance_items", "content_words", "score_relevance"]

_WORD = re.compile(r"[a-z]+")
METHODS = ("model", "unigram", "cooccurrence")


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


_STOP: frozenset[str] | None = None


def words(text: str) -> list[str]:
    """Lower-cased alphabetic words of a text, in order."""
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    """The distinct content words of a text, in order: 3+ letters, not an English stop word."""
    global _STOP
    if _STOP is None:
        _STOP = _stop_words()
    out: list[str] = []
    for w in words(text):
        if len(w) >= 3 and w not in _STOP and w not in out:
            out.append(w)
    return out


def _record_text(rec: Record) -> str:
    return " ".join([*rec.captions, rec.short, rec.long])


@dataclass
class Baselines:
    """Unigram and co-occurrence statistics of tags and caption words over training records."""

    tag_freq: Counter
    tag_pair: dict[str, Counter]
    word_freq: Counter
    word_pair: dict[str, Counter]
    corpus_words: frozenset[str]
    tag_sets: tuple[frozenset[str], ...] = ()

    @classmethod
    def fit(cls, records: Iterable[Record]) -> Baselines:
        tag_freq: Counter = Counter()
        word_freq: Counter = Counter()
        tag_pair: dict[str, Counter] = defaultdict(Counter)
        word_pair: dict[str, Counter] = defaultdict(Counter)
        vocab: set[str] = set()
        tag_sets = []
        for rec in records:
            tags = list(dict.fromkeys(rec.tags))
            tag_sets.append(frozenset(tags))
            text = _record_text(rec)
            vocab.update(words(text))
            cw = content_words(text)
            tag_freq.update(tags)
            word_freq.update(cw)
            for u in tags:
                tag_pair[u].update(t for t in tags if t != u)
                word_pair[u].update(cw)
        return cls(tag_freq, dict(tag_pair), word_freq, dict(word_pair), frozenset(vocab), tuple(tag_sets))

    @staticmethod
    def _rank(given: Sequence[str], n: int, freq: Counter, pair: dict[str, Counter], method: str,
              exclude: set[str]) -> list[str]:
        if n <= 0:
            return []
        total = sum(freq.values()) or 1
        if method == "unigram":
            scores = {t: c / total for t, c in freq.items()}
        else:
            scores = {}
            for u in given:
                row = pair.get(u)
                if not row:
                    continue
                denom = freq.get(u) or 1
                for t, c in row.items():
                    scores[t] = scores.get(t, 0.0) + c / denom
            # tie-break and fill with the unigram frequency (far below any co-occurrence score)
            for t, c in freq.items():
                scores[t] = scores.get(t, 0.0) + 1e-6 * c / total
        ranked = sorted((t for t in scores if t not in exclude), key=lambda t: (-scores[t], t))
        return ranked[:n]

    def tags(self, given: Sequence[str], n: int, method: str) -> list[str]:
        """The ``n`` tags this baseline writes after the ``given`` tags."""
        if method == "neighbours":
            return self._neighbours(given, n)
        return self._rank(given, n, self.tag_freq, self.tag_pair, method, set(given))

    def _neighbours(self, given: Sequence[str], n: int) -> list[str]:
        want = set(given)
        total = sum(self.tag_freq.values()) or 1
        scores = {t: 1e-6 * c / total for t, c in self.tag_freq.items()}  # ties and fill-up, as co-occurrence
        for tags in self.tag_sets:
            shared = len(want & tags)
            if shared:
                weight = (shared / len(want)) ** 3
                for t in tags:
                    scores[t] = scores.get(t, 0.0) + weight
        return sorted((t for t in scores if t not in want), key=lambda t: (-scores[t], t))[:n]

    def words(self, given: Sequence[str], given_words: Iterable[str], n: int, method: str) -> list[str]:
        """The ``n`` caption content words this baseline writes for the ``given`` tags."""
        return self._rank(given, n, self.word_freq, self.word_pair, method, set(given_words))


@dataclass(frozen=True)
class RelevanceItem:
    """One relevance request: what the user gives, and the truth the output is scored against."""

    kind: str  # "tags" or "caption"
    length: Length
    tags: tuple[str, ...]  # the tags the user gives (tags items)
    caption: str  # the short caption the user gives (caption items)
    given_tags: tuple[str, ...]  # tags that count as given (the tags, or those found in the caption)
    truth_tags: tuple[str, ...]  # the record's tags minus the given ones
    truth_words: tuple[str, ...]  # the record's caption content words minus the given words
    given_words: tuple[str, ...]
    width: int | None
    height: int | None
    group: str


def build_relevance_items(records: Sequence[Record], count: int, seed: int, tagger=None) -> list[RelevanceItem]:  # noqa: ANN001
    """Up to ``count`` items, alternating tags and caption items over the shuffled records.

    A record serves a tags item when it has at least 4 tags, a caption item when it has at least
    two captions (one is given, all count as truth).
    """
    from .captions import CaptionTagger

    tagger = tagger or CaptionTagger.from_table()
    rng = random.Random(seed)
    order = list(records)
    rng.shuffle(order)
    items: list[RelevanceItem] = []
    want = "tags"
    for rec in order:
        if len(items) >= count:
            break
        tags = list(dict.fromkeys(rec.tags))
        text_words = content_words(_record_text(rec))
        length = length_of(len(tags))
        kind = want
        if kind == "caption" and len(rec.captions) < 2:
            kind = "tags"
        if kind == "tags" and len(tags) < 4:
            continue
        if kind == "tags":
            k = rng.randint(1, max(1, min(3, len(tags) // 3)))
            given = rng.sample(tags, k)
            caption = ""
            given_words = [w for t in given for w in words(t)]
        else:
            caption = rng.choice(rec.captions)
            given = [t for t in tagger.tags(caption) if t in tags]
            given_words = content_words(caption)
        truth_tags = tuple(t for t in tags if t not in given)
        truth_words = tuple(w for w in text_words if w not in set(given_words))
        if not truth_tags:
            continue
        items.append(RelevanceItem(kind, length, tuple(given), caption, tuple(given), truth_tags, truth_words,
                                   tuple(given_words), rec.width or None, rec.height or None, rec.group))
        want = "caption" if want == "tags" else "tags"
    return items


def _prf(hits: int, wrote: int, truth: int) -> dict[str, float]:
    p = hits / wrote if wrote else 0.0
    r = hits / truth if truth else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
            "hits": hits, "written": wrote, "truth": truth}


def score_relevance(items: Sequence[RelevanceItem], outputs: Sequence[dict], baselines: Baselines,
                    canonical=lambda t: t) -> dict[str, object]:  # noqa: ANN001
    """Pooled precision / recall / F1 of the model and both baselines, per kind and overall.

    ``outputs[i]`` holds the model's ``new_tags`` (list) and ``caption`` (str) for ``items[i]``.
    """
    sums: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    valid = [0, 0]
    for item, out in zip(items, outputs, strict=True):
        truth_t = {canonical(t) for t in item.truth_tags}
        given_t = {canonical(t) for t in item.given_tags}
        model_tags = [t for t in dict.fromkeys(canonical(t) for t in out["new_tags"]) if t not in given_t]
        cap_words = [w for w in content_words(out["caption"]) if w not in set(item.given_words)]
        all_words = words(out["caption"])
        valid[0] += sum(w in baselines.corpus_words for w in all_words)
        valid[1] += len(all_words)
        truth_w = set(item.truth_words)
        for method in METHODS:
            if method == "model":
                tags, cw = model_tags, cap_words
            else:
                tags = [canonical(t) for t in baselines.tags(list(item.given_tags), len(model_tags), method)]
                cw = baselines.words(list(item.given_tags), item.given_words, len(cap_words), method)
            for kind in (item.kind, "all"):
                s = sums[(method, kind, "tags")]
                s[0] += len(set(tags) & truth_t)
                s[1] += len(tags)
                s[2] += len(truth_t)
                s = sums[(method, kind, "words")]
                s[0] += len(set(cw) & truth_w)
                s[1] += len(cw)
                s[2] += len(truth_w)
    report: dict[str, object] = {"items": len(items), "kinds": dict(Counter(i.kind for i in items))}
    for kind in ("all", "tags", "caption"):
        report[kind] = {
            method: {what: _prf(*sums[(method, kind, what)]) for what in ("tags", "words")} for method in METHODS
        }
    report["caption_word_validity"] = round(valid[0] / valid[1], 4) if valid[1] else 0.0
    report["caption_words"] = valid[1]
    report["first_k"] = first_k_precision(items, outputs, baselines, canonical)
    return report


FIRST_K = (1, 2, 3, 5, 8)
FIRST_K_METHODS = ("model", "cooccurrence", "neighbours")


def _add_hits(hits: dict[int, int], ranked: Sequence[str], truth: set[str], canonical) -> None:  # noqa: ANN001
    """Add, for every k of ``hits``, how many of the first k of ``ranked`` are true."""
    for k in hits:
        hits[k] += len({canonical(t) for t in ranked[:k]} & truth)


def _at_k(hits: dict[str, dict[int, int]], n: int) -> dict[str, dict[str, float]]:
    """Precision at k per method, from hits over ``n`` rankings of at least k tags each."""
    return {m: {str(k): round(h[k] / (k * max(1, n)), 4) for k in h} for m, h in hits.items()}


def first_k_precision(items: Sequence[RelevanceItem], outputs: Sequence[dict], baselines: Baselines,
                      canonical=lambda t: t) -> dict[str, dict[str, float]]:  # noqa: ANN001
    """Precision of the first k new tags (of those written, when fewer than k) per method, all items."""
    hits = {m: dict.fromkeys(FIRST_K, 0) for m in FIRST_K_METHODS}
    wrote = {m: dict.fromkeys(FIRST_K, 0) for m in FIRST_K_METHODS}
    for item, out in zip(items, outputs, strict=True):
        truth = {canonical(t) for t in item.truth_tags}
        given = {canonical(t) for t in item.given_tags}
        ranked = {"model": [t for t in dict.fromkeys(canonical(t) for t in out["new_tags"]) if t not in given]}
        for method in FIRST_K_METHODS[1:]:
            ranked[method] = [canonical(t) for t in baselines.tags(list(item.given_tags), max(FIRST_K), method)]
        for method, tags in ranked.items():
            _add_hits(hits[method], tags, truth, lambda t: t)  # already canonical
            for k in FIRST_K:
                wrote[method][k] += len(tags[:k])
    return {m: {str(k): round(hits[m][k] / wrote[m][k], 4) if wrote[m][k] else 0.0 for k in FIRST_K}
            for m in FIRST_K_METHODS}


def relevance_markdown(report: dict) -> str:
    """The relevance figures as a Markdown table (precision / recall / F1, model vs baselines)."""
    lines = [
        f"Relevance on {report['items']} held-out items ({report['kinds']}); baselines write as many tags / words "
        "as the model did for each item:",
        "",
        "| items | what | model P / R / F1 | unigram P / R / F1 | co-occurrence P / R / F1 |",
        "|---|---|---|---|---|",
    ]
    for kind in ("all", "tags", "caption"):
        for what, label in (("tags", "remaining true tags"), ("words", "caption content words")):
            cells = []
            for method in METHODS:
                f = report[kind][method][what]
                cells.append(f"{f['precision']:.1%} / {f['recall']:.1%} / {f['f1']:.3f}")
            lines.append(f"| {kind} | {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Caption word validity (generated caption words that occur in the training captions): "
                 f"{report['caption_word_validity']:.1%} of {report['caption_words']} words.")
    first = report.get("first_k")
    if first:
        lines += ["", "Precision of the first k new tags (all items; the estimators rank every training tag):", "",
                  "| k | " + " | ".join(str(k) for k in FIRST_K) + " |", "|---|" + "---|" * len(FIRST_K)]
        for method, row in first.items():
            lines.append(f"| {method} | " + " | ".join(f"{row[str(k)]:.1%}" for k in FIRST_K) + " |")
    return "\n".join(lines) + "\n"


def rank_precision(hf_dir, items: Sequence[RelevanceItem], baselines: Baselines, canonical=lambda t: t,  # noqa: ANN001
                   ks: Sequence[int] = (1, 2, 3, 5, 8), min_records: int = 3, batch: int = 256) -> dict[str, object]:
    """Precision at k of the model used as a ranker, next to co-occurrence, on ``tags`` items.

    Every tag carried by at least ``min_records`` training records is scored by the model's own
    log-probability of ``, tag,`` after the request's prompt (transformers on ``hf_dir``; no sampling,
    no decode rules), the given tags left out; the top k are compared with the item's remaining true
    tags, as co-occurrence's top k are. An analysis of what the model knows, not how tipo decodes.
    """
    import torch
    from transformers import LlamaForCausalLM

    from tipo import Request, plan
    from tipo.tokens import EOS_ID

    from .prepare import Tokenizer

    tok = Tokenizer(hf_dir)
    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    cands = sorted(t for t, c in baselines.tag_freq.items() if c >= min_records)
    tag_items = [i for i in items if i.kind == "tags"]
    hits = {m: dict.fromkeys(ks, 0) for m in ("model", "cooccurrence")}
    for item in tag_items:
        prompt = plan(Request(", ".join(item.tags), length=item.length, output="both", width=item.width,
                              height=item.height)).prompt
        p_ids = tok.encode(prompt)
        seqs, starts = [], []
        for t in cands:
            ids = tok.encode(prompt + ", " + t + ",")
            s = 0
            while s < len(p_ids) and ids[s] == p_ids[s]:
                s += 1
            seqs.append(ids)
            starts.append(s)
        scores: list[float] = []
        with torch.inference_mode():
            for b in range(0, len(seqs), batch):
                chunk = seqs[b:b + batch]
                x = torch.full((len(chunk), max(map(len, chunk))), EOS_ID, dtype=torch.long)
                mask = torch.zeros_like(x)
                for j, ids in enumerate(chunk):
                    x[j, :len(ids)] = torch.tensor(ids)
                    mask[j, :len(ids)] = 1
                logp = torch.log_softmax(model(input_ids=x, attention_mask=mask).logits.float(), -1)
                for j, ids in enumerate(chunk):
                    pos = torch.arange(starts[b + j], len(ids))
                    scores.append(float(logp[j, pos - 1, torch.tensor(ids)[pos]].sum()))
        given = {canonical(t) for t in item.given_tags}
        truth = {canonical(t) for t in item.truth_tags}
        ranked = [c for _, c in sorted(zip(scores, cands, strict=True), key=lambda z: (-z[0], z[1]))
                  if canonical(c) not in given]
        _add_hits(hits["model"], ranked, truth, canonical)
        _add_hits(hits["cooccurrence"], baselines.tags(list(item.given_tags), max(ks), "cooccurrence"), truth, canonical)
    return {"items": len(tag_items), "candidates": len(cands), "precision_at_k": _at_k(hits, len(tag_items))}


def direct_ranker_precision(items: Sequence[RelevanceItem], records: Sequence[Record], baselines: Baselines,
                            canonical=lambda t: t, epochs: int = 3, draws: int = 12,  # noqa: ANN001
                            seed: int = 0, hidden: int = 512) -> dict[str, object]:
    """Precision at k of a network trained directly for the relevance task, next to co-occurrence.

    Training pairs: for each training record, ``draws`` times 1-3 of its tags (at most a third, as
    the items draw them) in, the rest out. The network (multi-hot tags -> ``hidden`` ReLU units,
    dropout 0.3 -> a score per training tag) learns a softmax over the tags to write, the target
    spread evenly over the remaining tags; AdamW, learning rate 2e-3, batches of 256. Seeded,
    inside a forked torch random state (the global one is left as it was). Every item is scored by
    its given tags (for caption items, the tags found in the caption).
    """
    import torch

    vocab = sorted(baselines.tag_freq)
    index = {t: i for i, t in enumerate(vocab)}
    rng = random.Random(seed)
    pairs: list[tuple[list[int], list[int]]] = []
    for rec in records:
        tags = list(dict.fromkeys(rec.tags))
        if len(tags) < 2:
            continue
        for _ in range(draws):
            given = rng.sample(tags, rng.randint(1, max(1, min(3, len(tags) // 3))))
            pairs.append(([index[t] for t in given], [index[t] for t in tags if t not in given]))

    def multi_hot(rows: Sequence[Sequence[int]]) -> torch.Tensor:
        out = torch.zeros(len(rows), len(vocab))
        for i, row in enumerate(rows):
            out[i, list(row)] = 1.0
        return out

    ks = FIRST_K
    hits = {m: dict.fromkeys(ks, 0) for m in ("direct", "cooccurrence")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(len(vocab), hidden), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                  torch.nn.Linear(hidden, len(vocab)))
        opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
        for _ in range(epochs):
            net.train()
            order = torch.randperm(len(pairs)).tolist()
            for start in range(0, len(order), 256):
                batch = [pairs[i] for i in order[start:start + 256]]
                x, y = multi_hot([b[0] for b in batch]), multi_hot([b[1] for b in batch])
                logits = net(x).masked_fill(x.bool(), -1e4)
                loss = -(torch.log_softmax(logits, -1) * (y / y.sum(1, keepdim=True).clamp(min=1))).sum(1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        with torch.inference_mode():
            for item in items:
                given = [index[t] for t in item.given_tags if t in index]
                x = multi_hot([given])
                scores = net(x)[0].masked_fill(x[0].bool(), -float("inf"))
                top = [vocab[i] for i in scores.argsort(descending=True)[: max(ks)].tolist()]
                truth = {canonical(t) for t in item.truth_tags}
                _add_hits(hits["direct"], top, truth, canonical)
                _add_hits(hits["cooccurrence"], baselines.tags(list(item.given_tags), max(ks), "cooccurrence"), truth,
                          canonical)
    return {"items": len(items), "pairs": len(pairs), "epochs": epochs, "precision_at_k": _at_k(hits, len(items))}
