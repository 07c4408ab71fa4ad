"""The ``parameters`` PNG text chunk, A1111 style: write it, read it back (pure but for PIL).

Layout (what A1111 and the TIPO WebUI extension write, so their "PNG Info" reads tipo's files):

    <the prompt actually used, possibly several lines>
    Negative prompt: <negative>
    Steps: 20, Sampler: DDIMScheduler, CFG scale: 7, Seed: 123, Size: 512x512, Model: <name>, ...

Values that contain a comma, a colon or a newline are written as JSON strings (A1111's
``quote``); ``TIPO Parameters`` holds the TIPO settings as JSON.

Example:
    >>> text = format_parameters("1girl, forest", "", {"Steps": 2, "Seed": 1, "Size": "32x32", "Model": "a, b"})
    >>> print(text)
    1girl, forest
    Steps: 2, Seed: 1, Size: 32x32, Model: "a, b"
    >>> parse_parameters(text)["Model"]
    'a, b'
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import RequestError

__all__ = ["format_parameters", "format_value", "parse_parameters", "quote", "read_parameters", "unquote",
           "write_png"]

# A1111's modules/infotext_utils.py re_param_code.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def quote(text: str) -> str:
    """A1111's quoting: JSON-quote a value that holds a comma, a colon or a newline."""
    if "," not in text and "\n" not in text and ":" not in text:
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


def format_parameters(prompt: str, negative: str, params: Mapping[str, object]) -> str:
    """The ``parameters`` text: prompt lines, ``Negative prompt:`` (when given), the settings line.

    None values are left out; dict values are written as JSON.
    """
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        text = json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, dict) else format_value(value)
        parts.append(f"{key}: {quote(text)}")
    lines.append(", ".join(parts))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict[str, Any]:
    """Parse a ``parameters`` text into ``Prompt``, ``Negative prompt`` and the settings (strings).

    ``TIPO Parameters`` (and any other value that holds a JSON object) is decoded to a dict.
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
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, raw in _PARAM.findall(last):
        value: Any = unquote(raw.strip())
        if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key] = value
    return out


def read_parameters(png_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and parse the ``parameters`` chunk of a PNG written by tipo (or A1111).

    Example:
        >>> read_parameters("out/00000-1.png")["Seed"]  # doctest: +SKIP
        '1'
    """
    from ..errors import require

    image_mod = require("PIL.Image", "image", "Reading PNG parameters")
    path = Path(png_path)
    if not path.is_file():
        raise RequestError(f"{path} is not a file; give the path of a PNG that tipo generate wrote")
    try:
        with image_mod.open(path) as im:
            text = getattr(im, "text", {}).get("parameters") or im.info.get("parameters")
    except OSError as exc:
        raise RequestError(f"{path} is not a readable image ({exc})") from None
    if not text:
        raise RequestError(f"{path} has no 'parameters' text chunk; it was not written by tipo generate or A1111")
    return parse_parameters(str(text))


def write_png(image: Any, path: str | os.PathLike[str], parameters: str) -> Path:
    """Save ``image`` as a PNG with its ``parameters`` chunk, atomically (temp file + rename)."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    info = PngInfo()
    info.add_text("parameters", parameters)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".png.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG", pnginfo=info)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
