"""One entry point from prompts to images: expand, encode, denoise, record, save.

:func:`generate` takes tag strings, :class:`~tipo.request.Request` s or finished
:class:`~tipo.result.Expansion` s, a diffusers pipeline (an object, or a folder / Hub id /
single-file checkpoint to load) and a :class:`~tipo.image.options.GenerationOptions` (or its fields
as keyword arguments), and returns a :class:`~tipo.image.records.GenerationResult`. Steps:

1. validate: the options object checks every value (sizes, steps, counts, sampler, folders) and the
   prompts are checked, before anything loads;
2. hand memory over: with ``lm_memory="unload"`` every prompt is expanded first and the
   language model closed before the diffusion model loads; ``"cpu"`` keeps it on the CPU;
3. load the pipeline when given by name, turn on offload (CUDA only) and the safety options, and
   check what needs the pipeline (kind, safety checker, img2img/hires/LoRA support);
4. set the run up: the sampler's scheduler, the LoRA/embedding loader, the img2img pipeline;
5. for each prompt: expand it (in a background thread, overlapping the previous prompt's
   denoising, when ``overlap`` is on; embedding words are kept away from the language model),
   apply its LoRAs and embeddings, encode it once (chunked, weighted, fitted), then denoise ``n``
   images, each with its own CPU ``torch.Generator`` seeded ``(seed + k) % 2**32`` (img2img or a
   hires pass after the first pass when asked);
6. record each image (A1111 ``parameters`` text included) and save it when ``out_dir`` is given;
   undo the run's changes to the pipeline (scheduler, adapters, embedding tokens).

:func:`regenerate` reads a saved PNG's parameters (tipo's or A1111's) and makes the image again.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import RequestError, require
from ..infotext import from_infotext, to_infotext
from ..request import Request, Sampling
from ..result import Expansion
from ..seeds import fresh_seed, image_seed, infotext_seed
from .encoding import EncoderReport, PromptEmbeds, encode_prompt, encode_upscaler_prompt, pipeline_kind
from .extras import Applied, ExtraNetworks, embedding_index, file_hash, split_embeddings
from .infotext import format_parameters, parse_parameters, read_parameters, write_png
from .kinds import PipelineKind, parse_kind
from .loading import IFCascade, apply_offload, detect_kind, is_checkpoint_file, load_pipeline, stages
from .options import LM_MEMORY, POOLED, SLD_PRESETS, GenerationOptions, check_numbers
from .prompts import split_prompt
from .records import CascadeSettings, GenerationResult, ImageRecord
from .samplers import canonical_name, sampler_name, scheduler_for

__all__ = ["LM_MEMORY", "POOLED", "SLD_PRESETS", "GenerationOptions", "check_numbers", "generate", "image_seed",
           "regenerate"]

HIRES_UPSCALER = "Lanczos"


# -- inputs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Job:
    """One prompt, ready to encode: the text to use and what the user typed."""

    index: int
    prompt: str
    user_prompt: str
    user_caption: str = ""
    expansion: Expansion | None = None
    tipo: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def pooled_source(self) -> str:
        """The user's own prompt: tags, else caption, else the prompt itself."""
        for text in (self.user_prompt, self.user_caption, self.prompt):
            if text.strip():
                return text
        return self.prompt


def _tipo_values(expansion: Expansion, template: object, task: str | None,
                 user_tags: str | None = None) -> dict[str, object]:
    """TIPO's settings of an expansion (value form, for the infotext codec :mod:`tipo.infotext`)."""
    from ..settings import Settings, to_values

    request = expansion.plan.request
    if user_tags is not None:
        request = replace(request, tags=user_tags)
    prov = expansion.provenance
    sampling = Sampling(**prov.sampling, seed=prov.seed) if prov is not None else Sampling()  # type: ignore[arg-type]
    named: dict[str, object] = {"task": task, "template": getattr(template, "value", template)}
    if prov is not None:
        named.update(model=prov.model, backend=prov.backend)
    return to_values(Settings.make(request, sampling, **named))


def _job_from_expansion(index: int, expansion: Expansion, template: object, seconds: float = 0.0,
                        front: Sequence[str] = (), user_tags: str | None = None, task: str | None = None) -> _Job:
    request = expansion.plan.request
    prompt = ", ".join([*front, expansion.prompt]) if front else expansion.prompt
    return _Job(index, prompt, request.tags if user_tags is None else user_tags, request.caption, expansion,
                _tipo_values(expansion, template, task, user_tags), seconds)


# -- pipeline facts -----------------------------------------------------------------------------
def _call_default(pipe: Any, name: str, fallback: Any) -> Any:
    param = inspect.signature(type(pipe).__call__).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty or param.default is None:
        return fallback
    return param.default


def _default_size(pipe: Any, kind: PipelineKind) -> tuple[int, int]:
    if kind is PipelineKind.IF:
        size = int(pipe.unet.config.sample_size)
        return size, size
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    sample = getattr(pipe, "default_sample_size", None) or pipe.unet.config.sample_size
    return int(sample) * scale, int(sample) * scale


def _model_name(pipeline: Any, given: str | None, source: str | None) -> str:
    if given:
        return given
    if source is not None and is_checkpoint_file(source):
        return Path(source).stem
    name = str(getattr(pipeline, "name_or_path", "") or "")
    if name and Path(name).is_absolute():
        return Path(name).stem if is_checkpoint_file(name) else Path(name).name
    return name or type(stages(pipeline)[0]).__name__


def _model_hash(source: str | None) -> str | None:
    """A1111's ``Model hash`` (sha256, 10 hex digits) of a single-file checkpoint; None for folders."""
    return file_hash(source, 10) if source is not None and is_checkpoint_file(source) else None


# -- memory hand-off ----------------------------------------------------------------------------
def _lm_to_cpu(expander: Any, notes: list[str]) -> None:
    backend = expander.backend
    model = getattr(backend, "model", None)
    if model is not None and hasattr(model, "to"):
        if str(getattr(backend, "device", "cpu")) != "cpu":
            model.to("cpu")
            backend.device = "cpu"
            notes.append("moved the language model to the CPU before the diffusion model ran")
        else:
            notes.append("lm_memory='cpu': the language model already runs on the CPU")
    else:
        notes.append("lm_memory='cpu': llama.cpp keeps its layers where they were loaded; load the Expander "
                     "with n_gpu_layers=0 (the default) to keep it on the CPU, or use lm_memory='unload'")


# -- the run ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Run:
    """The options with what the pipeline decided filled in (kind, size, guidance), and the run's names."""

    o: GenerationOptions
    kind: PipelineKind
    model: str
    model_hash: str | None = None


@contextlib.contextmanager
def _run_settings(pipeline: Any, safety_checker: bool | None, scheduler: Any = None) -> Iterator[None]:
    """Silence diffusers' per-step bars (tipo shows its own), detach the checker, use the run's scheduler;
    restore all three after."""
    saved: list[tuple[Any, str, Any, bool]] = []
    try:
        for p in stages(pipeline):
            had = hasattr(p, "_progress_bar_config")
            saved.append((p, "_progress_bar_config", getattr(p, "_progress_bar_config", None), had))
            p.set_progress_bar_config(disable=True)
            if safety_checker is False and getattr(p, "safety_checker", None) is not None:
                saved.append((p, "safety_checker", p.safety_checker, True))
                p.safety_checker = None
        stage1 = stages(pipeline)[0]
        if scheduler is not None and scheduler is not stage1.scheduler:
            saved.append((stage1, "scheduler", stage1.scheduler, True))
            stage1.scheduler = scheduler
        yield
    finally:
        for obj, name, value, had in reversed(saved):
            if had:
                setattr(obj, name, value)
            else:
                with contextlib.suppress(AttributeError):
                    delattr(obj, name)


def _sld_pipeline(pipe: Any) -> Any:
    """A StableDiffusionPipelineSafe sharing ``pipe``'s modules (scheduler copied: it edits its config)."""
    diffusers = require("diffusers", "image", "Safe Latent Diffusion")
    cls = diffusers.StableDiffusionPipelineSafe
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    safe = cls(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
               scheduler=scheduler, safety_checker=pipe.safety_checker, feature_extractor=pipe.feature_extractor,
               image_encoder=None, requires_safety_checker=False)
    safe.set_progress_bar_config(disable=True)
    return safe


def _img2img_pipeline(pipe: Any, kind: PipelineKind) -> Any:
    """diffusers' img2img pipeline of the same kind, sharing ``pipe``'s modules and scheduler."""
    diffusers = require("diffusers", "image", "img2img")
    cls = diffusers.StableDiffusionXLImg2ImgPipeline if kind is PipelineKind.SDXL \
        else diffusers.StableDiffusionImg2ImgPipeline
    i2i = cls.from_pipe(pipe)
    i2i.set_progress_bar_config(disable=True)
    return i2i


def _open_image(image: Any) -> Any:
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as im:
                im.load()
                return im.convert("RGB")
        except OSError as exc:
            raise RequestError(f"init_image {str(image)!r} is not a readable image ({exc})") from None
    if not hasattr(image, "convert"):
        raise RequestError("init_image must be a PIL image or the path of an image file")
    return image.convert("RGB")


def _image_hash(image: Any) -> str:
    """A short hash of an image's pixels (and size), recorded for img2img so regenerate can check its input."""
    import hashlib

    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()[:10]


def _encode(pipeline: Any, job: _Job, run: _Run, safe: Any, applied: Applied,
            extras: ExtraNetworks | None) -> tuple[PromptEmbeds, PromptEmbeds | None]:
    o = run.o
    if run.kind is PipelineKind.SDXL:
        pooled_text = None
        if o.pooled == "user":
            pooled_text = job.pooled_source
            if extras is not None:
                pooled_text = applied.prompt if pooled_text == job.prompt else extras.encoder_text(pooled_text)
        return encode_prompt(pipeline, applied.prompt, applied.negative, kind=run.kind, pooled_text=pooled_text,
                             backtrack=o.backtrack, clip_skip=o.clip_skip), None
    if run.kind is PipelineKind.SD:
        extra = (safe.safety_concept,) if safe is not None else ()
        return encode_prompt(pipeline, applied.prompt, applied.negative, kind=run.kind, backtrack=o.backtrack,
                             extra=extra, clip_skip=o.clip_skip), None
    embeds = encode_prompt(pipeline, job.prompt, o.negative, kind=run.kind)
    upscaler = getattr(pipeline, "stage3", None)
    if upscaler is None:
        return embeds, None
    text = job.prompt if o.cascade.upscaler_prompt == "expanded" else job.pooled_source
    return embeds, encode_upscaler_prompt(upscaler, text, o.negative)


def _nsfw(output: Any) -> bool | None:
    flags = getattr(output, "nsfw_content_detected", None)
    if flags is None:
        flags = getattr(output, "nsfw_detected", None)
    if flags is None:
        return None
    if isinstance(flags, bool):  # StableDiffusionPipelineSafe overwrites its list with the last flag
        return flags
    return bool(flags[0])


def _step_kwargs(pipe: Any, tick: Callable[[], None] | None) -> dict[str, Any]:
    """Per-step progress through the pipeline's callback (new style, or the old one of the Safe pipeline)."""
    if tick is None:
        return {}
    params = inspect.signature(type(pipe).__call__).parameters
    if "callback_on_step_end" in params:
        def on_step_end(_pipe: Any, _step: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            tick()
            return kwargs

        return {"callback_on_step_end": on_step_end}
    if "callback" in params:
        return {"callback": lambda *_: tick(), "callback_steps": 1}
    return {}


def _denoise(pipeline: Any, embeds: PromptEmbeds, up: PromptEmbeds | None, seed: int, run: _Run, safe: Any,
             i2i: Any, init: Any, job: _Job, tick: Callable[[], None] | None) -> tuple[Any, bool | None]:
    import torch

    def gen() -> Any:
        return torch.Generator("cpu").manual_seed(seed)

    o = run.o
    common = {"num_inference_steps": o.steps, "guidance_scale": o.guidance}
    size = {"width": o.width, "height": o.height}
    if run.kind is PipelineKind.SD and safe is not None:
        pos, neg = embeds.prompt_embeds, embeds.negative_prompt_embeds
        concept = embeds.extra[0]

        def encode_override(prompt: Any, device: Any, num_images_per_prompt: int, do_cfg: bool,
                            negative_prompt: Any, enable_safety_guidance: bool) -> Any:
            if not do_cfg:
                return pos
            return torch.cat([neg, pos, concept] if enable_safety_guidance else [neg, pos])

        safe._encode_prompt = encode_override  # our chunked, weighted embeddings instead of its truncating encoder
        out = safe(prompt=job.prompt, generator=gen(), **common, **size, **(o.sld or {}), **_step_kwargs(safe, tick))
        return out.images[0], _nsfw(out)
    if run.kind in (PipelineKind.SD, PipelineKind.SDXL):
        if init is not None:  # img2img: the init image at the run's size
            image = init if init.size == (o.width, o.height) else init.resize((o.width, o.height))
            out = i2i(**embeds.call_kwargs(), image=image, strength=o.strength, generator=gen(), output_type="pil",
                      **common, **_step_kwargs(i2i, tick))
            return out.images[0], _nsfw(out)
        out = pipeline(**embeds.call_kwargs(), generator=gen(), output_type="pil", **common, **size,
                       **_step_kwargs(pipeline, tick))
        image, nsfw = out.images[0], _nsfw(out)
        if o.hires_scale is not None and i2i is not None:
            from PIL import Image

            w, h = _hires_size(o)
            big = image.resize((w, h), Image.Resampling.LANCZOS)
            out = i2i(**embeds.call_kwargs(), image=big, strength=o.hires_strength, generator=gen(),
                      output_type="pil", num_inference_steps=o.hires_steps or o.steps, guidance_scale=o.guidance,
                      **_step_kwargs(i2i, tick))
            image, nsfw = out.images[0], _nsfw(out) if _nsfw(out) is not None else nsfw
        return image, nsfw
    cascade = pipeline if isinstance(pipeline, IFCascade) else IFCascade(pipeline)
    later = cascade.stage2 is not None or cascade.stage3 is not None
    out = cascade.stage1(**embeds.call_kwargs(), generator=gen(), output_type="pt" if later else "pil", **common,
                         **size, **_step_kwargs(cascade.stage1, tick))
    image, nsfw = out.images, _nsfw(out)
    if cascade.stage2 is not None:
        out = cascade.stage2(image=image, **embeds.call_kwargs(), generator=gen(),
                             num_inference_steps=o.cascade.stage2_steps or o.steps,
                             guidance_scale=o.cascade.stage2_guidance,
                             output_type="pt" if cascade.stage3 is not None else "pil",
                             **_step_kwargs(cascade.stage2, tick))
        image, nsfw = out.images, _nsfw(out) if _nsfw(out) is not None else nsfw
    if cascade.stage3 is not None and up is not None:
        if hasattr(image, "clamp"):  # IF gives [-1, 1] tensors; the upscaler's processor wants [0, 1]
            image = (image / 2 + 0.5).clamp(0, 1)
        out = cascade.stage3(image=image, **up.call_kwargs(), generator=gen(), noise_level=o.cascade.noise_level,
                             num_inference_steps=o.cascade.stage3_steps or o.steps,
                             guidance_scale=o.cascade.stage3_guidance, output_type="pil",
                             **_step_kwargs(cascade.stage3, tick))
        image, nsfw = out.images, _nsfw(out) if _nsfw(out) is not None else nsfw
    return image[0], nsfw


def _hires_size(o: GenerationOptions) -> tuple[int, int]:
    """The hires pass's size: the base size times the factor, rounded down to multiples of 8."""
    assert o.width is not None and o.height is not None and o.hires_scale is not None
    return int(o.width * o.hires_scale) // 8 * 8, int(o.height * o.hires_scale) // 8 * 8


def _steps_per_image(run: _Run) -> int:
    o = run.o
    if run.kind is PipelineKind.IF:
        c = o.cascade
        return o.steps + (c.stage2_steps or o.steps) + (c.stage3_steps or o.steps)
    if o.init_image is not None:
        return max(1, int(o.steps * o.strength))
    extra = max(1, int((o.hires_steps or o.steps) * o.hires_strength)) if o.hires_scale is not None else 0
    return o.steps + extra


def _infotext(job: _Job, seed: int, run: _Run, sampler: str, applied: Applied, init_hash: str | None) -> str:
    o = run.o
    params: dict[str, object] = {
        "Steps": o.steps, "Sampler": sampler, "CFG scale": o.guidance, "Seed": seed, "Size": f"{o.width}x{o.height}",
        "Model hash": run.model_hash, "Model": run.model, "Model kind": run.kind.value,
    }
    if o.clip_skip != 1:
        params["Clip skip"] = o.clip_skip
    if o.init_image is not None:
        params["Denoising strength"] = o.strength
        params["Init image hash"] = init_hash
    if o.hires_scale is not None:
        params["Denoising strength"] = o.hires_strength
        params["Hires upscale"] = o.hires_scale
        params["Hires steps"] = o.hires_steps
        params["Hires upscaler"] = HIRES_UPSCALER
    if run.kind is PipelineKind.SDXL:
        params["Pooled"] = o.pooled
    if run.kind is PipelineKind.IF:
        c = o.cascade
        params.update({"Stage 2 steps": c.stage2_steps or o.steps, "Stage 2 CFG scale": c.stage2_guidance,
                       "Stage 3 steps": c.stage3_steps or o.steps, "Stage 3 CFG scale": c.stage3_guidance,
                       "Noise level": c.noise_level, "Upscaler prompt": c.upscaler_prompt})
    if o.sld is not None:
        params["SLD"] = dict(o.sld)
    if o.safety_checker:
        params["Safety checker"] = "on"
    params.update(applied.infotext())
    if job.tipo:
        values = dict(job.tipo)
        if job.expansion is not None:  # the seed as an offset from this image's seed (tipo.seeds rule 6)
            values["seed"] = infotext_seed(job.expansion.seed, seed)
        params.update(to_infotext(values))
    from .. import __version__

    params["Version"] = f"tipo {__version__}"
    return format_parameters(job.prompt, o.negative, params)


_NUMBERED = re.compile(r"^(\d{5})-")


def _next_file_index(out_dir: Path) -> int:
    numbers = [int(m.group(1)) for p in out_dir.iterdir() if (m := _NUMBERED.match(p.name)) and p.suffix == ".png"]
    return max(numbers, default=-1) + 1


def _progress(total: int, enabled: bool | None) -> Any:
    from ..progress import progress_bar

    return progress_bar(total, unit="image", desc="tipo generate", enabled=enabled)


def _render(prepare: Callable[[int], _Job], count: int, pipeline: Any, run: _Run, *, seeds: Callable[[int], int],
            overlap: bool, out_dir: Path | None, result: GenerationResult) -> None:
    """Expand (maybe in the background), apply extra networks, encode, denoise and record ``count`` x ``n``."""
    o = run.o
    stage1 = stages(pipeline)[0]
    scheduler = scheduler_for(o.sampler, stage1.scheduler) if o.sampler is not None else None
    start_index = 0
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        start_index = _next_file_index(out_dir)
    init = _open_image(o.init_image) if o.init_image is not None else None
    init_hash = _image_hash(init) if init is not None else None
    bar = _progress(count * o.n, o.progress)
    per_image = _steps_per_image(run)
    step = [0]

    def tick() -> None:
        step[0] += 1
        bar.set_postfix_str(f"step {min(step[0], per_image)}/{per_image}")

    expand_s = denoise_s = 0.0
    t0 = time.perf_counter()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tipo-expand") \
        if overlap else None
    extras: ExtraNetworks | None = None
    try:
        pending = executor.submit(prepare, 0) if executor is not None else None
        with _run_settings(pipeline, o.safety_checker, scheduler):
            sampler = sampler_name(stage1.scheduler)
            safe = _sld_pipeline(stage1) if o.sld is not None else None
            i2i = _img2img_pipeline(stage1, run.kind) if init is not None or o.hires_scale is not None else None
            extras = ExtraNetworks(stage1, run.kind, o.lora_dir, o.embedding_dir)
            for i in range(count):
                if pending is not None:
                    job = pending.result()
                    pending = executor.submit(prepare, i + 1) if executor is not None and i + 1 < count else None
                else:
                    job = prepare(i)
                expand_s += job.seconds
                t_prompt = time.perf_counter()
                parts = split_prompt(job.prompt)
                applied = extras.apply(job.prompt, o.negative, parts.extras)
                embeds, up = _encode(pipeline, job, run, safe, applied, extras)
                reports: tuple[EncoderReport, ...] = embeds.reports + (up.reports if up is not None else ())
                # Extra-network tags not applied: the prompt's non-LoRA ones (or LoRAs without a folder) and every
                # one in the negative (A1111 applies none from there either).
                ignored = tuple(e for e in embeds.ignored if e not in {t.text for t in applied.lora_tags}) \
                    + split_prompt(o.negative).extras
                for j in range(o.n):
                    k = i * o.n + j
                    seed = seeds(k)
                    t_img = time.perf_counter()
                    step[0] = 0
                    image, nsfw = _denoise(pipeline, embeds, up, seed, run, safe, i2i, init, job,
                                           tick if bar is not None else None)
                    record = ImageRecord(
                        index=k, prompt_index=i, seed=seed, prompt=job.prompt, negative=o.negative,
                        user_prompt=job.user_prompt, user_caption=job.user_caption, kind=run.kind.value,
                        model=run.model, sampler=sampler, steps=o.steps, guidance=float(o.guidance or 0),
                        width=int(o.width or 0), height=int(o.height or 0),
                        pooled=o.pooled if run.kind is PipelineKind.SDXL else None,
                        encoding=reports, ignored=ignored, nsfw=nsfw,
                        parameters=_infotext(job, seed, run, sampler, applied, init_hash), expansion=job.expansion,
                        seconds=round(time.perf_counter() - t_img, 6), loras=tuple(applied.loras),
                        embeddings=tuple(applied.embeddings), clip_skip=o.clip_skip,
                    )
                    if out_dir is not None:
                        path = write_png(image, out_dir / f"{start_index + k:05d}-{seed}.png", record.parameters,
                                         prompt=job.prompt, negative=o.negative)
                        record = replace(record, path=path)
                    result.images.append(image)
                    result.records.append(record)
                    if bar is not None:
                        bar.update(1)
                denoise_s += time.perf_counter() - t_prompt
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        if extras is not None:
            result.notes.extend(extras.notes)
            extras.close()
        if bar is not None:
            bar.close()
    result.timings.update({"expand": round(expand_s, 6), "denoise": round(denoise_s, 6),
                           "wall": round(time.perf_counter() - t0, 6), "overlap": float(overlap)})


def _check_pipeline(pipeline: Any, kind: PipelineKind, o: GenerationOptions) -> None:
    """What only the loaded pipeline can tell: its safety checker, and which options its kind supports."""
    stage1 = stages(pipeline)[0]
    if o.safety_checker:
        if kind is PipelineKind.SDXL:
            raise RequestError("diffusers' SDXL pipeline has no image safety checker")
        if getattr(stage1, "safety_checker", None) is None:
            raise RequestError("this pipeline has no safety checker; load it with "
                               "load_pipeline(..., safety_checker=True or <checker folder or id>)")
    if o.sld is not None and kind is not PipelineKind.SD:
        raise RequestError("Safe Latent Diffusion exists only for Stable Diffusion 1.x/2.x pipelines in diffusers")
    if kind is PipelineKind.IF:
        for name, value in (("sampler", o.sampler), ("init_image", o.init_image), ("hires_scale", o.hires_scale),
                            ("lora_dir", o.lora_dir), ("embedding_dir", o.embedding_dir)):
            if value is not None:
                raise RequestError(f"{name} is for SD and SDXL pipelines; the DeepFloyd IF cascade does not take it")
        if o.clip_skip != 1:
            raise RequestError("clip_skip is for the CLIP encoders of SD and SDXL; DeepFloyd IF reads T5")
    if o.sld is not None and (o.init_image is not None or o.hires_scale is not None):
        raise RequestError("Safe Latent Diffusion runs text-to-image only here; leave out init_image / hires_scale")


# -- the entry point -----------------------------------------------------------------------------
PromptLike = str | Request | Expansion


def generate(prompts: PromptLike | Sequence[PromptLike], pipeline: Any, options: GenerationOptions | None = None, *,
             expander: Any = None, sampling: Sampling | None = None, template: object = None, task: str | None = None,
             request_fields: dict[str, object] | None = None, **changes: Any) -> GenerationResult:
    """Make ``n`` images for each prompt, expanding with TIPO first when given an expander.

    Args:
        prompts: one or a list of: a tag string, a :class:`~tipo.request.Request`, or an
            :class:`~tipo.result.Expansion`. With an ``expander``, strings and requests are expanded;
            without one, strings are used as they are (A1111 syntax honoured).
        pipeline: a StableDiffusion / StableDiffusionXL / IF pipeline, an :class:`IFCascade`, or a
            folder / Hub id / single-file checkpoint, loaded with :func:`load_pipeline`
            (``options.load_options`` passed on).
        options: a :class:`~tipo.image.options.GenerationOptions`; its fields can also be given as
            keyword arguments (``steps=20``), which override it. See that class for every setting.
        expander: an :class:`~tipo.expander.Expander` (or anything with its ``expand``), or a model
            name/path (then loaded and closed here).
        sampling, template, task, request_fields: TIPO sampling settings, template, forced task, and
            Request fields for strings (e.g. ``{"length": "short"}``). The expansion of prompt ``i``
            uses ``(E + i * n) % 2**32``, the seed of its first image, where ``E`` is ``sampling.seed`` when
            set, else ``seed`` (tipo.seeds rule 5: ``generate(p, seed=S)`` expands ``p`` as ``expand(p, seed=S)``).

    Returns:
        A :class:`GenerationResult` with the images and one record per image.

    Example:
        >>> from tipo.image.testing import tiny_sd_pipeline  # doctest: +SKIP
        >>> r = generate("1girl, forest", tiny_sd_pipeline(), steps=2, seed=1, n=2)  # doctest: +SKIP
        >>> r.seeds  # doctest: +SKIP
        [1, 2]
    """
    # 1. validate (a named pipeline's kind too: its model_index.json or checkpoint header is read)
    o = GenerationOptions.build(options, **changes)
    kind = o.kind
    source = str(pipeline) if isinstance(pipeline, (str, os.PathLike)) else None
    if source is not None:
        kind = detect_kind(source, kind, bool(o.load_options.get("local_files_only", False)),
                           o.load_options.get("config"))
    items = [prompts] if isinstance(prompts, (str, Request, Expansion)) else list(prompts)
    if not items:
        raise RequestError("no prompts given")
    for item in items:
        if not isinstance(item, (str, Request, Expansion)):
            raise RequestError(f"prompts must be strings, tipo.Request or tipo.Expansion, got {type(item).__name__}")
        if isinstance(item, Request) and expander is None:
            raise RequestError("a tipo.Request needs an expander (an Expander or a model path) to expand it")
    request_fields = dict(request_fields or {})
    require("torch", "image", "The image stage")
    require("diffusers", "image", "The image stage")
    embedding_names = [p.stem for p in embedding_index(o.embedding_dir).values()]

    from ..expander import Expander

    base = o.seed if o.seed is not None else fresh_seed()
    result = GenerationResult(base_seed=base)
    # Anything with .expand (an Expander, a pool) is used as is; a name or path is loaded here.
    own_expander = expander is not None and not hasattr(expander, "expand")
    if own_expander:
        expander = Expander(expander)
    try:
        def prepare(i: int) -> _Job:
            item = items[i]
            if isinstance(item, Expansion):
                return _job_from_expansion(i, item, template)
            if expander is None:
                assert isinstance(item, str)
                return _Job(i, item, item)
            request = item
            if isinstance(item, str):
                fields = dict(request_fields)
                if o.width is not None and "width" not in fields and "aspect_ratio" not in fields:
                    fields.update(width=o.width, height=o.height)
                request = Request(item, **fields)  # type: ignore[arg-type]
            assert isinstance(request, Request)
            user_tags = request.tags
            kept, front = split_embeddings(user_tags, embedding_names)  # embedding words never reach the LM
            if front:
                request = replace(request, tags=kept)
            samp = sampling or Sampling()
            # tipo.seeds rule 5: the seed of the prompt's first image, counted from sampling.seed or the base
            samp = samp.with_seed(image_seed(samp.seed if samp.seed is not None else base, i * o.n))
            t = time.perf_counter()
            expansion = expander.expand(request, samp, template=template, task=task)  # type: ignore[arg-type]
            return _job_from_expansion(i, expansion, template, time.perf_counter() - t, front,
                                       user_tags if front else None, task)

        # 2. memory hand-off
        prepared: list[_Job] | None = None
        if expander is not None and o.lm_memory == "unload":
            t = time.perf_counter()
            prepared = [prepare(i) for i in range(len(items))]
            expander.close()
            result.notes.append(f"expanded {len(items)} prompt(s) in {time.perf_counter() - t:.2f} s, then "
                                "closed the language model before the diffusion model ran")
        elif expander is not None and o.lm_memory == "cpu":
            _lm_to_cpu(expander, result.notes)

        # 3. the pipeline
        if source is not None:
            load = {"offload": o.offload, **o.load_options}
            if o.safety_checker and "safety_checker" not in load:
                load["safety_checker"] = True
            pipeline = load_pipeline(source, kind, notes=result.notes, **load)
        elif isinstance(pipeline, (tuple, list)):
            pipeline = IFCascade(*pipeline)
        else:
            apply_offload(pipeline, o.offload, result.notes)
        found = pipeline_kind(pipeline)
        if kind is not None and kind is not found:
            raise RequestError(f"kind {kind.value!r} does not match the pipeline: it is a "
                               f"{type(stages(pipeline)[0]).__name__} (kind {found.value!r})")
        _check_pipeline(pipeline, found, o)
        stage1 = stages(pipeline)[0]
        guidance = o.guidance if o.guidance is not None else float(_call_default(stage1, "guidance_scale", 7.5))
        if o.sld is not None and guidance <= 1:
            raise RequestError("Safe Latent Diffusion works through classifier-free guidance; use guidance > 1")
        width, height = o.width, o.height
        if width is None or height is None:
            if o.init_image is not None:
                w0, h0 = _open_image(o.init_image).size
                width, height = max(8, w0 // 8 * 8), max(8, h0 // 8 * 8)
            else:
                width, height = _default_size(stage1, found)
        device = getattr(stage1, "_execution_device", None) or stage1.device
        overlap = o.overlap
        if overlap is None:
            overlap = expander is not None and prepared is None and getattr(device, "type", str(device)) == "cuda"
        overlap = bool(overlap) and prepared is None and expander is not None
        run = _Run(o.replace(kind=found, guidance=guidance, width=width, height=height), found,
                   _model_name(pipeline, o.model_name, source), _model_hash(source))

        # 4-6. set up, expand / apply / encode / denoise / record / save, undo
        def source_job(i: int) -> _Job:
            return prepared[i] if prepared is not None else prepare(i)

        _render(source_job, len(items), pipeline, run, seeds=lambda k: image_seed(base, k), overlap=overlap,
                out_dir=o.out_dir, result=result)
    finally:
        if own_expander and expander is not None:
            expander.close()
    return result


# -- regenerate ---------------------------------------------------------------------------------
def _recorded_sampler(params: dict[str, Any]) -> str | None:
    name = params.get("Sampler")
    if not isinstance(name, str) or not name.strip():
        return None
    try:
        return canonical_name(name, params.get("Schedule type"))
    except RequestError as exc:
        raise RequestError(f"the PNG's sampler cannot be made with diffusers here: {exc}") from None


def regenerate(png_path: str | os.PathLike[str], pipeline: Any, *, kind: PipelineKind | str | None = None,
               lora_dir: str | os.PathLike[str] | None = None, embedding_dir: str | os.PathLike[str] | None = None,
               init_image: Any = None, load_options: dict[str, Any] | None = None) -> Any:
    """Make the image of a PNG again from its ``parameters`` chunk (written by ``tipo generate`` or A1111).

    Uses the recorded prompt (extra-network tags and embedding words included: give the same
    ``lora_dir`` / ``embedding_dir``; their recorded hashes must match the files), negative, seed,
    steps, size, CFG scale, sampler (A1111 names, and the diffusers class names older tipo PNGs
    hold), clip skip, img2img (``init_image`` must be the same picture: its recorded hash is checked)
    and hires settings, SDXL pooled source, IF stage settings and SLD settings. No language model is
    needed: the expanded prompt is in the file. ``pipeline`` is an object, an IF cascade (or its stages
    as a tuple), or a folder / Hub id / checkpoint file to load (``load_options`` passed on).

    Example:
        >>> image = regenerate("out/00000-1.png", pipe)  # doctest: +SKIP
    """
    params = read_parameters(png_path)
    try:
        seed = int(params["Seed"])
        steps = int(params["Steps"])
        guidance = float(params["CFG scale"])
        width, height = (int(v) for v in str(params["Size"]).split("x"))
        clip_skip = int(params.get("Clip skip", 1))
        hires = float(params["Hires upscale"]) if "Hires upscale" in params else None
        hires_steps = int(params["Hires steps"]) if int(params.get("Hires steps", 0) or 0) > 0 else None
        strength = float(params["Denoising strength"]) if "Denoising strength" in params else None
    except (KeyError, ValueError) as exc:
        raise RequestError(f"{png_path}: the parameters lack or garble {exc}; it was not written by tipo generate "
                           "or A1111") from None
    written_by_tipo = str(params.get("Version", "")).startswith("tipo")
    recorded_kind = params.get("Model kind")
    kind = parse_kind(kind) or parse_kind(recorded_kind)
    upscaler = params.get("Hires upscaler")
    if hires is not None and upscaler not in (None, HIRES_UPSCALER, "None"):
        raise RequestError(f"{png_path} was made with the hires upscaler {upscaler!r}; tipo's hires pass resizes with "
                           f"{HIRES_UPSCALER} only, so it cannot make this image again")
    if hires is None and strength is not None and init_image is None:
        raise RequestError(f"{png_path} was made with img2img (Denoising strength {strength}); pass init_image=<the "
                           "same input image>")
    init = None
    if init_image is not None:
        init = _open_image(init_image)
        recorded = params.get("Init image hash")
        if recorded and recorded != _image_hash(init):
            raise RequestError(f"init_image is not the picture {png_path} was made from (hash {_image_hash(init)}, "
                               f"recorded {recorded})")
    if params.get("Lora hashes") and lora_dir is None:
        raise RequestError(f"{png_path} was made with LoRAs ({params['Lora hashes']}); pass lora_dir=<the folder with "
                           "those files> (CLI --lora-dir)")
    if params.get("TI hashes") and embedding_dir is None:
        raise RequestError(f"{png_path} was made with textual-inversion embeddings ({params['TI hashes']}); pass "
                           "embedding_dir=<the folder with those files> (CLI --embedding-dir)")
    tipo = from_infotext(params) or {}
    job = _Job(0, params["Prompt"], str(tipo.get("tags", "")) if tipo else params["Prompt"],
               str(tipo.get("caption", "")), None, tipo)
    cascade = CascadeSettings()
    if "Stage 2 steps" in params:
        cascade = CascadeSettings(stage2_steps=int(params["Stage 2 steps"]),
                                  stage2_guidance=float(params["Stage 2 CFG scale"]),
                                  stage3_steps=int(params["Stage 3 steps"]),
                                  stage3_guidance=float(params["Stage 3 CFG scale"]),
                                  noise_level=int(params["Noise level"]),
                                  upscaler_prompt=str(params["Upscaler prompt"]))
    source = str(pipeline) if isinstance(pipeline, (str, os.PathLike)) else None
    recorded_hash = params.get("Model hash")
    if source is not None and recorded_hash and _model_hash(source) not in (None, recorded_hash):
        raise RequestError(f"{png_path} was made with the checkpoint of hash {recorded_hash}; {Path(source).name} "
                           f"has hash {_model_hash(source)}")
    if source is not None:
        pipeline = load_pipeline(source, kind, **(load_options or {}))
    elif isinstance(pipeline, (tuple, list)):
        pipeline = IFCascade(*pipeline)
    found = pipeline_kind(pipeline)
    if kind is not None and kind is not found:
        raise RequestError(f"{png_path} was made with a {kind.value!r} pipeline, but this one is {found.value!r}")
    sld = params.get("SLD")
    options = GenerationOptions(
        kind=found, steps=steps, seed=seed, negative=params.get("Negative prompt", ""), width=width, height=height,
        guidance=guidance, sampler=_recorded_sampler(params) if found is not PipelineKind.IF else None,
        clip_skip=clip_skip, pooled=str(params.get("Pooled", "user" if written_by_tipo else "expanded")),
        cascade=cascade, init_image=init, strength=strength if init is not None and strength else 0.75,
        hires_scale=hires, hires_steps=hires_steps, hires_strength=strength if hires and strength else 0.5,
        lora_dir=None if lora_dir is None else Path(lora_dir),
        embedding_dir=None if embedding_dir is None else Path(embedding_dir), sld=sld if isinstance(sld, dict) else None,
        safety_checker=True if params.get("Safety checker") == "on" else None, progress=False)
    _check_pipeline(pipeline, found, options)
    run = _Run(options, found, str(params.get("Model", "")), recorded_hash)
    result = GenerationResult(base_seed=seed)
    _render(lambda i: job, 1, pipeline, run, seeds=lambda k: seed, overlap=False, out_dir=None, result=result)
    record = result.records[0]
    for label, recorded_text, applied in (("Lora hashes", params.get("Lora hashes"), record.parameters),
                                          ("TI hashes", params.get("TI hashes"), record.parameters)):
        if recorded_text:
            now = parse_parameters(applied).get(label)
            if _hash_map(recorded_text) != _hash_map(now):
                raise RequestError(f"{png_path}: the files in the LoRA/embedding folders are not the ones it was "
                                   f"made with ({label}: recorded {recorded_text!r}, now {now!r})")
    return result.images[0]


def _hash_map(text: object) -> dict[str, str]:
    if not isinstance(text, str):
        return {}
    out = {}
    for part in text.split(","):
        name, _, digest = part.rpartition(":")
        if name.strip():
            out[name.strip().lower()] = digest.strip()
    return out
