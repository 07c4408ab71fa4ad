"""Decoding: one incremental state, decode rules as small objects, one loop.

The reference retries whole passes when a result is short and filters bans afterwards. Here the
rules act on each step's candidates instead, inside ONE pass. Each rule is a small object with one
job (as llama.cpp's samplers or transformers' logits processors); they read one
:class:`DecodeState`, which is kept up to date one token at a time, and narrow one
:class:`Step`'s mask of forbidden tokens:

* :class:`ControlBytes`: control characters other than newline and tab are never written.
* :class:`FieldKey`: when a field ends, the next field of the task is opened by forcing its key
  (``long:``) token by token (this rule decides the step alone).
* :class:`ValueStartsWithSpace`: an empty ``key:`` the prompt opened is followed by a space.
* :class:`FirstTokenEndsUserTag`: the first token cannot extend the user's last tag.
* :class:`ClassMinimum` / :class:`ClassCap`: while the ``tag:`` line holds fewer tags than the
  length class minimum, tokens that would end it (newline, EOS) are masked; once it holds the
  cap, tokens that would start another tag (a comma) are masked.
* :class:`NoEosWhileCaptionOwed`: the text cannot end on the tag line while a caption is owed.
* :class:`AlreadyWritten` / :class:`ForbiddenTags`: a token that would complete a tag already
  written (the user's or the model's), a banned tag or a tag above the content rating
  (:class:`~tipo.rating.Forbidden`) is masked, in the ``tag:`` line and every meta line.
* :class:`ForbiddenWords`: in a caption the model writes, a token that would complete a banned
  word or a word above the content rating (the token after the word: a space, punctuation, a
  newline, EOS) is masked.
* :class:`KnownTagsOnly` (optional): tag lines stay on the way to known tags (the tags the model
  was trained on when its list is known, else the tag table), none of them forbidden.
* :class:`StopCondition`: generation stops once the requested fields are written (at the end of
  the tag line when tags are the last field, at EOS after a caption, or when the model starts a
  key that was already written).

A new rule is a :class:`Rule` subclass whose ``apply(step)`` ORs into ``step.mask``; it goes into
the list :func:`default_rules` builds (or a caller's own list). :class:`Sequence` is one sequence
being decoded (state, rules, sampler, budget) and takes the logits of each step, so a driver that
evaluates several sequences per backend call can reuse it; :func:`decode` is the one-sequence loop.
"""

from __future__ import annotations

import bisect
import codecs
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import numpy as np

from .bans import BanList, words
from .parse import KEYS
from .planner import META_KEYS, Plan
from .rating import Forbidden
from .sampling import Sampler
from .tags import TagTable, default_table, normalize
from .vocab import TagPieces, TokenText, is_simple_text, piece_bytes

__all__ = [
    "AlreadyWritten",
    "ClassCap",
    "ClassMinimum",
    "ControlBytes",
    "DecodeContext",
    "DecodeResult",
    "DecodeRules",
    "DecodeState",
    "FieldKey",
    "FirstTokenEndsUserTag",
    "ForbiddenTags",
    "ForbiddenWords",
    "KnownTagsOnly",
    "NoEosWhileCaptionOwed",
    "Rule",
    "Sequence",
    "Step",
    "StopCondition",
    "TokenText",
    "ValueStartsWithSpace",
    "decode",
    "default_rules",
    "piece_bytes",
]

_META_LINE_KEYS = tuple(key for _, key in META_KEYS)  # the planner's meta lines, one spelling
_SINGLE_LINE_FIELDS = ("tag", "short")


# -- per-request constants -------------------------------------------------------------------
class DecodeContext:
    """What the rules of one request need to know, computed once: the plan's fields and prompt,
    the length class, the user's tags, the forbidden terms (bans and the content rating), the tag
    table, the known tags (``known``: for known-tags-only decoding; default the table) and the
    vocabulary."""

    def __init__(self, plan: Plan, vocab: TokenText, table: TagTable | None = None,
                 forbidden: Forbidden | None = None, known: TagTable | None = None) -> None:
        self.plan = plan
        self.vocab = vocab
        self.table = table or default_table()
        self.bans = BanList.from_request(plan.request, self.table)
        self.forbidden = forbidden or Forbidden.for_request(plan.request, plan.rating, self.table)
        self.known = known or self.table
        self.min_tags, self.cap = plan.length.tag_range
        self.gen_meta = plan.request.gen_meta
        self.fields = [f.value for f in plan.fields]
        self.open_field: str | None = plan.open_field.value
        prompt_lines = plan.prompt.split("\n")
        self.prompt_keys = frozenset(
            line.split(":", 1)[0] for line in prompt_lines if ":" in line and line.split(":", 1)[0] in KEYS)
        last = prompt_lines[-1]
        self.prefix_line = last  # the open line of the prompt, e.g. "tag: 1girl, forest" or "long:"
        self.opens_empty = last.endswith(":") and last[:-1] in KEYS
        self.continues_tags = self.open_field == "tag" and last.startswith("tag:") and bool(last[4:].strip())
        self.user_keys = frozenset(plan.user.keys)
        # normalize() and canonical() are pure and the same tags come back every step: cache them.
        self._normalized: dict[str, str] = {}
        self._canonical: dict[str, str] = {}

    def normalize(self, text: str) -> str:
        out = self._normalized.get(text)
        if out is None:
            out = self._normalized[text] = normalize(text)
        return out

    def key(self, tag: str) -> str:
        """The canonical key of a tag (normalised, alias resolved), cached."""
        out = self._canonical.get(tag)
        if out is None:
            out = self._canonical[tag] = self.table.canonical(tag)
        return out


def _shared(vocab: TokenText, name: str, owner: object, key: tuple[object, ...] = ()) -> dict:  # type: ignore[type-arg]
    """A memo the rules of every request on one vocabulary share: one per rule kind ``name``,
    object ``owner`` (a table; compared by identity, and kept alive with the memo) and ``key``."""
    memos = vocab.__dict__.setdefault("_rule_memos", {})
    slot = (name, id(owner), key)
    entry = memos.get(slot)
    if entry is None or entry[0] is not owner:
        if len(memos) > 32:
            memos.clear()
        entry = memos[slot] = (owner, {})
    return entry[1]


# -- the incremental state -------------------------------------------------------------------
class DecodeState:
    """What the completion written so far means for the rules, updated one token at a time.

    The completion is the UTF-8 decoding of the tokens' bytes (an unfinished multi-byte character
    at the end reads as U+FFFD until its last byte comes). Lines are processed once, when their
    key appears; the current line's tags are re-read only when a comma has been added.
    """

    def __init__(self, ctx: DecodeContext) -> None:
        self.ctx = ctx
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._stable = ""  # the decoded completion without an unfinished character at the end
        self._tail = ""  # "\ufffd" while a multi-byte character is unfinished
        self.keys: set[str] = set(ctx.prompt_keys)  # keys written in prompt and completion
        self.field: str | None = ctx.open_field  # the field the current line belongs to
        self._written: list[str | None] = [self.field]
        self.stop_at: int | None = None  # where to cut the completion when stopping
        self.stop_reason = ""
        self._n_lines = 1  # lines of prefix_line + completion
        self._line_start = -len(ctx.prefix_line)  # the current line's start within the completion
        self._line = ctx.prefix_line  # the current line's stable text
        self._line_keyed = False  # the current line's key was processed (or it has none)
        self._separated = False  # the completion holds a comma or a newline
        self._version = 0  # counts feeds: the cached tag view below is for one version
        self._view_at = -1
        self._is_tags_at = -1
        self._is_tags = False
        self._tags_head: str | None = None
        self.tags_done: list[str] = []
        self.line_keys: frozenset[str] = frozenset()
        self.n_tokens = 0

    @classmethod
    def from_text(cls, ctx: DecodeContext, completion: str) -> DecodeState:
        """The state after ``completion`` (for tools and tests)."""
        st = cls(ctx)
        st.feed(completion.encode("utf-8"))
        st.n_tokens = 0
        return st

    # -- updates ----------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Append one token's bytes."""
        self.n_tokens += 1
        self._version += 1
        text = self._utf8.decode(data)
        self._tail = "\ufffd" if self._utf8.getstate()[0] else ""
        if not text:
            return
        self._stable += text
        if not self._separated and ("," in text or "\n" in text):
            self._separated = True
        if "\n" not in text:
            self._line += text
            self._check_key()
            return
        parts = text.split("\n")
        for part in parts[:-1]:
            self._line += part
            self._check_key()
            self._line_start += len(self._line) + 1
            self._line = ""
            self._n_lines += 1
            self._line_keyed = False
        self._line += parts[-1]
        self._check_key()

    def _check_key(self) -> None:
        """Process the current line's key once it is written (lines after the prompt's own)."""
        if self._line_keyed or self._n_lines == 1 or ":" not in self._line or self.stop_at is not None:
            return
        self._line_keyed = True
        key = self._line.split(":", 1)[0]
        if key not in KEYS:
            return
        ctx = self.ctx
        allowed_meta = ctx.gen_meta and key in _META_LINE_KEYS + ("aspect ratio",)
        later_field = key in ctx.fields and key not in self._written
        if key in self.keys or key == "target" or not (allowed_meta or later_field):
            self.stop_at = max(self._line_start - 1, 0)
            self.stop_reason = f"repeated or unexpected key '{key}'"
            return
        self.keys.add(key)
        self.field = key
        self._written.append(key)

    # -- views ------------------------------------------------------------------------------
    @property
    def completion(self) -> str:
        return self._stable + self._tail

    @property
    def empty(self) -> bool:
        """Nothing written yet (tokens without text do not count)."""
        return not self._stable and not self._tail

    @property
    def separated(self) -> bool:
        """The completion holds a comma or a newline (it has left the prompt's last tag)."""
        return self._separated

    @property
    def ends_line(self) -> bool:
        return not self._tail and self._stable.endswith("\n")

    @property
    def line(self) -> str:
        """The current (last) line's text, including the key for key lines."""
        return self._line + self._tail

    @property
    def line_is_tags(self) -> bool:
        """The current line is a tag list (the tag line or a meta line)."""
        if self._is_tags_at != self._version:
            self._is_tags_at = self._version
            line = self._line
            if self._n_lines > 1 and not (":" in line and line.split(":", 1)[0] in KEYS):
                self._is_tags = False
            else:
                self._is_tags = self.field == "tag" or self.field in _META_LINE_KEYS
        return self._is_tags

    @property
    def partial(self) -> str:
        """The text of the tag being written (on a tag line)."""
        self._read_tags()
        return self._partial

    def _read_tags(self) -> None:
        if self._view_at == self._version:
            return
        self._view_at = self._version
        line = self.line
        body = line.split(":", 1)[1] if (":" in line and self.line_is_tags) else ""
        head, sep, partial = body.rpartition(",")
        self._partial = partial
        if head != self._tags_head:
            self._tags_head = head
            norm = self.ctx.normalize
            done = [norm(t) for t in head.split(",")] if sep else []
            self.tags_done = [t for t in done if t]
            key = self.ctx.key
            self.line_keys = frozenset(key(t) for t in self.tags_done)

    def tag_count(self) -> tuple[int, bool]:
        """Complete tags on the current line, and whether a tag is being written."""
        self._read_tags()
        return len(self.line_keys), bool(self.ctx.normalize(self._partial))

    def seen(self) -> frozenset[str]:
        """Canonical keys of the current line's tags plus all of the user's tags."""
        self._read_tags()
        return self.line_keys | self.ctx.user_keys

    @property
    def pending_key(self) -> str | None:
        """The rest of the next field's key, when a single-line field just ended with a newline."""
        if self._n_lines < 2:
            return None
        field = self.field
        line = self.line
        if field not in _SINGLE_LINE_FIELDS or (":" in line and line.split(":", 1)[0] in KEYS):
            return None
        fields = self.ctx.fields
        try:
            nxt = fields[fields.index(field) + 1]
        except (ValueError, IndexError):
            return None
        want = f"{nxt}:"
        if want.startswith(line):
            return want[len(line):] or None
        return None


# -- one step --------------------------------------------------------------------------------
@dataclass
class Step:
    """One decoding step: the state, the model's scores and the mask of forbidden token ids
    (True = forbidden) the rules narrow. ``open_ids``: set by the last rule when it leaves only a
    few ids open, those ids in ascending order (the sampler then looks at them alone)."""

    state: DecodeState
    logits: np.ndarray | None
    mask: np.ndarray
    open_ids: np.ndarray | None = None


class Rule:
    """A decode-time rule. ``apply`` narrows ``step.mask`` (OR into it) and returns True when
    it decided the step alone (the rules after it are skipped). ``tag_lines_only``: the rule
    never acts outside tag lines, so it is not called there."""

    tag_lines_only = False

    def __init__(self, ctx: DecodeContext) -> None:
        self.ctx = ctx
        self.vocab = ctx.vocab

    def apply(self, step: Step) -> bool:
        raise NotImplementedError

    def idle(self) -> bool:
        """True when the rule can never act on this request (it is then not called at all)."""
        return False

    def __repr__(self) -> str:
        return type(self).__name__


class ControlBytes(Rule):
    """Control characters other than newline and tab (byte-fallback tokens of random or
    under-trained models) are never written."""

    def apply(self, step: Step) -> bool:
        np.logical_or(step.mask, self.vocab.junk, out=step.mask)
        return False


class FieldKey(Rule):
    """After a single-line field ends, the next field's key (``long:``) is written token by token.
    When no token starts the rest of the key, only the control bytes stay forbidden."""

    def apply(self, step: Step) -> bool:
        want = step.state.pending_key
        if want is None:
            return False
        forced = self.vocab.forced(want)
        if forced is not None:
            np.copyto(step.mask, forced)
        return True


class ValueStartsWithSpace(Rule):
    """A ``key:`` the prompt opened empty is followed by a space, as in training (``key: value``)."""

    def idle(self) -> bool:
        return not self.ctx.opens_empty

    def apply(self, step: Step) -> bool:
        if self.ctx.opens_empty and step.state.empty:
            np.logical_or(step.mask, self.vocab.not_starts_space, out=step.mask)
            step.mask[self.vocab.eos_id] = False
        return False


class _TagLineRule(Rule):
    """A rule that acts only on tag lines (the ``tag:`` line and the meta lines)."""

    tag_lines_only = True

    def apply(self, step: Step) -> bool:
        if step.state.line_is_tags:
            self.on_tags(step)
        return False

    def on_tags(self, step: Step) -> None:
        raise NotImplementedError


class FirstTokenEndsUserTag(_TagLineRule):
    """The user's last tag is complete: the first token may only add ``, next`` or end the line,
    never extend the user's tag (``forest`` -> ``forestry``)."""

    def idle(self) -> bool:
        return not self.ctx.continues_tags

    def on_tags(self, step: Step) -> None:
        if self.ctx.continues_tags and step.state.empty:
            np.logical_or(step.mask, self.vocab.not_ends_tag, out=step.mask)
            step.mask[self.vocab.eos_id] = False


class ClassMinimum(_TagLineRule):
    """Below the length class minimum the ``tag:`` line cannot end (no newline, no EOS)."""

    def on_tags(self, step: Step) -> None:
        st = step.state
        if st.field != "tag":
            return
        n, partial = st.tag_count()
        if n + partial < self.ctx.min_tags:
            np.logical_or(step.mask, self.vocab.has_newline, out=step.mask)
            step.mask[self.vocab.eos_id] = True


class ClassCap(_TagLineRule):
    """At the length class cap no new tag can start on the ``tag:`` line (no comma); with no tag
    being written only a newline or EOS may come."""

    def on_tags(self, step: Step) -> None:
        st = step.state
        if st.field != "tag":
            return
        n, partial = st.tag_count()
        if n + partial >= self.ctx.cap:
            np.logical_or(step.mask, self.vocab.has_comma, out=step.mask)
            if not partial:
                np.logical_or(step.mask, self.vocab.not_newline, out=step.mask)
                step.mask[self.vocab.eos_id] = False


class NoEosWhileCaptionOwed(_TagLineRule):
    """Fields still to write after the tags: the text cannot end on the ``tag:`` line."""

    def idle(self) -> bool:
        return self.ctx.fields[-1] == "tag"

    def on_tags(self, step: Step) -> None:
        if step.state.field == "tag" and self.ctx.fields[-1] != "tag":
            step.mask[self.vocab.eos_id] = True


class _CompletingRule(_TagLineRule):
    """Masks every token that would complete a tag ``hit(text)`` is true for: the terminators
    (tokens with a comma or newline) after the text written so far, and EOS."""

    def hit(self, step: Step, text: str) -> bool:
        raise NotImplementedError

    def active(self, step: Step) -> bool:
        return True

    def on_tags(self, step: Step) -> None:
        if not self.active(step):
            return
        partial = step.state.partial
        mask = step.mask
        norm = self.ctx.normalize
        for before, ids in self.vocab.terminator_groups:
            text = partial + before
            if norm(text) and self.hit(step, text):
                mask[ids] = True
        if norm(partial) and self.hit(step, partial):
            mask[self.vocab.eos_id] = True


class AlreadyWritten(_CompletingRule):
    """A tag already written (the user's or the model's on this line) cannot be completed again,
    so duplicates never eat into the length class. Until the completion leaves the prompt's last
    tag, the tag being written is the user's own."""

    def __init__(self, ctx: DecodeContext) -> None:
        super().__init__(ctx)
        # per text written so far in the tag: the canonical keys it could be completed to, each
        # with the ids completing it (terminators as an array, EOS as a flag); the same for every
        # request on this vocabulary and table
        self._keys: dict[str, dict[str, tuple[list[np.ndarray], bool]]] = _shared(self.vocab, "written", ctx.table)

    def active(self, step: Step) -> bool:
        return step.state.separated

    def hit(self, step: Step, text: str) -> bool:
        return self.ctx.key(text) in step.state.seen()

    def on_tags(self, step: Step) -> None:
        if not self.active(step):
            return
        partial = step.state.partial
        by_key = self._keys.get(partial)
        if by_key is None:
            by_key = self._completions(partial)
        seen = step.state.seen()
        if len(seen) < len(by_key):
            found = [by_key[k] for k in seen if k in by_key]
        else:
            found = [v for k, v in by_key.items() if k in seen]
        for ids, eos in found:
            for group in ids:
                step.mask[group] = True
            if eos:
                step.mask[self.vocab.eos_id] = True

    def _completions(self, partial: str) -> dict[str, tuple[list[np.ndarray], bool]]:
        ctx = self.ctx
        out: dict[str, tuple[list[np.ndarray], bool]] = {}
        for before, ids in self.vocab.terminator_groups:
            text = partial + before
            if ctx.normalize(text):
                out.setdefault(ctx.key(text), ([], False))[0].append(ids)
        if ctx.normalize(partial):
            key = ctx.key(partial)
            out[key] = (out.get(key, ([], False))[0], True)
        if len(self._keys) > 4096:
            self._keys.clear()
        self._keys[partial] = out
        return out


class ForbiddenTags(_CompletingRule):
    """A banned tag (plain, wildcard or regex; see :mod:`tipo.bans`) or a tag above the content
    rating (:mod:`tipo.rating`) cannot be completed, in any tag line. Until the completion leaves
    the prompt's last tag, the tag being written is the user's own and is left alone."""

    def __init__(self, ctx: DecodeContext) -> None:
        super().__init__(ctx)
        # per text written so far in the tag: the terminators completing a forbidden tag, and
        # whether EOS does; shared by the requests that forbid the same terms
        key = ctx.forbidden.cache_key
        self._hits: dict[str, tuple[np.ndarray | None, bool]] = (
            {} if key is None else _shared(self.vocab, "forbidden tags", ctx.forbidden.table, key))

    def idle(self) -> bool:
        return not self.ctx.forbidden

    def active(self, step: Step) -> bool:
        return bool(self.ctx.forbidden) and (step.state.separated or not self.ctx.continues_tags)

    def hit(self, step: Step, text: str) -> bool:
        return self.ctx.forbidden.tag_reason(text) is not None

    def on_tags(self, step: Step) -> None:
        if not self.active(step):
            return
        partial = step.state.partial
        found = self._hits.get(partial)
        if found is None:
            norm = self.ctx.normalize
            groups = [ids for before, ids in self.vocab.terminator_groups
                      if norm(partial + before) and self.hit(step, partial + before)]
            eos = bool(norm(partial)) and self.hit(step, partial)
            found = (np.concatenate(groups) if groups else None, eos)
            if len(self._hits) > 4096:
                self._hits.clear()
            self._hits[partial] = found
        ids, eos = found
        if ids is not None:
            step.mask[ids] = True
        if eos:
            step.mask[self.vocab.eos_id] = True


_CAPTION_FIELDS = ("short", "long")


class ForbiddenWords(Rule):
    """In a caption the model writes, a word that is banned or above the content rating cannot be
    completed: the tokens that would end it (their text starts with, or reaches, a non-word
    character right after the word) and EOS are masked, as are tokens that hold such a word whole.
    Phrases (``pubic hair``) are checked with the words before; wildcards and regexes of the ban box
    apply to each word."""

    def __init__(self, ctx: DecodeContext) -> None:
        super().__init__(ctx)
        m = ctx.forbidden.matcher
        self.active = bool(m.phrases or m.caption_phrases or m.patterns)
        self.static = np.zeros(0, dtype=np.intp)  # tokens never written in a caption
        self.endings: tuple[str, ...] = ()
        # The text before the last word, and its words that a phrase can reach (TermMatcher.context_of).
        self._before: tuple[str, tuple[str, ...]] = ("", ())
        # What the tokens after a word being written do, per (the words before it that a phrase
        # can reach, the word so far): shared by the requests that forbid the same terms.
        key = ctx.forbidden.cache_key
        self._hits: dict[tuple[tuple[str, ...], str], tuple[np.ndarray | None, bool]] = (
            {} if key is None else _shared(self.vocab, "forbidden words", ctx.forbidden.table, key))
        self._after: dict[str, list[tuple[str, np.ndarray]]] = (
            {} if key is None else _shared(self.vocab, "forbidden word endings", ctx.forbidden.table, key))
        self._context = m.context_of
        if not self.active:
            return
        forbidden = ctx.forbidden
        # Tokens holding a forbidden word whole ("  nude ") are never written in a caption.
        self.static = np.array([i for i, ws in ctx.vocab.inner_words
                                if any(forbidden.word_reason(ws[:k], w) for k, w in enumerate(ws))], dtype=np.intp)
        self.endings = m.caption_last_words

    def idle(self) -> bool:
        return not self.active

    def apply(self, step: Step) -> bool:
        st = step.state
        if not self.active or st.field not in _CAPTION_FIELDS or st.line_is_tags or st.pending_key is not None:
            return False
        mask, v = step.mask, self.vocab
        if self.static.size:
            mask[self.static] = True
        line = st.line
        cut = len(line)  # the word being written: the letters and digits at the end ([^\W_]*\Z)
        while cut and line[cut - 1].isalnum():
            cut -= 1
        partial = line[cut:].lower()
        before = line[: len(line) - len(partial)]
        if before != self._before[0]:
            self._before = (before, self._context(words(before)))
        prev = self._before[1]
        hit = self._hits.get((prev, partial))
        if hit is None:
            hit = self._work_out(prev, partial)
        ids, eos = hit
        if ids is not None:
            mask[ids] = True
        if eos:
            mask[v.eos_id] = True
        return False

    def _work_out(self, prev: tuple[str, ...], partial: str) -> tuple[np.ndarray | None, bool]:
        """The tokens that would complete a forbidden word after ``prev`` and ``partial`` (None:
        none), and whether EOS would; kept for the next steps of the same word."""
        forbidden, leads = self.ctx.forbidden, self.vocab.word_leads
        groups = [ids for word, ids in self._endings_after(partial) if forbidden.word_reason(prev, word)]
        if forbidden.matcher.patterns:
            groups += [ids for lead, ids in leads.items()
                       if (partial + lead) and any(p.match(partial + lead) for p, _ in forbidden.matcher.patterns)]
        hit = (np.concatenate(groups) if groups else None, bool(partial and forbidden.word_reason(prev, partial)))
        if len(self._hits) > 4096:
            self._hits.clear()
        self._hits[(prev, partial)] = hit
        return hit

    def _endings_after(self, partial: str) -> list[tuple[str, np.ndarray]]:
        """The forbidden caption words that start with ``partial`` and have tokens that complete
        and end them, with those tokens."""
        found = self._after.get(partial)
        if found is None:
            leads, endings = self.vocab.word_leads, self.endings
            found = []
            i = bisect.bisect_left(endings, partial)
            while i < len(endings) and endings[i].startswith(partial):
                ids = leads.get(endings[i][len(partial):])
                if ids is not None:
                    found.append((endings[i], ids))
                i += 1
            if len(self._after) > 4096:
                self._after.clear()
            self._after[partial] = found
        return found


_Memo = tuple[np.ndarray, dict[int, frozenset[str]], dict[str, list[int]]]


class KnownTagsOnly(_TagLineRule):
    """In tag lines, keep only the likeliest tokens (the ``top`` best allowed so far) that continue
    a known tag not yet written or end one (on the ``tag:`` line: special and general tags). When
    none qualifies, or the tag is already off the table, only tokens that end the tag remain, so a
    stray tag stays one tag (and is dropped from the result).

    No per-token string work where it can be avoided: when few table tags start with the partial
    tag, the tokens that continue one are read off those tags' remaining text; otherwise what each
    token does after a given partial tag (no match / a match whatever was written / the tags it
    could still become) is worked out once and remembered per vocabulary and table.
    """

    top = 256
    few = 64  # below this many table tags starting with the partial tag, read the tokens off them

    def __init__(self, ctx: DecodeContext) -> None:
        super().__init__(ctx)
        self._scratch = np.empty(self.vocab.size, dtype=np.float32)
        self._flag = np.zeros(self.vocab.size, dtype=bool)
        memo = getattr(self.vocab, "_known_memo", None)
        if memo is None or memo[0] is not ctx.known:
            memo = (ctx.known, {})
            self.vocab._known_memo = memo  # type: ignore[attr-defined]
        self._memo: dict[tuple[str, bool], _Memo] = memo[1]

    def on_tags(self, step: Step) -> None:
        st = step.state
        if st.pending_key is not None or (st.empty and self.ctx.continues_tags):
            return  # the first token only ends the user's last tag
        ctx, v, mask = self.ctx, self.vocab, step.mask
        content = st.field == "tag"
        partial = st.partial
        norm = ctx.normalize(partial)
        seen = st.seen()
        if norm and not ctx.known.is_prefix(norm, content, seen):
            self._only_enders(mask)
            return
        if step.logits is None:
            raise ValueError("KnownTagsOnly needs the step's logits")
        scratch = self._scratch
        np.copyto(scratch, step.logits, casting="unsafe")
        np.putmask(scratch, mask, -np.inf)
        k = min(self.top, scratch.size)
        order = scratch.argpartition(-k)[-k:]
        order = order[np.isfinite(scratch[order])]
        ok = self._admit(order, partial, norm, content, seen)
        eos = order == v.eos_id
        if eos.any():
            ok[eos] = not norm or self._known(norm, content)
        if ok.any():
            # Only the admitted ids stay open: they were open (finite after the mask), so this is
            # the mask ORed with "everything but them".
            step.open_ids = order[ok]
            step.open_ids.sort()
            mask.fill(True)
            mask[step.open_ids] = False
        else:
            self._only_enders(mask)

    def _admit(self, ids: np.ndarray, partial: str, norm: str, content: bool, seen: frozenset[str]) -> np.ndarray:
        """Which of ``ids`` keep the tag on the way to a known tag not yet written (or end one)."""
        pieces = self.vocab.tag_pieces()
        table = self.ctx.known
        if norm and is_simple_text(partial):
            names, lo, hi = table.prefix_range(norm, content)
            if hi - lo < self.few:
                ok = np.zeros(ids.size, dtype=bool)
                simple = pieces.simple[ids]
                if simple.any():
                    flag = self._flag
                    found = self._from_names(partial, norm, names[lo:hi], seen, pieces)
                    flag[found] = True
                    ok[simple] = flag[ids[simple]]
                    flag[found] = False
                for j in (~simple).nonzero()[0].tolist():
                    ok[j] = self._accept(int(ids[j]), partial, content, seen)
                return ok
        status, keys, by_key = self._memo_for(partial, content)
        codes = status[ids]
        for j in (codes < 0).nonzero()[0].tolist():
            i = int(ids[j])
            text = self.vocab.texts[i]
            info = self._info(partial, text, content) if text else False
            codes[j] = status[i] = 1 if info is True else 0 if info is False else 2
            if codes[j] == 2:
                keys[i] = info  # type: ignore[assignment]
                for key in info:  # type: ignore[union-attr]
                    by_key.setdefault(key, []).append(i)
        ok = codes >= 1
        # A token that could still become only tags already written does not qualify: only
        # tokens with a written tag among theirs can be such.
        written = [i for key in seen for i in by_key.get(key, ()) if keys[i] <= seen]
        if written:
            flag = self._flag
            flag[written] = True
            ok &= ~flag[ids]
            flag[written] = False
        return ok

    def _memo_for(self, partial: str, content: bool) -> _Memo:
        """What each token does after ``partial`` (-1 not worked out yet, 0 no tag, 1 a tag
        whatever was written, 2 one of the remembered tags unless all are written), the tags of
        the 2s, and the 2s by tag."""
        memo = self._memo
        entry = memo.get((partial, content))
        if entry is None:
            if len(memo) * self.vocab.size > 16_000_000:
                memo.clear()
            entry = memo[(partial, content)] = (np.full(self.vocab.size, -1, dtype=np.int8), {}, {})
        return entry

    def _accept(self, i: int, partial: str, content: bool, seen: frozenset[str]) -> bool:
        text = self.vocab.texts[i]
        if i == self.vocab.eos_id or not text:
            return False  # EOS is decided by the caller
        info = self._info(partial, text, content)
        if info is True or info is False:
            return info
        return not seen or not info <= seen

    def _from_names(self, partial: str, norm: str, names: list[str], seen: frozenset[str],
                    pieces: TagPieces) -> list[int]:
        """The simple tokens that continue ``partial`` (normalised: ``norm``) on the way to one of
        ``names`` (the few table names starting with ``norm``) not written yet: after a simple
        partial, a simple token makes ``norm``, a space if either has one at the joint, and the
        token's lower-cased core."""
        canonical = self.ctx.known.canonical
        cache = pieces.continuations
        spaced = partial.endswith(" ")
        start = len(norm)
        out: list[int] = []
        for name in names:
            if canonical(name) in seen:
                continue
            rest = name[start:]
            cache_key = (rest, spaced)
            if rest.startswith(" "):
                rest = rest[1:]
                groups = (pieces.lead, pieces.bare) if spaced else (pieces.lead,)
            elif spaced:
                continue
            else:
                groups = (pieces.bare,)
            ids = cache.get(cache_key)
            if ids is None:
                ids = []
                end = rest.find(" ")
                for n in range(1, (len(rest) if end < 0 else end) + 1):
                    core = rest[:n]
                    for group in groups:
                        found = group.get(core)
                        if found:
                            ids.extend(found)
                if len(cache) > 200_000:
                    cache.clear()
                cache[cache_key] = ids
            out.extend(ids)
        return out

    def _only_enders(self, mask: np.ndarray) -> None:
        out = mask | self.vocab.not_enders
        if not out.all():
            np.copyto(mask, out)

    def _known(self, tag: str, content: bool) -> bool:
        table = self.ctx.known
        return table.is_content(tag) if content else table.is_known(tag)

    def _info(self, partial: str, text: str, content: bool) -> bool | frozenset[str]:
        """Whether a token keeps the tag being written on the way to a known tag (or ends one), as
        :meth:`~tipo.tags.TagTable.prefix_info` says it: True, False, or the tags it could still
        become (it qualifies unless all of them are written already)."""
        norm, table = self.ctx.normalize, self.ctx.known
        cuts = [i for i in (text.find(","), text.find("\n")) if i >= 0]
        if not cuts:
            n = norm(partial + text)
            return True if not n else table.prefix_info(n, content)
        cut = min(cuts)
        done = norm(partial + text[:cut])
        if done and not self._known(done, content):
            return False
        rest = norm(text[cut + 1:])
        if not rest or "," in rest or "\n" in text[cut + 1:]:
            return True
        return table.prefix_info(rest, content)


class StopCondition:
    """Where to cut the completion and why, once the requested fields are written; else None."""

    def __init__(self, ctx: DecodeContext) -> None:
        self.ctx = ctx

    def __call__(self, st: DecodeState) -> tuple[int, str] | None:
        if st.stop_at is not None:
            return st.stop_at, st.stop_reason
        if self.ctx.gen_meta or not st.ends_line:
            return None
        # A newline just ended a line. Tags and short captions are one line each.
        if st.field in _SINGLE_LINE_FIELDS and st.field == self.ctx.fields[-1]:
            return len(st.completion) - 1, "requested fields written"
        return None


RuleFactory = Callable[[DecodeContext], Rule]


def default_rules() -> list[RuleFactory]:
    """The mask rules of every request, in the order they apply (KnownTagsOnly, which looks at
    what they leave, comes after them and after any extra rules)."""
    return [ControlBytes, FieldKey, ValueStartsWithSpace, FirstTokenEndsUserTag, ClassMinimum, ClassCap,
            NoEosWhileCaptionOwed, AlreadyWritten, ForbiddenTags, ForbiddenWords]


class DecodeRules:
    """The decode-time rules of one request over its :class:`DecodeContext`.

    ``rules`` replaces the default list (:func:`default_rules`); ``extra`` appends rules to it.
    With ``known_tags_only``, :class:`KnownTagsOnly` comes last, so it sees every other rule's mask.
    """

    def __init__(self, plan: Plan, vocab: TokenText, table: TagTable | None = None, known_tags_only: bool = False,
                 rules: Seq[RuleFactory] | None = None, extra: Seq[RuleFactory] = (),
                 forbidden: Forbidden | None = None, known: TagTable | None = None) -> None:
        self.ctx = DecodeContext(plan, vocab, table, forbidden, known)
        self.plan = plan
        self.vocab = vocab
        self.known_tags_only = known_tags_only
        factories = list(default_rules() if rules is None else rules) + list(extra)
        if known_tags_only:
            factories.append(KnownTagsOnly)
        self.rules: list[Rule] = [make(self.ctx) for make in factories]
        self._live = [rule for rule in self.rules if not rule.idle()]  # the rules that can act here
        self._live_off_tags = [rule for rule in self._live if not rule.tag_lines_only]  # ... off tag lines
        self.stop_condition = StopCondition(self.ctx)

    def new_state(self) -> DecodeState:
        return DecodeState(self.ctx)

    def state(self, completion: str) -> DecodeState:
        """The state after ``completion`` (built from scratch: for tools and tests)."""
        return DecodeState.from_text(self.ctx, completion)

    def apply(self, st: DecodeState, logits: np.ndarray | None, mask: np.ndarray) -> Step:
        """Run the rules on one step: ``mask`` (a boolean buffer of vocabulary size) is filled
        with the tokens forbidden now."""
        mask.fill(False)
        step = Step(st, logits, mask)
        for rule in self._live if st.line_is_tags else self._live_off_tags:
            step.open_ids = None  # a rule's list of open ids holds only until another rule runs
            if rule.apply(step):
                break
        return step

    def mask(self, completion: str, logits: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of the token ids forbidden after ``completion`` (for tools and tests)."""
        return self.apply(self.state(completion), logits, np.zeros(self.vocab.size, dtype=bool)).mask

    def stop(self, completion: str) -> tuple[int, str] | None:
        """Where to cut ``completion`` and why, when the requested fields are written; else None."""
        return self.stop_condition(self.state(completion))

    def drop_unfinished_tag(self, completion: str) -> str:
        """Cut a tag the token budget interrupted ("long ha"): it is not a tag the model chose."""
        st = self.state(completion)
        partial = st.partial
        if not st.line_is_tags or not partial.strip() or len(partial) > len(completion):
            return completion
        cut = completion[: len(completion) - len(partial)].rstrip()
        return cut[:-1] if cut.endswith(",") else cut


# -- one sequence and the loop ---------------------------------------------------------------
@dataclass(frozen=True)
class DecodeResult:
    completion: str
    generated: int
    reason: str


class Sequence:
    """One sequence being decoded: its rules, incremental state, sampler, context and budget.

    A driver evaluates the model and hands each step's logits to :meth:`step`, which returns the
    token to feed back, or None once the sequence is finished; :meth:`result` then gives the
    completion. Nothing here calls the backend, so one driver may run many sequences per call.
    """

    def __init__(self, rules: DecodeRules, sampler: Sampler, prompt_ids: Seq[int], budget: int) -> None:
        self.rules = rules
        self.sampler = sampler
        self.state = rules.new_state()
        self.context = list(prompt_ids)
        self.generated: list[int] = []
        self.budget = budget
        self.reason = "max_new_tokens"
        self.done = False
        self._cut: int | None = None
        self._mask = np.zeros(rules.vocab.size, dtype=bool)
        self._pieces = rules.vocab.pieces
        if budget <= 0:
            self.reason = "context full"
            self.done = True

    def step(self, logits: np.ndarray) -> int | None:
        """Choose the next token from ``logits``; None when the sequence has finished."""
        if self.done:
            return None
        st = self.state
        stop = self.rules.stop_condition(st)
        if stop is not None:
            self._cut, self.reason = stop
            self.done = True
            return None
        step = self.rules.apply(st, logits, self._mask)
        token = self.sampler.pick(logits, self.context, step.mask, step.open_ids)
        if token == self.rules.vocab.eos_id:
            self.reason = "eos"
            self.done = True
            return None
        self.generated.append(token)
        self.context.append(token)
        st.feed(self._pieces[token] if 0 <= token < len(self._pieces) else b"")
        if len(self.generated) >= self.budget:
            self.done = True
            return None
        return token

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop here; the result keeps what was written (an interrupted tag is dropped)."""
        if not self.done:
            self.done = True
            self.reason = reason

    def result(self) -> DecodeResult:
        completion = self.state.completion
        if self._cut is not None:
            completion = completion[: self._cut]
        stop = self.rules.stop(completion)
        if stop is not None:
            completion = completion[: stop[0]]
        elif self.reason in ("max_new_tokens", "context full", "cancelled"):
            completion = self.rules.drop_unfinished_tag(completion)
        return DecodeResult(completion, len(self.generated), self.reason)


def decode(backend, rules: DecodeRules, sampler: Sampler, prompt_ids: list[int], max_new_tokens: int,  # noqa: ANN001
           *, should_stop: Callable[[], bool] | None = None,
           on_start: Callable[[], None] | None = None) -> DecodeResult:
    """Decode one sequence on ``backend``: evaluate the prompt, then one token per step until a
    rule stops, EOS, the budget or ``should_stop()`` (checked between tokens) ends it.
    ``on_start`` is called once the prompt is evaluated."""
    budget = min(max_new_tokens, backend.n_ctx - len(prompt_ids))
    seq = Sequence(rules, sampler, prompt_ids, budget)
    logits = backend.start(prompt_ids)
    if on_start is not None:
        on_start()
    while True:
        token = seq.step(logits)
        if token is None:
            break
        if should_stop is not None and should_stop():
            seq.cancel()
            break
        logits = backend.step(token)
    return seq.result()
