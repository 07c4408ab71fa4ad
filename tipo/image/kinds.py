"""The pipeline kinds tipo drives, and how a diffusers folder says which one it is (pure).

A diffusers pipeline folder names its class in ``model_index.json`` (``_class_name``); that
name decides the kind. Other classes get an error that says what to pass instead.

Example:
    >>> kind_of_class("StableDiffusionXLPipeline").value
    'sdxl'
"""

from __future__ import annotations

import enum

from ..errors import RequestError

__all__ = ["PipelineKind", "kind_of_class", "parse_kind"]


class PipelineKind(str, enum.Enum):
    """``sd``: Stable Diffusion 1.x/2.x; ``sdxl``: SDXL base; ``if``: the DeepFloyd IF cascade."""

    SD = "sd"
    SDXL = "sdxl"
    IF = "if"

    @property
    def pipeline_class(self) -> str:
        """The diffusers class tipo loads for this kind."""
        return _LOAD_CLASS[self]


_LOAD_CLASS = {
    PipelineKind.SD: "StableDiffusionPipeline",
    PipelineKind.SDXL: "StableDiffusionXLPipeline",
    PipelineKind.IF: "IFPipeline",
}

_CLASS_KINDS = {
    "StableDiffusionPipeline": PipelineKind.SD,
    "StableDiffusionPipelineSafe": PipelineKind.SD,
    "StableDiffusionXLPipeline": PipelineKind.SDXL,
    "IFPipeline": PipelineKind.IF,
}

# Classes people pass by mistake, and what to do instead.
_HINTS = {
    "IFSuperResolutionPipeline": "it is stage II of the DeepFloyd IF cascade; pass stage I (an IFPipeline) as "
                                 "the pipeline and this one as stage2",
    "StableDiffusionUpscalePipeline": "it is the x4 upscaler; pass it as stage3 of an IF cascade",
    "StableDiffusionXLImg2ImgPipeline": "it is an SDXL refiner or img2img pipeline; pass the SDXL base pipeline",
    "StableDiffusion3Pipeline": "Stable Diffusion 3 is not supported yet (its T5 and CLIP encoders need their own "
                                "prompt fitting)",
    "FluxPipeline": "Flux is not supported yet",
}


def kind_of_class(class_name: str) -> PipelineKind:
    """The kind of a diffusers pipeline class name; a RequestError for unsupported ones."""
    kind = _CLASS_KINDS.get(class_name)
    if kind is not None:
        return kind
    hint = _HINTS.get(class_name, "supported: " + ", ".join(sorted(_CLASS_KINDS)))
    raise RequestError(f"the pipeline class {class_name} is not one tipo can drive; {hint}")


def parse_kind(value: object) -> PipelineKind | None:
    """A kind from ``"sd"``/``"sdxl"``/``"if"``, a PipelineKind, or None (detect)."""
    if value is None or isinstance(value, PipelineKind):
        return value
    try:
        return PipelineKind(str(value).lower())
    except ValueError:
        raise RequestError(f"kind={value!r} is not valid; choose one of 'sd', 'sdxl', 'if' "
                           "(or leave it out to detect it from model_index.json)") from None
