"""The request a user makes, and the sampling settings, as frozen validated dataclasses."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import TypeVar

from .bans import check_ban_entry, split_ban_box
from .errors import RequestError
from .options import by_name, default
from .rating import Rating
from .safety import Homoglyphs
from .terms import CaptionKind, Length, Output

__all__ = ["CaptionKind", "Length", "Output", "Request", "Sampling", "resolve_caption_kind"]

_T = TypeVar("_T")


#: Largest image side in pixels a request may name, and the range of aspect ratios (width / height),
#: as tipo.options declares them.
MAX_SIDE = int(by_name("width").max or 0)
ASPECT_RANGE = (float(by_name("aspect_ratio").min or 0), float(by_name("aspect_ratio").max or 0))
# A caption is "long" when it has several paragraphs, more than this many sentences, or
# more than this many words. TIPO's short captions are one to a few sentences.
LONG_CAPTION_SENTENCES = 3
LONG_CAPTION_WORDS = 60
_SENTENCE_END = re.compile(r"[.!?。！？](?:\s|$)")


def resolve_caption_kind(caption: str) -> CaptionKind:
    """The automatic caption-kind rule, used when a request does not say.

    Long when the caption spans several lines, or has more than 3 sentences, or more than
    60 words; short otherwise.

    Example:
        >>> resolve_caption_kind("a cat on a windowsill").value
        'short'
    """
    text = caption.strip()
    if "\n" in text:
        return CaptionKind.LONG
    if len(_SENTENCE_END.findall(text)) > LONG_CAPTION_SENTENCES:
        return CaptionKind.LONG
    if len(text.split()) > LONG_CAPTION_WORDS:
        return CaptionKind.LONG
    return CaptionKind.SHORT


def _enum(kind: type[enum.Enum], value: object, name: str) -> enum.Enum:
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in kind)  # type: ignore[attr-defined]
        raise RequestError(f"{name}={value!r} is not valid; choose one of {choices}") from None


def _check_text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(f"{name} holds a lone surrogate (U+{ord(value[exc.start]):04X} at character {exc.start}), "
                           "which is not text; pass valid Unicode") from None
    return value


@dataclass(frozen=True)
class Request:
    """One prompt-expansion request.

    Args:
        tags: the user's tag text exactly as typed in a host app (weights, escapes,
            ``<lora:…>`` tags and ``BREAK`` included).
        caption: optional natural-language text.
        caption_kind: ``"short"``/``"long"``; ``None`` picks by :func:`resolve_caption_kind`.
        length: size class of the result (``very_short``, ``short``, ``long``, ``very_long``).
        width, height: target image size in pixels; sets the ``aspect ratio`` line.
        aspect_ratio: width / height, instead of width and height.
        output: ``both`` (more tags and a caption), ``tags``, or ``caption``.
        gen_meta: ask the model to fill in missing meta lines.
        ban: the ban box: plain tags (a tag equal to one or containing it as whole words
            is not generated, aliases resolved), ``*`` wildcards and regular expressions
            (:mod:`tipo.bans`); masked in every category and in the caption. A string is split
            on commas.
        ban_regex: regular expressions, always read as such, that must match the whole
            normalised tag.
        rating: the content rating (``general``, ``sensitive``, ``questionable``,
            ``explicit``, ``unrestricted``): terms above it are not generated
            (:mod:`tipo.rating`); None: the rating tag among your tags, else ``general``.
        homoglyphs: look-alike and invisible characters in your text: ``fold`` (default),
            ``keep`` or ``refuse`` (:mod:`tipo.safety`).

    Example:
        >>> Request("1girl, forest", length="short").length.value
        'short'
    """

    tags: str = default("tags")  # type: ignore[assignment]
    caption: str = default("caption")  # type: ignore[assignment]
    caption_kind: CaptionKind | None = default("caption_kind")  # type: ignore[assignment]
    length: Length = Length(default("length"))
    width: int | None = default("width")  # type: ignore[assignment]
    height: int | None = default("height")  # type: ignore[assignment]
    aspect_ratio: float | None = default("aspect_ratio")  # type: ignore[assignment]
    output: Output = Output(default("output"))
    gen_meta: bool = default("gen_meta")  # type: ignore[assignment]
    ban: tuple[str, ...] = default("ban")  # type: ignore[assignment]
    ban_regex: tuple[str, ...] = default("ban_regex")  # type: ignore[assignment]
    rating: Rating | None = default("rating")  # type: ignore[assignment]
    homoglyphs: Homoglyphs = Homoglyphs(default("homoglyphs"))

    def __post_init__(self) -> None:
        _check_text(self.tags, "tags")
        _check_text(self.caption, "caption")
        set_ = object.__setattr__
        set_(self, "length", _enum(Length, self.length, "length"))
        set_(self, "output", _enum(Output, self.output, "output"))
        if self.caption_kind is not None:
            set_(self, "caption_kind", _enum(CaptionKind, self.caption_kind, "caption_kind"))
        if self.rating is not None:
            set_(self, "rating", _enum(Rating, self.rating, "rating"))
        set_(self, "homoglyphs", _enum(Homoglyphs, self.homoglyphs, "homoglyphs"))
        if not isinstance(self.gen_meta, bool):
            raise RequestError(f"gen_meta must be True or False, got {self.gen_meta!r}")
        for name in ("width", "height"):
            if getattr(self, name) is not None:
                by_name(name).check(getattr(self, name))
        if (self.width is None) != (self.height is None):
            raise RequestError("give both width and height, or neither (or use aspect_ratio)")
        if self.aspect_ratio is not None:
            if self.width is not None:
                raise RequestError("give either width/height or aspect_ratio, not both")
            by_name("aspect_ratio").check(self.aspect_ratio)
        # The ban box as one text: split on commas outside regex brackets (``a{1,3}`` stays whole).
        ban = split_ban_box(self.ban) if isinstance(self.ban, str) else self.ban
        set_(self, "ban", by_name("ban").to_object(ban))
        set_(self, "ban_regex", by_name("ban_regex").to_object(self.ban_regex))
        for entry in self.ban:
            check_ban_entry(entry)
        for pattern in self.ban_regex:
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as exc:
                raise RequestError(
                    f"ban_regex {pattern!r} is not a valid regular expression ({exc}); "
                    "fix it or pass the tag in ban= instead"
                ) from None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of every field (enums as their values, tuples as lists, None kept).

        Example:
            >>> Request.from_dict(Request("1girl", ban=("hat",)).to_dict()) == Request("1girl", ban=("hat",))
            True
        """
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Request:
        """The inverse of :meth:`to_dict` (missing fields: defaults; unknown ones: an error)."""
        return _from_dict(cls, data)

    @property
    def ratio(self) -> float | None:
        """width / height, or the given aspect ratio, or None."""
        if self.aspect_ratio is not None:
            return float(self.aspect_ratio)
        if self.width is not None and self.height is not None:
            return self.width / self.height
        return None

    @property
    def resolved_caption_kind(self) -> CaptionKind | None:
        """The caption kind in force: the given one, else the automatic rule; None without caption."""
        if not self.caption.strip():
            return None
        if self.caption_kind is not None:
            return self.caption_kind  # type: ignore[return-value]
        return resolve_caption_kind(self.caption)


@dataclass(frozen=True)
class Sampling:
    """Sampling settings and the seed. Defaults match the reference UI's defaults.

    Args:
        temperature: softmax temperature; 0 means greedy.
        top_p, top_k, min_p: nucleus, top-k (0 = off) and min-p filters.
        repetition_penalty: CTRL-style penalty on tokens already in the context (1 = off).
        max_new_tokens: hard cap on generated tokens.
        seed: any integer >= 0 (0 is a seed like any other); None draws a fresh one, which
            the result reports so the run can be repeated.

    Example:
        >>> Sampling(seed=0).seed
        0
    """

    temperature: float = default("temperature")  # type: ignore[assignment]
    top_p: float = default("top_p")  # type: ignore[assignment]
    top_k: int = default("top_k")  # type: ignore[assignment]
    min_p: float = default("min_p")  # type: ignore[assignment]
    repetition_penalty: float = default("repetition_penalty")  # type: ignore[assignment]
    max_new_tokens: int = default("max_new_tokens")  # type: ignore[assignment]
    seed: int | None = default("seed")  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for f in fields(self):  # bounds from tipo.options, the one declaration of each setting
            if f.name != "seed" or self.seed is not None:
                by_name(f.name).check(getattr(self, f.name))

    def with_seed(self, seed: int | None) -> Sampling:
        """A copy with the seed set."""
        return replace(self, seed=seed)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of every field."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Sampling:
        """The inverse of :meth:`to_dict` (missing fields: defaults; unknown ones: an error)."""
        return _from_dict(cls, data)


def _to_dict(obj: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        out[f.name] = value.value if isinstance(value, enum.Enum) else list(value) if isinstance(value, tuple) else value
    return out


def _from_dict(cls: type[_T], data: Mapping[str, object]) -> _T:
    if not isinstance(data, Mapping):
        raise RequestError(f"{cls.__name__}.from_dict needs a JSON object, got {type(data).__name__}")
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise RequestError(f"unknown {cls.__name__} field(s) {unknown}; valid: {', '.join(names)}")
    return cls(**data)

