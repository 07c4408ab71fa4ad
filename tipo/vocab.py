"""A model's vocabulary as text: the bytes each token stands for and the token classes the
decode rules need (built once per loaded model by the backend)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import numpy as np

__all__ = ["TagPieces", "TokenText", "piece_bytes"]

# Characters tag normalisation leaves alone apart from lower-casing (printable ASCII but the
# comma, which ends a tag, the backslash of host-app escapes and the underscore, which
# normalisation turns into a space): a tag written with them and single spaces normalises by
# lower-casing and trimming alone.
_SAFE = "".join(re.escape(chr(c)) for c in range(0x21, 0x7F) if chr(c) not in ",\\_")
SIMPLE_TOKEN = re.compile(f" ?[{_SAFE}]+")
SIMPLE_TEXT = re.compile(f"[ {_SAFE}]*")


@dataclass
class TagPieces:
    """The vocabulary as pieces of tags, for the known-tags rule: which tokens are *simple* (an
    optional leading space and safe characters, see :func:`is_simple_text`), and for those, the
    lower-cased text after the space, grouped by that text (with and without the space)."""

    simple: np.ndarray
    lead: dict[str, list[int]]  # core -> ids of " core"-like tokens
    bare: dict[str, list[int]]  # core -> ids of "core"-like tokens
    # the rest of a tag name -> the simple tokens that start it (filled by the known-tags rule)
    continuations: dict[tuple[str, bool], list[int]] = field(default_factory=dict)


def is_simple_text(text: str) -> bool:
    """Safe characters and single spaces only: such a text followed by a simple token normalises
    to the normalised text, a space where one of them has one at the joint, and the token's
    lower-cased core."""
    return SIMPLE_TEXT.fullmatch(text) is not None and "  " not in text

_WORD = re.compile(r"[^\W_]+")
_NON_WORD = re.compile(r"[\W_]")


def piece_bytes(piece: str, is_control: bool) -> bytes:
    """The bytes a SentencePiece token stands for: ``▁`` is a space, ``<0x0A>`` is byte 10,
    control and added tokens stand for nothing (they are decoded without special tokens)."""
    if is_control:
        return b""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            pass
    return piece.replace("\u2581", " ").encode("utf-8")


@dataclass
class TokenText:
    """The text of every token of a vocabulary, and the token classes the rules need.

    Every array is built once here; the decode rules only combine them (no per-step work
    proportional to the vocabulary in Python).
    """

    pieces: list[bytes]
    eos_id: int
    _forced: dict[str, np.ndarray | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        texts = [p.decode("utf-8", "ignore") for p in self.pieces]
        self.texts = texts
        n = len(texts)
        self.has_newline = np.array(["\n" in t for t in texts], dtype=bool)
        self.has_comma = np.array(["," in t for t in texts], dtype=bool)
        self.empty = np.array([p == b"" for p in self.pieces], dtype=bool)
        self.starts_space = np.array([t[:1] == " " and t.strip() != "" for t in texts], dtype=bool)
        self.ends_tag = np.array([t.lstrip(" ")[:1] in (",", "\n") for t in texts], dtype=bool)
        # Never useful in a prompt: control characters other than newline and tab (byte-fallback
        # tokens of random or under-trained models produce them).
        self.junk = np.array([any(b < 32 and b not in (9, 10) for b in p) or b"\x7f" in p for p in self.pieces],
                             dtype=bool)
        # Complements and unions the rules use, so a step only ORs ready arrays.
        self.not_starts_space = ~self.starts_space
        self.not_ends_tag = ~self.ends_tag
        self.not_newline = ~self.has_newline
        enders = self.has_comma | self.has_newline
        if 0 <= self.eos_id < n:
            enders[self.eos_id] = True
        self.not_enders = ~enders  # tokens that do not end a tag (comma, newline, EOS)
        # Tokens that end a tag: the text before the first comma / newline.
        self.terminators = [
            (i, t[: min(x for x in (t.find(","), t.find("\n")) if x >= 0)])
            for i, t in enumerate(texts)
            if ("," in t or "\n" in t)
        ]
        # The same terminators grouped by the text before their comma / newline (many share it:
        # ",", ", ", ",\n" all have ""), so a check runs once per distinct text.
        groups: dict[str, list[int]] = {}
        for i, before in self.terminators:
            groups.setdefault(before, []).append(i)
        self.terminator_groups = [(before, np.array(ids, dtype=np.intp)) for before, ids in groups.items()]
        self.size = n

    def tag_pieces(self) -> TagPieces:
        """The vocabulary as pieces of tags (built on first use, then kept)."""
        pieces = self.__dict__.get("_tag_pieces")
        if pieces is None:
            simple = np.zeros(self.size, dtype=bool)
            lead: dict[str, list[int]] = {}
            bare: dict[str, list[int]] = {}
            for i, text in enumerate(self.texts):
                if i == self.eos_id or SIMPLE_TOKEN.fullmatch(text) is None:
                    continue
                simple[i] = True
                group = lead if text[0] == " " else bare
                group.setdefault(text.lstrip(" ").lower(), []).append(i)
            pieces = self.__dict__["_tag_pieces"] = TagPieces(simple, lead, bare)
        return pieces
    @functools.cached_property
    def word_leads(self) -> dict[str, np.ndarray]:
        """Tokens that end the word being written (their text holds a non-word character),
        grouped by the lower-case word characters before it: ``" cat"`` and ``"."`` under ``""``,
        ``"e."`` under ``"e"``. Words are runs of letters and digits (:func:`tipo.bans.words`).
        Built on first use (caption rules only)."""
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(self.texts):
            m = _NON_WORD.search(t)
            if m is not None:
                groups.setdefault(t[: m.start()].lower(), []).append(i)
        return {lead: np.array(ids, dtype=np.intp) for lead, ids in groups.items()}

    @functools.cached_property
    def inner_words(self) -> list[tuple[int, tuple[str, ...]]]:
        """Tokens holding whole words between two non-word characters of their own (``" cat "``):
        (id, those words, lower case). Built on first use."""
        out = []
        for i, t in enumerate(self.texts):
            ws = tuple(m.group(0).lower() for m in _WORD.finditer(t) if m.start() > 0 and m.end() < len(t))
            if ws:
                out.append((i, ws))
        return out

    def forced(self, want: str) -> np.ndarray | None:
        """Mask of the tokens that may not come when the text ``want`` must be written next
        (allowed: non-empty tokens that start it); None when no token starts it. Cached."""
        if want not in self._forced:
            allowed = np.array([bool(t) and want.startswith(t) for t in self.texts], dtype=bool)
            self._forced[want] = ~allowed if allowed.any() else None
        return self._forced[want]

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.pieces[i] for i in ids if 0 <= i < self.size).decode("utf-8", "replace")
