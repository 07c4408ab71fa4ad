"""Every user-facing setting, declared once.

Each :class:`Option` says everything a front end needs: the name, the kind of value, the default,
the bounds or choices, the help text, where the value goes (:class:`Dest`: a field of
:class:`~tipo.request.Request` or :class:`~tipo.request.Sampling`, a keyword of
``Expander.expand``, a keyword that changes the loaded model, or the host alone) and how it is
spelled in infotext. Everything else is rendered from :data:`OPTIONS`:

* ``Request`` and ``Sampling`` take their defaults and bounds from here (:meth:`Option.check`);
* :func:`tipo.settings.from_values` / :func:`tipo.settings.to_values` convert between the flat
  values a host holds and the validated objects, losslessly;
* the argparse flags of ``tipo expand``, ``tipo generate`` and ``python -m eval run``
  (:mod:`tipo.flags`), the ComfyUI inputs (``plugins/comfyui/widgets.py``), the WebUI widgets
  (``plugins/webui/scripts/tipo_script.py``) and the infotext (:mod:`tipo.infotext`).

Adding a setting is one declaration here plus the code that uses it (docs/architecture.md shows
an example).

Values have two forms. The *value form* is what a widget or a flag holds: plain JSON (``""``,
``0``, ``-1`` and ``"auto"`` stand for "not set" where :attr:`Option.unset` says so; a repeated
option is a list of strings). The *object form* is what ``Request``/``Sampling``/``Expander``
take: ``None`` for "not set", enums for choices, tuples for repeated options.

Example:
    >>> by_name("temperature").check(7.0)
    Traceback (most recent call last):
    ...
    tipo.errors.RequestError: temperature=7.0 is not valid; give a number in [0.0, 5.0]
    >>> by_name("seed").to_object(-1) is None, by_name("ban").to_object("hat, red eyes")
    (True, ('hat', 'red eyes'))
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import RequestError
from .rating import Rating
from .safety import Homoglyphs
from .template import Preset
from .terms import CaptionKind, Length, Output, Task, values

__all__ = ["NO_UNSET", "OPTIONS", "SEED_MAX", "Dest", "Kind", "Option", "by_name", "default", "in_dest"]


class Kind(str, enum.Enum):
    """The kind of value (and so the widget): text, multi-line text, a choice, a number, a switch."""

    TEXT = "text"
    MULTILINE = "multiline"
    CHOICE = "choice"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"


class Dest(str, enum.Enum):
    """Where a setting's value goes."""

    REQUEST = "request"  # the Request field of the same name
    SAMPLING = "sampling"  # the Sampling field of the same name
    EXPAND = "expand"  # the Expander.expand keyword of the same name (task, template)
    LOADING = "loading"  # changes the loaded model: a keyword of Expander / ExpanderPool.get (``param``)
    HOST = "host"  # read by the front end only


class _NoUnset:
    def __repr__(self) -> str:
        return "NO_UNSET"


NO_UNSET: Any = _NoUnset()


@dataclass(frozen=True)
class Option:
    """One setting.

    Attributes:
        name: the setting's name (the field / keyword it fills; JSON key; ``--flag-name``).
        kind: the kind of value.
        default: the default, in value form.
        help: one line for ``--help``, tooltips and widget info.
        dest: where the value goes.
        choices: the allowed values of a choice.
        min, max: inclusive bounds of a real (not unset) number.
        step: the widgets' step.
        unset: the value-form value meaning "not set" (object form ``None``); ``NO_UNSET`` when
            every value is real.
        repeated: the value is a list of strings; a single string is split on ``separator``.
        separator: how a repeated option is written as one text (``","`` or ``"\\n"``).
        mapping: choice value -> object (for choices whose objects are not their strings).
        param: the keyword the object is passed as (default: ``name``).
        infotext: the option's own top-level infotext key; empty: inside ``TIPO Parameters``.
        aliases: older names of the option in infotext and saved settings (read, never written).
    """

    name: str
    kind: Kind
    default: Any
    help: str
    dest: Dest
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    step: float | None = None
    unset: Any = NO_UNSET
    repeated: bool = False
    separator: str = ","
    mapping: tuple[tuple[str, object], ...] = ()
    param: str = ""
    infotext: str = ""
    aliases: tuple[str, ...] = ()

    # -- spelling -----------------------------------------------------------------------------
    @property
    def flag(self) -> str:
        """The command-line flag: ``--name-with-dashes``."""
        return "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        """The widget label: ``Name with spaces``."""
        return self.name.replace("_", " ").capitalize()

    @property
    def keyword(self) -> str:
        """The keyword the object form is passed as."""
        return self.param or self.name

    @property
    def infotext_key(self) -> str:
        """The option's key in pasted infotext: its own key, else ``TIPO <name>``."""
        return self.infotext or f"TIPO {self.name}"

    @property
    def widget_min(self) -> float | None:
        """The smallest value a widget offers: ``min``, or the unset value when it is below."""
        if self.min is not None and isinstance(self.unset, (int, float)) and self.unset is not NO_UNSET:
            return min(self.min, self.unset)
        return self.min

    @property
    def widget_max(self) -> float | None:
        return self.max

    def widget_text(self, value: object) -> object:
        """The value as a single widget holds it (a repeated option joined by its separator)."""
        if self.repeated:
            joiner = ", " if self.separator == "," else self.separator
            return joiner.join(self.coerce(value))  # type: ignore[arg-type]
        return value

    # -- checking -----------------------------------------------------------------------------
    def _bad(self, value: object, fix: str) -> RequestError:
        shown: object = value
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**12:
            digits = len(str(abs(value)))
            shown = f"{str(value)[:8]}... ({digits} digits)"
        elif isinstance(value, str) and len(value) > 60:
            shown = value[:60] + "..."
        return RequestError(f"{self.name}={shown!r} is not valid; {fix}")

    def _range_fix(self, integer: bool) -> str:
        what = "a whole number" if integer else "a number"
        lo = self.min if integer or self.min is None else float(self.min)
        hi = self.max if integer or self.max is None else float(self.max)
        fix = f"give {what} in [{lo}, {hi}]"
        if self.unset is not NO_UNSET:
            fix += f" ({self.unset!r}: not set)"
        return fix

    def check(self, obj: object) -> object:
        """Validate an object-form number against the bounds (Request/Sampling call this)."""
        integer = self.kind is Kind.INT
        if not self._in_bounds(obj, integer):
            what = "a whole number" if integer else "a number"
            lo = self.min if integer or self.min is None else float(self.min)
            hi = self.max if integer or self.max is None else float(self.max)
            raise self._bad(obj, f"give {what} in [{lo}, {hi}]")
        return obj

    def _in_bounds(self, value: object, integer: bool) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            return False
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float is out of every bound
            return False
        return math.isfinite(number) and (self.min is None or number >= self.min) and (
            self.max is None or number <= self.max)

    def coerce(self, value: object) -> object:
        """A host value in its canonical value form (validated; raises a one-line RequestError).

        Accepts what hosts hand over: integral floats for whole numbers (gradio's ``Number``),
        ints for floats, enums for choices, a single string or a list for repeated options.
        """
        if self.repeated:
            if isinstance(value, str):
                parts = value.split(self.separator)
            elif isinstance(value, (list, tuple)):
                parts = list(value)
            else:
                raise self._bad(value, f"give a list of strings or one text ({self.separator!r}-separated)")
            out = []
            for part in parts:
                if not isinstance(part, str):
                    raise self._bad(value, "every entry must be a string")
                _check_unicode(self.name, part)
                text = part.strip() if self.separator == "," or isinstance(value, str) else part
                if text.strip():
                    out.append(text)
            return out
        if self.kind in (Kind.TEXT, Kind.MULTILINE):
            if not isinstance(value, str):
                raise self._bad(value, "give a string")
            _check_unicode(self.name, value)
            return value
        if self.kind is Kind.CHOICE:
            if isinstance(value, enum.Enum):
                value = value.value
            if value not in self.choices:
                raise self._bad(value, "choose one of " + ", ".join(repr(c) for c in self.choices))
            return value
        if self.kind is Kind.BOOL:
            if not isinstance(value, bool):
                raise self._bad(value, "give true or false")
            return value
        integer = self.kind is Kind.INT
        if integer and isinstance(value, float) and value.is_integer():
            value = int(value)
        if self.unset is not NO_UNSET and value == self.unset and not isinstance(value, bool):
            return self.unset
        if not self._in_bounds(value, integer):
            raise self._bad(value, self._range_fix(integer))
        return value if integer else float(value)  # type: ignore[arg-type]

    # -- value form <-> object form ----------------------------------------------------------
    def to_object(self, value: object) -> object:
        """Value form -> object form (validated): unset -> None, repeated -> tuple, mapped choices."""
        value = self.coerce(value)
        if self.unset is not NO_UNSET and value == self.unset:
            return None
        if self.repeated:
            return tuple(value)  # type: ignore[arg-type]
        if self.mapping:
            return dict(self.mapping).get(value, value)  # type: ignore[call-overload]
        return value

    def to_value(self, obj: object) -> object:
        """Object form -> canonical value form (the inverse of :meth:`to_object`)."""
        if obj is None and self.unset is not NO_UNSET:
            return self.unset
        if self.mapping:
            for text, target in self.mapping:
                if target is obj or (not isinstance(obj, bool) and target == obj):
                    return text
        if isinstance(obj, enum.Enum):
            obj = obj.value
        return self.coerce(list(obj) if isinstance(obj, (tuple, list)) else obj)


def _check_unicode(name: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(f"{name} holds a lone surrogate (U+{ord(text[exc.start]):04X} at character {exc.start}), "
                           "which is not text; pass valid Unicode") from None


_PRESETS = ", ".join(p.value for p in Preset)
SEED_MAX = 2**32 - 1  # one seed range everywhere: A1111's and torch's CPU generator's 32-bit seeds

OPTIONS: tuple[Option, ...] = (
    # -- the request ----------------------------------------------------------------------------
    Option("tags", Kind.MULTILINE, "", "the tag text as typed in a host app (weights, LoRA tags, BREAK kept)",
           Dest.REQUEST, infotext="TIPO prompt"),
    Option("caption", Kind.MULTILINE, "", "natural-language text to extend or to take tags from", Dest.REQUEST,
           infotext="TIPO nl prompt"),
    Option("caption_kind", Kind.CHOICE, "auto", "is the caption short (to be extended) or already long; auto: long "
           "when it has several lines, more than 3 sentences or more than 60 words", Dest.REQUEST,
           choices=("auto", *values(CaptionKind)), unset="auto"),
    Option("length", Kind.CHOICE, Length.LONG.value, "size class of the result", Dest.REQUEST,
           choices=values(Length), aliases=("tag_length",)),
    Option("width", Kind.INT, 0, "image width in pixels (0: no aspect ratio line)", Dest.REQUEST,
           min=1, max=65536, step=8, unset=0),
    Option("height", Kind.INT, 0, "image height in pixels (0: no aspect ratio line)", Dest.REQUEST,
           min=1, max=65536, step=8, unset=0),
    Option("aspect_ratio", Kind.FLOAT, 0.0, "width / height, instead of width and height (0: unused)", Dest.REQUEST,
           min=0.01, max=100.0, step=0.01, unset=0.0),
    Option("output", Kind.CHOICE, Output.BOTH.value, "what to get back: more tags and a caption, tags only, "
           "or a caption only (the tags kept as given)", Dest.REQUEST, choices=values(Output)),
    Option("gen_meta", Kind.BOOL, False, "let the model fill in missing meta lines", Dest.REQUEST),
    Option("ban", Kind.TEXT, (), "comma-separated: plain tags (bans tags containing them as whole words: hat bans "
           "witch hat, not chat), * wildcards, or regular expressions matched at the start of a tag (official.*); "
           "also kept out of the caption (docs/safety.md)", Dest.REQUEST,
           repeated=True, separator=",", aliases=("ban_tags",)),
    Option("ban_regex", Kind.MULTILINE, (), "regular expressions, one per line; generated tags that fully match one "
           "are dropped", Dest.REQUEST, repeated=True, separator="\n"),
    Option("rating", Kind.CHOICE, "auto", "content rating: tags and caption words above it are not generated "
           "(docs/safety.md); auto: the rating tag among your tags, else general (no rating line added); a chosen "
           "rating also goes on the model's rating line; unrestricted: no limit", Dest.REQUEST,
           choices=("auto", *values(Rating)), unset="auto"),
    Option("homoglyphs", Kind.CHOICE, Homoglyphs.FOLD.value, "look-alike letters from other scripts and invisible "
           "characters in your text: fold them to Latin and remove them, keep them (still reported), or refuse "
           "the request", Dest.REQUEST, choices=values(Homoglyphs)),
    # -- the model pass -------------------------------------------------------------------------
    Option("task", Kind.CHOICE, "auto", "force one trained task instead of the automatic one-pass plan", Dest.EXPAND,
           choices=("auto", *values(Task)), unset="auto"),
    Option("template", Kind.MULTILINE, "", f"a template with <|placeholders|>, or a preset: {_PRESETS} "
           "(empty: the tags and/or the caption, whichever you gave or asked for)", Dest.EXPAND, unset="",
           infotext="TIPO format"),
    # -- sampling -------------------------------------------------------------------------------
    Option("seed", Kind.INT, -1, "seed (-1: a fresh one, reported in the result)", Dest.SAMPLING,
           min=0, max=SEED_MAX, unset=-1),
    Option("temperature", Kind.FLOAT, 0.5, "0 = greedy", Dest.SAMPLING, min=0.0, max=5.0, step=0.01),
    Option("top_p", Kind.FLOAT, 0.95, "nucleus filter (1 = off)", Dest.SAMPLING, min=0.01, max=1.0, step=0.01),
    Option("top_k", Kind.INT, 80, "keep the k likeliest tokens (0 = off)", Dest.SAMPLING, min=0, max=1000),
    Option("min_p", Kind.FLOAT, 0.05, "drop tokens below this share of the likeliest (0 = off)", Dest.SAMPLING,
           min=0.0, max=1.0, step=0.01),
    Option("repetition_penalty", Kind.FLOAT, 1.17, "penalty on tokens already written (1 = off)", Dest.SAMPLING,
           min=0.5, max=3.0, step=0.01),
    Option("max_new_tokens", Kind.INT, 512, "hard cap on generated tokens", Dest.SAMPLING, min=1, max=1024),
    # -- the loaded model -----------------------------------------------------------------------
    Option("model", Kind.TEXT, "", "registry name, .gguf file, HF folder or HF repo id (empty: the built-in model)",
           Dest.LOADING, unset=""),
    Option("backend", Kind.CHOICE, "auto", "llama.cpp (GGUF) or transformers (HF folder); auto picks by the model",
           Dest.LOADING, choices=("auto", "llama", "hf")),
    Option("device", Kind.CHOICE, "cpu", "cpu, or the GPU (llama.cpp: every layer offloaded; transformers: the "
           "torch device)", Dest.LOADING, choices=("cpu", "gpu")),
    Option("threads", Kind.INT, 0, "CPU threads for the model (0: physical cores minus one, at most 8; more than "
           "the cores are capped)", Dest.LOADING, min=1, max=1 << 20, unset=0, param="n_threads"),
    Option("n_ctx", Kind.INT, 0, "context in tokens (0: the format's 1024; at most what the model file declares)",
           Dest.LOADING, min=16, max=1 << 20, unset=0),
    Option("allow_pickle", Kind.BOOL, False, "let the transformers backend load pickled .bin weights, which can run "
           "code (off: safetensors only)", Dest.LOADING, unset=False),
    Option("known_tags", Kind.CHOICE, "auto", "only let the model write known tags: those it was trained on when "
           "its list lies beside the model, else the tag table's (auto: on for the "
           "built-in model, off for the official TIPO models)", Dest.LOADING, choices=("auto", "on", "off"),
           unset="auto", mapping=(("on", True), ("off", False)), param="known_tags_only"),
)

_BY_NAME = {o.name: o for o in OPTIONS}


def by_name(name: str) -> Option:
    """The option called ``name`` (a KeyError names the valid ones)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no option {name!r}; options: {', '.join(_BY_NAME)}") from None


def default(name: str) -> object:
    """The object-form default of an option (what ``Request``/``Sampling`` fields default to)."""
    return by_name(name).to_object(by_name(name).default)


def in_dest(*dests: Dest | str) -> tuple[Option, ...]:
    """The options that go to these destinations, in declaration order."""
    wanted = {Dest(d) for d in dests}
    return tuple(o for o in OPTIONS if o.dest in wanted)


def options_map() -> Mapping[str, Option]:
    """Name -> option (read-only view)."""
    from types import MappingProxyType

    return MappingProxyType(_BY_NAME)
