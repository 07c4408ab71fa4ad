"""The image stage: chain TIPO expansions into diffusers pipelines (SD, SDXL, DeepFloyd IF).

Importing this package is cheap: torch and diffusers load on first use. Install the extra
with ``pip install 'tipo-prompt[image]'``.

Example:
    >>> from tipo import Expander
    >>> from tipo.image import generate, load_pipeline
    >>> pipe = load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")  # doctest: +SKIP
    >>> with Expander() as ex:  # doctest: +SKIP
    ...     result = generate("1girl, forest", pipe, expander=ex, n=2, seed=1, out_dir="out")
    >>> result.paths  # doctest: +SKIP
    [PosixPath('out/00000-1.png'), PosixPath('out/00001-2.png')]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "generate": "tipo.image.generation",
    "regenerate": "tipo.image.generation",
    "image_seed": "tipo.image.generation",
    "GenerationOptions": "tipo.image.options",
    "SAMPLERS": "tipo.image.samplers",
    "CascadeSettings": "tipo.image.records",
    "GenerationResult": "tipo.image.records",
    "ImageRecord": "tipo.image.records",
    "load_pipeline": "tipo.image.loading",
    "IFCascade": "tipo.image.loading",
    "PipelineKind": "tipo.image.kinds",
    "EncoderReport": "tipo.image.encoding",
    "PromptEmbeds": "tipo.image.encoding",
    "encode_prompt": "tipo.image.encoding",
    "split_prompt": "tipo.image.prompts",
    "format_parameters": "tipo.image.infotext",
    "parse_parameters": "tipo.image.infotext",
    "read_parameters": "tipo.image.infotext",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .encoding import EncoderReport, PromptEmbeds, encode_prompt  # noqa: F401
    from .generation import generate, image_seed, regenerate  # noqa: F401
    from .infotext import format_parameters, parse_parameters, read_parameters  # noqa: F401
    from .kinds import PipelineKind  # noqa: F401
    from .loading import IFCascade, load_pipeline  # noqa: F401
    from .options import GenerationOptions  # noqa: F401
    from .prompts import split_prompt  # noqa: F401
    from .records import CascadeSettings, GenerationResult, ImageRecord  # noqa: F401
    from .samplers import SAMPLERS  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tipo.image' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
