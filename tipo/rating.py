"""Content rating: which tags and caption words the expander may add.

A request carries a rating, one of the format's ``rating`` meta values (``general``,
``sensitive``, ``questionable``, ``explicit``) or ``unrestricted``. Terms of the open vocabulary
``data/rating_terms.tsv`` (its header documents what is in it, why and where it came from) whose
level is above the rating cannot be generated: decoding masks the token that would complete such
a tag (in every tag line) or caption word, like a ban, and the result is checked once more.
Terms of level ``always`` (sexualisation of minors) are masked at every rating.

Which rating is in force (:func:`resolve_rating`):

* the request's ``rating`` when the user set one. It is honoured in the model input too: the
  ``rating:`` meta line carries it (``unrestricted`` adds no line);
* else a rating tag the user typed among the tags (``sensitive``, ``nsfw`` ...), which is already
  on the ``rating:`` line: ``general``/``safe``/``sfw`` -> general, ``nsfw`` -> explicit;
* else ``general``, enforced at decode time WITHOUT adding a ``rating:`` line, so the model input
  of a request that says nothing about rating is exactly the format's (the golden prompts).

Example:
    >>> vocab = default_vocabulary()
    >>> m = vocab.matcher(Rating.GENERAL)
    >>> m.tag_reason("large breasts"), m.tag_reason("breast pocket"), m.tag_reason("forest")
    ("'breast' is above the general rating (body focus)", None, None)
    >>> vocab.matcher(Rating.UNRESTRICTED).tag_reason("nude") is None
    True
"""

from __future__ import annotations

import enum
import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

from .bans import BanList, TermMatcher, words
from .tags import TagTable, default_table, normalize

__all__ = ["RATING_OF_TAG", "Forbidden", "Rating", "RatingTerm", "RatingVocabulary", "default_vocabulary",
           "rating_key", "resolve_rating"]


class Rating(str, enum.Enum):
    """A content rating, from the safest; ``unrestricted`` forbids nothing but ``always`` terms."""

    GENERAL = "general"
    SENSITIVE = "sensitive"
    QUESTIONABLE = "questionable"
    EXPLICIT = "explicit"
    UNRESTRICTED = "unrestricted"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, level: str) -> bool:
        """Whether a term of vocabulary ``level`` may be generated at this rating."""
        if level == "always":
            return False
        if level == "allow":
            return True
        return self.rank >= _RANK[Rating(level)]


_RANK = {r: i for i, r in enumerate(Rating)}
# The rating a rating tag typed by the user stands for.
RATING_OF_TAG = {
    "general": Rating.GENERAL, "safe": Rating.GENERAL, "sfw": Rating.GENERAL,
    "sensitive": Rating.SENSITIVE, "questionable": Rating.QUESTIONABLE,
    "explicit": Rating.EXPLICIT, "nsfw": Rating.EXPLICIT,
}
LEVELS = ("sensitive", "questionable", "explicit", "always", "allow")
APPLIES = ("tags", "captions", "both", "rating")


@dataclass(frozen=True)
class RatingTerm:
    """One row of the vocabulary."""

    term: str
    level: str
    applies: str
    group: str


@dataclass(frozen=True)
class RatingVocabulary:
    """The rating vocabulary; :meth:`matcher` gives the forbidden terms at one rating."""

    terms: tuple[RatingTerm, ...]

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> RatingVocabulary:
        """Read the TSV format of ``data/rating_terms.tsv`` (``#`` lines are comments)."""
        terms = []
        for n, line in enumerate(lines, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 4 or parts[1] not in LEVELS or parts[2] not in APPLIES or not normalize(parts[0]):
                raise ValueError(f"rating vocabulary line {n} is not 'term<TAB>level<TAB>applies<TAB>group' "
                                 f"with a level in {LEVELS} and applies in {APPLIES}: {line!r}")
            terms.append(RatingTerm(normalize(parts[0]), parts[1], parts[2], parts[3]))
        return cls(tuple(terms))

    @classmethod
    def load_packaged(cls) -> RatingVocabulary:
        ref = resources.files("tipo") / "data" / "rating_terms.tsv"
        with ref.open("r", encoding="utf-8") as fh:
            return cls.from_lines(fh)

    def matcher(self, rating: Rating | str) -> TermMatcher:
        """The terms forbidden at ``rating``, as a :class:`~tipo.bans.TermMatcher` (made once per
        rating and kept on this vocabulary, which is immutable: no hashing of its terms per call)."""
        rating = Rating(rating)
        made = self.__dict__.setdefault("_matchers", {})
        found = made.get(rating)
        if found is None:
            found = made[rating] = self._matcher(rating)
        return found  # type: ignore[no-any-return]

    def _matcher(self, rating: Rating) -> TermMatcher:
        tag_phrases: dict[tuple[str, ...], str] = {}
        caption_phrases: dict[tuple[str, ...], str] = {}
        exact: dict[str, str] = {}
        allowed = set()
        for t in self.terms:
            if t.level == "allow":
                allowed.add(words(t.term))
                continue
            if rating.allows(t.level):
                continue
            why = (f"'{t.term}' is masked at every rating ({t.group})" if t.level == "always"
                   else f"'{t.term}' is above the {rating.value} rating ({t.group})")
            if t.applies == "rating":
                exact[t.term] = why
                continue
            ws = words(t.term)
            if t.applies in ("tags", "both"):
                tag_phrases.setdefault(ws, why)
            if t.applies in ("captions", "both"):
                caption_phrases.setdefault(ws, why)
        # Caption phrases that are not tag phrases go in caption_phrases only.
        only_caption = {k: v for k, v in caption_phrases.items() if k not in tag_phrases}
        shared = {k: v for k, v in tag_phrases.items() if k in caption_phrases}
        tags_only = {k: v for k, v in tag_phrases.items() if k not in caption_phrases}
        return _RatingMatcher({**shared, **tags_only}, exact, (), only_caption, frozenset(allowed),
                              tags_only=frozenset(tags_only))

    def terms_above(self, rating: Rating | str) -> list[RatingTerm]:
        """The vocabulary rows forbidden at ``rating``."""
        r = Rating(rating)
        return [t for t in self.terms if t.level != "allow" and not r.allows(t.level)]


@dataclass(frozen=True)
class _RatingMatcher(TermMatcher):
    """A matcher whose tag-only phrases (``ass``, ``oral``) do not apply to captions."""

    tags_only: frozenset[tuple[str, ...]] = frozenset()

    @functools.cached_property
    def _caption_by_last(self) -> dict[str, list[tuple[tuple[str, ...], str]]]:
        out: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for phrase, why in {**self.phrases, **self.caption_phrases}.items():
            if phrase not in self.tags_only:
                out.setdefault(phrase[-1], []).append((phrase, why))
        return out


@functools.lru_cache(maxsize=1)
def rating_key() -> str:
    """A digest of the packaged vocabulary and the code that reads and applies it (this module and
    :mod:`tipo.bans`), for caches of what is derived from them."""
    from pathlib import Path

    from . import bans

    data = (resources.files("tipo") / "data" / "rating_terms.tsv").read_bytes()
    code = Path(__file__).read_bytes() + Path(bans.__file__).read_bytes()
    return hashlib.sha256(data + b"\0" + code).hexdigest()[:32]


@functools.lru_cache(maxsize=1)
def default_vocabulary() -> RatingVocabulary:
    """The packaged vocabulary, loaded on first use (``default_vocabulary.cache_clear()`` drops it)."""
    return RatingVocabulary.load_packaged()


def resolve_rating(rating: Rating | str | None, user_rating_tags: Sequence[str]) -> tuple[Rating, str]:
    """The rating in force and where it came from (``option``, ``your tags`` or ``default``).

    Example:
        >>> resolve_rating(None, []), resolve_rating(None, ["nsfw"]), resolve_rating("sensitive", ["explicit"])
        ((<Rating.GENERAL: 'general'>, 'default'), (<Rating.EXPLICIT: 'explicit'>, 'your tags'), (<Rating.SENSITIVE: 'sensitive'>, 'option'))
    """
    if rating is not None:
        return Rating(rating), "option"
    found = [RATING_OF_TAG[normalize(t)] for t in user_rating_tags if normalize(t) in RATING_OF_TAG]
    if found:
        return max(found, key=lambda r: r.rank), "your tags"
    return Rating.GENERAL, "default"


class Forbidden:
    """What one request may not generate: its ban box plus the terms above its rating.

    Tags are checked as written and by their canonical spelling (aliases resolved); results are
    cached, since decoding asks about the same text many times.

    Example:
        >>> f = Forbidden(BanList(["hat"]), Rating.GENERAL)
        >>> f.tag_reason("witch hat"), f.tag_reason("nude"), f.tag_reason("forest")
        ("banned by 'hat'", "'nude' is above the general rating (nudity)", None)
    """

    def __init__(self, bans: BanList, rating: Rating | str, vocabulary: RatingVocabulary | None = None,
                 table: TagTable | None = None) -> None:
        self.bans = bans
        self.rating = Rating(rating)
        self.table = table or default_table()
        self.matcher = bans.matcher | (vocabulary or default_vocabulary()).matcher(self.rating)
        self._tags: dict[str, str | None] = {}

    #: What the forbidden terms are made of, when known (requests' ban boxes and rating with the
    #: packaged vocabulary): equal keys and tables forbid the same terms, so what is worked out
    #: from them can be shared. None for other instances.
    cache_key: tuple[object, ...] | None = None

    @classmethod
    def for_request(cls, request: object, rating: Rating | str, table: TagTable | None = None) -> Forbidden:
        out = cls(BanList.from_request(request, table), rating, table=table)
        out.cache_key = (out.rating.value, tuple(getattr(request, "ban", ())), tuple(getattr(request, "ban_regex", ())))
        return out

    def __bool__(self) -> bool:
        return bool(self.matcher)

    def tag_reason(self, tag: str) -> str | None:
        """Why a tag may not be generated, or None."""
        if tag in self._tags:
            return self._tags[tag]
        why = self.matcher.tag_reason(tag)
        if why is None:
            canon = self.table.canonical(tag)
            if canon != normalize(tag):
                why = self.matcher.tag_reason(canon)
        self._tags[tag] = why
        return why

    def word_reason(self, previous: Sequence[str], word: str) -> str | None:
        """Why a caption word (after ``previous`` words) may not be generated, or None."""
        return self.matcher.word_reason(previous, word)

    def caption_reasons(self, text: str) -> list[tuple[str, str]]:
        return self.matcher.caption_reasons(text)
