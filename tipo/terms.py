"""The format's terms (closed vocabularies): length classes, output kinds, caption kinds, tasks, fields.

These are the words of the TIPO wire format (docs/FORMAT.md sections 2 and 3) that settings and
plans are made of. They sit below everything else (no tipo imports) so that the settings schema
(:mod:`tipo.options`), the validated request (:mod:`tipo.request`) and the planner
(:mod:`tipo.planner`) all take them from one place.

Example:
    >>> Length("short").tag_range, Task.TAG_TO_LONG.fields
    ((18, 36), (<Field.TAG: 'tag'>, <Field.LONG: 'long'>))
"""

from __future__ import annotations

import enum

__all__ = ["CaptionKind", "Field", "Length", "Output", "Task", "values"]


class Length(str, enum.Enum):
    """The size class of the whole sample (docs/FORMAT.md section 2.2)."""

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


# docs/FORMAT.md section 2.2: the tag-count range and caption size of each length class.
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


class Task(str, enum.Enum):
    """The composite tasks TIPO was trained on (docs/FORMAT.md section 3). Fields are split on ``_to_``."""

    TAG_TO_LONG = "tag_to_long"
    LONG_TO_TAG = "long_to_tag"
    SHORT_TO_TAG = "short_to_tag"
    SHORT_TO_LONG = "short_to_long"
    TAG_TO_SHORT_TO_LONG = "tag_to_short_to_long"
    SHORT_TO_TAG_TO_LONG = "short_to_tag_to_long"
    SHORT_TO_LONG_TO_TAG = "short_to_long_to_tag"

    @property
    def fields(self) -> tuple[Field, ...]:
        """The task's fields in order; the first is the input."""
        return tuple(Field(part) for part in self.value.split("_to_"))

    @property
    def token(self) -> str:
        return f"<|{self.value}|>"


class Field(str, enum.Enum):
    TAG = "tag"
    SHORT = "short"
    LONG = "long"


def values(kind: type[enum.Enum]) -> tuple[str, ...]:
    """The values of a string enum, in declaration order (the choices of a setting)."""
    return tuple(str(m.value) for m in kind)
