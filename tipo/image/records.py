"""What a generation run returns: the images, one record per image, and the cascade settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RequestError
from ..result import Expansion
from .encoding import EncoderReport

__all__ = ["CascadeSettings", "GenerationResult", "ImageRecord"]


@dataclass(frozen=True)
class CascadeSettings:
    """Settings of the DeepFloyd IF stages after stage I (stage I uses ``steps`` and ``guidance``).

    Args:
        stage2_steps, stage3_steps: denoising steps of the super-resolution stage and of the x4
            upscaler; None uses stage I's steps.
        stage2_guidance, stage3_guidance: their guidance scales (diffusers' defaults: 4 and 9).
        noise_level: noise added to the upscaler's input (diffusers' default for IF: 100).
        upscaler_prompt: ``"expanded"`` (the prompt used, cut at a comma to one CLIP window) or
            ``"user"`` (the user's own tags, cut the same way).

    Example:
        >>> CascadeSettings(stage2_steps=20).stage3_guidance
        9.0
    """

    stage2_steps: int | None = None
    stage2_guidance: float = 4.0
    stage3_steps: int | None = None
    stage3_guidance: float = 9.0
    noise_level: int = 100
    upscaler_prompt: str = "expanded"

    def __post_init__(self) -> None:
        for name in ("stage2_steps", "stage3_steps"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise RequestError(f"{name}={v!r} is not valid; give a whole number of steps >= 1 (or None)")
        for name in ("stage2_guidance", "stage3_guidance"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise RequestError(f"{name}={v!r} is not valid; give a number >= 0")
        if isinstance(self.noise_level, bool) or not isinstance(self.noise_level, int) or not 0 <= self.noise_level:
            raise RequestError(f"noise_level={self.noise_level!r} is not valid; give a whole number >= 0")
        if self.upscaler_prompt not in ("expanded", "user"):
            raise RequestError(f"upscaler_prompt={self.upscaler_prompt!r} is not valid; choose 'expanded' or 'user'")


@dataclass(frozen=True)
class ImageRecord:
    """Everything needed to understand and repeat one image.

    Attributes:
        index: the image's number in the run; prompt_index: which prompt it came from.
        seed: the seed of this image's noise (CPU ``torch.Generator``).
        prompt: the prompt actually encoded (the expansion, host syntax kept); negative: its negative.
        user_prompt, user_caption: what the user typed (tags, caption).
        kind, model, sampler, steps, guidance, width, height: the generation settings.
        pooled: SDXL only: ``"user"`` or ``"expanded"``, where the pooled embedding came from.
        encoding: per text encoder: chunks, tokens, and the text cut, if any.
        ignored: extra-network tags that were left out of the text and not applied (``<hypernet:…>``).
        loras, embeddings: the LoRAs and textual-inversion embeddings applied (names; hashes are in
            ``parameters``). clip_skip: A1111's "Clip skip" used.
        nsfw: the safety checker's verdict (None when no checker ran).
        parameters: the A1111-style ``parameters`` text written into the PNG.
        expansion: the TIPO expansion (None for plain text).
        seconds: denoising time of this image; path: where it was saved (None if not saved).
    """

    index: int
    prompt_index: int
    seed: int
    prompt: str
    negative: str
    user_prompt: str
    user_caption: str
    kind: str
    model: str
    sampler: str
    steps: int
    guidance: float
    width: int
    height: int
    pooled: str | None
    encoding: tuple[EncoderReport, ...]
    ignored: tuple[str, ...]
    nsfw: bool | None
    parameters: str
    expansion: Expansion | None = None
    seconds: float = 0.0
    path: Path | None = None
    loras: tuple[str, ...] = ()
    embeddings: tuple[str, ...] = ()
    clip_skip: int = 1

    @property
    def cut(self) -> str:
        """The text some encoder could not read (empty when every encoder read it all)."""
        return " | ".join(f"{r.encoder}: {r.cut}" for r in self.encoding if r.cut)

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index, "prompt_index": self.prompt_index, "seed": self.seed, "prompt": self.prompt,
            "negative": self.negative, "user_prompt": self.user_prompt, "user_caption": self.user_caption,
            "kind": self.kind, "model": self.model, "sampler": self.sampler, "steps": self.steps,
            "guidance": self.guidance, "width": self.width, "height": self.height, "pooled": self.pooled,
            "encoding": [r.to_dict() for r in self.encoding], "ignored": list(self.ignored), "nsfw": self.nsfw,
            "parameters": self.parameters, "seconds": self.seconds, "loras": list(self.loras),
            "embeddings": list(self.embeddings), "clip_skip": self.clip_skip,
            "path": None if self.path is None else str(self.path),
            "expansion": None if self.expansion is None else self.expansion.to_dict(timings=False),
        }


@dataclass
class GenerationResult:
    """The images of a run, in order, with one :class:`ImageRecord` each.

    Attributes:
        images: PIL images.
        records: one per image.
        base_seed: image ``k`` used seed ``(base_seed + k) % 2**32``.
        notes: things the caller should know (offload was a no-op, the LM was unloaded, ...).
        timings: seconds spent expanding, denoising, and in all (``wall``); ``overlap`` says
            whether expansion ran in a background thread.
    """

    images: list[Any] = field(default_factory=list)
    records: list[ImageRecord] = field(default_factory=list)
    base_seed: int = 0
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def paths(self) -> list[Path]:
        return [r.path for r in self.records if r.path is not None]

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.records]
