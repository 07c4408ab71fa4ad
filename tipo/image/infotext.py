"""PNG files with their ``parameters`` text: write them, read them back (PIL).

The text itself is :mod:`tipo.infotext`'s (A1111's layout; its module docstring documents how
texts that A1111 would misread are written). Beside ``parameters`` a PNG gets the ``tipo-exact``
chunk (iTXt) with the exact prompt and negative, so :func:`read_parameters` returns exactly what
was written whatever those texts hold, while A1111's "PNG Info" still reads ``parameters``.

Example:
    >>> text = format_parameters("1girl, forest", "", {"Steps": 2, "Seed": 1, "Size": "32x32", "Model": "a, b"})
    >>> print(text)
    1girl, forest
    Steps: 2, Seed: 1, Size: 32x32, Model: "a, b"
    >>> parse_parameters(text)["Model"]
    'a, b'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import RequestError
from ..infotext import (
    EXACT_CHUNK,
    exact_texts,
    format_parameters,
    format_value,
    parse_parameters,
    quote,
    unquote,
)

__all__ = ["format_parameters", "format_value", "parse_parameters", "quote", "read_parameters", "unquote",
           "write_png"]


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
            chunks = {**im.info, **getattr(im, "text", {})}
    except OSError as exc:
        raise RequestError(f"{path} is not a readable image ({exc})") from None
    text = chunks.get("parameters")
    if not text:
        raise RequestError(f"{path} has no 'parameters' text chunk; it was not written by tipo generate or A1111")
    exact = chunks.get(EXACT_CHUNK)
    return parse_parameters(str(text), str(exact) if exact else None)


def write_png(image: Any, path: str | os.PathLike[str], parameters: str, prompt: str | None = None,
              negative: str = "") -> Path:
    """Save ``image`` as a PNG with its ``parameters`` chunk, atomically (temp file + rename).

    ``prompt``/``negative``: the exact texts ``parameters`` was written from; given, they are kept
    in the ``tipo-exact`` chunk, so :func:`read_parameters` returns them exactly.
    """
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    info = PngInfo()
    info.add_text("parameters", parameters)
    if prompt is not None:
        info.add_itxt(EXACT_CHUNK, exact_texts(prompt, negative, parameters))
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
