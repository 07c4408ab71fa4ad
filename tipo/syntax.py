"""The host apps' prompt syntax: A1111/ComfyUI attention weights, escapes, BREAK, extra networks.

:func:`parse_prompt` takes a prompt as typed in a host app apart into :class:`PromptItem` s:
tags with their weights, ``BREAK`` markers and extra-network tags (``<lora:name:0.8>``).
:func:`render_items` puts them back together. The model only ever sees the bare tags.

Rules (those of the host apps): ``(x)`` multiplies the weight by 1.1, ``[x]`` divides it by
1.1, ``(x:1.3)`` sets a factor of 1.3, brackets nest and multiply, ``\\(`` ``\\)`` ``\\[``
``\\]`` are literal brackets, a group ``(a, b:1.2)`` weights each tag inside. Unbalanced
brackets are taken literally. An item that is a known tag as written (``marker (medium)``)
keeps its parentheses.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_WEIGHT", "ItemKind", "PromptItem", "check_weights", "format_weight", "parse_prompt", "render_items",
           "render_tag"]


class ItemKind(str, enum.Enum):
    TAG = "tag"
    BREAK = "break"
    EXTRA = "extra"  # extra-network tag such as <lora:name:0.8>


@dataclass(frozen=True)
class PromptItem:
    """One item of a host prompt.

    For a tag, ``runs`` holds ``(text, weight)`` pieces (one piece unless parts of the item
    carry different weights) and ``text`` is their plain concatenation; ``source`` is the item as
    the user typed it (outer spaces trimmed) when its brackets are escaped or close inside it, so
    it can be put back unchanged; it is empty when a bracket group spans several items
    (``(a, b:1.2)``) or a bracket is taken literally (``(long hair``, ``marker (medium)``), and
    such items render from their weights with literal brackets escaped. For ``BREAK`` and
    extra-network tags, ``text`` is the literal source text.
    """

    kind: ItemKind
    text: str
    runs: tuple[tuple[str, float], ...] = ()
    source: str = ""

    @property
    def weight(self) -> float:
        """The item's weight (of its first piece when pieces differ)."""
        return self.runs[0][1] if self.runs else 1.0


#: The largest attention weight (in absolute value) a prompt may carry; beyond it (or not a finite
#: number, as from ``(x:1e999)`` or 1000 nested brackets) a weight would turn embeddings into inf/NaN.
MAX_WEIGHT = 1000.0
_ESCAPABLE = "()[]\\"
_EXTRA = re.compile(r"<[A-Za-z0-9_\-]+:[^<>]*>")
_BREAK = re.compile(r"(?<![A-Za-z0-9_])BREAK(?![A-Za-z0-9_])")
_NO_WEIGHT = 1.0


def format_weight(weight: float) -> str:
    """Print a weight cleanly: at most four decimals, no float noise.

    Example:
        >>> format_weight(1.1 * 1.1)
        '1.21'
        >>> format_weight(1.0)
        '1'
    """
    text = f"{round(weight, 4):.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def check_weights(items: tuple[PromptItem, ...] | list[PromptItem], what: str = "prompt") -> None:
    """Raise a clear RequestError when a tag's weight is not finite or beyond :data:`MAX_WEIGHT`.

    Example:
        >>> check_weights(parse_prompt("(x:1000000000)"))
        Traceback (most recent call last):
        ...
        tipo.errors.RequestError: the weight of 'x' in the prompt is 1e+09; weights must be finite numbers within ±1000 (check the (tag:weight) syntax and bracket nesting)
    """
    import math

    from .errors import RequestError

    for item in items:
        for text, weight in item.runs:
            if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
                shown = text if len(text) <= 40 else text[:37] + "..."
                raise RequestError(f"the weight of {shown!r} in the {what} is {weight:g}; weights must be finite "
                                   f"numbers within ±{MAX_WEIGHT:g} (check the (tag:weight) syntax and bracket nesting)")


def _escape(text: str) -> str:
    return "".join("\\" + ch if ch in _ESCAPABLE else ch for ch in text)


def render_tag(text: str, weight: float = 1.0) -> str:
    """Render one tag in host syntax: brackets escaped, ``(text:w)`` when the weight is not 1.

    Example:
        >>> render_tag("marker (medium)", 1.2)
        '(marker \\\\(medium\\\\):1.2)'
    """
    body = _escape(text)
    if format_weight(weight) == "1":
        return body
    return f"({body}:{format_weight(weight)})"


def render_item(item: PromptItem) -> str:
    """Render one item back to host syntax: as typed when it can be, else from its weights."""
    if item.kind is not ItemKind.TAG:
        return item.text
    if item.source:
        return item.source
    return "".join(render_tag(t, w) if t.strip() else t for t, w in item.runs).strip()


def render_items(items: list[PromptItem] | tuple[PromptItem, ...]) -> str:
    """Join items back into a host prompt, comma-separated.

    Example:
        >>> render_items(parse_prompt("1girl, (long hair:1.2), BREAK, [smile], (a, b:1.2)"))
        '1girl, (long hair:1.2), BREAK, [smile], (a:1.2), (b:1.2)'
    """
    return ", ".join(r for r in (render_item(i) for i in items) if r)


def _known_core(chunk: str, is_known: Callable[[str], bool]) -> tuple[int, int] | None:
    """Span of a known tag containing parentheses inside one comma-separated chunk.

    Tries the chunk as written, then with host-syntax wrappers peeled one layer at a time:
    ``((marker (medium)):1.2)`` -> ``(marker (medium))`` -> ``marker (medium)``.
    """
    lo, hi = 0, len(chunk)
    for _ in range(8):
        while lo < hi and chunk[lo].isspace():
            lo += 1
        while hi > lo and chunk[hi - 1].isspace():
            hi -= 1
        core = chunk[lo:hi]
        if "(" in core and core.count("(") == core.count(")") and is_known(core):
            return lo, hi
        if hi - lo < 2 or chunk[lo] not in "([":
            return None
        closing = ")" if chunk[lo] == "(" else "]"
        if chunk[hi - 1] != closing:
            return None
        colon = _weight_suffix_start(chunk, lo, hi - 1) if closing == ")" else None
        lo, hi = lo + 1, (colon if colon is not None else hi - 1)
    return None


def _weight_suffix_start(text: str, open_: int, close: int) -> int | None:
    """Index of the ':' of a ``:1.3`` weight that ends right before ``close``, else None."""
    j = close - 1
    while j > open_ and text[j].isspace():
        j -= 1
    end = j
    while j > open_ and (text[j].isdigit() or text[j] == "."):
        j -= 1
    number = text[j + 1 : end + 1]
    if not number or number == "." or number.count(".") > 1:
        return None
    if j > open_ and text[j] in "+-":
        j -= 1
    while j > open_ and text[j].isspace():
        j -= 1
    if j > open_ and text[j] == ":":
        return j
    return None


def _mark_known_literals(text: str, is_known: Callable[[str], bool] | None) -> set[int]:
    """Indices of '(' ')' that belong to a known tag written as is, e.g. ``marker (medium)``."""
    literal: set[int] = set()
    if is_known is None or "(" not in text:
        return literal
    for seg in re.finditer(r"[^,\n]+", text):
        chunk = seg.group(0)
        if "(" not in chunk or ")" not in chunk:
            continue
        span = _known_core(chunk, is_known)
        if span is None:
            continue
        for i in range(span[0], span[1]):
            if chunk[i] in "()" and (i == 0 or chunk[i - 1] != "\\"):
                literal.add(seg.start() + i)
    return literal


def _match_brackets(text: str, literal: set[int]) -> dict[int, int]:
    """Map each matched opening bracket index to its closing index; escapes skipped.

    A closer matches the nearest open bracket of its kind; openers of the other kind in between
    stay unmatched (literal). Linear time: each opener is pushed and popped at most once.
    """
    pairs: dict[int, int] = {}
    stack: list[tuple[str, int]] = []  # open brackets, innermost last
    depth: dict[str, list[int]] = {"(": [], "[": []}  # per kind: positions in ``stack`` of the open brackets of that kind
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in _ESCAPABLE:
            i += 2
            continue
        if i in literal:
            i += 1
            continue
        if ch in "([":
            depth[ch].append(len(stack))
            stack.append((ch, i))
        elif ch in ")]":
            want = "(" if ch == ")" else "["
            mine = depth[want]
            if mine:
                k = mine.pop()
                pairs[stack[k][1]] = i
                # Mismatched openers above it stay unmatched: drop them (each is dropped once).
                while len(stack) > k + 1:
                    kind, _ = stack.pop()
                    depth[kind].pop()
                stack.pop()
        i += 1
    return pairs


def parse_prompt(text: str, is_known: Callable[[str], bool] | None = None) -> tuple[PromptItem, ...]:
    """Parse a host-app prompt into tags (with weights), BREAKs and extra-network tags.

    Args:
        text: the prompt as typed in A1111 or ComfyUI.
        is_known: tells whether a string is a known tag, so ``marker (medium)`` is kept
            literally; ``None`` treats every unescaped bracket as syntax.

    Never raises on any string; unbalanced brackets are literal characters.

    Example:
        >>> [(i.text, i.weight) for i in parse_prompt("(a, b:1.2), [c]")]
        [('a', 1.2), ('b', 1.2), ('c', 0.9090909090909091)]
    """
    literal = _mark_known_literals(text, is_known)
    pairs = _match_brackets(text, literal)
    closers = {close: open_ for open_, close in pairs.items()}

    # Weight factor of each matched group; "(x:1.3)" uses 1.3 and hides the ":1.3".
    factor: dict[int, float] = {}
    hidden: set[int] = set()
    for open_, close in pairs.items():
        if text[open_] == "[":
            factor[open_] = 1 / 1.1
            continue
        factor[open_] = 1.1
        colon = _weight_suffix_start(text, open_, close)
        if colon is not None:
            number = text[colon + 1 : close].strip()
            try:
                factor[open_] = float(number)
                hidden.update(range(colon, close))
            except ValueError:
                pass

    items: list[PromptItem] = []
    # [characters, weight] pieces of the current item; characters are joined once, at flush
    # (appending to a str held in a list copies it every time: quadratic on one long tag).
    runs: list[tuple[list[str], float]] = []
    weight_stack: list[float] = [1.0]
    chunk_start = 0  # where the current item's text begins (after the last separator)

    def source_of(end: int) -> str:
        # The item as typed, when every bracket in it is escaped or pairs inside it: not when a
        # group spans several items, nor when a bracket was read literally (the host would not).
        pos = chunk_start
        while pos < end:
            ch = text[pos]
            if ch == "\\" and pos + 1 < end and text[pos + 1] in _ESCAPABLE:
                pos += 2
                continue
            if ch in "()[]":
                other = pairs.get(pos, closers.get(pos))
                if other is None or not chunk_start <= other < end:
                    return ""
            pos += 1
        return text[chunk_start:end].strip()

    def flush(end: int) -> None:
        nonlocal chunk_start
        pieces = [("".join(chars), w) for chars, w in runs]
        if any(not t.isspace() for t, _ in pieces if t):
            # Whitespace-only pieces join their neighbours (as lists of strings, joined once).
            merging: list[tuple[list[str], float, bool]] = []  # parts, weight, all whitespace so far
            for t, w in pieces:
                blank = not t.strip()
                if merging and (merging[-1][1] == w or blank):
                    parts, mw, mblank = merging[-1]
                    parts.append(t)
                    merging[-1] = (parts, mw, mblank and blank)
                elif merging and merging[-1][2]:
                    parts = merging[-1][0]
                    parts.append(t)
                    merging[-1] = (parts, w, False)
                else:
                    merging.append(([t], w, blank))
            merged = [("".join(parts), w) for parts, w, _ in merging]
            # Trim outer whitespace, collapse inner whitespace runs per piece.
            cleaned: list[tuple[str, float]] = []
            for idx, (t, w) in enumerate(merged):
                if idx == 0:
                    t = t.lstrip()
                if idx == len(merged) - 1:
                    t = t.rstrip()
                t = re.sub(r"\s+", " ", t)
                if t:
                    cleaned.append((t, w))
            plain = "".join(t for t, _ in cleaned)
            items.append(PromptItem(ItemKind.TAG, plain, tuple(cleaned), source_of(end)))
        runs.clear()
        chunk_start = end

    def add_char(ch: str) -> None:
        w = weight_stack[-1]
        if runs and runs[-1][1] == w:
            runs[-1][0].append(ch)
        else:
            runs.append(([ch], w))

    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if i in hidden:
            i += 1
            continue
        if ch == "\\" and i + 1 < n and text[i + 1] in _ESCAPABLE:
            add_char(text[i + 1])
            i += 2
            continue
        if i in pairs:
            weight_stack.append(weight_stack[-1] * factor[i])
            i += 1
            continue
        if i in closers:
            if len(weight_stack) > 1:
                weight_stack.pop()
            i += 1
            continue
        if ch == "<":
            m = _EXTRA.match(text, i)
            if m:
                flush(i)
                items.append(PromptItem(ItemKind.EXTRA, m.group(0)))
                i = chunk_start = m.end()
                continue
        if ch == "B" and _BREAK.match(text, i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            flush(i)
            items.append(PromptItem(ItemKind.BREAK, "BREAK"))
            i = chunk_start = i + 5
            continue
        if ch in ",\n":
            flush(i)
            i = chunk_start = i + 1
            continue
        add_char(ch)
        i += 1
    flush(n)
    return tuple(items)
