"""The infotext codec: tipo's settings in A1111's ``parameters`` text, written and read one way.

``tipo generate`` (through :mod:`tipo.image.infotext`), the WebUI extension and
:func:`tipo.image.infotext.read_parameters` all use this module, so a PNG from any of them restores
in the others.

**The ``parameters`` text** (A1111's layout, read by its "PNG Info")::

    <prompt, possibly several lines>
    Negative prompt: <negative>
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 1a2b3c4d5e, ...

A value holding a comma, a colon or a newline is written as a JSON string (A1111's ``quote``).
Numbers are written so that they read back exactly (:func:`format_value`). Sampler names are
written as the caller gives them (``tipo.image`` writes A1111's names).

**Texts that would break the layout.** A1111 reads every line that starts with ``Negative
prompt:`` as the start of the negative (and strips that label from every later one), strips the
blanks around every line, and reads the last line as the settings. So in the ``parameters`` text
a line of the prompt or the negative that starts with ``Negative prompt:`` is written with a
blank before the colon (``Negative prompt :``: CLIP's tokenizer splits the colon off either way,
so A1111 draws the same image from it), and the exact texts are kept beside it
(:func:`exact_texts`: tipo stores them in the PNG chunk ``tipo-exact``, with the digest of the
``parameters`` text they belong to). Readers that know the chunk get back exactly what was
written, blanks and carriage returns included; A1111 reads the same words.

**TIPO's settings** (:func:`to_infotext` / :func:`from_infotext`): the options that declare an
infotext key of their own (:attr:`tipo.options.Option.infotext`: ``TIPO prompt`` for the tags
before expansion, ``TIPO nl prompt`` for the caption, ``TIPO format`` for the template) are
written under it when not empty; every other option's value goes into one JSON object under
``TIPO Parameters``. The reference extension wrote that JSON with single and double quotes swapped
(so that A1111's quoting needs no backslashes): :func:`to_infotext` writes it that way by default
(``quote_swap=True``, so the reference extension reads tipo's images too), and :func:`from_infotext`
reads both spellings, plain JSON first. The reference's older key names and format names are read
as well. The seed in ``TIPO Parameters`` follows :func:`tipo.seeds.offset_seed`: the expansion
used the image's ``Seed`` plus it (-1: the image's seed itself).

Example:
    >>> entries = to_infotext({"tags": "1girl", "length": "short", "seed": -1})
    >>> entries["TIPO prompt"], from_infotext(entries)["length"]
    ('1girl', 'short')
    >>> text = format_parameters("1girl\\nNegative prompt: x", "", {"Steps": 2, "Seed": 1, "Size": "8x8"})
    >>> text.splitlines()[1]
    'Negative prompt : x'
    >>> parse_parameters(text, exact_texts("1girl\\nNegative prompt: x", "", text))["Prompt"]
    '1girl\\nNegative prompt: x'
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from .errors import RequestError
from .options import OPTIONS

__all__ = ["EXACT_CHUNK", "PARAMETERS_KEY", "QUOTE_SWAP", "exact_texts", "format_parameters", "format_value",
           "from_infotext", "parse_parameters", "quote", "to_infotext", "unquote"]

PARAMETERS_KEY = "TIPO Parameters"
EXACT_CHUNK = "tipo-exact"
QUOTE_SWAP = str.maketrans("'\"", "\"'")
NEGATIVE = "Negative prompt:"

# A1111's modules/infotext_utils.py re_param_code.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')

# The reference extension's names (old images): its format names -> our presets.
_LEGACY_FORMATS = {
    "tag only (DTG mode)": "tags", "NL only (Tag to NL)": "caption", "Both, tag first (recommend)": "both",
    "Both, NL first (recommend)": "caption_first", "Both + generated NL": "both",
}


# -- the parameters text --------------------------------------------------------------------------
def quote(text: str) -> str:
    """A1111's quoting: JSON-quote a value that holds a comma, a colon or a newline; tipo also quotes
    one that a reader would change (blanks at its ends, a carriage return, a leading quote), which
    A1111's ``unquote`` reads back the same way.

    Example:
        >>> quote("a"), quote("a, b"), quote(" a")
        ('a', '"a, b"', '" a"')
    """
    if not any(c in text for c in ",\n:\r") and text == text.strip() and not text.startswith('"'):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return str(json.loads(text))
    except ValueError:
        return text


def format_value(value: object) -> str:
    """Numbers that read back exactly: ``7`` for 7.0, ``7.25``, ``0.1`` (repr), ints as is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


_LABEL = re.compile(r"^(\s*Negative prompt):", re.M)


def _a1111_safe(text: str) -> str:
    """``text`` with no line that A1111 would take for the ``Negative prompt:`` label."""
    return _LABEL.sub(r"\1 :", text)


def format_parameters(prompt: str, negative: str, params: Mapping[str, object]) -> str:
    """The ``parameters`` text: prompt lines, ``Negative prompt:`` (when given), the settings line.

    None values are left out; dict values are written as JSON. A line that A1111 would take for
    the ``Negative prompt:`` label is written ``Negative prompt :`` (see the module docstring; keep
    :func:`exact_texts`).
    """
    lines = [_a1111_safe(prompt)]
    if negative:
        lines.append(f"{NEGATIVE} {_a1111_safe(negative)}")
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        text = json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, dict) else format_value(value)
        parts.append(f"{key}: {quote(text)}")
    lines.append(", ".join(parts))
    return "\n".join(lines)


def _digest(parameters: str) -> str:
    return hashlib.sha256(parameters.encode("utf-8")).hexdigest()


def exact_texts(prompt: str, negative: str, parameters: str) -> str:
    """The exact prompt and negative that ``parameters`` was written from, as the JSON text tipo
    stores in the ``tipo-exact`` PNG chunk (tied to ``parameters`` by its SHA-256)."""
    return json.dumps({"prompt": prompt, "negative": negative, "parameters_sha256": _digest(parameters)},
                      ensure_ascii=False)


def parse_parameters(text: str, exact: str | None = None) -> dict[str, Any]:
    """Parse a ``parameters`` text into ``Prompt``, ``Negative prompt`` and the settings (strings).

    ``exact``: the ``tipo-exact`` chunk, when the PNG has one; its texts replace the prompt and the
    negative when it belongs to this very ``parameters`` text (else it is ignored: the text was
    edited after tipo wrote it). ``TIPO Parameters`` and any other value that holds a JSON object
    are decoded to a dict (plain or quote-swapped JSON).
    """
    lines = text.rstrip("\n").split("\n")
    last = lines[-1]
    if len(_PARAM.findall(last)) >= 3:
        body = lines[:-1]
    else:
        body, last = lines, ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in body:
        if line.startswith(NEGATIVE):
            in_negative = True
            line = line[len(NEGATIVE):].strip()
        (negative if in_negative else prompt).append(line)
    out: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, raw in _PARAM.findall(last):
        value: Any = unquote(raw.strip())
        if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
            value = _json_object(value)
        out[key] = value
    if exact:
        try:
            saved = json.loads(exact)
        except ValueError:
            saved = None
        if isinstance(saved, dict) and saved.get("parameters_sha256") == _digest(text):
            out["Prompt"], out["Negative prompt"] = str(saved["prompt"]), str(saved["negative"])
    return out


def _json_object(text: str) -> Any:
    """A JSON object written plainly or with the reference's quote swap; the text itself if neither."""
    for candidate in (text, text.translate(QUOTE_SWAP)):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return text


# -- TIPO's settings ------------------------------------------------------------------------------
def to_infotext(values: Mapping[str, object], quote_swap: bool = True) -> dict[str, str]:
    """The infotext entries of TIPO's settings (value form, e.g. :func:`tipo.settings.to_values`).

    Options with their own key are written under it when not empty; the rest go to
    ``TIPO Parameters`` (JSON, keys sorted; quote-swapped unless ``quote_swap=False``). Options
    missing from ``values`` are left out.
    """
    params: dict[str, object] = {}
    out: dict[str, str] = {}
    for o in OPTIONS:
        if o.name not in values:
            continue
        value = o.coerce(values[o.name])
        if o.infotext:
            if value not in ("", [], None):
                out[o.infotext] = str(o.widget_text(value))
        else:
            params[o.name] = value
    text = json.dumps(params, ensure_ascii=False, sort_keys=True)
    return {PARAMETERS_KEY: text.translate(QUOTE_SWAP) if quote_swap else text, **out}


def from_infotext(params: Mapping[str, object]) -> dict[str, object] | None:
    """TIPO's settings (value form, for :func:`tipo.settings.from_values`) from parsed infotext.

    ``params``: what :func:`parse_parameters` or A1111's parser returns. None when it holds no
    ``TIPO Parameters``. Reads plain and quote-swapped JSON, and the reference extension's names
    (``tag_length``, ``ban_tags``, ``"very short"``, ``"repo | file.gguf"``, ``gguf_cpu``, format
    names); keys that are not settings are dropped. A writer that leaves out the size (the WebUI
    extension expands for the job's image size) gets the image's ``Size``. A ``TIPO Parameters``
    that is not JSON is a RequestError naming the fix.
    """
    raw = params.get(PARAMETERS_KEY)
    if raw is None:
        return None
    settings = _json_object(raw) if isinstance(raw, str) else raw
    if not isinstance(settings, Mapping):
        raise RequestError(f"'{PARAMETERS_KEY}' is not a JSON object ({str(raw)[:60]!r}); paste the infotext as the "
                           "image has it, or leave TIPO's settings as they are")
    values: dict[str, object] = {}
    aliases = {alias: o.name for o in OPTIONS for alias in o.aliases}
    for key, value in settings.items():
        name = aliases.get(str(key), str(key))
        if name in values and key != name:
            continue  # the current name wins over an older one
        values[name] = value
    if isinstance(values.get("length"), str):
        values["length"] = str(values["length"]).replace(" ", "_")
    if isinstance(values.get("model"), str) and " | " in str(values["model"]):
        values["model"] = str(values["model"]).split(" | ")[0]  # "KBlueLeaf/TIPO-500M-ft | file.gguf": the repo
    if "gguf_cpu" in settings and "device" not in settings:
        values["device"] = "cpu" if settings["gguf_cpu"] else "gpu"
    if "template" not in settings:  # a named reference format -> our preset; a custom one -> its text
        named, text = _LEGACY_FORMATS.get(str(settings.get("format_selected"))), settings.get("format")
        if named or isinstance(text, str):
            values["template"] = named or text
    size = re.fullmatch(r"(\d+)x(\d+)", str(params.get("Size", "")))
    if size and not {"width", "height", "aspect_ratio"} & set(values):  # a host that expanded for its image size
        values["width"], values["height"] = int(size[1]), int(size[2])
    for o in OPTIONS:
        if o.infotext and o.infotext in params:
            text = params[o.infotext]  # type: ignore[index]
            values.setdefault(o.name, _LEGACY_FORMATS.get(str(text), text) if o.name == "template" else text)
    return {name: value for name, value in values.items() if name in _names()}


def _names() -> set[str]:
    return {o.name for o in OPTIONS}
