"""Rendering an expansion through a template with placeholders (docs/FORMAT.md section 6).

Placeholders: ``<|special|>``, ``<|characters|>``, ``<|copyrights|>``, ``<|artist|>``,
``<|general|>``, ``<|quality|>``, ``<|meta|>``, ``<|rating|>``, ``<|extended|>`` (the caption:
the user's caption, whole and first, followed by the caption the model wrote; for tag-only
input the model's caption) and ``<|generated|>`` (the model's caption alone; a template with
both placeholders shows the model's sentences twice). Empty placeholders vanish with their
trailing comma; the result has no doubled spaces, no empty comma slots and at most one blank
line in a row.

Example:
    >>> render_template("<|special|>, <|general|>, <|quality|>", {"special": "1girl", "general": ""})
    '1girl'
"""

from __future__ import annotations

import enum
import re

from .errors import RequestError

__all__ = ["PLACEHOLDERS", "Preset", "first_tag_placeholder", "render_template", "resolve_template", "validate_template"]

PLACEHOLDERS = (
    "special", "characters", "copyrights", "artist", "general",
    "quality", "meta", "rating", "extended", "generated",
)
CAPTION_PLACEHOLDERS = ("extended", "generated")

_TAGS = "<|special|>, <|characters|>, <|copyrights|>, <|artist|>, <|general|>, <|quality|>, <|meta|>, <|rating|>"
_CAPTION = "<|extended|>"


class Preset(str, enum.Enum):
    """Built-in templates."""

    TAGS = "tags"  # tags only
    CAPTION = "caption"  # caption only
    BOTH = "both"  # tags first, then the caption (default)
    CAPTION_FIRST = "caption_first"  # caption first, then the tags

    @property
    def text(self) -> str:
        return {
            Preset.TAGS: _TAGS,
            Preset.CAPTION: _CAPTION,
            Preset.BOTH: _TAGS + "\n\n" + _CAPTION,
            Preset.CAPTION_FIRST: _CAPTION + "\n\n" + _TAGS,
        }[self]


_PLACEHOLDER = re.compile(r"<\|([a-z_]+)\|>")
_SENTINEL = "\x00"


def validate_template(template: str) -> str:
    """Check a template's placeholders; an unknown one is an error that lists the valid names."""
    if not isinstance(template, str):
        raise RequestError(f"template must be a string, got {type(template).__name__}")
    for name in _PLACEHOLDER.findall(template):
        if name not in PLACEHOLDERS:
            valid = ", ".join(f"<|{p}|>" for p in PLACEHOLDERS)
            raise RequestError(f"template placeholder <|{name}|> is unknown; use one of {valid}")
    return template


def first_tag_placeholder(template: str) -> str | None:
    """The first placeholder of a template that shows tags (not one of the two captions), or None.

    Example:
        >>> first_tag_placeholder("<|extended|>"), first_tag_placeholder("<|extended|>. <|general|>, <|meta|>")
        (None, 'general')
    """
    return next((name for name in _PLACEHOLDER.findall(template) if name not in CAPTION_PLACEHOLDERS), None)


def resolve_template(template: str | Preset | None) -> str:
    """A preset name, a Preset, a template text, or None (the default preset) -> template text."""
    if template is None:
        return Preset.BOTH.text
    if isinstance(template, Preset):
        return template.text
    if isinstance(template, str) and template.strip() in {p.value for p in Preset}:
        return Preset(template.strip()).text
    _check_not_a_mistyped_preset(template)
    return validate_template(template)


def _check_not_a_mistyped_preset(template: object) -> None:
    """A one-word template without placeholders that resembles a preset name (``tag``, ``Both``,
    ``caption-first``) is a typo, not a template whose whole output is that word."""
    if not isinstance(template, str) or _PLACEHOLDER.search(template):
        return
    word = template.strip()
    if not re.fullmatch(r"[A-Za-z][A-Za-z_ -]{0,30}", word) or len(word.split()) > 2:
        return
    import difflib

    presets = [p.value for p in Preset]
    close = difflib.get_close_matches(word.lower().replace("-", "_").replace(" ", "_"), presets, n=1, cutoff=0.6)
    if close:
        raise RequestError(f"template {word!r} is not a preset and has no <|placeholder|>; did you mean "
                           f"{close[0]!r}? Presets: {', '.join(presets)} (or write a template such as "
                           "'<|general|>, <|extended|>')")


def _clean_line(rendered: str, template_line: str) -> str:
    line = re.sub(_SENTINEL + r"[ \t]*,?[ \t]*", "", rendered)
    line = re.sub(r",(?:[ \t]*,)+", ",", line)  # empty comma slots
    line = re.sub(r"^[ \t]*,[ \t]*", "", line)  # a leading comma
    line = re.sub(r"[ \t]{2,}", " ", line).strip()
    if line.endswith(",") and not template_line.rstrip().endswith(","):
        line = line.rstrip(", \t")
    return "" if set(line) <= {",", " "} else line


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill a template; missing or empty values vanish with their trailing comma."""
    template = validate_template(template)

    def fill(m: re.Match[str]) -> str:
        value = (values.get(m.group(1)) or "").strip()
        return value if value else _SENTINEL

    out_lines: list[str] = []
    for template_line in template.replace("\r\n", "\n").split("\n"):
        rendered = _PLACEHOLDER.sub(fill, template_line)
        # A value may itself span lines (a multi-paragraph caption).
        parts = rendered.split("\n")
        for i, part in enumerate(parts):
            out_lines.append(_clean_line(part, template_line if i == len(parts) - 1 else part))
    text = "\n".join(out_lines).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text).strip()
