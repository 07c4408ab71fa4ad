"""Turning a parsed model text into the final result: merge, dedupe, cap, ban, render.

The user's tags always survive, first and in their order; new tags are deduplicated against
them (aliases included), capped by the length class, and filtered by the ban list and the content
rating (decoding already masks both; this is the second check). A generated caption sentence with a
banned word or a word above the rating is dropped. What was removed is listed in ``safety``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .bans import BanList
from .errors import RequestError
from .parse import JSON_ORDER, Parsed
from .planner import Field, Plan
from .rating import Forbidden
from .request import CaptionKind, Request
from .safety import Blocked, SafetyReport
from .syntax import ItemKind, render_item, render_tag
from .tags import Category, TagTable, default_table
from .template import Preset, first_tag_placeholder, render_template, resolve_template

__all__ = ["Expansion", "Provenance", "default_preset", "finish"]


@dataclass(frozen=True)
class Provenance:
    """Where a result came from: model, backend, settings, seed, token counts and timings."""

    model: str = ""
    model_file: str = ""
    backend: str = ""
    sampling: dict[str, object] = field(default_factory=dict)
    seed: int | None = None
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    trimmed: tuple[str, ...] = ()  # what was cut from the input to fit the context, if anything
    stop_reason: str = ""
    neutralised: tuple[str, ...] = ()  # user text rewritten so it cannot read as protocol


@dataclass(frozen=True)
class Expansion:
    """The result of one expansion.

    Attributes:
        user_tags / new_tags: category name -> tags (normalised), the user's and the new ones
            kept apart; ``tags`` merges them, user's first.
        short, long: the captions (the user's or the model's).
        extended, generated: the ``<|extended|>`` and ``<|generated|>`` template values.
        prompt: the rendered prompt (template applied, host syntax of the user's tags restored).
        tags_text, caption_text: the tag string and the caption alone (for dual encoders).
        dropped: new tags that were banned, above the rating, unknown or over the length cap.
        plan: the planned model pass (task, exact prompt).
        safety: what the safety layer did: look-alike and invisible characters found in your
            text, the rating in force, how the ban box was read, anything removed after decoding.
        completion: what the model wrote after the prompt.
        provenance: model, backend, sampling, seed, token counts, timings (None without a model).
    """

    user_tags: dict[str, tuple[str, ...]]
    new_tags: dict[str, tuple[str, ...]]
    short: str
    long: str
    extended: str
    generated: str
    prompt: str
    tags_text: str
    caption_text: str
    dropped: tuple[str, ...]
    plan: Plan
    completion: str = ""
    provenance: Provenance | None = None
    safety: SafetyReport = field(default_factory=SafetyReport)

    @property
    def tags(self) -> dict[str, tuple[str, ...]]:
        return {c: self.user_tags.get(c, ()) + self.new_tags.get(c, ()) for c in JSON_ORDER}

    @property
    def seed(self) -> int | None:
        return self.provenance.seed if self.provenance else None

    def to_dict(self, timings: bool = True) -> dict[str, object]:
        """A JSON-ready dict. ``timings=False`` leaves out the seconds, so equal runs print equal JSON."""
        prov = self.provenance
        return {
            "prompt": self.prompt,
            "tags_text": self.tags_text,
            "caption_text": self.caption_text,
            "user_tags": {k: list(v) for k, v in self.user_tags.items() if v},
            "new_tags": {k: list(v) for k, v in self.new_tags.items() if v},
            "short": self.short,
            "long": self.long,
            "dropped": list(self.dropped),
            "extended": self.extended,
            "generated": self.generated,
            "task": self.plan.task_name,
            "model_input": self.plan.prompt,
            "safety": self.safety.to_dict(),
            "completion": self.completion,
            "request": self.plan.request.to_dict(),
            "provenance": None
            if prov is None
            else {
                "model": prov.model,
                "model_file": prov.model_file,
                "backend": prov.backend,
                "sampling": prov.sampling,
                "seed": prov.seed,
                "prompt_tokens": prov.prompt_tokens,
                "generated_tokens": prov.generated_tokens,
                **({"seconds": prov.seconds} if timings else {}),
                "trimmed": list(prov.trimmed),
                "stop_reason": prov.stop_reason,
                "neutralised": list(prov.neutralised),
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], table: TagTable | None = None) -> Expansion:
        """Read back :meth:`to_dict`'s output exactly (the plan is rebuilt from the saved request and
        checked against the saved model input; nothing is parsed or rendered again).

        Example:
            >>> from tipo.planner import plan
            >>> e = finish(plan(Request("1girl", output="tags")), Parsed())
            >>> Expansion.from_dict(e.to_dict()) == e
            True
        """
        from .planner import plan as make_plan

        if not isinstance(data, Mapping) or "request" not in data or "model_input" not in data:
            raise RequestError("not an Expansion.to_dict() result (it needs 'request' and 'model_input'); "
                               "save results with Expansion.to_dict()")
        request = Request.from_dict(data["request"])
        planned = make_plan(request, table=table)
        if planned.prompt != data["model_input"] and data.get("task"):
            planned = make_plan(request, task=data["task"], table=table)
        if planned.prompt != data["model_input"]:
            raise RequestError("the saved model_input does not match the saved request's plan; the result was "
                               "edited or made by another tipo version")
        prov = data.get("provenance")
        provenance = None
        if prov is not None:
            provenance = Provenance(**{**prov, "trimmed": tuple(prov.get("trimmed", ()))})
        # The saved request is the screened one (look-alikes folded): what was folded comes from
        # the saved safety report.
        safety = SafetyReport.from_dict(data["safety"]) if data.get("safety") else SafetyReport()
        if safety.text_changes:
            planned = replace(planned, text_changes=safety.text_changes)

        def tags(key: str) -> dict[str, tuple[str, ...]]:
            given = data.get(key) or {}
            return {c: tuple(given.get(c, ())) for c in JSON_ORDER}

        return cls(user_tags=tags("user_tags"), new_tags=tags("new_tags"), short=data["short"], long=data["long"],
                   extended=data["extended"], generated=data["generated"], prompt=data["prompt"],
                   tags_text=data["tags_text"], caption_text=data["caption_text"], dropped=tuple(data["dropped"]),
                   plan=planned, completion=data.get("completion", ""), provenance=provenance, safety=safety)

    def render(self, template: str | Preset | None = None) -> Expansion:
        """The same expansion rendered with another template (no model pass).

        Example:
            >>> from tipo.planner import plan
            >>> e = finish(plan(Request("1girl, forest", output="tags")), Parsed())
            >>> e.render("<|general|> | <|special|>").prompt
            'forest | 1girl'
        """
        new = {k: list(v) for k, v in self.new_tags.items()}
        prompt, tags_text, caption_text = _render(self.plan, new, self.extended, self.generated, template)
        return replace(self, prompt=prompt, tags_text=tags_text, caption_text=caption_text)


def _render(plan: Plan, new_tags: dict[str, list[str]], extended: str, generated: str,
            template: str | Preset | None) -> tuple[str, str, str]:
    """The prompt, tag text and caption text of a result (template applied, host syntax restored)."""
    values, leading = _render_category_values(plan, new_tags)
    values["extended"] = extended
    values["generated"] = generated
    if template is None:
        template = default_preset(plan.request)

    def render(text: str) -> str:
        # The leading block (the user's items up to their last BREAK) opens the template's first tag
        # placeholder; a caption-only template shows no tags.
        first = first_tag_placeholder(text)
        if not leading or first is None:
            return render_template(text, values)
        return render_template(text, {**values, first: ", ".join(v for v in (leading, values.get(first)) if v)})

    return render(resolve_template(template)), render(Preset.TAGS.text), render_template(Preset.CAPTION.text, values)


def _render_category_values(plan: Plan, new_tags: dict[str, list[str]]) -> tuple[dict[str, str], str]:
    """Host-syntax strings per category, and the block that leads the prompt.

    The user's items come back as typed (:func:`tipo.syntax.render_item`). Everything up to and
    including the user's last ``BREAK`` is the leading block, in the order typed, so no tag moves
    from one ``BREAK`` chunk to another. After it, each category's value is the user's tags of that
    category in their order (an extra-network tag stays after the tag it followed), then the new
    tags; extra-network tags before the first such tag join the leading block.
    """
    user = plan.user
    items = user.items
    surviving = {t.item_index for t in user.tags}
    last_break = max((i for i, item in enumerate(items) if item.kind is ItemKind.BREAK), default=-1)
    lead: list[str] = [render_item(item) for i, item in enumerate(items[: last_break + 1])
                       if item.kind is not ItemKind.TAG or i in surviving]
    after: dict[int, list[str]] = {}
    anchor = -1
    for index in range(last_break + 1, len(items)):
        item = items[index]
        if item.kind is ItemKind.TAG:
            if index in surviving:
                anchor = index
        elif anchor < 0:
            lead.append(render_item(item))
        else:
            after.setdefault(anchor, []).append(render_item(item))
    values: dict[str, str] = {}
    for name in JSON_ORDER:
        category = Category(name)
        parts = []
        for t in user.tags:
            if t.category is category and t.item_index > last_break:
                parts.append(render_item(items[t.item_index]))
                parts.extend(after.get(t.item_index, []))
        parts.extend(render_tag(tag) for tag in new_tags.get(name, []))
        values[name] = ", ".join(p for p in parts if p)
    return values, ", ".join(p for p in lead if p)


def default_preset(request: Request) -> Preset:
    """The template used when none is given: the tags when the user gave or asked for tags, the
    caption when the user gave or asked for one (the user's words are never left out).

    Example:
        >>> [default_preset(Request(*a, output=o)).value for a, o in [(("1girl",), "caption"), ((), "caption"),
        ...                                                           (("1girl",), "tags"), (("",), "both")]]
        ['both', 'caption', 'tags', 'both']
    """
    tags = bool(request.tags.strip()) or request.output.value != "caption"
    caption = bool(request.caption.strip()) or request.output.value != "tags"
    if tags and caption:
        return Preset.BOTH
    return Preset.TAGS if tags else Preset.CAPTION


def finish(
    plan: Plan,
    parsed: Parsed,
    template: str | Preset | None = None,
    completion: str = "",
    provenance: Provenance | None = None,
    table: TagTable | None = None,
    known_only: bool = False,
    known: TagTable | None = None,
) -> Expansion:
    """Merge the user's request and the parsed model text into the final :class:`Expansion`.

    Args:
        plan: the planned pass (holds the request and the user's tags).
        parsed: the parsed prompt plus completion.
        template: a template text, a :class:`Preset` or its name; None uses
            :func:`default_preset` (what the user gave and asked for).
        known_only: drop new tags that are not known (listed in ``dropped``): in ``known`` (the
            tags the model was trained on) when given, else in the tag table.
    """
    table = table or default_table()
    request = plan.request
    bans = BanList.from_request(request, table)
    forbidden = Forbidden(bans, plan.rating, table=table)
    blocked: list[Blocked] = []
    user_keys = set(plan.user.keys)
    user_tags = {c: tuple(plan.user.by_category(Category(c))) for c in JSON_ORDER}
    user_content = len(user_tags["special"]) + len(user_tags["general"])
    cap = plan.length.tag_range[1]
    room = max(0, cap - user_content)

    new_tags: dict[str, list[str]] = {c: [] for c in JSON_ORDER}
    dropped: list[str] = []
    for name in JSON_ORDER:
        for tag in parsed.tags[Category(name)]:
            key = table.canonical(tag)
            if key in user_keys:
                continue
            why = forbidden.tag_reason(tag)
            if why is not None:
                blocked.append(Blocked(tag, name, why))
                dropped.append(tag)
                continue
            if known_only and not (known or table).is_known(tag):
                dropped.append(tag)
                continue
            if name in ("special", "general"):
                if room <= 0:
                    dropped.append(tag)
                    continue
                room -= 1
            user_keys.add(key)
            new_tags[name].append(tag)

    kind = request.resolved_caption_kind
    user_caption = "\n".join(line.strip() for line in request.caption.strip().splitlines() if line.strip())
    wrote = set(plan.fields)
    written_short = _clean_caption(parsed.short, forbidden, blocked) if Field.SHORT in wrote else ""
    short = user_caption if kind is CaptionKind.SHORT else written_short
    if kind is CaptionKind.LONG:
        long = user_caption
    else:
        long = _clean_caption(parsed.long, forbidden, blocked) if Field.LONG in wrote else ""
    # <|generated|>: the caption the model wrote; <|extended|>: the user's caption, kept whole and
    # first, followed by the model's (tag-only input: the model's caption alone).
    generated = ""
    if Field.LONG in wrote:
        generated = long
    elif Field.SHORT in wrote:
        generated = written_short
    extended = "\n".join(part for part in (user_caption, generated) if part)

    text, tags_text, caption_text = _render(plan, new_tags, extended, generated, template)
    return Expansion(
        user_tags={k: v for k, v in user_tags.items()},
        new_tags={k: tuple(v) for k, v in new_tags.items()},
        short=short,
        long=long,
        extended=extended,
        generated=generated,
        prompt=text,
        tags_text=tags_text,
        caption_text=caption_text,
        dropped=tuple(dropped),
        plan=plan,
        completion=completion,
        provenance=provenance,
        safety=SafetyReport(
            homoglyphs=request.homoglyphs.value,
            text_changes=plan.text_changes,
            rating=plan.rating.value,
            rating_source=plan.rating_source,
            rating_line="\nrating: " in "\n" + plan.prompt,
            bans=tuple((e.text, e.kind) for e in bans.entries),
            blocked=tuple(blocked),
        ),
    )


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _clean_caption(text: str, forbidden: Forbidden, blocked: list[Blocked]) -> str:
    """The generated caption without its sentences that hold a forbidden word (listed in ``blocked``)."""
    if not text or not forbidden or not forbidden.caption_reasons(text):
        return text
    paragraphs = []
    for paragraph in text.split("\n"):
        kept = []
        for sentence in _SENTENCE.split(paragraph):
            reasons = forbidden.caption_reasons(sentence)
            if reasons:
                blocked.append(Blocked(sentence, "caption", reasons[0][1]))
            else:
                kept.append(sentence)
        if kept:
            paragraphs.append(" ".join(kept))
    return "\n".join(paragraphs)
