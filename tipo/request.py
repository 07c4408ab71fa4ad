"""The request a user makes, and the sampling settings, as frozen validated dataclasses."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

from .errors import RequestError

__all__ = ["CaptionKind", "Length", "Output", "Request", "Sampling", "resolve_caption_kind"]


class Length(str, enum.Enum):
    """The size class of the whole sample (FORMAT.md section 2.2)."""

    VERY_SHORT = "very_short"
    SHORT = "short"
    LONG = "long"
    VERY_LONG = "very_long"

    @property
    def tag_range(self) -> tuple[int, int]:
        """(minimum, cap) number of tags that training used for this class."""
        return _TAG_RANGE[self]

    @property
    def caption_size(self) -> tuple[int, int]:
        """(paragraphs, sentences per paragraph) of captions in training for this class."""
        return _NL_SIZE[self]


_TAG_RANGE = {
    Length.VERY_SHORT: (0, 18),
    Length.SHORT: (18, 36),
    Length.LONG: (36, 48),
    Length.VERY_LONG: (48, 72),
}
_NL_SIZE = {
    Length.VERY_SHORT: (1, 2),
    Length.SHORT: (1, 4),
    Length.LONG: (2, 4),
    Length.VERY_LONG: (3, 6),
}


class Output(str, enum.Enum):
    """What the user wants back."""

    BOTH = "both"  # more tags and a caption
    TAGS = "tags"  # more tags only
    CAPTION = "caption"  # a caption only; the user's tags are kept as given


class CaptionKind(str, enum.Enum):
    """Whether the user's caption is a short one (to be extended) or already a long one."""

    SHORT = "short"
    LONG = "long"


# A caption is "long" when it has several paragraphs, more than this many sentences, or
# more than this many words. TIPO's short captions are one to a few sentences.
#: Largest image side in pixels a request may name, and the range of aspect ratios (width / height).
MAX_SIDE = 65536
ASPECT_RANGE = (0.01, 100.0)
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
        ban: tags that must not be generated (matched as whole tags after normalisation
            and alias resolution, in every category).
        ban_regex: regular expressions; a generated tag whose normalised text fully matches
            one is dropped.

    Example:
        >>> Request("1girl, forest", length="short").length.value
        'short'
    """

    tags: str = ""
    caption: str = ""
    caption_kind: CaptionKind | None = None
    length: Length = Length.LONG
    width: int | None = None
    height: int | None = None
    aspect_ratio: float | None = None
    output: Output = Output.BOTH
    gen_meta: bool = False
    ban: tuple[str, ...] = ()
    ban_regex: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_text(self.tags, "tags")
        _check_text(self.caption, "caption")
        set_ = object.__setattr__
        set_(self, "length", _enum(Length, self.length, "length"))
        set_(self, "output", _enum(Output, self.output, "output"))
        if self.caption_kind is not None:
            set_(self, "caption_kind", _enum(CaptionKind, self.caption_kind, "caption_kind"))
        if not isinstance(self.gen_meta, bool):
            raise RequestError(f"gen_meta must be True or False, got {self.gen_meta!r}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SIDE:
                shown = value if not isinstance(value, int) or abs(value) < 10**12 else f"{str(value)[:8]}... ({len(str(value))} digits)"
                raise RequestError(f"{name}={shown!r} is not valid; give a whole number of pixels in [1, {MAX_SIDE}]")
        if (self.width is None) != (self.height is None):
            raise RequestError("give both width and height, or neither (or use aspect_ratio)")
        if self.aspect_ratio is not None:
            if self.width is not None:
                raise RequestError("give either width/height or aspect_ratio, not both")
            ratio = self.aspect_ratio
            lo, hi = ASPECT_RANGE
            try:
                ok = not isinstance(ratio, bool) and isinstance(ratio, (int, float)) and lo <= float(ratio) <= hi
            except OverflowError:
                ok = False
            if not ok:
                shown = ratio if not isinstance(ratio, int) or abs(ratio) < 10**12 else f"{str(ratio)[:8]}..."
                raise RequestError(f"aspect_ratio={shown!r} is not valid; give width / height as a number in [{lo}, {hi:g}]")
        set_(self, "ban", _as_tuple(self.ban, "ban"))
        set_(self, "ban_regex", _as_tuple(self.ban_regex, "ban_regex"))
        for pattern in self.ban_regex:
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as exc:
                raise RequestError(
                    f"ban_regex {pattern!r} is not a valid regular expression ({exc}); "
                    "fix it or pass the tag in ban= instead"
                ) from None

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


def _as_tuple(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [part for part in value.split(",")] if name == "ban" else [value]
    elif isinstance(value, (list, tuple, frozenset, set)):
        items = list(value)
    else:
        raise RequestError(f"{name} must be a string or a list of strings, got {type(value).__name__}")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise RequestError(f"{name} entries must be strings, got {item!r}")
        _check_text(item, name)
        if item.strip():
            out.append(item.strip() if name == "ban" else item)
    return tuple(out)


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

    temperature: float = 0.5
    top_p: float = 0.95
    top_k: int = 80
    min_p: float = 0.05
    repetition_penalty: float = 1.17
    max_new_tokens: int = 512
    seed: int | None = None

    def __post_init__(self) -> None:
        def number(name: str, lo: float, hi: float, integer: bool = False) -> None:
            v = getattr(self, name)
            ok = not isinstance(v, bool) and isinstance(v, (int,) if integer else (int, float))
            if not ok or not math.isfinite(v) or not lo <= v <= hi:
                kind = "a whole number" if integer else "a number"
                raise RequestError(f"{name}={v!r} is not valid; give {kind} in [{lo}, {hi}]")

        number("temperature", 0.0, 100.0)
        number("top_p", 0.0, 1.0)
        number("top_k", 0, 1_000_000, integer=True)
        number("min_p", 0.0, 1.0)
        number("repetition_penalty", 0.01, 100.0)
        number("max_new_tokens", 1, 1_000_000, integer=True)
        if self.top_p == 0.0:
            raise RequestError("top_p=0 would keep no token; use a value in (0, 1] (1 = off)")
        if self.seed is not None:
            number("seed", 0, 2**63 - 1, integer=True)

    def with_seed(self, seed: int) -> Sampling:
        """A copy with the seed set."""
        from dataclasses import replace

        return replace(self, seed=seed)

