"""Look-alike and invisible characters in the user's text, screened before planning.

A single letter from another script that looks Latin (Cyrillic ``о`` in ``fоrest``, the
palochka ``ӏ`` in ``1girӏ``, Greek ``ο``, fullwidth ``ｆ``, mathematical ``𝐟``) changes the
tokens the language model and the image model's text encoder see, while a reader sees the same
word; zero-width and bidi control characters are invisible to the reader altogether. This module
finds both, in the user's tags and caption, and by default folds look-alikes to the Latin letters
they imitate and removes invisible controls, so the model plans from, and the rendered prompt
carries, the text the reader saw. Genuine text in other scripts (Russian, Greek, Japanese ...) is
left as it is. Every change is reported (:class:`TextChange`); ``homoglyphs="keep"`` only reports,
``"refuse"`` rejects such text.

Rules (``docs/safety.md`` has the full description and the limits):

* Look-alikes come from the Unicode confusables data (UTS #39, Unicode 17.0.0; the subset whose
  skeleton is ASCII ships as ``data/confusables-ascii.txt`` with its license); fullwidth forms,
  mathematical alphanumerics and Latin ligatures fold by their compatibility decomposition (NFKC).
* A word (a run of characters between spaces and ASCII punctuation) is folded when it mixes
  look-alikes with ASCII letters or digits and has no letter of another script without a Latin
  look-alike (``fоrest``, ``1girӏ``). A word made only of look-alikes (``сат``) is folded when
  the text around it is Latin: more Latin words than words of other scripts in the same field
  (in the tag field also when there are none of either). Words with letters of another script
  that do not look Latin (``мыла``, ``λόγος``, ``東京``) are never changed.
* Letters that are Latin already (``é``, ``ß``, Turkish ``ı``) are kept in captions; in tags,
  which are Danbooru's ASCII spellings, Latin look-alikes such as ``ı`` or ``ɑ`` fold too.
* Invisible characters (format controls: zero-width space/joiners, bidi embeddings and
  isolates, word joiner, BOM, soft hyphen, Unicode tag characters; Hangul fillers; stray
  variation selectors; control characters other than tab and newline) are removed, except a
  zero-width joiner or non-joiner between two characters of a non-Latin script or emoji, where
  it shapes the text (Persian, Indic scripts, emoji sequences).

Example:
    >>> text, changes = screen_text("1girӏ, fоrest", "tags")
    >>> text
    '1girl, forest'
    >>> [c.why for c in changes][0]
    "Cyrillic 'ӏ' (U+04CF) looks like Latin 'l'"
    >>> screen_text("Мама мыла раму", "caption")[1]
    []
"""

from __future__ import annotations

import enum
import functools
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import TYPE_CHECKING, Any

from .errors import RequestError

if TYPE_CHECKING:  # pragma: no cover
    from .request import Request

__all__ = [
    "Blocked",
    "Homoglyphs",
    "SafetyReport",
    "TextChange",
    "confusables",
    "count_lookalikes",
    "screen_request",
    "screen_text",
]


class Homoglyphs(str, enum.Enum):
    """What to do with look-alike and invisible characters in the user's text."""

    FOLD = "fold"  # fold look-alikes to Latin, remove invisible characters (default)
    KEEP = "keep"  # leave the text as typed; still list what was found
    REFUSE = "refuse"  # reject the request with an error naming the characters


@dataclass(frozen=True)
class TextChange:
    """One word of the user's text that was (or, with ``keep``, would have been) changed.

    Attributes:
        field: ``tags`` or ``caption``.
        original: the word as typed (invisible characters included).
        changed: the word as the model sees it (equal to ``original`` when kept).
        why: what was found, character by character.
        action: ``folded`` (look-alikes folded), ``removed`` (only invisible characters
            removed) or ``kept`` (``homoglyphs="keep"``).
    """

    field: str
    original: str
    changed: str
    why: str
    action: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "original": self.original, "changed": self.changed, "why": self.why,
                "action": self.action}


@dataclass(frozen=True)
class Blocked:
    """Generated text removed after decoding because it is banned or above the rating (decoding
    masks such terms, so this is the second line of defence: normally empty)."""

    text: str
    where: str  # a tag category, or "caption"
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text, "where": self.where, "why": self.why}


@dataclass(frozen=True)
class SafetyReport:
    """What the safety layer did for one request (``Expansion.safety``).

    Attributes:
        homoglyphs: the mode (``fold``, ``keep``, ``refuse``).
        text_changes: look-alike and invisible characters found in the user's text.
        rating: the content rating in force; ``rating_source``: ``option``, ``your tags`` or
            ``default``; ``rating_line``: whether the model input carries it as a ``rating:`` line.
        bans: the ban-box entries and how each was read (``tag``, ``wildcard``, ``regex``).
        blocked: generated tags or caption sentences removed after decoding.
    """

    homoglyphs: str = Homoglyphs.FOLD.value
    text_changes: tuple[TextChange, ...] = ()
    rating: str = "general"
    rating_source: str = "default"
    rating_line: bool = False
    bans: tuple[tuple[str, str], ...] = ()
    blocked: tuple[Blocked, ...] = ()

    def __bool__(self) -> bool:
        """True when the layer changed something: characters folded or removed (or found, with
        ``keep``), or generated text removed after decoding."""
        return bool(self.text_changes or self.blocked)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SafetyReport:
        """The inverse of :meth:`to_dict`."""
        return cls(
            homoglyphs=data.get("homoglyphs", Homoglyphs.FOLD.value),
            text_changes=tuple(TextChange(**c) for c in data.get("text_changes", ())),
            rating=data.get("rating", "general"),
            rating_source=data.get("rating_source", "default"),
            rating_line=bool(data.get("rating_line", False)),
            bans=tuple((b["entry"], b["kind"]) for b in data.get("bans", ())),
            blocked=tuple(Blocked(**b) for b in data.get("blocked", ())),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "homoglyphs": self.homoglyphs,
            "text_changes": [c.to_dict() for c in self.text_changes],
            "rating": self.rating,
            "rating_source": self.rating_source,
            "rating_line": self.rating_line,
            "bans": [{"entry": e, "kind": k} for e, k in self.bans],
            "blocked": [b.to_dict() for b in self.blocked],
        }


# -- the data ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def confusables() -> dict[str, str]:
    """Character -> the ASCII skeleton it is confusable with (UTS #39), from the packaged subset.

    Loaded on first use; ``confusables.cache_clear()`` drops it.
    """
    ref = resources.files("tipo") / "data" / "confusables-ascii.txt"
    out: dict[str, str] = {}
    with ref.open("r", encoding="utf-8") as fh:
        for line in fh:
            body = line.split("#", 1)[0].strip()
            if not body:
                continue
            source, target, _kind = (part.strip() for part in body.split(";"))
            out[chr(int(source, 16))] = "".join(chr(int(x, 16)) for x in target.split())
    return out


def _skeleton(text: str, table: dict[str, str]) -> str:
    text = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFD", "".join(table.get(c, c) for c in text))


@functools.lru_cache(maxsize=1)
def _ascii_by_skeleton() -> dict[str, tuple[str, ...]]:
    """Skeleton -> the printable ASCII characters with that skeleton (``l`` -> ``l 1 I |``)."""
    table = confusables()
    groups: dict[str, list[str]] = {}
    for code in range(33, 127):
        a = chr(code)
        groups.setdefault(_skeleton(a, table), []).append(a)
    return {k: tuple(v) for k, v in groups.items()}


# Blocks folded by compatibility decomposition: fullwidth forms, mathematical alphanumerics,
# Latin ligatures. Their NFKC form is the letter they style.
_COMPAT_RANGES = ((0xFF01, 0xFF5E), (0x1D400, 0x1D7FF), (0xFB00, 0xFB06))
# Invisible characters that are not format controls (category Cf).
_INVISIBLE_EXTRA = frozenset("\u034f\u115f\u1160\u3164\uffa0\u180b\u180c\u180d\u180f\u2800")
_JOINERS = frozenset("\u200c\u200d")
_KEEP_CONTROLS = frozenset("\t\n\r")


def _is_compat(c: str) -> bool:
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in _COMPAT_RANGES)


def _is_variation_selector(c: str) -> bool:
    o = ord(c)
    return 0xFE00 <= o <= 0xFE0F or 0xE0100 <= o <= 0xE01EF


def _is_invisible(c: str) -> bool:
    if c in _KEEP_CONTROLS:
        return False
    cat = unicodedata.category(c)
    return cat in ("Cf", "Cc") or c in _INVISIBLE_EXTRA or _is_variation_selector(c)


def _is_latin_letter(c: str) -> bool:
    return unicodedata.category(c).startswith("L") and unicodedata.name(c, "").startswith("LATIN ")


def _is_accented_ascii(c: str) -> bool:
    """``é``, ``ñ``: an ASCII letter plus combining marks (a genuine letter, not a look-alike)."""
    d = unicodedata.normalize("NFD", c)
    return len(d) > 1 and d[0].isascii() and d[0].isalpha() and all(unicodedata.category(x).startswith("M") for x in d[1:])


def _script(c: str) -> str:
    """A readable script (or block) name for reports: the first word of the character's name."""
    name = unicodedata.name(c, "")
    if not name:
        return f"U+{ord(c):04X}"
    first = name.split()[0]
    return {"MATHEMATICAL": "mathematical", "FULLWIDTH": "fullwidth", "HALFWIDTH": "halfwidth"}.get(
        first, first.capitalize())


def _target(c: str, field: str) -> str | None:
    """The ASCII text a non-ASCII character imitates, or None (not a look-alike of ASCII)."""
    if c.isascii():
        return None
    if _is_compat(c):
        folded = unicodedata.normalize("NFKC", c)
        return folded if folded.isascii() and folded.strip() else None
    if _is_accented_ascii(c):
        return None
    if field != "tags" and _is_latin_letter(c):
        return None
    table = confusables()
    if c not in table and unicodedata.normalize("NFD", c) == c:
        return None
    skel = _skeleton(c, table)
    if not skel or not all(32 < ord(x) < 127 for x in skel):
        return None
    return skel


def _choose(c: str, skel: str, neighbours: str) -> str:
    """Pick the ASCII spelling of a look-alike among the ASCII characters sharing its skeleton
    (``l``, ``1``, ``I`` and ``|`` all have skeleton ``l``): by the character's own case or kind,
    else by its neighbours'."""
    if _is_compat(c):
        return skel
    candidates = list(_ascii_by_skeleton().get(skel, ()))
    if skel not in candidates:
        candidates.append(skel)
    if len(candidates) == 1:
        return candidates[0]
    cat = unicodedata.category(c)
    if cat == "Lu":
        want = "upper"
    elif cat == "Ll":
        want = "lower"
    elif cat in ("Nd", "No", "Nl"):
        want = "digit"
    elif cat.startswith("L"):
        letters = [x for x in neighbours if x.isascii() and x.isalpha()]
        want = "upper" if letters and all(x.isupper() for x in letters) else "lower"
    else:
        return skel

    def score(a: str) -> tuple[int, int]:
        single = len(a) == 1
        if want == "upper":
            ok = a.isalpha() and a.isupper()
        elif want == "lower":
            ok = a.isalpha() and a.islower()
        else:
            ok = a.isdigit()
        return (0 if ok else 1, 0 if single else 1)

    return min(candidates, key=score)


# -- words ----------------------------------------------------------------------------------

def _is_separator(c: str) -> bool:
    return c.isspace() or (c.isascii() and not c.isalnum() and c not in "\x00")


def _words(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word: runs of characters between whitespace and ASCII punctuation."""
    spans = []
    start = None
    for i, c in enumerate(text):
        sep = _is_separator(c) and not _is_invisible(c)
        if sep:
            if start is not None:
                spans.append((start, i))
                start = None
        elif start is None:
            start = i
    if start is not None:
        spans.append((start, len(text)))
    return spans


@dataclass
class _Word:
    start: int
    end: int
    text: str
    targets: dict[int, str]  # index in text -> ASCII target
    invisible: list[int]  # indexes of invisible characters to remove
    latin: bool  # has an ASCII letter/digit or a Latin letter
    foreign: bool  # has a letter of another script with no Latin look
    compat_only: bool  # every look-alike is a compatibility form (fullwidth, math)


def _read_word(text: str, start: int, end: int, field: str) -> _Word:
    word = text[start:end]
    targets: dict[int, str] = {}
    invisible: list[int] = []
    latin = foreign = False
    for i, c in enumerate(word):
        if _is_invisible(c):
            if c in _JOINERS or _is_variation_selector(c):
                before = word[i - 1] if i > 0 else ""
                after = word[i + 1] if i + 1 < len(word) else ""
                if c in _JOINERS and _shaping(before) and _shaping(after):
                    continue
                if _is_variation_selector(c) and before and not before.isascii() and not _is_invisible(before):
                    continue
            invisible.append(i)
            continue
        if c.isascii():
            latin = latin or c.isalnum()
            continue
        t = _target(c, field)
        if t is not None:
            targets[i] = t
        elif unicodedata.category(c).startswith("L"):
            if _is_latin_letter(c):
                latin = True
            else:
                foreign = True
    compat_only = bool(targets) and all(_is_compat(word[i]) for i in targets)
    return _Word(start, end, word, targets, invisible, latin, foreign, compat_only)


def _shaping(c: str) -> bool:
    """A character next to which a zero-width (non-)joiner is meaningful: a non-Latin letter or
    mark, or an emoji / symbol."""
    if not c or c.isascii():
        return False
    cat = unicodedata.category(c)
    return (cat.startswith(("L", "M")) and not _is_latin_letter(c)) or cat in ("So", "Sk")


def _describe(word: _Word, fold: dict[int, str]) -> str:
    parts = []
    for i, t in sorted(fold.items()):
        c = word.text[i]
        parts.append(f"{_script(c)} '{c}' (U+{ord(c):04X}) looks like Latin '{t}'")
    for i in word.invisible:
        c = word.text[i]
        name = unicodedata.name(c, "control character").lower()
        parts.append(f"invisible {name} (U+{ord(c):04X})")
    return "; ".join(parts)


def screen_text(text: str, field: str, mode: Homoglyphs | str = Homoglyphs.FOLD) -> tuple[str, list[TextChange]]:
    """Fold look-alikes and remove invisible characters in one field of the user's text.

    Args:
        text: the text as typed.
        field: ``tags`` or ``caption`` (the rules differ slightly, see the module docstring).
        mode: ``fold`` (change the text), ``keep`` (report only) or ``refuse`` (raise
            :class:`~tipo.errors.RequestError` when anything would change).

    Returns:
        The text to use and the list of changes (empty when the text is clean).

    Example:
        >>> screen_text("ｆｏｒｅｓｔ\\u200b", "tags")[0]
        'forest'
    """
    mode = Homoglyphs(mode)
    folded, changes, _ = _screen(text, field, mode)
    if changes and mode is Homoglyphs.REFUSE:
        first = changes[0]
        more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
        shown = first.original.encode("unicode_escape").decode("ascii")
        raise RequestError(
            f"the {field} contain look-alike or invisible characters: '{shown}': {first.why}{more}; "
            "retype them in plain Latin letters, or use homoglyphs 'fold' (fold them) or 'keep' (keep them)"
        )
    return (text if mode is Homoglyphs.KEEP else folded), changes


def _screen(text: str, field: str, mode: Homoglyphs) -> tuple[str, list[TextChange], int]:
    """(folded text, changes, number of characters folded or removed)."""
    if text.isascii() and text.isprintable():
        return text, [], 0
    words = [_read_word(text, s, e, field) for s, e in _words(text)]
    latin_words = sum(1 for w in words if w.latin and not w.foreign)
    foreign_words = sum(1 for w in words if w.foreign)
    latin_context = latin_words > foreign_words or (field == "tags" and latin_words == foreign_words == 0)
    out: list[str] = []
    pos = 0
    count = 0
    changes: list[TextChange] = []
    for w in words:
        fold: dict[int, str] = {}
        if w.targets and not w.foreign:
            if w.latin or w.compat_only or latin_context:
                fold = {i: _choose(w.text[i], t, w.text) for i, t in w.targets.items()}
        if not fold and not w.invisible:
            continue
        drop = set(w.invisible)
        new = "".join(fold.get(i, c) for i, c in enumerate(w.text) if i not in drop)
        count += len(fold) + len(drop)
        action = "kept" if mode is Homoglyphs.KEEP else ("folded" if fold else "removed")
        changes.append(TextChange(field, w.text, w.text if mode is Homoglyphs.KEEP else new, _describe(w, fold), action))
        out.append(text[pos:w.start])
        out.append(new)
        pos = w.end
    out.append(text[pos:])
    return "".join(out), changes, count


def screen_request(request: Request) -> tuple[Request, tuple[TextChange, ...]]:
    """The request with its tags and caption screened by its ``homoglyphs`` mode, and the changes.

    Example:
        >>> from tipo.request import Request
        >>> req, changes = screen_request(Request("1girl, fоrest"))
        >>> req.tags, changes[0].action
        ('1girl, forest', 'folded')
    """
    mode = Homoglyphs(getattr(request, "homoglyphs", Homoglyphs.FOLD))
    tags, tag_changes = screen_text(request.tags, "tags", mode)
    caption, caption_changes = screen_text(request.caption, "caption", mode)
    changes = tuple(tag_changes + caption_changes)
    if not changes or mode is Homoglyphs.KEEP:
        return request, changes
    return replace(request, tags=tags, caption=caption), changes


def count_lookalikes(texts: Iterable[str] | str, field: str = "caption") -> int:
    """How many characters :func:`screen_text` would fold or remove (a metric for evaluations).

    Example:
        >>> count_lookalikes("fоrest\\u200b and ｓｋｙ")
        5
    """
    if isinstance(texts, str):
        texts = [texts]
    return sum(_screen(text, field, Homoglyphs.FOLD)[2] for text in texts)
