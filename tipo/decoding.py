"""Decode-time rules: length classes, bans, field order and stopping, inside ONE pass.

The reference retries whole passes when a result is short and filters bans afterwards. Here the
rules act on each step's candidates instead:

* Length class: while the ``tag:`` line holds fewer tags than the class minimum, tokens that
  would end it (a newline, EOS) are masked; once it holds the class cap, tokens that would
  start another tag (a comma) are masked.
* Bans: a token that would complete a banned tag (a comma, a newline or EOS right after the
  tag's text) is masked, in the ``tag:`` line and in every meta line. Results are checked once
  more after parsing.
* Field order: when a field ends, the next field of the task is opened by forcing its key
  (``long:``) token by token.
* Stopping: generation stops once the requested fields are written (at the end of the tag line
  when tags are the last field, at EOS after a caption, or when the model starts a key that was
  already written).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .parse import KEYS
from .planner import Field, Plan
from .result import BanList
from .tags import TagTable, default_table, normalize

__all__ = ["DecodeRules", "TokenText", "piece_bytes"]

_META_LINE_KEYS = ("meta", "rating", "artist", "characters", "copyrights", "quality")


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
    """The text of every token of a vocabulary, and the token classes the rules need."""

    pieces: list[bytes]
    eos_id: int

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
        # Tokens that end a tag: the text before the first comma / newline.
        self.terminators = [
            (i, t[: min(x for x in (t.find(","), t.find("\n")) if x >= 0)])
            for i, t in enumerate(texts)
            if ("," in t or "\n" in t)
        ]
        # The same terminators grouped by the text before their comma / newline (many share it:
        # ",", ", ", ",\n" all have ""), so the ban check runs once per distinct text.
        groups: dict[str, list[int]] = {}
        for i, before in self.terminators:
            groups.setdefault(before, []).append(i)
        self.terminator_groups = [(before, np.array(ids, dtype=np.intp)) for before, ids in groups.items()]
        self.size = n

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.pieces[i] for i in ids if 0 <= i < self.size).decode("utf-8", "replace")


@dataclass
class _State:
    field: Field | str | None  # the field the current line belongs to
    line: str  # the current (last) line's text, including the key for key lines
    line_is_tags: bool  # the line is a tag list (tag line or a meta line)
    tags_done: list[str]  # complete tags on the current tag line
    partial: str  # the text of the tag being written
    keys: set[str]  # keys written in prompt and completion
    pending_key: str | None  # a key we must write next (forced)
    stop_at: int | None  # where to cut the completion when stopping
    stop_reason: str
    line_keys: frozenset[str] = frozenset()  # canonical keys of tags_done


class DecodeRules:
    """The decode-time rules of one request (see the module docstring)."""

    def __init__(self, plan: Plan, vocab: TokenText, table: TagTable | None = None,
                 known_tags_only: bool = False) -> None:
        self.plan = plan
        self.vocab = vocab
        self.table = table or default_table()
        self.bans = BanList.from_request(plan.request, self.table)
        self.min_tags, self.cap = plan.length.tag_range
        self.gen_meta = plan.request.gen_meta
        self.fields = [f.value for f in plan.fields]
        prompt_lines = plan.prompt.split("\n")
        self.prompt_keys = {line.split(":", 1)[0] for line in prompt_lines if ":" in line and line.split(":", 1)[0] in KEYS}
        last = prompt_lines[-1]
        self.prefix_line = last  # the open line of the prompt, e.g. "tag: 1girl, forest" or "long:"
        self._opens_empty = last.endswith(":") and last[:-1] in KEYS
        self._continues_tags = plan.open_field is Field.TAG and last.startswith("tag:") and bool(last[4:].strip())
        # normalize() and canonical() of finished tags, cached: every step re-reads the whole
        # current tag line, and both functions are pure.
        self._normalized: dict[str, str] = {}
        self._canonical: dict[str, str] = {}
        self._user_keys = set(plan.user.keys)
        self.known_tags_only = known_tags_only

    def _normalize(self, text: str) -> str:
        out = self._normalized.get(text)
        if out is None:
            out = self._normalized[text] = normalize(text)
        return out

    # -- state ---------------------------------------------------------------------------
    def state(self, completion: str) -> _State:
        lines = (self.prefix_line + completion).split("\n")
        keys = set(self.prompt_keys)
        field: str | None = self.plan.open_field.value
        written = [field]
        stop_at: int | None = None
        reason = ""
        offset = -len(self.prefix_line)  # position of each line start within the completion
        for idx, line in enumerate(lines):
            key = None
            if idx > 0:
                head = line.split(":", 1)[0]
                if ":" in line and head in KEYS:
                    key = head
            if key is not None:
                allowed_meta = self.gen_meta and key in _META_LINE_KEYS + ("aspect ratio",)
                later_field = key in self.fields and key not in written
                if key in keys or key == "target" or not (allowed_meta or later_field):
                    stop_at = max(offset - 1, 0)
                    reason = f"repeated or unexpected key '{key}'"
                    break
                keys.add(key)
                field = key
                written.append(key)
            offset += len(line) + 1
        cur = lines[-1]
        cur_key = cur.split(":", 1)[0] if ":" in cur else None
        line_field = field
        line_is_tags = False
        if len(lines) == 1 or (cur_key is not None and cur_key in KEYS):
            line_is_tags = line_field == "tag" or line_field in _META_LINE_KEYS
        body = cur.split(":", 1)[1] if (line_is_tags and ":" in cur) else ""
        items = body.split(",")
        norm = self._normalize
        tags_done = [norm(t) for t in items[:-1] if norm(t)]
        partial = items[-1] if items else ""
        pending = self._pending_key(lines, field)
        line_keys = frozenset(self._key(t) for t in tags_done)
        return _State(field, cur, line_is_tags, tags_done, partial, keys, pending, stop_at, reason, line_keys)

    def _pending_key(self, lines: list[str], field: str | None) -> str | None:
        """The next field's key, when a single-line field just ended with a newline."""
        if len(lines) < 2:
            return None
        cur = lines[-1]
        if field not in ("tag", "short") or self._line_has_key(cur):
            return None
        # The newline ended a tag or short line; open the next task field if there is one.
        try:
            nxt = self.fields[self.fields.index(field) + 1]
        except (ValueError, IndexError):
            return None
        want = f"{nxt}:"
        if want.startswith(cur):
            return want[len(cur):] or None
        return None

    @staticmethod
    def _line_has_key(line: str) -> bool:
        return ":" in line and line.split(":", 1)[0] in KEYS

    # -- rules ---------------------------------------------------------------------------
    def stop(self, completion: str, st: _State | None = None) -> tuple[int, str] | None:
        """Where to cut and why, when the requested fields are written; else None."""
        st = st or self.state(completion)
        if st.stop_at is not None:
            return st.stop_at, st.stop_reason
        if not completion.endswith("\n") or self.gen_meta:
            return None
        # A newline just ended a line. Tags and short captions are one line each.
        if st.field in ("tag", "short") and st.field == self.fields[-1]:
            return len(completion) - 1, "requested fields written"
        return None

    def _key(self, tag: str) -> str:
        key = self._canonical.get(tag)
        if key is None:
            key = self._canonical[tag] = self.table.canonical(tag)
        return key

    def _seen(self, st: _State) -> set[str]:
        """Canonical keys of the tags the current line holds, plus all of the user's tags."""
        return set(st.line_keys) | self._user_keys

    def _count(self, st: _State) -> tuple[int, bool]:
        return len(st.line_keys), bool(normalize(st.partial))

    def _known(self, tag: str, content: bool) -> bool:
        return self.table.is_content(tag) if content else self.table.is_known(tag)

    def _valid_tag_token(self, partial: str, text: str, content: bool, seen: set[str]) -> bool:
        """Whether a token keeps the tag being written on the way to a known tag not yet written
        (or ends one)."""
        cuts = [i for i in (text.find(","), text.find("\n")) if i >= 0]
        if not cuts:
            n = self._normalize(partial + text)
            return not n or self.table.is_prefix(n, content, seen)
        cut = min(cuts)
        done = self._normalize(partial + text[:cut])
        if done and not self._known(done, content):
            return False
        rest = self._normalize(text[cut + 1:])
        return not rest or "," in rest or "\n" in text[cut + 1:] or self.table.is_prefix(rest, content, seen)

    def restrict_to_known(self, completion: str, logits: np.ndarray, banned: np.ndarray,
                          st: _State | None = None, top: int = 256) -> np.ndarray:
        """With ``known_tags_only``: in tag lines, keep only the likeliest tokens that continue a
        known tag or end one (on the ``tag:`` line: special and general tags). When none of the
        ``top`` likeliest qualifies, or the tag is already off the table, only tokens that end
        the tag remain, so a stray tag stays one tag (and is dropped from the result)."""
        st = st or self.state(completion)
        if not self.known_tags_only or not st.line_is_tags or st.pending_key is not None:
            return banned
        if not completion and self._continues_tags:
            return banned  # the first token only ends the user's last tag
        v = self.vocab
        content = st.field == "tag"
        partial = st.partial
        norm = self._normalize(partial)
        enders = v.has_comma | v.has_newline
        enders[v.eos_id] = True
        seen = self._seen(st)
        if norm and not self.table.is_prefix(norm, content, seen):
            out = banned | ~enders
            return banned if out.all() else out
        work = np.where(banned, -np.inf, logits)
        k = min(top, work.size)
        order = np.argpartition(work, -k)[-k:]
        texts = v.texts
        eos_ok = not norm or self._known(norm, content)
        keep = [int(i) for i in order if np.isfinite(work[i])
                and ((i == v.eos_id and eos_ok) or (i != v.eos_id and texts[i] and self._valid_tag_token(partial, texts[i], content, seen)))]
        if keep:
            out = np.ones_like(banned)
            out[keep] = False
            return out | banned
        out = banned | ~enders
        return banned if out.all() else out

    def mask(self, completion: str, st: _State | None = None) -> np.ndarray:
        """Boolean mask of the token ids that are forbidden at this step."""
        st = st or self.state(completion)
        v = self.vocab
        banned = v.junk.copy()
        if st.pending_key is not None:
            want = st.pending_key
            allowed = np.array([bool(t) and want.startswith(t) for t in v.texts], dtype=bool)
            if allowed.any():
                return ~allowed
            return banned
        if not completion and self._opens_empty:
            # "key:" was opened empty: the value starts with a space, as in training ("key: value").
            banned |= ~v.starts_space
            banned[v.eos_id] = False
        if not st.line_is_tags:
            return banned
        # Tags: length class on the tag line, bans everywhere.
        if not completion and self._continues_tags:
            # The user's last tag is complete: the model may only add ", next" or end the line,
            # never extend the user's tag ("forest" -> "forestry").
            banned |= ~v.ends_tag
            banned[v.eos_id] = False
        if st.field == "tag":
            n, has_partial = self._count(st)
            total = n + (1 if has_partial else 0)
            if total < self.min_tags:
                banned |= v.has_newline
                banned[v.eos_id] = True
            if total >= self.cap:
                banned |= v.has_comma
                if not has_partial:
                    # Nothing left to write on this line: only a newline or EOS may come.
                    banned |= ~v.has_newline
                    banned[v.eos_id] = False
            if self.fields[-1] != "tag":
                # Fields still to write after the tags: the text cannot end on the tag line.
                banned[v.eos_id] = True
        # A token that would complete a banned tag, or a tag already written (the user's or the
        # model's), is masked: duplicates never eat into the length class, bans never appear.
        # (Until the completion ends the user's last tag, the partial tag is the user's own.)
        seen = self._seen(st) if ("," in completion or "\n" in completion) else set()
        partial = st.partial
        for before, ids in v.terminator_groups:
            text = partial + before
            if normalize(text) and (self._key(text) in seen or (self.bans and self.bans.matches(text))):
                banned[ids] = True
        if normalize(partial) and (self._key(partial) in seen or (self.bans and self.bans.matches(partial))):
            banned[v.eos_id] = True
        return banned
