"""One entry point from prompts to images: expand, encode, denoise, record, save.

:func:`generate` takes tag strings, :class:`~tipo.request.Request` s or finished
:class:`~tipo.result.Expansion` s, and a diffusers pipeline (an object, or a folder / Hub id to
load), and returns a :class:`~tipo.image.records.GenerationResult`. Steps:

1. validate every argument (sizes, steps, counts, kinds) before anything loads;
2. hand memory over: with ``lm_memory="unload"`` every prompt is expanded first and the
   language model closed before the diffusion model loads; ``"cpu"`` keeps it on the CPU;
3. load the pipeline when given by name, turn on offload (CUDA only) and the safety options;
4. for each prompt: expand it (in a background thread, overlapping the previous prompt's
   denoising, when ``overlap`` is on), encode it once (chunked, weighted, fitted), then
   denoise ``n`` images, each with its own CPU ``torch.Generator`` seeded
   ``(seed + k) % 2**32``;
5. record each image (A1111 ``parameters`` text included) and save it when ``out_dir`` is given.

:func:`regenerate` reads a saved PNG's parameters and makes the same pixels again.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import RequestError, require
from ..request import Request, Sampling
from ..result import Expansion
from .encoding import EncoderReport, PromptEmbeds, encode_prompt, encode_upscaler_prompt, pipeline_kind
from .infotext import format_parameters, read_parameters, write_png
from .kinds import PipelineKind, parse_kind
from .loading import IFCascade, apply_offload, detect_kind, load_pipeline, stages
from .records import CascadeSettings, GenerationResult, ImageRecord

__all__ = ["LM_MEMORY", "POOLED", "SLD_PRESETS", "check_numbers", "generate", "image_seed", "regenerate"]

SEED_RANGE = 2**32
LM_MEMORY = ("keep", "cpu", "unload")
POOLED = ("user", "expanded")
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


def image_seed(base: int, k: int) -> int:
    """The seed of image ``k`` of a run with base seed ``base`` (A1111's rule: base + k).

    Example:
        >>> image_seed(1, 0), image_seed(1, 2), image_seed(2**32 - 1, 1)
        (1, 3, 0)
    """
    return (base + k) % SEED_RANGE


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


def _tipo_infotext(expansion: Expansion, template: object) -> dict[str, object]:
    from ..options import to_values

    request = expansion.plan.request
    prov = expansion.provenance
    sampling = Sampling(**prov.sampling, seed=prov.seed) if prov is not None else Sampling()  # type: ignore[arg-type]
    settings: dict[str, object] = {"model": prov.model if prov else "", "task": expansion.plan.task_name}
    settings.update(to_values(request, sampling))
    if template is not None:
        settings["template"] = getattr(template, "value", template)
    return {"TIPO Parameters": json.dumps(settings, ensure_ascii=False, sort_keys=True),
            "TIPO prompt": request.tags, "TIPO nl prompt": request.caption}


def _job_from_expansion(index: int, expansion: Expansion, template: object, seconds: float = 0.0) -> _Job:
    request = expansion.plan.request
    return _Job(index, expansion.prompt, request.tags, request.caption, expansion,
                _tipo_infotext(expansion, template), seconds)


# -- validation ---------------------------------------------------------------------------------
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


def _guidance(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise RequestError(f"guidance={value!r} is not valid; give a number >= 0 (1 or less turns guidance off)")
    return float(value)


def check_numbers(n: object, steps: object, width: object, height: object,
                  guidance: object) -> tuple[int, int, int | None, int | None, float | None]:
    """Validate the counts and sizes of a run (shared by :func:`generate` and the CLI)."""
    n = _positive_int("n", n)
    steps = _positive_int("steps", steps)
    w, h = _size("width", width), _size("height", height)
    if (w is None) != (h is None):
        raise RequestError("give both width and height, or neither (the pipeline's default size)")
    return n, steps, w, h, _guidance(guidance)


def _sld_settings(sld: object) -> dict[str, float] | None:
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


def _model_name(pipeline: Any, given: str | None) -> str:
    if given:
        return given
    name = str(getattr(pipeline, "name_or_path", "") or "")
    if name and Path(name).is_absolute():
        return Path(name).name
    return name or type(stages(pipeline)[0]).__name__


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


# -- the pipeline call ---------------------------------------------------------------------------
@contextlib.contextmanager
def _run_settings(pipeline: Any, quiet: bool, safety_checker: bool | None) -> Iterator[None]:
    """Silence diffusers' per-step progress bars (tipo shows one bar per run when asked) and detach the
    checker for this run; restore both after."""
    saved: list[tuple[Any, str, Any, bool]] = []
    try:
        for p in stages(pipeline):
            if quiet:
                had = hasattr(p, "_progress_bar_config")
                saved.append((p, "_progress_bar_config", getattr(p, "_progress_bar_config", None), had))
                p.set_progress_bar_config(disable=True)
            if safety_checker is False and getattr(p, "safety_checker", None) is not None:
                saved.append((p, "safety_checker", p.safety_checker, True))
                p.safety_checker = None
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
    safe.set_progress_bar_config(disable=True)  # like the pipelines during a run: one tipo bar at most
    return safe


@dataclass(frozen=True)
class _Settings:
    kind: PipelineKind
    steps: int
    guidance: float
    width: int
    height: int
    negative: str
    pooled: str
    cascade: CascadeSettings
    sld: dict[str, float] | None
    safety_checker: bool | None
    backtrack: int
    model: str


def _encode(pipeline: Any, job: _Job, s: _Settings, safe: Any) -> tuple[PromptEmbeds, PromptEmbeds | None]:
    if s.kind is PipelineKind.SDXL:
        pooled_text = job.pooled_source if s.pooled == "user" else None
        return encode_prompt(pipeline, job.prompt, s.negative, kind=s.kind, pooled_text=pooled_text,
                             backtrack=s.backtrack), None
    if s.kind is PipelineKind.SD:
        extra = (safe.safety_concept,) if safe is not None else ()
        return encode_prompt(pipeline, job.prompt, s.negative, kind=s.kind, backtrack=s.backtrack, extra=extra), None
    embeds = encode_prompt(pipeline, job.prompt, s.negative, kind=s.kind)
    upscaler = getattr(pipeline, "stage3", None)
    if upscaler is None:
        return embeds, None
    text = job.prompt if s.cascade.upscaler_prompt == "expanded" else job.pooled_source
    return embeds, encode_upscaler_prompt(upscaler, text, s.negative)


def _nsfw(output: Any) -> bool | None:
    flags = getattr(output, "nsfw_content_detected", None)
    if flags is None:
        flags = getattr(output, "nsfw_detected", None)
    if flags is None:
        return None
    if isinstance(flags, bool):  # StableDiffusionPipelineSafe overwrites its list with the last flag
        return flags
    return bool(flags[0])


def _denoise(pipeline: Any, embeds: PromptEmbeds, up: PromptEmbeds | None, seed: int, s: _Settings,
             safe: Any, job: _Job) -> tuple[Any, bool | None]:
    import torch

    def gen() -> Any:
        return torch.Generator("cpu").manual_seed(seed)

    common = {"num_inference_steps": s.steps, "guidance_scale": s.guidance, "width": s.width, "height": s.height}
    if s.kind is PipelineKind.SD and safe is not None:
        pos, neg = embeds.prompt_embeds, embeds.negative_prompt_embeds
        concept = embeds.extra[0]

        def encode_override(prompt: Any, device: Any, num_images_per_prompt: int, do_cfg: bool,
                            negative_prompt: Any, enable_safety_guidance: bool) -> Any:
            if not do_cfg:
                return pos
            return torch.cat([neg, pos, concept] if enable_safety_guidance else [neg, pos])

        safe._encode_prompt = encode_override  # our chunked, weighted embeddings instead of its truncating encoder
        out = safe(prompt=job.prompt, generator=gen(), **common, **(s.sld or {}))
        return out.images[0], _nsfw(out)
    if s.kind in (PipelineKind.SD, PipelineKind.SDXL):
        out = pipeline(**embeds.call_kwargs(), generator=gen(), output_type="pil", **common)
        return out.images[0], _nsfw(out)
    cascade = pipeline if isinstance(pipeline, IFCascade) else IFCascade(pipeline)
    later = cascade.stage2 is not None or cascade.stage3 is not None
    out = cascade.stage1(**embeds.call_kwargs(), generator=gen(), output_type="pt" if later else "pil", **common)
    image, nsfw = out.images, _nsfw(out)
    if cascade.stage2 is not None:
        out = cascade.stage2(image=image, **embeds.call_kwargs(), generator=gen(),
                             num_inference_steps=s.cascade.stage2_steps or s.steps,
                             guidance_scale=s.cascade.stage2_guidance,
                             output_type="pt" if cascade.stage3 is not None else "pil")
        image, nsfw = out.images, _nsfw(out) if _nsfw(out) is not None else nsfw
    if cascade.stage3 is not None and up is not None:
        if hasattr(image, "clamp"):  # IF gives [-1, 1] tensors; the upscaler's processor wants [0, 1]
            image = (image / 2 + 0.5).clamp(0, 1)
        out = cascade.stage3(image=image, **up.call_kwargs(), generator=gen(), noise_level=s.cascade.noise_level,
                             num_inference_steps=s.cascade.stage3_steps or s.steps,
                             guidance_scale=s.cascade.stage3_guidance, output_type="pil")
        image, nsfw = out.images, _nsfw(out) if _nsfw(out) is not None else nsfw
    return image[0], nsfw


def _infotext(job: _Job, seed: int, s: _Settings, sampler: str) -> str:
    params: dict[str, object] = {
        "Steps": s.steps, "Sampler": sampler, "CFG scale": s.guidance, "Seed": seed, "Size": f"{s.width}x{s.height}",
        "Model": s.model, "Model kind": s.kind.value,
    }
    if s.kind is PipelineKind.SDXL:
        params["Pooled"] = s.pooled
    if s.kind is PipelineKind.IF:
        c = s.cascade
        params.update({"Stage 2 steps": c.stage2_steps or s.steps, "Stage 2 CFG scale": c.stage2_guidance,
                       "Stage 3 steps": c.stage3_steps or s.steps, "Stage 3 CFG scale": c.stage3_guidance,
                       "Noise level": c.noise_level, "Upscaler prompt": c.upscaler_prompt})
    if s.sld is not None:
        params["SLD"] = dict(s.sld)
    if s.safety_checker:
        params["Safety checker"] = "on"
    params.update(job.tipo)
    from .. import __version__

    params["Version"] = f"tipo {__version__}"
    return format_parameters(job.prompt, s.negative, params)


_NUMBERED = re.compile(r"^(\d{5})-")


def _next_file_index(out_dir: Path) -> int:
    numbers = [int(m.group(1)) for p in out_dir.iterdir() if (m := _NUMBERED.match(p.name)) and p.suffix == ".png"]
    return max(numbers, default=-1) + 1


class _Counter:
    def __init__(self, total: int) -> None:
        import sys

        self.total, self.n, self._err = total, 0, sys.stderr

    def update(self, k: int) -> None:
        self.n += k
        print(f"\rtipo generate: {self.n}/{self.total}", end="", file=self._err)

    def close(self) -> None:
        print(file=self._err)


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return _Counter(total)
    import sys

    return tqdm(total=total, unit="image", desc="tipo generate", file=sys.stderr)


def _render(prepare: Callable[[int], _Job], count: int, pipeline: Any, s: _Settings, *, n: int,
            seeds: Callable[[int], int], overlap: bool, progress: bool, out_dir: Path | None,
            result: GenerationResult) -> None:
    """Expand (maybe in the background), encode, denoise and record ``count`` prompts x ``n`` images."""
    stage1 = stages(pipeline)[0]
    safe = _sld_pipeline(stage1) if s.sld is not None else None
    sampler = type(stage1.scheduler).__name__
    start_index = 0
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        start_index = _next_file_index(out_dir)
    bar = _progress(count * n, progress)
    expand_s = denoise_s = 0.0
    t0 = time.perf_counter()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tipo-expand") \
        if overlap else None
    try:
        pending = executor.submit(prepare, 0) if executor is not None else None
        with _run_settings(pipeline, quiet=True, safety_checker=s.safety_checker):
            for i in range(count):
                if pending is not None:
                    job = pending.result()
                    pending = executor.submit(prepare, i + 1) if executor is not None and i + 1 < count else None
                else:
                    job = prepare(i)
                expand_s += job.seconds
                t_prompt = time.perf_counter()
                embeds, up = _encode(pipeline, job, s, safe)
                reports: tuple[EncoderReport, ...] = embeds.reports + (up.reports if up is not None else ())
                for j in range(n):
                    k = i * n + j
                    seed = seeds(k)
                    t_img = time.perf_counter()
                    image, nsfw = _denoise(pipeline, embeds, up, seed, s, safe, job)
                    record = ImageRecord(
                        index=k, prompt_index=i, seed=seed, prompt=job.prompt, negative=s.negative,
                        user_prompt=job.user_prompt, user_caption=job.user_caption, kind=s.kind.value,
                        model=s.model, sampler=sampler, steps=s.steps, guidance=s.guidance, width=s.width,
                        height=s.height, pooled=s.pooled if s.kind is PipelineKind.SDXL else None,
                        encoding=reports, ignored=embeds.ignored, nsfw=nsfw,
                        parameters=_infotext(job, seed, s, sampler), expansion=job.expansion,
                        seconds=round(time.perf_counter() - t_img, 6),
                    )
                    if out_dir is not None:
                        path = write_png(image, out_dir / f"{start_index + k:05d}-{seed}.png", record.parameters)
                        record = replace(record, path=path)
                    result.images.append(image)
                    result.records.append(record)
                    if bar is not None:
                        bar.update(1)
                denoise_s += time.perf_counter() - t_prompt
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    result.timings.update({"expand": round(expand_s, 6), "denoise": round(denoise_s, 6),
                           "wall": round(time.perf_counter() - t0, 6), "overlap": float(overlap)})


# -- the entry point -----------------------------------------------------------------------------
PromptLike = str | Request | Expansion


def generate(prompts: PromptLike | Sequence[PromptLike], pipeline: Any, *, kind: PipelineKind | str | None = None,
             n: int = 1, steps: int = 30, seed: int | None = None, negative: str = "",
             width: int | None = None, height: int | None = None, guidance: float | None = None,
             expander: Any = None, sampling: Sampling | None = None, template: object = None, task: str | None = None,
             request_fields: dict[str, object] | None = None, pooled: str = "user",
             cascade: CascadeSettings | None = None, lm_memory: str = "keep", offload: str | None = None,
             overlap: bool | None = None, safety_checker: bool | None = None, sld: object = None,
             out_dir: str | os.PathLike[str] | None = None, progress: bool = False, model_name: str | None = None,
             backtrack: int = 20, load_options: dict[str, Any] | None = None) -> GenerationResult:
    """Make ``n`` images for each prompt, expanding with TIPO first when given an expander.

    Args:
        prompts: one or a list of: a tag string, a :class:`~tipo.request.Request`, or an
            :class:`~tipo.result.Expansion`. With an ``expander``, strings and requests are expanded;
            without one, strings are used as they are (A1111 syntax honoured).
        pipeline: a StableDiffusion / StableDiffusionXL / IF pipeline, an :class:`IFCascade`, or a
            folder / Hub id, loaded with :func:`load_pipeline` (``load_options`` passed on).
        kind: ``"sd"``, ``"sdxl"``, ``"if"``; None detects it. A mismatch is an error.
        n: images per prompt. steps: denoising steps. seed: base seed (None: a fresh one);
            image ``k`` uses ``(seed + k) % 2**32``, the expansion of prompt ``i`` uses
            ``tipo.batch.derive_seed(seed, i)`` unless ``sampling.seed`` is set.
        negative: the negative prompt (A1111 syntax; padded to the prompt's chunk count).
        width, height: image size (multiples of 8); None: the pipeline's default. Strings to
            expand also get them as the request's aspect ratio.
        guidance: CFG scale; None: the pipeline's default.
        expander: an :class:`~tipo.expander.Expander` (or anything with its ``expand``), or a model
            name/path (then loaded and closed here).
        sampling, template, task, request_fields: TIPO sampling settings, template, forced task, and
            Request fields for strings (e.g. ``{"length": "short"}``).
        pooled: SDXL: ``"user"`` (the pooled embedding comes from the user's own tags) or
            ``"expanded"`` (from the expanded prompt's first chunk).
        cascade: IF stage II/III settings.
        lm_memory: ``"keep"``; ``"cpu"`` (move a transformers LM to the CPU first); ``"unload"``
            (expand every prompt, close the expander, then load and run the diffusion model).
        offload: ``"model"``/``"sequential"``: diffusers' CPU offload (CUDA only; else a no-op + note).
        overlap: expand the next prompt in a background thread while the current one denoises;
            None: on when the pipeline runs on CUDA.
        safety_checker: None leaves the pipeline as it is; True requires its checker (flagged images
            come back black and ``record.nsfw`` is True); False detaches it for this run.
        sld: Safe Latent Diffusion (SD 1.x/2.x): True, a preset (weak, medium, strong, max) or a dict
            of ``sld_*`` settings.
        out_dir: save each image there as ``NNNNN-<seed>.png`` (atomic), with its parameters.
        progress: a progress bar over the images on stderr (diffusers' per-step bars are silenced).
        model_name: the ``Model`` written into the parameters (default: the pipeline's folder or id).
        backtrack: how far back (tokens) a CLIP chunk may end at a comma (A1111's default 20).

    Returns:
        A :class:`GenerationResult` with the images and one record per image.

    Example:
        >>> from tipo.image.testing import tiny_sd_pipeline  # doctest: +SKIP
        >>> r = generate("1girl, forest", tiny_sd_pipeline(), steps=2, seed=1, n=2)  # doctest: +SKIP
        >>> r.seeds  # doctest: +SKIP
        [1, 2]
    """
    # 1. validate (a named pipeline's kind too: its model_index.json is read, nothing loaded)
    n, steps, width, height, guidance = check_numbers(n, steps, width, height, guidance)
    kind = parse_kind(kind)
    if isinstance(pipeline, (str, os.PathLike)):
        kind = detect_kind(str(pipeline), kind, bool((load_options or {}).get("local_files_only", False)))
    if pooled not in POOLED:
        raise RequestError(f"pooled={pooled!r} is not valid; choose 'user' or 'expanded'")
    if lm_memory not in LM_MEMORY:
        raise RequestError(f"lm_memory={lm_memory!r} is not valid; choose one of {', '.join(LM_MEMORY)}")
    if lm_memory == "unload" and overlap:
        raise RequestError("overlap needs the language model while the pipeline runs; lm_memory='unload' closes "
                           "it first: use one or the other")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_RANGE):
        raise RequestError(f"seed={seed!r} is not valid; give a whole number in [0, 2**32) or None")
    sld_settings = _sld_settings(sld)
    cascade = cascade or CascadeSettings()
    items = [prompts] if isinstance(prompts, (str, Request, Expansion)) else list(prompts)
    if not items:
        raise RequestError("no prompts given")
    for item in items:
        if not isinstance(item, (str, Request, Expansion)):
            raise RequestError(f"prompts must be strings, tipo.Request or tipo.Expansion, got {type(item).__name__}")
        if isinstance(item, Request) and expander is None:
            raise RequestError("a tipo.Request needs an expander (an Expander or a model path) to expand it")
    if isinstance(backtrack, bool) or not isinstance(backtrack, int) or backtrack < 0:
        raise RequestError(f"backtrack={backtrack!r} is not valid; give a whole number of tokens >= 0 (0: no backtrack)")
    request_fields = dict(request_fields or {})
    require("torch", "image", "The image stage")
    require("diffusers", "image", "The image stage")

    from ..batch import derive_seed
    from ..expander import Expander, fresh_seed

    base = seed if seed is not None else fresh_seed()
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
                if width is not None and "width" not in fields and "aspect_ratio" not in fields:
                    fields.update(width=width, height=height)
                request = Request(item, **fields)  # type: ignore[arg-type]
            samp = sampling or Sampling()
            if samp.seed is None:
                samp = samp.with_seed(derive_seed(base, i))
            t = time.perf_counter()
            expansion = expander.expand(request, samp, template=template, task=task)  # type: ignore[arg-type]
            return _job_from_expansion(i, expansion, template, time.perf_counter() - t)

        # 2. memory hand-off
        prepared: list[_Job] | None = None
        if expander is not None and lm_memory == "unload":
            t = time.perf_counter()
            prepared = [prepare(i) for i in range(len(items))]
            expander.close()
            result.notes.append(f"expanded {len(items)} prompt(s) in {time.perf_counter() - t:.2f} s, then "
                                "closed the language model before the diffusion model ran")
        elif expander is not None and lm_memory == "cpu":
            _lm_to_cpu(expander, result.notes)

        # 3. the pipeline
        if isinstance(pipeline, (str, os.PathLike)):
            options = {"offload": offload, **(load_options or {})}
            if safety_checker and "safety_checker" not in options:
                options["safety_checker"] = True
            pipeline = load_pipeline(pipeline, kind, notes=result.notes, **options)
        elif isinstance(pipeline, (tuple, list)):
            pipeline = IFCascade(*pipeline)
        else:
            apply_offload(pipeline, offload, result.notes)
        found = pipeline_kind(pipeline)
        if kind is not None and kind is not found:
            raise RequestError(f"kind {kind.value!r} does not match the pipeline: it is a "
                               f"{type(stages(pipeline)[0]).__name__} (kind {found.value!r})")
        kind = found
        stage1 = stages(pipeline)[0]
        if safety_checker:
            if kind is PipelineKind.SDXL:
                raise RequestError("diffusers' SDXL pipeline has no image safety checker")
            if getattr(stage1, "safety_checker", None) is None:
                raise RequestError("this pipeline has no safety checker; load it with "
                                   "load_pipeline(..., safety_checker=True or <checker folder or id>)")
        if sld_settings is not None and kind is not PipelineKind.SD:
            raise RequestError("Safe Latent Diffusion exists only for Stable Diffusion 1.x/2.x pipelines in diffusers")
        if guidance is None:
            guidance = float(_call_default(stage1, "guidance_scale", 7.5))
        if sld_settings is not None and guidance <= 1:
            raise RequestError("Safe Latent Diffusion works through classifier-free guidance; use guidance > 1")
        if width is None or height is None:
            width, height = _default_size(stage1, kind)
        device = getattr(stage1, "_execution_device", None) or stage1.device
        if overlap is None:
            overlap = expander is not None and prepared is None and getattr(device, "type", str(device)) == "cuda"
        overlap = bool(overlap) and prepared is None and expander is not None
        settings = _Settings(kind, steps, guidance, width, height, negative, pooled, cascade, sld_settings,
                             safety_checker, backtrack, _model_name(pipeline, model_name))

        # 4-5. expand / encode / denoise / record / save
        def source(i: int) -> _Job:
            return prepared[i] if prepared is not None else prepare(i)

        _render(source, len(items), pipeline, settings, n=n, seeds=lambda k: image_seed(base, k), overlap=overlap,
                progress=progress, out_dir=Path(out_dir) if out_dir is not None else None, result=result)
    finally:
        if own_expander and expander is not None:
            expander.close()
    return result


def regenerate(png_path: str | os.PathLike[str], pipeline: Any, *, kind: PipelineKind | str | None = None) -> Any:
    """Make the image of a PNG that :func:`generate` saved again, from its ``parameters`` chunk.

    Uses the recorded prompt, negative, seed, steps, size, CFG scale, sampler (the pipeline's
    scheduler is swapped for the recorded class during the call if it differs), SDXL pooled
    source, IF stage settings and SLD settings. No language model is needed: the expanded prompt
    is in the file. ``pipeline`` is an object, an IF cascade (or its stages as a tuple), or a
    folder / Hub id to load.

    Example:
        >>> image = regenerate("out/00000-1.png", pipe)  # doctest: +SKIP
    """
    params = read_parameters(png_path)
    try:
        seed = int(params["Seed"])
        steps = int(params["Steps"])
        guidance = float(params["CFG scale"])
        width, height = (int(v) for v in str(params["Size"]).split("x"))
    except (KeyError, ValueError) as exc:
        raise RequestError(f"{png_path}: the parameters lack or garble {exc}; it was not written by tipo generate") \
            from None
    recorded_kind = params.get("Model kind")
    kind = parse_kind(kind) or parse_kind(recorded_kind)
    tipo = {k: v for k, v in params.items() if k.startswith("TIPO ")}
    tipo = {k: (json.dumps(v, ensure_ascii=False, sort_keys=True) if isinstance(v, dict) else v)
            for k, v in tipo.items()}
    job = _Job(0, params["Prompt"], str(params.get("TIPO prompt", "")) if tipo else params["Prompt"],
               str(params.get("TIPO nl prompt", "")), None, tipo)
    cascade = CascadeSettings()
    if "Stage 2 steps" in params:
        cascade = CascadeSettings(stage2_steps=int(params["Stage 2 steps"]),
                                  stage2_guidance=float(params["Stage 2 CFG scale"]),
                                  stage3_steps=int(params["Stage 3 steps"]),
                                  stage3_guidance=float(params["Stage 3 CFG scale"]),
                                  noise_level=int(params["Noise level"]),
                                  upscaler_prompt=str(params["Upscaler prompt"]))
    if isinstance(pipeline, (str, os.PathLike)):
        pipeline = load_pipeline(pipeline, kind)
    elif isinstance(pipeline, (tuple, list)):
        pipeline = IFCascade(*pipeline)
    found = pipeline_kind(pipeline)
    if kind is not None and kind is not found:
        raise RequestError(f"{png_path} was made with a {kind.value!r} pipeline, but this one is {found.value!r}")
    stage1 = stages(pipeline)[0]
    sampler = params.get("Sampler")
    sld = params.get("SLD")
    settings = _Settings(found, steps, guidance, width, height, params.get("Negative prompt", ""),
                         str(params.get("Pooled", "user")), cascade, sld if isinstance(sld, dict) else None,
                         True if params.get("Safety checker") == "on" else None, 20, str(params.get("Model", "")))
    result = GenerationResult(base_seed=seed)
    with _scheduler(stage1, sampler):
        _render(lambda i: job, 1, pipeline, settings, n=1, seeds=lambda k: seed, overlap=False, progress=False,
                out_dir=None, result=result)
    return result.images[0]


@contextlib.contextmanager
def _scheduler(pipe: Any, name: object) -> Iterator[None]:
    """Use the recorded scheduler class for the call, if the pipeline's differs; restore after."""
    current = pipe.scheduler
    if not isinstance(name, str) or not name or type(current).__name__ == name:
        yield
        return
    diffusers = require("diffusers", "image", "The image stage")
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise RequestError(f"the recorded sampler {name!r} is not a diffusers scheduler class")
    pipe.scheduler = cls.from_config(current.config)
    try:
        yield
    finally:
        pipe.scheduler = current
