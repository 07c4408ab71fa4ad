"""Encoder-aware prompt text: host syntax to weighted text, CLIP windows and fitted cuts (pure).

A text encoder reads a fixed window: CLIP 77 tokens (75 between BOS and EOS), IF's T5 77 with
EOS. Instead of truncating, tipo

* splits the prompt at ``BREAK`` into segments and keeps each character's attention weight
  (``(forest:1.2)``, ``[x]``; :func:`tipo.syntax.parse_prompt` reads the syntax),
* cuts each segment's tokens into 75-token chunks, moving the tail after the last comma into
  the next chunk when that comma is at most 20 tokens back (A1111's rule, so a tag is not cut
  in half), for encoders that concatenate chunk embeddings (SD, SDXL),
* or keeps the longest head that ends at a comma for encoders that get one window (IF's T5,
  the x4 upscaler's CLIP), and reports what was cut.

Extra-network tags (``<lora:name:0.8>``) are host-app instructions, not text: they are left out
and reported. Everything here is text in, text out; the tokenizer is passed in.

Example:
    >>> p = split_prompt("1girl, (forest:1.2) BREAK smile <lora:x:1>")
    >>> [s.text for s in p.segments], p.extras, p.weighted
    (['1girl, forest', 'smile'], ('<lora:x:1>',), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..syntax import ItemKind, check_weights, parse_prompt

__all__ = ["COMMA_BACKTRACK", "PromptText", "Segment", "Token", "chunk_tokens", "fit_tokens", "split_prompt"]

#: How far back (in tokens) a chunk may end at a comma instead of mid-tag (A1111's default).
COMMA_BACKTRACK = 20


@dataclass(frozen=True)
class Segment:
    """A stretch of prompt between BREAKs: its plain text and the weight of each character."""

    text: str
    weights: tuple[float, ...]

    def lower(self) -> Segment:
        """Lower-cased, weights kept aligned (IF's pipeline lower-cases prompts)."""
        chars: list[str] = []
        weights: list[float] = []
        for ch, w in zip(self.text, self.weights, strict=True):
            low = ch.lower()
            chars.append(low)
            weights.extend([w] * len(low))
        return Segment("".join(chars), tuple(weights))


@dataclass(frozen=True)
class PromptText:
    """A host prompt taken apart: BREAK-separated segments and the extra-network tags left out."""

    source: str
    segments: tuple[Segment, ...]
    extras: tuple[str, ...] = ()

    @property
    def weighted(self) -> bool:
        return any(w != 1.0 for s in self.segments for w in s.weights)

    def joined(self) -> Segment:
        """All segments as one (BREAK becomes a comma), for encoders that get a single window."""
        text: list[str] = []
        weights: list[float] = []
        for seg in self.segments:
            if text:
                text.append(", ")
                weights.extend((1.0, 1.0))
            text.append(seg.text)
            weights.extend(seg.weights)
        return Segment("".join(text), tuple(weights))


def split_prompt(text: str) -> PromptText:
    """Parse a host prompt into weighted segments (one per BREAK-separated stretch).

    Tags on one line are joined with ``", "``; lines with a newline (which CLIP and T5 read as
    a space). Escaped brackets become literal ones; weights follow A1111's rules.

    Example:
        >>> s = split_prompt("a, (b:1.5)").segments[0]
        >>> s.text, s.weights
        ('a, b', (1.0, 1.0, 1.0, 1.5))
    """
    segments: list[Segment] = []
    extras: list[str] = []
    chars: list[str] = []
    weights: list[float] = []

    def add(piece: str, weight: float) -> None:
        chars.append(piece)
        weights.extend([weight] * len(piece))

    def close() -> None:
        if chars:
            segments.append(Segment("".join(chars), tuple(weights)))
        chars.clear()
        weights.clear()

    for line in text.split("\n"):
        line_started = False
        items = parse_prompt(line)
        check_weights(items)  # an inf/NaN weight would give NaN embeddings: a black image
        for item in items:
            if item.kind is ItemKind.BREAK:
                close()
                line_started = False
                continue
            if item.kind is ItemKind.EXTRA:
                extras.append(item.text)
                continue
            if chars:
                add(", " if line_started else "\n", 1.0)
            for piece, weight in item.runs:
                add(piece, weight)
            line_started = True
    close()
    return PromptText(text, tuple(segments), tuple(extras))


@dataclass(frozen=True)
class Token:
    """One token of a segment: id, attention weight, character span, and whether it holds a comma."""

    id: int
    weight: float
    start: int
    end: int
    comma: bool = False


def chunk_tokens(tokens: Sequence[Token], window: int = 75, backtrack: int = COMMA_BACKTRACK) -> list[list[Token]]:
    """Cut one segment's tokens into chunks of at most ``window`` tokens (A1111's rule).

    When a chunk is full and its last comma is at most ``backtrack`` tokens back, the chunk
    ends after that comma and the rest moves to the next chunk; otherwise it is cut where it
    is full. An empty segment gives no chunks.

    Example:
        >>> toks = [Token(i, 1.0, i, i + 1, comma=(i % 4 == 3)) for i in range(12)]
        >>> [[t.id for t in c] for c in chunk_tokens(toks, window=6, backtrack=3)]
        [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    """
    if window < 1:
        raise ValueError(f"window={window} must be at least 1")
    chunks: list[list[Token]] = []
    current: list[Token] = []
    last_comma = -1
    for tok in tokens:
        if tok.comma:
            last_comma = len(current)
        elif backtrack and len(current) == window and last_comma != -1 and len(current) - last_comma <= backtrack:
            split = last_comma + 1
            chunks.append(current[:split])
            current = current[split:]
            last_comma = -1
        if len(current) == window:
            chunks.append(current)
            current = []
            last_comma = -1
        current.append(tok)
    if current:
        chunks.append(current)
    return chunks


def fit_tokens(tokens: Sequence[Token], budget: int) -> tuple[list[Token], int | None]:
    """The longest head of ``tokens`` that fits ``budget`` and ends at a comma boundary.

    Returns the kept tokens and the index of the first token left out (None when all fit).
    The comma at the cut is dropped. Without a comma in reach the cut is at the budget.

    Example:
        >>> toks = [Token(i, 1.0, i, i + 1, comma=(i == 2)) for i in range(6)]
        >>> kept, cut = fit_tokens(toks, 4)
        >>> [t.id for t in kept], cut
        ([0, 1], 3)
    """
    if len(tokens) <= budget:
        return list(tokens), None
    for i in range(min(budget, len(tokens) - 1), 0, -1):
        if tokens[i].comma:
            return list(tokens[:i]), i + 1
    return list(tokens[:budget]), budget
