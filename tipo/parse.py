"""Parsing what the model wrote (docs/FORMAT.md section 4).

:func:`parse_text` reads a prompt plus its completion as one text and returns the fields in
a :class:`Parsed`. Keys open fields; any other line continues the field above it; the first
occurrence of a key wins; ``<|empty|>`` is empty; nothing is stripped by character set.

Example:
    >>> p = parse_text("target: <|short|>\\ntag: 1girl, glasses")
    >>> p.tags[Category.GENERAL]
    ['glasses']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .planner import KEYS, META_KEYS, Plan
from .request import Length
from .tags import Category, TagTable, default_table, normalize

__all__ = ["KEYS", "Parsed", "parse_completion", "parse_text", "tags_to_json_order"]

_KEY_LINE = re.compile(r"^(" + "|".join(re.escape(k) for k in KEYS) + r"):(.*)$", re.S)
_META_BY_KEY = {key: category for category, key in META_KEYS}
_EMPTY = "<|empty|>"
# JSON key order of the golden parse files.
JSON_ORDER = ("special", "general", "meta", "rating", "artist", "characters", "copyrights", "quality")


@dataclass
class Parsed:
    """Fields read from a model text. Tag lists are normalised and deduplicated in order."""

    tags: dict[Category, list[str]] = field(default_factory=lambda: {c: [] for c in Category})
    short: str = ""
    long: str = ""
    aspect_ratio: float | None = None
    length: Length | None = None
    task: str | None = None
    gen_meta: bool = False
    keys_seen: tuple[str, ...] = ()
    tag_line: list[str] = field(default_factory=list)  # tags of the tag: line, in order

    def to_json(self) -> dict[str, object]:
        """The golden ``parsed`` shape: non-empty categories, then captions."""
        out: dict[str, object] = {}
        for name in JSON_ORDER:
            values = self.tags[Category(name)]
            if values:
                out[name] = list(values)
        if self.short:
            out["short"] = self.short
        if self.long:
            out["long"] = self.long
        return out


def tags_to_json_order(parsed: Parsed) -> dict[str, object]:
    return parsed.to_json()


def _value(raw: str) -> str:
    text = raw.strip()
    return "" if text == _EMPTY else text


def parse_text(text: str, table: TagTable | None = None) -> Parsed:
    """Parse a TIPO text (prompt plus completion, as decoded) into fields.

    Args:
        text: the whole text; ``\\r\\n`` line ends are accepted.
        table: the tag table used to categorise ``tag:`` values (default: packaged).

    Never raises on any string.
    """
    table = table or default_table()
    fields: dict[str, list[str]] = {}
    order: list[str] = []
    current: str | None = None
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        m = _KEY_LINE.match(line)
        if m:
            key = m.group(1)
            if key in fields:
                current = None  # a repeated key: the first occurrence wins, this one is dropped
                continue
            fields[key] = [m.group(2)]
            order.append(key)
            current = key
        elif current is not None:
            fields[current].append(line)

    out = Parsed(keys_seen=tuple(order))
    seen: set[str] = set()

    def add(category: Category, tag: str) -> None:
        key = table.canonical(tag)
        if key in seen:
            return
        seen.add(key)
        out.tags[category].append(tag)

    for key in order:
        lines = fields[key]
        if key in ("short", "long"):
            body = "\n".join(lines).strip()
            body = "\n".join(part.rstrip() for part in body.split("\n"))
            setattr(out, key, "" if body == _EMPTY else body)
        elif key == "target":
            tokens = " ".join(lines).split()
            for token in tokens:
                name = token[2:-2] if token.startswith("<|") and token.endswith("|>") else ""
                if name in {m.value for m in Length}:
                    out.length = Length(name)
                elif name == "gen_meta":
                    out.gen_meta = True
                elif name:
                    out.task = name
        elif key == "aspect ratio":
            try:
                out.aspect_ratio = float(_value(" ".join(lines)))
            except ValueError:
                out.aspect_ratio = None
        else:
            value = _value("\n".join(lines))
            for part in re.split(r"[,\n]", value):
                tag = normalize(part)
                if not tag or tag == _EMPTY:
                    continue
                if key == "tag":
                    out.tag_line.append(tag)
                    add(table.category(tag), tag)
                else:
                    add(_META_BY_KEY[key], tag)
    return out


def parse_completion(plan: Plan, completion: str, table: TagTable | None = None) -> Parsed:
    """The fields the MODEL wrote: the completion read as the continuation of the plan's open field.

    The prompt (the user's text echoed back) is not parsed, so nothing the user typed can be
    taken for model output. Tags the user gave on the open ``tag:`` line are not in the
    completion; the result merges them back (:func:`tipo.result.finish`).

    Example:
        >>> from tipo.planner import plan
        >>> from tipo.request import Request
        >>> p = plan(Request("1girl, forest", output="tags"))
        >>> parse_completion(p, ", smile, hat").tags[Category.GENERAL]
        ['smile', 'hat']
    """
    return parse_text(f"{plan.open_field.value}:" + completion, table)
