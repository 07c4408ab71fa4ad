"""Every user-facing option, declared once.

The CLI flags, the ComfyUI node inputs and the WebUI widgets are all generated from
:data:`OPTIONS`, and :func:`from_values` turns the values any host collected into the one
request type (:class:`~tipo.request.Request`) plus :class:`~tipo.request.Sampling`.

Example:
    >>> req, samp = from_values({"tags": "1girl", "length": "short", "seed": 3})
    >>> req.length.value, samp.seed
    ('short', 3)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import RequestError
from .planner import Task
from .request import Length, Output, Request, Sampling
from .template import Preset

__all__ = ["OPTIONS", "Kind", "Option", "by_name", "from_values", "to_values"]


class Kind(str, enum.Enum):
    TEXT = "text"
    MULTILINE = "multiline"
    CHOICE = "choice"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"


@dataclass(frozen=True)
class Option:
    """One option: its name, kind, default, bounds or choices, help text and group."""

    name: str
    kind: Kind
    default: object
    help: str
    group: str  # "request", "sampling" or "model"
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    step: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        return self.name.replace("_", " ").capitalize()


_S = Sampling()
_TEMPLATE_CHOICES = tuple(p.value for p in Preset)

OPTIONS: tuple[Option, ...] = (
    Option("tags", Kind.MULTILINE, "", "the tag text as typed in a host app (weights, LoRA tags, BREAK kept)", "request"),
    Option("caption", Kind.MULTILINE, "", "natural-language text to extend or to take tags from", "request"),
    Option("caption_kind", Kind.CHOICE, "auto", "is the caption short (to be extended) or already long; auto: long "
           "when it has several lines, more than 3 sentences or more than 60 words", "request",
           choices=("auto", "short", "long")),
    Option("length", Kind.CHOICE, Length.LONG.value, "size class of the result", "request",
           choices=tuple(m.value for m in Length)),
    Option("width", Kind.INT, 0, "image width in pixels (0: no aspect ratio line)", "request", min=0, max=16384, step=8),
    Option("height", Kind.INT, 0, "image height in pixels (0: no aspect ratio line)", "request", min=0, max=16384, step=8),
    Option("aspect_ratio", Kind.FLOAT, 0.0, "width / height, instead of width and height (0: unused)", "request",
           min=0.0, max=16.0, step=0.01),
    Option("output", Kind.CHOICE, Output.BOTH.value, "what to get back: more tags and a caption, tags only, "
           "or a caption only (the tags kept as given)", "request", choices=tuple(m.value for m in Output)),
    Option("gen_meta", Kind.BOOL, False, "let the model fill in missing meta lines", "request"),
    Option("ban", Kind.TEXT, "", "comma-separated tags that must not be generated", "request"),
    Option("ban_regex", Kind.TEXT, "", "a regular expression; generated tags that fully match it are dropped", "request"),
    Option("task", Kind.CHOICE, "auto", "force one trained task instead of the automatic one-pass plan", "request",
           choices=("auto",) + tuple(t.value for t in Task)),
    Option("template", Kind.TEXT, "", "a template with <|placeholders|>, or a preset: " + ", ".join(_TEMPLATE_CHOICES)
           + " (empty: follows output)", "request"),
    Option("seed", Kind.INT, -1, "seed (any integer >= 0; -1: a fresh one, reported in the result)", "sampling",
           min=-1, max=2**32 - 1),
    Option("temperature", Kind.FLOAT, _S.temperature, "0 = greedy", "sampling", min=0.0, max=5.0, step=0.01),
    Option("top_p", Kind.FLOAT, _S.top_p, "nucleus filter (1 = off)", "sampling", min=0.01, max=1.0, step=0.01),
    Option("top_k", Kind.INT, _S.top_k, "keep the k likeliest tokens (0 = off)", "sampling", min=0, max=1000),
    Option("min_p", Kind.FLOAT, _S.min_p, "drop tokens below this share of the likeliest (0 = off)", "sampling",
           min=0.0, max=1.0, step=0.01),
    Option("repetition_penalty", Kind.FLOAT, _S.repetition_penalty, "penalty on tokens already written (1 = off)",
           "sampling", min=0.5, max=3.0, step=0.01),
    Option("max_new_tokens", Kind.INT, _S.max_new_tokens, "hard cap on generated tokens", "sampling", min=1, max=1024),
    Option("model", Kind.TEXT, "", "registry name, .gguf file, HF folder or HF repo id (empty: the built-in model)",
           "model"),
    Option("backend", Kind.CHOICE, "auto", "llama.cpp (GGUF) or transformers (HF folder); auto picks by the model",
           "model", choices=("auto", "llama", "hf")),
)

_BY_NAME = {o.name: o for o in OPTIONS}


def by_name(name: str) -> Option:
    return _BY_NAME[name]


def from_values(values: Mapping[str, object]) -> tuple[Request, Sampling]:
    """Build the request and sampling settings from option values (missing ones: defaults).

    Host conventions are mapped here, once: width/height 0 mean "not given", seed -1 means
    "draw a fresh one", ``auto`` means "let tipo decide", an empty template follows ``output``.
    """
    unknown = set(values) - set(_BY_NAME)
    if unknown:
        raise RequestError(f"unknown option(s) {sorted(unknown)}; valid: {sorted(_BY_NAME)}")
    v = {o.name: values.get(o.name, o.default) for o in OPTIONS}
    width, height = int(v["width"] or 0), int(v["height"] or 0)  # type: ignore[call-overload]
    raw_regex = v["ban_regex"] or ()
    ban_regex = (raw_regex,) if isinstance(raw_regex, str) else tuple(str(r) for r in raw_regex)  # type: ignore[attr-defined]
    request = Request(
        tags=str(v["tags"] or ""),
        caption=str(v["caption"] or ""),
        caption_kind=None if v["caption_kind"] in ("auto", None, "") else v["caption_kind"],  # type: ignore[arg-type]
        length=v["length"],  # type: ignore[arg-type]
        width=width or None,
        height=height or None,
        aspect_ratio=float(v["aspect_ratio"]) or None,  # type: ignore[arg-type]
        output=v["output"],  # type: ignore[arg-type]
        gen_meta=bool(v["gen_meta"]),
        ban=tuple(t.strip() for t in str(v["ban"] or "").split(",") if t.strip()),
        ban_regex=ban_regex,
    )
    seed = int(v["seed"]) if v["seed"] is not None else -1  # type: ignore[call-overload]
    sampling = Sampling(
        temperature=float(v["temperature"]),  # type: ignore[arg-type]
        top_p=float(v["top_p"]),  # type: ignore[arg-type]
        top_k=int(v["top_k"]),  # type: ignore[call-overload]
        min_p=float(v["min_p"]),  # type: ignore[arg-type]
        repetition_penalty=float(v["repetition_penalty"]),  # type: ignore[arg-type]
        max_new_tokens=int(v["max_new_tokens"]),  # type: ignore[call-overload]
        seed=None if seed < 0 else seed,
    )
    return request, sampling


def to_values(request: Request, sampling: Sampling) -> dict[str, object]:
    """The inverse of :func:`from_values` (for infotext and saved settings)."""
    return {
        "tags": request.tags, "caption": request.caption,
        "caption_kind": request.caption_kind.value if request.caption_kind else "auto",
        "length": request.length.value, "width": request.width or 0, "height": request.height or 0,
        "aspect_ratio": request.aspect_ratio or 0.0, "output": request.output.value, "gen_meta": request.gen_meta, "ban": ", ".join(request.ban),
        "ban_regex": request.ban_regex[0] if request.ban_regex else "",
        "seed": -1 if sampling.seed is None else sampling.seed, "temperature": sampling.temperature,
        "top_p": sampling.top_p, "top_k": sampling.top_k, "min_p": sampling.min_p,
        "repetition_penalty": sampling.repetition_penalty, "max_new_tokens": sampling.max_new_tokens,
    }
