"""The settings of one image run, validated up front: :class:`GenerationOptions` (frozen).

:func:`tipo.image.generate` takes one of these (or its fields as keyword arguments) and checks
everything here, before any model loads, the way diffusers' ``check_inputs`` does. Values that
need the pipeline (its default size and guidance) are filled in later by ``generate``.

Example:
    >>> o = GenerationOptions(steps=20, sampler="euler a", clip_skip=2)
    >>> o.sampler, o.replace(n=2).n
    ('Euler a', 2)
    >>> GenerationOptions(width=30, height=32)
    Traceback (most recent call last):
    ...
    tipo.errors.RequestError: width=30 is not valid; give a positive whole number of pixels, a multiple of 8
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RequestError
from ..seeds import SEED_RANGE
from .kinds import PipelineKind, parse_kind
from .records import CascadeSettings

__all__ = ["LM_MEMORY", "POOLED", "SEED_RANGE", "SLD_PRESETS", "GenerationOptions", "check_numbers", "sld_settings"]

LM_MEMORY = ("keep", "cpu", "unload")
POOLED = ("user", "expanded")
OFFLOAD = ("model", "sequential")
#: diffusers' SafetyConfig presets for Safe Latent Diffusion (pipelines/stable_diffusion_safe).
SLD_PRESETS: dict[str, dict[str, float]] = {
    "weak": {"sld_warmup_steps": 15, "sld_guidance_scale": 20, "sld_threshold": 0.0, "sld_momentum_scale": 0.0,
             "sld_mom_beta": 0.0},
    "medium": {"sld_warmup_steps": 10, "sld_guidance_scale": 1000, "sld_threshold": 0.01,
               "sld_momentum_scale": 0.3, "sld_mom_beta": 0.4},
    "strong": {"sld_warmup_steps": 7, "sld_guidance_scale": 2000, "sld_threshold": 0.025,
               "sld_momentum_scale": 0.5, "sld_mom_beta": 0.7},
    "max": {"sld_warmup_steps": 0, "sld_guidance_scale": 5000, "sld_threshold": 1.0, "sld_momentum_scale": 0.5,
            "sld_mom_beta": 0.7},
}
_SLD_KEYS = tuple(SLD_PRESETS["medium"])


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"{name}={value!r} is not valid; give a whole number >= 1")
    return value


def _size(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 8:
        raise RequestError(f"{name}={value!r} is not valid; give a positive whole number of pixels, a multiple of 8")
    return value


def _number(name: str, value: object, low: float, high: float | None, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low \
            or (high is not None and value > high):
        raise RequestError(f"{name}={value!r} is not valid; {hint}")
    return float(value)


def check_numbers(n: object, steps: object, width: object, height: object,
                  guidance: object) -> tuple[int, int, int | None, int | None, float | None]:
    """Validate the counts and sizes of a run (shared by :class:`GenerationOptions` and the CLI)."""
    n = _positive_int("n", n)
    steps = _positive_int("steps", steps)
    w, h = _size("width", width), _size("height", height)
    if (w is None) != (h is None):
        raise RequestError("give both width and height, or neither (the pipeline's default size)")
    g = None if guidance is None else _number("guidance", guidance, 0, None,
                                              "give a number >= 0 (1 or less turns guidance off)")
    return n, steps, w, h, g


def sld_settings(sld: object) -> dict[str, float] | None:
    """Safe Latent Diffusion settings from True, a preset name, a dict of ``sld_*`` values, or None/False."""
    if sld is None or sld is False:
        return None
    if sld is True:
        return dict(SLD_PRESETS["medium"])
    if isinstance(sld, str):
        preset = SLD_PRESETS.get(sld.lower())
        if preset is None:
            raise RequestError(f"sld={sld!r} is not valid; choose one of {', '.join(SLD_PRESETS)} or give a dict")
        return dict(preset)
    if isinstance(sld, dict):
        unknown = set(sld) - set(_SLD_KEYS)
        if unknown:
            raise RequestError(f"unknown SLD setting(s) {sorted(unknown)}; valid: {list(_SLD_KEYS)}")
        return {**SLD_PRESETS["medium"], **sld}
    raise RequestError(f"sld={sld!r} is not valid; give True, a preset name ({', '.join(SLD_PRESETS)}) or a dict")


def _folder(name: str, value: object) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise RequestError(f"{name}={value!r} is not valid; give a folder path")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise RequestError(f"{name}={str(value)!r} is not a folder; give the folder that holds the files")
    return path


@dataclass(frozen=True)
class GenerationOptions:
    """Everything :func:`~tipo.image.generate` does besides the prompts, the pipeline and the expander.

    Args:
        kind: ``"sd"``, ``"sdxl"``, ``"if"``; None detects it. A mismatch is an error.
        n: images per prompt. steps: denoising steps.
        seed: base seed (None: a fresh one); image ``k`` uses ``(seed + k) % 2**32``.
        negative: the negative prompt (A1111 syntax; padded to the prompt's chunk count).
        width, height: image size (multiples of 8); None: the pipeline's default (with ``init_image``:
            the init image's size).
        guidance: CFG scale; None: the pipeline's default.
        sampler: an A1111 sampler name (``Euler a``, ``DPM++ 2M Karras``, ... see
            :data:`tipo.image.samplers.SAMPLERS`); None keeps the pipeline's scheduler.
        clip_skip: A1111's "Clip skip" (SD, SDXL): 1 uses the text encoder's last layer (SDXL: its
            penultimate, as SDXL is trained), 2 the one before, ... (diffusers' ``clip_skip`` is this - 1).
        pooled: SDXL: ``"user"`` (the pooled embedding comes from the user's own tags) or ``"expanded"``.
        cascade: IF stage II/III settings.
        init_image: img2img (SD, SDXL): a PIL image or an image file; ``strength`` is how much of it is
            redrawn (0 < strength <= 1; A1111's "Denoising strength").
        hires_scale: a hires pass (SD, SDXL): the image is made at the base size, resized by this factor
            (Lanczos) and redrawn with ``hires_strength`` over ``hires_steps`` (None: ``steps``).
        lora_dir: the folder ``<lora:name:weight>`` tags are looked up in (``name.safetensors``, also in
            subfolders); without it a LoRA tag is an error.
        embedding_dir: the folder of textual-inversion embeddings; a word of the prompt that is a file's name
            (A1111) or ``embedding:name`` (ComfyUI) uses that embedding.
        lm_memory: ``"keep"``; ``"cpu"`` (move a transformers LM to the CPU first); ``"unload"`` (expand
            every prompt, close the expander, then load and run the diffusion model).
        offload: ``"model"``/``"sequential"``: diffusers' CPU offload (CUDA only; else a no-op + note).
        overlap: expand the next prompt in a background thread while the current one denoises; None: on
            when the pipeline runs on CUDA.
        safety_checker: None leaves the pipeline as it is; True requires its checker; False detaches it.
        sld: Safe Latent Diffusion (SD 1.x/2.x): True, a preset or a dict of ``sld_*`` settings.
        out_dir: save each image there as ``NNNNN-<seed>.png`` (atomic), with its parameters.
        progress: progress bars on stderr: one over the images, one over the denoising steps.
        model_name: the ``Model`` written into the parameters (default: the pipeline's folder, file or id).
        backtrack: how far back (tokens) a CLIP chunk may end at a comma (A1111's default 20).
        load_options: passed to :func:`~tipo.image.load_pipeline` when the pipeline is given by name.
    """

    kind: PipelineKind | None = None
    n: int = 1
    steps: int = 30
    seed: int | None = None
    negative: str = ""
    width: int | None = None
    height: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    clip_skip: int = 1
    pooled: str = "user"
    cascade: CascadeSettings = field(default_factory=CascadeSettings)
    init_image: Any = None
    strength: float = 0.75
    hires_scale: float | None = None
    hires_steps: int | None = None
    hires_strength: float = 0.5
    lora_dir: Path | None = None
    embedding_dir: Path | None = None
    lm_memory: str = "keep"
    offload: str | None = None
    overlap: bool | None = None
    safety_checker: bool | None = None
    sld: dict[str, float] | None = None
    out_dir: Path | None = None
    progress: bool = False
    model_name: str | None = None
    backtrack: int = 20
    load_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        put("kind", parse_kind(self.kind))
        n, steps, w, h, g = check_numbers(self.n, self.steps, self.width, self.height, self.guidance)
        for name, value in (("n", n), ("steps", steps), ("width", w), ("height", h), ("guidance", g)):
            put(name, value)
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_RANGE):
            raise RequestError(f"seed={seed!r} is not valid; give a whole number in [0, 2**32) or None")
        if not isinstance(self.negative, str):
            raise RequestError(f"negative={self.negative!r} is not valid; give a string")
        if self.sampler is not None:
            from .samplers import canonical_name

            put("sampler", canonical_name(str(self.sampler)))
        if isinstance(self.clip_skip, bool) or not isinstance(self.clip_skip, int) or not 1 <= self.clip_skip <= 12:
            raise RequestError(f"clip_skip={self.clip_skip!r} is not valid; give a whole number from 1 (the last "
                               "layer, the default) to 12")
        if self.pooled not in POOLED:
            raise RequestError(f"pooled={self.pooled!r} is not valid; choose 'user' or 'expanded'")
        if self.cascade is None:
            put("cascade", CascadeSettings())
        elif not isinstance(self.cascade, CascadeSettings):
            raise RequestError("cascade must be a tipo.image.CascadeSettings")
        put("strength", _number("strength", self.strength, 0, 1, "give a number in (0, 1]"))
        if self.strength == 0:
            raise RequestError("strength=0 is not valid; give a number in (0, 1] (0 would return the init image)")
        if self.init_image is not None and isinstance(self.init_image, (str, os.PathLike)) \
                and not Path(self.init_image).is_file():
            raise RequestError(f"init_image={str(self.init_image)!r} is not a file; give an image file or a PIL image")
        if self.hires_scale is not None:
            put("hires_scale", _number("hires_scale", self.hires_scale, 1, 8, "give a factor in (1, 8]"))
            if self.hires_scale == 1:
                raise RequestError("hires_scale=1 is not valid; give a factor > 1 (or None for no hires pass)")
            if self.init_image is not None:
                raise RequestError("a hires pass and an init image (img2img) do not go together; use one")
        if self.hires_steps is not None:
            put("hires_steps", _positive_int("hires_steps", self.hires_steps))
        hs = _number("hires_strength", self.hires_strength, 0, 1, "give a number in (0, 1]")
        if hs == 0:
            raise RequestError("hires_strength=0 is not valid; give a number in (0, 1]")
        put("hires_strength", hs)
        put("lora_dir", _folder("lora_dir", self.lora_dir))
        put("embedding_dir", _folder("embedding_dir", self.embedding_dir))
        if self.lm_memory not in LM_MEMORY:
            raise RequestError(f"lm_memory={self.lm_memory!r} is not valid; choose one of {', '.join(LM_MEMORY)}")
        if self.lm_memory == "unload" and self.overlap:
            raise RequestError("overlap needs the language model while the pipeline runs; lm_memory='unload' closes "
                               "it first: use one or the other")
        if self.offload is not None and self.offload not in OFFLOAD:
            raise RequestError(f"offload={self.offload!r} is not valid; choose 'model', 'sequential' or None")
        put("sld", sld_settings(self.sld))
        if self.out_dir is not None:
            put("out_dir", Path(self.out_dir))
        b = self.backtrack
        if isinstance(b, bool) or not isinstance(b, int) or b < 0:
            raise RequestError(f"backtrack={b!r} is not valid; give a whole number of tokens >= 0 (0: no backtrack)")
        put("load_options", dict(self.load_options or {}))

    def replace(self, **changes: Any) -> GenerationOptions:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def build(cls, options: GenerationOptions | None = None, **changes: Any) -> GenerationOptions:
        """``options`` (or the defaults) with ``changes``; an unknown name is a one-line error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise RequestError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        base = options if options is not None else cls()
        return dataclasses.replace(base, **changes) if changes else base

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Field name -> default value (what front ends show; declared once, on this class)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out
