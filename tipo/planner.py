"""Planning one model pass and building its exact input text (docs/FORMAT.md sections 2 and 3).

:func:`plan` turns a :class:`~tipo.request.Request` into a :class:`Plan`: the trained task
that produces every wanted field in ONE pass, and the exact prompt text (without BOS) the
TIPO weights expect.

Example:
    >>> from tipo.request import Request
    >>> p = plan(Request("1girl, forest", length="short", output="tags"))
    >>> print(p.prompt)
    target: <|short|>
    tag: 1girl, forest
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .errors import RequestError
from .rating import Rating, resolve_rating
from .request import CaptionKind, Length, Output, Request
from .safety import TextChange, screen_request
from .syntax import ItemKind, PromptItem, check_weights, parse_prompt
from .tags import Category, TagTable, default_table, normalize
from .terms import Field, Task

__all__ = [
    "KEYS",
    "META_KEYS",
    "Field",
    "Plan",
    "Task",
    "UserTag",
    "UserTags",
    "build_prompt",
    "build_sample",
    "model_meta",
    "neutralise",
    "rebuild",
    "plan",
    "read_user_tags",
    "target_line",
]


# Meta lines in the project's fixed order (training shuffled them; any order is in distribution).
META_KEYS: tuple[tuple[Category, str], ...] = (
    (Category.META, "meta"),
    (Category.RATING, "rating"),
    (Category.ARTIST, "artist"),
    (Category.CHARACTERS, "characters"),
    (Category.COPYRIGHTS, "copyrights"),
    (Category.QUALITY, "quality"),
)
CONTENT_CATEGORIES = (Category.SPECIAL, Category.GENERAL)
# Every key of the format (FORMAT.md section 4): a line that starts with one of these and ':'
# opens that field. The parser and the decode rules read keys by this list.
KEYS = ("meta", "rating", "artist", "characters", "copyrights", "quality", "aspect ratio", "target", "tag", "short",
        "long")
KEY_LINE = re.compile(r"^(" + "|".join(re.escape(k) for k in KEYS) + r"):")
#: What a neutralised key line's colon becomes (see :func:`neutralise`).
NEUTRAL_SEPARATOR = " -"


@dataclass(frozen=True)
class UserTag:
    """One of the user's tags: as the model sees it, where it goes, and where it came from."""

    text: str  # normalised, as written (aliases are NOT rewritten in the model input)
    key: str  # canonical spelling, used to find duplicates
    category: Category
    item_index: int  # index into UserTags.items (to restore weights and position)


@dataclass(frozen=True)
class UserTags:
    """The user's tag text taken apart: host-syntax items and the deduplicated tags."""

    source: str
    items: tuple[PromptItem, ...]
    tags: tuple[UserTag, ...]

    def by_category(self, category: Category) -> list[str]:
        return [t.text for t in self.tags if t.category is category]

    @property
    def content(self) -> list[str]:
        """Tags for the ``tag:`` line: special tags first, then general, each in order."""
        return self.by_category(Category.SPECIAL) + self.by_category(Category.GENERAL)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(t.key for t in self.tags)


def read_user_tags(text: str, table: TagTable | None = None) -> UserTags:
    """Parse the user's tag text: host syntax off, normalised, categorised, deduplicated.

    Example:
        >>> [t.text for t in read_user_tags("smile, 1girl, (smile:1.2), long_hair").tags]
        ['smile', '1girl', 'long hair']
    """
    table = table or default_table()
    items = parse_prompt(text, table.is_known)
    check_weights(items, "tags")
    seen: set[str] = set()
    tags = []
    for index, item in enumerate(items):
        if item.kind is not ItemKind.TAG:
            continue
        norm = normalize(item.text)
        if not norm:
            continue
        key = table.canonical(norm)
        if key in seen:
            continue
        seen.add(key)
        tags.append(UserTag(norm, key, table.category(norm), index))
    return UserTags(text, items, tuple(tags))


@dataclass(frozen=True)
class Plan:
    """One model pass: the task, the exact prompt (after BOS) and what the model must write.

    Attributes:
        task: the trained task, or None for plain tag expansion.
        prompt: the exact model input text after BOS, no trailing newline.
        open_field: the field the model writes first (continuing it when it has a prefix).
        fields: the fields the model writes, in order (the open field first).
        length: the size class.
        request: the request planned, its tags and caption screened for look-alike and
            invisible characters (:mod:`tipo.safety`).
        user: the user's tags, taken apart.
        text_changes: what the screening found (and, by default, folded or removed).
        rating: the content rating in force; ``rating_source`` says where it came from
            (``option``, ``your tags``, ``default``; see :mod:`tipo.rating`).
    """

    task: Task | None
    prompt: str
    open_field: Field
    fields: tuple[Field, ...]
    length: Length
    request: Request
    user: UserTags
    inputs: dict[Field, str] = field(default_factory=dict)
    neutralised: tuple[str, ...] = ()  # user text rewritten so it cannot read as protocol (see neutralise)
    text_changes: tuple[TextChange, ...] = ()
    rating: Rating = Rating.GENERAL
    rating_source: str = "default"

    @property
    def task_name(self) -> str | None:
        return None if self.task is None else self.task.value

    @property
    def continues_tags(self) -> bool:
        """True when the prompt ends inside the ``tag:`` line (the model continues it)."""
        return self.open_field is Field.TAG

    def to_dict(self) -> dict[str, object]:
        return {
            "task": self.task_name,
            "prompt": self.prompt,
            "open_field": self.open_field.value,
            "fields": [f.value for f in self.fields],
            "length": self.length.value,
            "neutralised": list(self.neutralised),
        }


def model_meta(user: UserTags, request: Request) -> dict[Category, list[str]]:
    """The meta lines' tags for the model input: the user's, with the ``rating:`` line set to the
    request's rating when the user chose one (``unrestricted`` leaves the user's rating tags)."""
    meta = {category: user.by_category(category) for category, _ in META_KEYS}
    rating = request.rating
    if rating is not None and rating is not Rating.UNRESTRICTED:
        meta[Category.RATING] = [rating.value]
    return meta


def _clean_caption(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(line for line in lines if line)


def neutralise(text: str, what: str = "caption") -> tuple[str, tuple[str, ...]]:
    """User text is data, never protocol: rewrite lines that would read as a key of the format.

    The first line of a field follows its own key (``short: ...``), so only the lines after it can
    open a field. A line that starts with a key and a colon (``rating: explicit``, ``long: X``,
    ``aspect ratio: 2``) gets its colon replaced by `` -`` (``rating - explicit``): the smallest
    change after which neither the parser nor a model trained on ``key: value`` lines reads it as
    a field. Returns the text and one note per rewritten line (reported in the result).

    Example:
        >>> neutralise("A red car.\\nrating: explicit")
        ('A red car.\\nrating - explicit', ("caption line 2 started with the key 'rating:'; written 'rating -'",))
    """
    lines = text.split("\n")
    notes = []
    for i in range(1, len(lines)):
        m = KEY_LINE.match(lines[i])
        if m:
            key = m.group(1)
            lines[i] = key + NEUTRAL_SEPARATOR + lines[i][len(key) + 1:]
            notes.append(f"{what} line {i + 1} started with the key '{key}:'; written '{key}{NEUTRAL_SEPARATOR}'")
    return "\n".join(lines), tuple(notes)


def target_line(task: Task | None, length: Length, gen_meta: bool) -> str:
    """The ``target:`` line for a task (docs/FORMAT.md section 2.2).

    Example:
        >>> target_line(Task.SHORT_TO_LONG, Length.LONG, True)
        'target: <|short_to_long|> <|gen_meta|>'
    """
    parts = []
    if task is not Task.SHORT_TO_LONG:
        parts.append(f"<|{length.value}|>")
    if task is not None:
        parts.append(task.token)
    if gen_meta:
        parts.append("<|gen_meta|>")
    return "target: " + " ".join(parts)


def _auto_task(kind: CaptionKind | None, has_tags: bool, output: Output) -> tuple[Task | None, Field]:
    if kind is None:
        if output is Output.TAGS:
            return None, Field.TAG
        if output is Output.BOTH:
            return Task.TAG_TO_LONG, Field.TAG
        return Task.TAG_TO_LONG, (Field.LONG if has_tags else Field.TAG)
    if kind is CaptionKind.SHORT:
        if output is Output.TAGS:
            return Task.SHORT_TO_TAG, Field.TAG
        if output is Output.BOTH:
            return Task.SHORT_TO_TAG_TO_LONG, Field.TAG
        if has_tags:
            return Task.SHORT_TO_TAG_TO_LONG, Field.LONG
        return Task.SHORT_TO_LONG, Field.LONG
    # A long caption is already the caption: the model writes (more) tags.
    return Task.LONG_TO_TAG, Field.TAG


def _explicit_open_field(task: Task, inputs: dict[Field, str], output: Output) -> Field:
    fields = task.fields
    first = fields[0]
    if not inputs.get(first) and first is not Field.TAG:
        raise RequestError(
            f"task {task.value!r} starts from a {first.value} caption; give caption=... "
            f"with caption_kind={first.value!r}"
        )
    for f in fields[1:]:
        if f is Field.TAG and inputs.get(Field.TAG) and output is not Output.CAPTION:
            return f
        if not inputs.get(f):
            return f
    if first is Field.TAG:
        return first
    raise RequestError(f"task {task.value!r} has nothing left for the model to write with these inputs")


def build_prompt(
    task: Task | None,
    length: Length,
    gen_meta: bool,
    meta: dict[Category, list[str]],
    ratio: float | None,
    inputs: dict[Field, str],
    open_field: Field,
) -> str:
    """Assemble the exact model input text (no BOS) from its parts.

    ``meta`` maps meta categories to their tags; ``inputs`` holds the text of each field the
    user gave (``tag`` as a ``, ``-joined list); the prompt stops at ``open_field``, which is
    continued when it has a value (tags) and opened empty (``key:``) otherwise.
    """
    lines = []
    for category, key in META_KEYS:
        values = meta.get(category) or []
        if values:
            lines.append(f"{key}: {', '.join(values)}")
    if ratio is not None:
        lines.append(f"aspect ratio: {ratio:.1f}")
    lines.append(target_line(task, length, gen_meta))
    fields = task.fields if task is not None else (Field.TAG,)
    for f in fields:
        value = inputs.get(f, "")
        if f is open_field:
            lines.append(f"{f.value}: {value}" if value else f"{f.value}:")
            break
        lines.append(f"{f.value}: {value}")
    return "\n".join(lines)


def plan(request: Request, task: Task | str | None = None, table: TagTable | None = None) -> Plan:
    """Plan the single model pass for a request.

    Args:
        request: what the user asked for.
        task: force a trained task (for a "single operation"); None picks the composite
            task of docs/FORMAT.md section 3 that writes every wanted field in one pass.
        table: the tag table (default: the packaged one).

    Example:
        >>> plan(Request(caption="a red car", output="caption")).task_name
        'short_to_long'
    """
    if not isinstance(request, Request):
        raise RequestError(f"plan() takes a tipo.Request, got {type(request).__name__}")
    table = table or default_table()
    request, text_changes = screen_request(request)
    user = read_user_tags(request.tags, table)
    rating, rating_source = resolve_rating(request.rating, user.by_category(Category.RATING))
    content = user.content
    kind = request.resolved_caption_kind
    inputs: dict[Field, str] = {}
    neutralised: tuple[str, ...] = ()
    if content:
        inputs[Field.TAG] = ", ".join(content)
    if kind is not None:
        inputs[Field(kind.value)], neutralised = neutralise(_clean_caption(request.caption))

    if task is None:
        chosen, open_field = _auto_task(kind, bool(content), request.output)  # type: ignore[arg-type]
    else:
        if not isinstance(task, Task):
            try:
                task = Task(task)
            except ValueError:
                names = ", ".join(t.value for t in Task)
                raise RequestError(f"task={task!r} is not a trained TIPO task; choose one of {names}") from None
        chosen = task
        open_field = _explicit_open_field(task, inputs, request.output)  # type: ignore[arg-type]

    all_fields = chosen.fields if chosen is not None else (Field.TAG,)
    to_write = all_fields[all_fields.index(open_field):]
    meta = model_meta(user, request)
    prompt = build_prompt(chosen, request.length, request.gen_meta, meta, request.ratio, inputs, open_field)  # type: ignore[arg-type]
    return Plan(chosen, prompt, open_field, to_write, request.length, request, user, inputs,  # type: ignore[arg-type]
                neutralised, text_changes, rating, rating_source)


def rebuild(p: Plan, content: list[str] | None = None, caption: str | None = None,
            meta: dict[Category, list[str]] | None = None) -> Plan:
    """The same plan with less input for the model (used to fit the context window).

    ``content`` replaces the ``tag:`` line's tags, ``caption`` the caption field's text and
    ``meta`` the meta lines. The user's tags in ``p.user`` are unchanged, so nothing the user
    typed is lost from the result.
    """
    inputs = dict(p.inputs)
    if content is not None:
        if content:
            inputs[Field.TAG] = ", ".join(content)
        else:
            inputs.pop(Field.TAG, None)
    if caption is not None:
        for f in (Field.SHORT, Field.LONG):
            if f in inputs:
                inputs[f] = caption
    if meta is None:
        meta = model_meta(p.user, p.request)
    prompt = build_prompt(p.task, p.length, p.request.gen_meta, meta, p.request.ratio, inputs, p.open_field)
    return replace(p, prompt=prompt, inputs=inputs)


def build_sample(
    task: Task | None,
    length: Length,
    *,
    tags: list[str],
    given_tags: int = 0,
    short: str = "",
    long: str = "",
    meta: dict[Category, list[str]] | None = None,
    ratio: float | None = None,
    open_field: Field | None = None,
    gen_meta: dict[Category, list[str]] | None = None,
) -> tuple[str, str]:
    """One training sample as ``(prompt, completion)``: the prompt exactly as inference builds it
    (same :func:`build_prompt`), the completion what the model must write (EOS not included).

    Args:
        task: the trained task, or None for plain tag expansion.
        tags: the sample's special and general tags, in the (shuffled) order to write them.
        given_tags: how many of ``tags`` the prompt gives (a prefix); the model writes the rest.
        short, long: the captions of the sample.
        meta: meta lines shown in the prompt; ``gen_meta``: meta lines the model writes after
            the content (sets the ``<|gen_meta|>`` target token).
        open_field: the first field the model writes; None is the first field after the input
            (the input itself when it is ``tag``).

    Example:
        >>> p, c = build_sample(Task.TAG_TO_LONG, Length.SHORT, tags=["1girl", "smile", "hat"], given_tags=1,
        ...                     long="A girl smiles.")
        >>> print(p + c)
        target: <|short|> <|tag_to_long|>
        tag: 1girl, smile, hat
        long: A girl smiles.
    """
    fields = task.fields if task is not None else (Field.TAG,)
    values = {Field.TAG: ", ".join(tags), Field.SHORT: short, Field.LONG: long}
    if open_field is None:
        open_field = fields[0] if fields[0] is Field.TAG or len(fields) == 1 else fields[1]
    if open_field not in fields:
        raise RequestError(f"open_field {open_field.value!r} is not a field of task {task}")
    inputs: dict[Field, str] = {}
    for f in fields[: fields.index(open_field)]:
        inputs[f] = values[f]
    if open_field is Field.TAG and given_tags:
        inputs[Field.TAG] = ", ".join(tags[:given_tags])
    prompt = build_prompt(task, length, bool(gen_meta), meta or {}, ratio, inputs, open_field)
    parts = []
    for f in fields[fields.index(open_field):]:
        if f is Field.TAG and f is open_field:
            rest = tags[given_tags:]
            if rest:
                parts.append((", " if given_tags else " ") + ", ".join(rest))
        elif f is open_field:
            parts.append(" " + values[f] if values[f] else " <|empty|>")
        else:
            parts.append(f"\n{f.value}: " + (values[f] or "<|empty|>"))
    for category, key in META_KEYS:
        for_model = (gen_meta or {}).get(category) or []
        if for_model:
            parts.append(f"\n{key}: {', '.join(for_model)}")
    return prompt, "".join(parts)
