"""Forbidden terms: the user's ban box and the content rating's vocabulary, matched one way.

A :class:`TermMatcher` says whether a tag or a caption word may be generated. Both the ban box
(:class:`BanList`) and the content rating (:mod:`tipo.rating`) build one; decoding masks the
token that would complete a forbidden tag or word, and the result is checked once more.

The ban box is one comma-separated text. Each entry is

* a **plain tag** (``tennis``, ``long_hair``, ``star (sky)``): bans every tag that equals it or
  contains it as whole words, after normalisation (``_`` = space, case) and Danbooru alias
  resolution of both sides. ``tennis`` bans ``tennis``, ``tennis racket`` and ``tennis court`` but
  not ``tennisxyz``; ``hat`` bans ``witch hat`` but never ``chat``. A plain term also bans the
  same words in a generated caption (``tennis`` keeps "tennis" out of the caption). Words are
  compared with a trailing ``s``/``es`` removed too, so ``racket`` bans ``tennis rackets``;
* a **wildcard** when it contains ``*`` and no other regular-expression character
  (``official*``, ``*text``): ``*`` is any text, the whole tag must match;
* a **regular expression** when it contains one of ``. ^ $ + ? { } [ ] | \\`` (``official.*``,
  ``.*text``) and is not itself a known tag (``c.c.``): matched at the START of the tag, as the
  reference implementation does (``re.match``), so the reference's ban strings
  (``umbrella, official.*, .*text``) keep their meaning when restored from old images. Add ``$``
  to anchor the end.

Wildcards and regular expressions apply to caption words one by one.

Example:
    >>> bans = BanList.parse("tennis, official.*, *text")
    >>> [bans.matches(t) for t in ("tennis racket", "tennisxyz", "official art", "english text", "chat")]
    [True, False, True, True, False]
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import RequestError
from .tags import TagTable, default_table, normalize

__all__ = ["BanEntry", "BanList", "TermMatcher", "check_ban_entry", "split_ban_box", "word_forms", "words"]

_WORD = re.compile(r"[^\W_]+")
_REGEX_CHARS = frozenset(".^$+?{}[]|\\")


def words(text: str) -> tuple[str, ...]:
    """The lower-case words of a text: runs of letters and digits (``see-through`` is two).

    Example:
        >>> words("Tennis_racket, see-through!")
        ('tennis', 'racket', 'see', 'through')
    """
    return tuple(_WORD.findall(text.lower()))


def word_forms(word: str) -> tuple[str, ...]:
    """A word and its forms without a plural ending (``rackets`` -> ``racket``; ``ass`` stays)."""
    out = [word]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        out.append(word[:-1])
        if word.endswith("es") and len(word) > 4:
            out.append(word[:-2])
    return tuple(out)


def split_ban_box(text: str) -> list[str]:
    """Split a ban box on commas that are not inside ``{}``, ``[]`` or ``()`` (regex syntax).

    Example:
        >>> split_ban_box("hat, a{1,3}b, (x|y),,")
        ['hat', 'a{1,3}b', '(x|y)']
    """
    out: list[str] = []
    depth = 0
    cur: list[str] = []
    escaped = False
    for c in text:
        if escaped:
            cur.append(c)
            escaped = False
            continue
        if c == "\\":
            cur.append(c)
            escaped = True
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}" and depth:
            depth -= 1
        if c in ",\n" and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(c)
    out.append("".join(cur))
    return [part.strip() for part in out if part.strip()]


@dataclass(frozen=True)
class TermMatcher:
    """Forbidden tags and caption words, each with the reason it is forbidden.

    Attributes:
        phrases: word tuples (``("tennis",)``, ``("pubic", "hair")``); a tag containing one as
            whole words is forbidden, and so is a caption ending in one.
        exact: normalised tags forbidden only as a whole (``explicit``, emoticons with no words).
        patterns: compiled expressions matched at the start of a normalised tag (``re.match``)
            and of each caption word.
        caption_phrases: word tuples forbidden in captions only.
        allowed: word tuples that are never forbidden although they contain a forbidden
            phrase (``breast pocket``).
    """

    phrases: Mapping[tuple[str, ...], str] = field(default_factory=dict)
    exact: Mapping[str, str] = field(default_factory=dict)
    patterns: tuple[tuple[re.Pattern[str], str], ...] = ()
    caption_phrases: Mapping[tuple[str, ...], str] = field(default_factory=dict)
    allowed: frozenset[tuple[str, ...]] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.phrases or self.exact or self.patterns or self.caption_phrases)

    def __or__(self, other: TermMatcher) -> TermMatcher:
        return TermMatcher({**other.phrases, **self.phrases}, {**other.exact, **self.exact},
                           self.patterns + other.patterns, {**other.caption_phrases, **self.caption_phrases},
                           self.allowed | other.allowed)

    @functools.cached_property
    def _max_len(self) -> int:
        return max((len(p) for p in (*self.phrases, *self.caption_phrases)), default=0)

    @functools.cached_property
    def _by_last(self) -> dict[str, list[tuple[tuple[str, ...], str]]]:
        out: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for phrase, why in self.phrases.items():
            out.setdefault(phrase[-1], []).append((phrase, why))
        return out

    @functools.cached_property
    def _caption_by_last(self) -> dict[str, list[tuple[tuple[str, ...], str]]]:
        out: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for phrase, why in {**self.phrases, **self.caption_phrases}.items():
            out.setdefault(phrase[-1], []).append((phrase, why))
        return out

    @functools.cached_property
    def caption_last_words(self) -> tuple[str, ...]:
        """Every word that can complete a forbidden caption phrase, plural forms included, sorted."""
        out: set[str] = set()
        for last in self._caption_by_last:
            out.update((last, last + "s", last + "es"))
        return tuple(sorted(out))

    def _phrase_at(self, ws: Sequence[str], end: int, index: Mapping[str, list[tuple[tuple[str, ...], str]]]) -> str | None:
        """The reason when a forbidden phrase ends at word ``end - 1`` of ``ws`` (and no allowed
        phrase covers it)."""
        for form in word_forms(ws[end - 1]):
            for phrase, why in index.get(form, ()):
                n = len(phrase)
                if n <= end and _occurs(phrase, ws, end - n) and not self._covered(ws, end - n, end):
                    return why
        return None

    def _covered(self, ws: Sequence[str], start: int, end: int) -> bool:
        for allowed in self.allowed:
            n = len(allowed)
            for s in range(max(0, end - n), min(start, len(ws) - n) + 1):
                if s <= start and s + n >= end and _occurs(allowed, ws, s):
                    return True
        return False

    def tag_reason(self, tag: str) -> str | None:
        """Why a tag (already normalised or not) is forbidden, or None."""
        norm = normalize(tag)
        if not norm:
            return None
        why = self.exact.get(norm)
        if why is not None:
            return why
        ws = words(norm)
        for end in range(len(ws), 0, -1):
            why = self._phrase_at(ws, end, self._by_last)
            if why is not None:
                return why
        for pattern, why in self.patterns:
            if pattern.match(norm):
                return why
        return None

    @property
    def word_context(self) -> int:
        """How many of the previous words :meth:`word_reason` looks at (the rest never matter)."""
        return max(self._max_len - 1, 0)

    @functools.cached_property
    def _phrase_words(self) -> frozenset[str]:
        """The words of the forbidden and allowed phrases of two or more words."""
        return frozenset(w for p in (*self.phrases, *self.caption_phrases, *self.allowed) if len(p) > 1 for w in p)

    def context_of(self, previous: Sequence[str]) -> tuple[str, ...]:
        """The previous words :meth:`word_reason` can depend on: at most :attr:`word_context` of
        them, and none before the last one that no phrase of two or more words holds (in any
        form), since every phrase that reaches back over a word holds it."""
        n = self.word_context
        out = tuple(previous[len(previous) - n:]) if n else ()
        for i in range(len(out) - 1, -1, -1):
            if self._phrase_words.isdisjoint(word_forms(out[i])):
                return out[i + 1:]
        return out

    def word_reason(self, previous: Sequence[str], word: str) -> str | None:
        """Why a caption word (with the caption's ``previous`` words before it) is forbidden."""
        if not word:
            return None
        ws = [*previous[-(self._max_len - 1):], word] if self._max_len > 1 else [word]
        why = self._phrase_at(ws, len(ws), self._caption_by_last)
        if why is not None:
            return why
        for pattern, why in self.patterns:
            if pattern.match(word):
                return why
        return None

    def caption_reasons(self, text: str) -> list[tuple[str, str]]:
        """(word, reason) for every forbidden word of a caption, in order."""
        ws = words(text)
        out = []
        for i, w in enumerate(ws):
            why = self.word_reason(ws[:i], w)
            if why is not None:
                out.append((w, why))
        return out


def _occurs(phrase: Sequence[str], ws: Sequence[str], start: int) -> bool:
    """Whether ``phrase`` occurs in ``ws`` at ``start`` (plural endings ignored)."""
    if start < 0 or start + len(phrase) > len(ws):
        return False
    return all(p in word_forms(w) for p, w in zip(phrase, ws[start:start + len(phrase)], strict=True))


@dataclass(frozen=True)
class BanEntry:
    """One entry of the ban box, classified."""

    text: str
    kind: str  # "tag", "wildcard", "regex" (matched at the start) or "full regex" (``ban_regex``)


class BanList:
    """The ban box: plain tags (whole words, aliases resolved), ``*`` wildcards and regexes.

    Args:
        entries: ban-box entries (see the module docstring for how each is read).
        patterns: regular expressions that must match the whole normalised tag (the library's
            ``ban_regex``, whose meaning this keeps).
        table: the tag table for aliases (default: the packaged one).

    Example:
        >>> bans = BanList(["hat"])
        >>> bans.matches("hat"), bans.matches("witch hat"), bans.matches("chat"), bans.matches("Hat")
        (True, True, False, True)
    """

    def __init__(self, entries: Iterable[str], patterns: Iterable[str] = (), table: TagTable | None = None) -> None:
        self._table = table or default_table()
        self.entries = tuple(self.classify(e, self._table) for e in entries if normalize(e))
        self.entries += tuple(BanEntry(p, "full regex") for p in patterns if p)
        phrases: dict[tuple[str, ...], str] = {}
        exact: dict[str, str] = {}
        compiled: list[tuple[re.Pattern[str], str]] = []
        for e in self.entries:
            why = f"banned by '{e.text}'"
            if e.kind == "tag":
                for form in {normalize(e.text), self._table.canonical(e.text)}:
                    ws = words(form)
                    if ws:
                        phrases[ws] = why
                    else:
                        exact[form] = why
            else:
                compiled.append((_compile(e), why))
        self.matcher = TermMatcher(phrases, exact, tuple(compiled))

    @staticmethod
    def classify(entry: str, table: TagTable | None = None) -> BanEntry:
        """How one ban-box entry is read: ``tag``, ``wildcard`` or ``regex``.

        Example:
            >>> [BanList.classify(e).kind for e in ("tennis", "star (sky)", "official*", ".*text", "c.c.")]
            ['tag', 'tag', 'wildcard', 'regex', 'tag']
        """
        text = entry.strip()
        table = table or default_table()
        if table.is_known(text) or not (set(text) & (_REGEX_CHARS | {"*"})):
            return BanEntry(text, "tag")
        if "*" in text and not set(text) & _REGEX_CHARS:
            return BanEntry(text, "wildcard")
        return BanEntry(text, "regex")

    @classmethod
    def parse(cls, box: str | Sequence[str], table: TagTable | None = None, patterns: Iterable[str] = ()) -> BanList:
        """A ban list from the ban box text (or its entries), e.g. ``"umbrella, official.*, .*text"``."""
        entries = split_ban_box(box) if isinstance(box, str) else list(box)
        return cls(entries, patterns, table)

    @classmethod
    def from_request(cls, request: object, table: TagTable | None = None) -> BanList:
        return cls(getattr(request, "ban", ()), getattr(request, "ban_regex", ()), table)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def matches(self, tag: str) -> bool:
        """Whether a tag is banned (whole words, alias resolved, wildcards and regexes)."""
        return self.reason(tag) is not None

    def reason(self, tag: str) -> str | None:
        why = self.matcher.tag_reason(tag)
        if why is None:
            canon = self._table.canonical(tag)
            if canon != normalize(tag):
                why = self.matcher.tag_reason(canon)
        return why


def check_ban_entry(entry: str) -> None:
    """Raise :class:`~tipo.errors.RequestError` when a ban-box entry reads as a regular expression
    that does not compile (a known tag such as ``c.c.`` is fine). Loads the tag table only then."""
    text = entry.strip()
    if not set(text) & _REGEX_CHARS:
        return
    try:
        re.compile(text)
    except re.error:
        if not default_table().is_known(text):
            _compile(BanEntry(text, "regex"))


def _compile(entry: BanEntry) -> re.Pattern[str]:
    text = normalize(entry.text) if entry.kind == "wildcard" else entry.text.strip()
    if entry.kind == "wildcard":
        return re.compile("".join(".*" if c == "*" else re.escape(c) for c in text) + r"\Z")
    try:
        if entry.kind == "full regex":
            return re.compile(f"(?:{text})\\Z")
        return re.compile(text)
    except re.error as exc:
        raise RequestError(f"ban entry {text!r} is not a valid regular expression ({exc}); fix it, "
                           "or write a plain tag or a * wildcard") from None
