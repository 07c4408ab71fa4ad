"""Text metrics for expanded prompts: plain lists of strings in, numbers out; no images, no model.

Tag lists are lists of tag strings, one list per result (split rendered prompts yourself, e.g.
``[t.strip() for t in prompt.split(",")]``). Tags are compared after stripping surrounding
whitespace, case-sensitively; pass ``canonical`` (e.g. ``tipo.tags.canonical``) to compare them by
canonical name, so that aliases of one tag count as the same tag. This module imports nothing from
``tipo``: the tag-table callables come in as arguments.

Rates whose denominator would be zero (no tags at all, no user tags in any request) raise
``ValueError`` instead of returning NaN.

Example::

    >>> duplicate_rate([["1girl", "solo", "solo"], ["cat"]])
    0.25
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from tipo.terms import Length

from .features import check_features, import_optional
from .vendi import vendi_score, vendi_score_kernel

# Tag-count bounds (min, cap) of TIPO's length classes, as in its training data (docs/FORMAT.md 2.2).
# Both ends count as a hit, so a count on a boundary (18, 36, 48) hits both neighbouring classes.
LENGTH_BOUNDS = MappingProxyType({length.value: length.tag_range for length in Length})
CLIP_WINDOW = 77  # CLIP text encoder: 75 tokens plus start and end
T5_WINDOW = 512  # a common T5 budget: FLUX.1-dev reads 512 tokens (SD3 defaults to 256)

TagLists = Sequence[Sequence[str]]


def duplicate_rate(tag_lists: TagLists, *, canonical: Callable[[str], str] | None = None) -> float:
    """Share of tags that repeat an earlier tag of the same result (alias duplicates with ``canonical``).

    Args:
        tag_lists: one list of tags per result.
        canonical: maps a tag to its canonical name (``tipo.tags.canonical``); None compares tags as written.

    Example:
        >>> duplicate_rate([["cat", "cat", "dog"], ["sky"]])
        0.25
    """
    keys = _keys(tag_lists, canonical, "results")
    total = sum(len(result) for result in keys)
    if total == 0:
        raise ValueError("no result has any tag: a duplicate rate needs at least one tag")
    return sum(len(result) - len(set(result)) for result in keys) / total


def share_positive(counts: Sequence[float]) -> float:
    """Share of results whose count is above zero (e.g. terms above a content rating that an
    expansion added).

    Example:
        >>> share_positive([0, 2, 0, 1])
        0.5
    """
    if not len(counts):
        raise ValueError("no result: a share needs at least one")
    return sum(1 for c in counts if c > 0) / len(counts)


def known_tag_rate(tag_lists: TagLists, is_known: Callable[[str], bool]) -> float:
    """Share of all tags that ``is_known`` accepts (e.g. ``tipo.tags.is_known``: in the tag table).

    Args:
        tag_lists: one list of tags per result.
        is_known: called with each stripped tag.

    Example:
        >>> known_tag_rate([["cat", "catt"], ["dog"]], {"cat", "dog"}.__contains__)
        0.6666666666666666
    """
    keys = _keys(tag_lists, None, "results")
    total = sum(len(result) for result in keys)
    if total == 0:
        raise ValueError("no result has any tag: a known-tag rate needs at least one tag")
    return sum(bool(is_known(tag)) for result in keys for tag in result) / total


def user_tag_preservation(
    user_tags: TagLists, results: TagLists, *, canonical: Callable[[str], str] | None = None
) -> float:
    """Mean, over requests with at least one user tag, of the share of the user's tags kept in the result.

    Args:
        user_tags: the tags each request started from.
        results: the tags of each result, in the same order.
        canonical: maps a tag to its canonical name; None compares tags as written.

    Example:
        >>> user_tag_preservation([["cat", "sky"], []], [["cat", "tree"], ["dog"]])
        0.5
    """
    wanted = _keys(user_tags, canonical, "user tags")
    got = _keys(results, canonical, "results")
    _same_length(wanted, got, "user tag lists", "results")
    shares = [len(set(w) & set(g)) / len(set(w)) for w, g in zip(wanted, got, strict=True) if w]
    if not shares:
        raise ValueError("no request has any user tag: preservation needs at least one")
    return float(np.mean(shares))


def ban_compliance(
    results: TagLists, banned: Collection[str], *, canonical: Callable[[str], str] | None = None
) -> float:
    """Share of results that contain none of the banned tags.

    Args:
        results: one list of tags per result.
        banned: the banned tags, shared by all results (an empty collection bans nothing).
        canonical: maps a tag to its canonical name; None compares tags as written.

    Example:
        >>> ban_compliance([["cat", "dog"], ["cat"]], {"dog"})
        0.5
    """
    if isinstance(banned, str):
        raise TypeError("banned must be a collection of tags, got one string: wrap it as [tag]")
    (banned_keys,) = _keys([list(banned)], canonical, "banned tags")
    banned_set = set(banned_keys)
    keys = _keys(results, canonical, "results")
    return sum(not banned_set.intersection(result) for result in keys) / len(keys)


def length_class_hit_rate(
    tag_lists: TagLists,
    target: str | Sequence[str],
    *,
    bounds: Mapping[str, tuple[int, int]] = LENGTH_BOUNDS,
) -> float:
    """Share of results whose tag count lies in their target length class, ``min <= count <= cap``.

    Args:
        tag_lists: one list of tags per result; every tag counts, repeats included.
        target: one class name for all results, or one per result (``very_short``, ``short``,
            ``long``, ``very_long``).
        bounds: class name -> (min, cap) tag counts, TIPO's by default.

    Example:
        >>> length_class_hit_rate([["a"] * 20, ["a"] * 40], "short")
        0.5
    """
    counts = [len(result) for result in _keys(tag_lists, None, "results")]
    targets = [target] * len(counts) if isinstance(target, str) else list(target)
    _same_length(targets, counts, "targets", "results")
    hits = 0
    for name, count in zip(targets, counts, strict=True):
        if name not in bounds:
            raise ValueError(f"unknown length class {name!r}: use one of {', '.join(bounds)}")
        low, cap = bounds[name]
        hits += low <= count <= cap
    return hits / len(counts)


def word_counts(texts: Sequence[str]) -> list[int]:
    """Number of whitespace-separated words in each text (caption length in words).

    Example:
        >>> word_counts(["A cat sits on a mat.", ""])
        [6, 0]
    """
    return [len(text.split()) for text in check_texts(texts)]


def text_vendi_score(
    texts: Sequence[str], *, ngram: int = 3, embed: Callable[[Sequence[str]], Any] | None = None
) -> float:
    """Vendi diversity of texts: cosine kernel on character n-gram counts, or on given embeddings.

    Without ``embed``, each text becomes the vector of counts of its character n-grams (raw characters,
    case and spaces kept; a text shorter than ``ngram`` is one n-gram of itself). With ``embed``, the
    rows it returns for the texts are used instead.

    Args:
        texts: the texts, none empty.
        ngram: n-gram length in characters.
        embed: optional callable mapping the list of texts to embeddings ``[len(texts), d]``.

    Example:
        >>> round(text_vendi_score(["a cat", "a cat", "sunset"]), 4)
        1.8899
    """
    texts = check_texts(texts)
    if embed is not None:
        rows = check_features(embed(texts), what="text embeddings")
        if rows.shape[0] != len(texts):
            raise ValueError(f"embed returned {rows.shape[0]} rows for {len(texts)} texts: one row per text")
        return vendi_score(rows)
    if ngram < 1:
        raise ValueError(f"ngram must be at least 1, got {ngram}")
    empty = [index for index, text in enumerate(texts) if not text]
    if empty:
        raise ValueError(
            f"text {empty[0]} is empty ({len(empty)} empty texts): an empty text has no n-grams, "
            "so drop empty results and count them separately"
        )
    sparse = import_optional("scipy.sparse", "text_vendi_score")
    vocabulary: dict[str, int] = {}
    columns: list[int] = []
    values: list[float] = []
    indptr = [0]
    for text in texts:
        grams = Counter(text[i : i + ngram] for i in range(max(len(text) - ngram + 1, 1)))
        for gram, count in grams.items():
            columns.append(vocabulary.setdefault(gram, len(vocabulary)))
            values.append(float(count))
        indptr.append(len(columns))
    counts = sparse.csr_matrix((values, columns, indptr), shape=(len(texts), len(vocabulary)))
    gram_matrix = (counts @ counts.T).toarray()
    norms = np.sqrt(np.diag(gram_matrix))
    return vendi_score_kernel(gram_matrix / np.outer(norms, norms))


@dataclass(frozen=True)
class TokenBudget:
    """Token counts of rendered prompts against an encoder's window.

    Attributes:
        counts: tokens per prompt, as the tokenizer callable counted them.
        window: the most tokens the encoder reads.
    """

    counts: tuple[int, ...]
    window: int

    @property
    def fits(self) -> tuple[bool, ...]:
        """Whether each prompt fits in the window."""
        return tuple(count <= self.window for count in self.counts)

    @property
    def fit_rate(self) -> float:
        """Share of prompts that fit."""
        return sum(self.fits) / len(self.counts)


def token_budget(
    prompts: Sequence[str], tokenize: Callable[[str], Sequence[Any]], window: int
) -> TokenBudget:
    """Count each prompt's tokens and check them against an encoder window (CLIP 77, T5 e.g. 512).

    Args:
        prompts: rendered prompts.
        tokenize: returns the token ids the encoder would see, special tokens included, e.g.
            ``lambda text: clip_tokenizer(text).input_ids``.
        window: the encoder's window, e.g. :data:`CLIP_WINDOW` or :data:`T5_WINDOW`.

    Example:
        >>> token_budget(["a b c", "a"], str.split, 2).fits
        (False, True)
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 token, got {window}")
    return TokenBudget(counts=tuple(len(tokenize(prompt)) for prompt in check_texts(prompts)), window=window)


def check_texts(texts: Sequence[str]) -> Sequence[str]:
    """``texts`` when it is a non-empty list of strings (the metrics' shared input check); else a
    TypeError or ValueError that says how to call."""
    if isinstance(texts, str):
        raise TypeError("expected a list of texts, got one string: wrap it as [text]")
    if len(texts) == 0:
        raise ValueError("got an empty list of texts: pass at least one")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {index} is a {type(text).__name__}, not a str")
    return texts


def _keys(tag_lists: TagLists, canonical: Callable[[str], str] | None, what: str) -> list[list[str]]:
    """Check a list of tag lists and return each tag stripped (and canonicalised when asked)."""
    if isinstance(tag_lists, str) or not isinstance(tag_lists, Sequence):
        raise TypeError(f"{what} must be a list of tag lists, got {type(tag_lists).__name__}")
    if len(tag_lists) == 0:
        raise ValueError(f"{what}: got an empty list; pass one tag list per result")
    keys = []
    for index, tags in enumerate(tag_lists):
        if isinstance(tags, str):
            raise TypeError(
                f"{what}[{index}] is a string, not a list of tags: split it first, "
                "e.g. [t.strip() for t in text.split(',')]"
            )
        row = []
        for position, tag in enumerate(tags):
            if not isinstance(tag, str):
                raise TypeError(f"{what}[{index}][{position}] is a {type(tag).__name__}, not a str")
            stripped = tag.strip()
            if not stripped:
                raise ValueError(
                    f"{what}[{index}][{position}] is an empty tag: drop empty strings when splitting"
                )
            row.append(canonical(stripped) if canonical is not None else stripped)
        keys.append(row)
    return keys


def _same_length(first: Sequence[Any], second: Sequence[Any], first_name: str, second_name: str) -> None:
    if len(first) != len(second):
        raise ValueError(
            f"got {len(first)} {first_name} but {len(second)} {second_name}: pass one per result"
        )
