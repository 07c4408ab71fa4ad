"""Load a diffusers pipeline by folder or Hugging Face id, checking its kind; offload; IF cascades.

Example:
    >>> pipe = load_pipeline("path/to/sd-folder")  # doctest: +SKIP
    >>> cascade = load_pipeline("DeepFloyd/IF-I-XL-v1.0", stage2="DeepFloyd/IF-II-L-v1.0",
    ...                         stage3="stabilityai/stable-diffusion-x4-upscaler")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError, RequestError, require
from .kinds import PipelineKind, kind_of_class, parse_kind

__all__ = ["CHECKPOINT_SUFFIXES", "IFCascade", "apply_offload", "checkpoint_kind", "detect_kind", "is_checkpoint_file",
           "load_pipeline", "pipeline_class_name", "stages"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
OFFLOAD_MODES = ("model", "sequential")
#: Single-file checkpoints (the original Stable Diffusion / SDXL layout A1111 and ComfyUI load).
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclass
class IFCascade:
    """The DeepFloyd IF cascade: stage I (64 px), optional stage II (256 px), optional x4 upscaler.

    Stage I's T5 encodes the prompt once; stage II reuses those embeddings; the upscaler has its
    own CLIP and gets a short prompt.
    """

    stage1: Any
    stage2: Any = None
    stage3: Any = None

    @property
    def device(self) -> Any:
        return self.stage1.device

    @property
    def _execution_device(self) -> Any:
        return getattr(self.stage1, "_execution_device", None) or self.stage1.device

    @property
    def name_or_path(self) -> str:
        return str(getattr(self.stage1, "name_or_path", "") or "")

    def to(self, device: Any) -> IFCascade:
        for p in stages(self):
            p.to(device)
        return self


def stages(pipeline: Any) -> list[Any]:
    """The diffusers pipelines inside ``pipeline`` (one, or the cascade's stages)."""
    if isinstance(pipeline, IFCascade):
        return [p for p in (pipeline.stage1, pipeline.stage2, pipeline.stage3) if p is not None]
    return [pipeline]


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~", "\\")) or os.sep in text.strip("/").replace("/", "", 1) or \
        bool(re.match(r"^[A-Za-z]:[\\/]", text))


def _model_index(source: str, local_files_only: bool) -> tuple[dict[str, Any], str]:
    """The pipeline's model_index.json and where it was read from (folder, cache or Hub)."""
    path = Path(source).expanduser()
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise ModelError(f"{path} has no model_index.json, so it is not a diffusers pipeline folder; give a "
                             "folder saved with save_pretrained (single-file .safetensors checkpoints: convert them "
                             "with diffusers' from_single_file + save_pretrained first)")
        return json.loads(index.read_text(encoding="utf-8")), str(path)
    if path.exists():
        raise ModelError(f"{path} is a file but not a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}); give a "
                         "single-file checkpoint, a diffusers pipeline folder (with model_index.json) or a Hugging "
                         "Face repo id")
    if _looks_like_path(source) or not _REPO_ID.match(source):
        raise ModelError(f"no pipeline folder at {source}, and it is not a Hugging Face repo id (owner/name)")
    hub = require("huggingface_hub", "image", "Loading pipelines from the Hugging Face Hub")
    from huggingface_hub import constants

    last_error: Exception | None = None
    for offline in (True, False) if not local_files_only else (True,):
        try:
            file = hub.hf_hub_download(source, "model_index.json", local_files_only=offline)
            return json.loads(Path(file).read_text(encoding="utf-8")), source
        except Exception as exc:  # noqa: BLE001 - every hub failure gets the same advice
            last_error = exc
    reason = type(last_error).__name__ if last_error else "not found"
    raise ModelError(
        f"cannot load the pipeline {source!r}: it is not a local folder, not in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}), and the Hub could not be reached or has no such repo ({reason}). "
        f"On a machine with network run: hf download {source} --local-dir <DIR> "
        f"(or: huggingface-cli download {source} --local-dir <DIR>), copy <DIR> here and pass that folder"
    )


def pipeline_class_name(source: str, local_files_only: bool = False) -> str:
    """The ``_class_name`` in the model_index.json of a folder or Hub repo."""
    index, _ = _model_index(source, local_files_only)
    name = index.get("_class_name")
    if not isinstance(name, str):
        raise ModelError(f"the model_index.json of {source} names no _class_name")
    return name


def detect_kind(source: str, kind: PipelineKind | str | None = None, local_files_only: bool = False,
                config: str | None = None) -> PipelineKind:
    """The kind of the pipeline at ``source``: from its model_index.json, or for a single-file checkpoint
    from ``config``'s model_index.json or the checkpoint's weight names; an error if ``kind`` differs."""
    if is_checkpoint_file(source):
        return checkpoint_kind(source, parse_kind(kind), config, local_files_only)[0]
    return _detect(source, parse_kind(kind), local_files_only, "pipeline")[0]


# -- single-file checkpoints ---------------------------------------------------------------------
def is_checkpoint_file(source: str | os.PathLike[str]) -> bool:
    """True when ``source`` is an existing file with a checkpoint suffix."""
    path = Path(source).expanduser()
    return path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES


def _checkpoint_shapes(path: Path) -> dict[str, Any]:
    """Weight name -> an empty tensor of its shape (safetensors: read from the header only)."""
    import torch

    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                return {k: torch.empty(fh.get_slice(k).get_shape(), device="meta") for k in fh.keys()}
        except Exception as exc:  # noqa: BLE001 - a torn or foreign file
            raise ModelError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0][:160]})") from None
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    try:
        state = load_single_file_checkpoint(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{path} is not a readable checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160]})") from None
    return {k: v for k, v in state.items() if hasattr(v, "shape")}


def _layout_hint(keys: list[str]) -> str:
    joined = "\n".join(keys[:2000])
    if "lora_unet_" in joined or ".lora_down." in joined or "lora_A" in joined or ".lora." in joined:
        return "it looks like a LoRA: put it in the LoRA folder (--lora-dir) and write <lora:NAME:WEIGHT> in the prompt"
    if any(k in ("emb_params", "string_to_param", "clip_l", "clip_g") for k in keys):
        return "it looks like a textual-inversion embedding: put it in the embedding folder (--embedding-dir)"
    if any(k.startswith(("down_blocks.", "conv_in.")) for k in keys):
        return "it looks like one diffusers component (a UNet or VAE): give the whole pipeline folder instead"
    if any(k.startswith(("encoder.down.", "decoder.up.")) for k in keys):
        return "it looks like a VAE on its own"
    return "tipo loads Stable Diffusion 1.x/2.x and SDXL base checkpoints in the original (LDM) layout"


# diffusers' inferred model type -> kind, for the types tipo drives.
_MODEL_TYPES = {"v1": PipelineKind.SD, "v2": PipelineKind.SD, "xl_base": PipelineKind.SDXL,
                "playground-v2-5": PipelineKind.SDXL}


def checkpoint_kind(source: str | os.PathLike[str], kind: PipelineKind | None = None, config: str | None = None,
                    local_files_only: bool = False) -> tuple[PipelineKind, str | None]:
    """The kind of a single-file checkpoint and the diffusers config to build it from.

    The layout is read from the weight names (the safetensors header, nothing loaded): ``model.diffusion_model``
    (the UNet) with ``cond_stage_model`` (SD 1.x/2.x) or ``conditioner.embedders`` (SDXL). With ``config``
    (a diffusers pipeline folder or Hub id of the same family) its ``model_index.json`` decides and must
    agree; without one, diffusers' own inference names the Hub repo whose configs are used.

    Returns:
        ``(kind, config)``: ``config`` is the one given, or the inferred repo id.
    """
    from diffusers.loaders.single_file_utils import fetch_diffusers_config, infer_diffusers_model_type

    path = Path(source).expanduser()
    shapes = _checkpoint_shapes(path)
    while "state_dict" in shapes and isinstance(shapes["state_dict"], dict):  # pragma: no cover - nested ckpt
        shapes = shapes["state_dict"]
    keys = list(shapes)
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise ModelError(f"{path.name} is not a Stable Diffusion checkpoint in the original layout (no "
                         f"model.diffusion_model.* weights); {_layout_hint(keys)}")
    if any(k.startswith("conditioner.embedders.1.model.") for k in keys):
        found = PipelineKind.SDXL
    elif any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        raise RequestError(f"{path.name} is an SDXL refiner checkpoint; tipo drives the SDXL base model (use the "
                           "refiner in diffusers' StableDiffusionXLImg2ImgPipeline yourself)")
    elif any(k.startswith("cond_stage_model.") for k in keys):
        found = PipelineKind.SD
    else:
        raise ModelError(f"{path.name} has UNet weights but no text encoder in a layout tipo knows "
                         "(cond_stage_model.* for SD 1.x/2.x, conditioner.embedders.* for SDXL)")
    conv_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is not None and len(conv_in.shape) == 4 and conv_in.shape[1] != 4:
        raise RequestError(f"{path.name} is an inpainting or other {conv_in.shape[1]}-channel checkpoint; tipo "
                           "drives text-to-image SD and SDXL checkpoints (4 latent channels)")
    if config is not None:
        if str(config).lower().endswith((".yaml", ".yml")):
            raise RequestError(f"config={config!r} is an original (LDM) YAML config; pass it as original_config "
                               "(CLI --original-config) and a diffusers folder as config")
        declared, _ = _detect(str(config), None, local_files_only, "config")
        if declared is not found:
            raise RequestError(f"the config {config} is for a {declared.value!r} pipeline, but {path.name} is an "
                               f"{found.value!r} checkpoint; give a config of the same family")
    elif found is not None:
        model_type = infer_diffusers_model_type(shapes)
        if _MODEL_TYPES.get(model_type) is not found:
            raise RequestError(f"{path.name}: diffusers reads it as a {model_type!r} checkpoint, which tipo does not "
                               f"drive as kind {found.value!r}; pass config=<a diffusers folder of its family>")
        config = str(fetch_diffusers_config(shapes)["pretrained_model_name_or_path"])
        if local_files_only and not _in_hub_cache(config):
            raise ModelError(_config_advice(path.name, config, "not in the Hugging Face cache and local_files_only "
                                                                "(--offline) is set"))
    if kind is not None and kind is not found:
        raise RequestError(f"kind {kind.value!r} does not match {path.name}: it is an {found.value!r} checkpoint; "
                           f"pass kind {found.value!r} or leave kind out")
    return found, config


def _in_hub_cache(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - diffusers depends on it
        return False
    return isinstance(try_to_load_from_cache(repo, "model_index.json"), str)


def _config_advice(name: str, repo: str, why: str) -> str:
    return (f"cannot build a pipeline for {name}: diffusers reads it as a {repo} checkpoint and needs that repo's "
            f"diffusers configs (component configs and tokenizer files, a few MB), which are {why}. Pass "
            f"config=<a diffusers pipeline folder of the same family> (CLI --config DIR), or on a machine with "
            f"network run: hf download {repo} --include '*.json' '*.txt' --local-dir <DIR> and pass <DIR>")


def _same_width_clip_g(path: Path, config: str | None, extra: dict[str, Any]) -> None:
    """SDXL's second text encoder, built here when both CLIPs have the same width.

    diffusers' ``from_single_file`` picks the converter for each text encoder by the width of the
    checkpoint's position embeddings; when CLIP-L and CLIP-G are equally wide (small test models; the real
    ones are 768 and 1280) it reads CLIP-L's weights for both and fails. Then CLIP-G is converted here with
    diffusers' own ``convert_open_clip_checkpoint`` and passed in as ``text_encoder_2``.
    """
    shapes = _checkpoint_shapes(path)
    l_pos = shapes.get("conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight")
    g_pos = shapes.get("conditioner.embedders.1.model.positional_embedding")
    if l_pos is None or g_pos is None or l_pos.shape[-1] != g_pos.shape[-1] or "text_encoder_2" in extra:
        return
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint, load_single_file_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    local = bool(extra.get("local_files_only"))
    text_config = CLIPTextConfig.from_pretrained(config, subfolder="text_encoder_2", local_files_only=local)
    model = CLIPTextModelWithProjection(text_config)
    state = convert_open_clip_checkpoint(model, load_single_file_checkpoint(str(path), local_files_only=True),
                                         prefix="conditioner.embedders.1.model.")
    model.load_state_dict(state, strict=True)
    dtype = extra.get("dtype", extra.get("torch_dtype"))
    extra["text_encoder_2"] = model.to(dtype=dtype).eval() if dtype is not None else model.eval()


def _load_single_file(path: Path, kind: PipelineKind | None, config: str | None, original_config: str | None,
                      kwargs: dict[str, Any]) -> tuple[Any, PipelineKind]:
    import diffusers
    import torch

    local = bool(kwargs.get("local_files_only"))
    found, config = checkpoint_kind(path, kind, config, local)
    if found is PipelineKind.IF:  # pragma: no cover - checkpoint_kind never says so
        raise RequestError("DeepFloyd IF has no single-file checkpoints")
    extra: dict[str, Any] = {k: v for k, v in kwargs.items() if k not in ("variant",)}
    if original_config is not None:
        if not Path(original_config).is_file():
            raise RequestError(f"original_config={original_config!r} is not a file; give the model's LDM .yaml file")
        extra["original_config"] = str(original_config)
    cls = getattr(diffusers, found.pipeline_class)
    try:
        with torch.random.fork_rng(devices=[]):
            if found is PipelineKind.SDXL and original_config is None:
                _same_width_clip_g(path, config, extra)
            pipe = cls.from_single_file(str(path), config=config, **extra)
    except Exception as exc:  # noqa: BLE001 - every failure gets the same advice
        reason = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else type(exc).__name__
        local_config = config is not None and Path(config).is_dir()
        if not local_config and ("offline" in reason.lower() or "connect" in reason.lower() or local
                                 or "LocalEntryNotFound" in type(exc).__name__ or "not find" in reason.lower()):
            raise ModelError(_config_advice(path.name, str(config), "not in the Hugging Face cache and the Hub could "
                                                                     f"not be reached ({type(exc).__name__})")) from None
        raise ModelError(f"diffusers could not load {path.name} as {cls.__name__} with config {config}: "
                         f"{type(exc).__name__}: {reason}") from None
    return pipe, found


def _detect(source: str, kind: PipelineKind | None, local_files_only: bool, what: str) -> tuple[PipelineKind, dict]:
    index, _ = _model_index(source, local_files_only)
    class_name = str(index.get("_class_name", ""))
    try:
        detected = kind_of_class(class_name)
    except RequestError as exc:
        raise RequestError(f"{what} {source}: {exc}") from None
    if kind is not None and kind is not detected:
        raise RequestError(f"kind {kind.value!r} does not match {source}: its model_index.json says {class_name} "
                           f"(kind {detected.value!r}); pass kind {detected.value!r} or leave kind out")
    return detected, index


def _default_device_dtype(device: str | None, dtype: Any) -> tuple[str, Any]:
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    elif isinstance(dtype, str):
        if not hasattr(torch, dtype):
            raise RequestError(f"dtype={dtype!r} is not a torch dtype; use float32, float16 or bfloat16")
        dtype = getattr(torch, dtype)
    return str(device), dtype


def _dtype_keyword() -> str:
    """diffusers >= 0.42 takes ``dtype=`` and deprecates ``torch_dtype=``; older ones know only the latter."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def _has_component(index: dict, name: str) -> bool:
    value = index.get(name)
    return isinstance(value, list) and len(value) == 2 and value[0] is not None and value[1] is not None


def _load_checker(source: str, local_files_only: bool) -> tuple[Any, Any]:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    try:
        checker = StableDiffusionSafetyChecker.from_pretrained(source, local_files_only=local_files_only)
        processor = CLIPImageProcessor.from_pretrained(source, local_files_only=local_files_only)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot load the safety checker {source!r} ({type(exc).__name__}); it is usually "
                         "CompVis/stable-diffusion-safety-checker: download it with hf download "
                         f"CompVis/stable-diffusion-safety-checker --local-dir <DIR> and pass <DIR>") from None
    return checker, processor


def load_pipeline(source: str | os.PathLike[str], kind: PipelineKind | str | None = None, *,
                  device: str | None = None, dtype: Any = None, safety_checker: bool | str = False,
                  stage2: str | os.PathLike[str] | None = None, stage3: str | os.PathLike[str] | None = None,
                  offload: str | None = None, local_files_only: bool = False, variant: str | None = None,
                  config: str | os.PathLike[str] | None = None, original_config: str | os.PathLike[str] | None = None,
                  notes: list[str] | None = None) -> Any:
    """Load a diffusers pipeline (folder, Hub id or single-file checkpoint), checking its kind.

    Args:
        source: a folder with model_index.json, a Hugging Face repo id, or a single-file SD 1.x/2.x or
            SDXL checkpoint (``.safetensors``, ``.ckpt``; the original LDM layout A1111 and ComfyUI use),
            loaded with diffusers' ``from_single_file``.
        config: single-file only: a diffusers pipeline folder (or Hub id) of the same family whose
            component configs and tokenizers are used (no network with a folder); None lets diffusers
            infer the family and read that repo's configs from the Hugging Face cache or the Hub.
        original_config: single-file only: the model's original LDM ``.yaml`` (diffusers' legacy path).
        kind: ``"sd"``, ``"sdxl"`` or ``"if"``; None detects it from ``_class_name``. A kind that
            does not match the folder is an error (no silent switch).
        device, dtype: default ``cuda``/float16 when a GPU is present, else ``cpu``/float32.
        safety_checker: SD and IF: False loads none; True keeps the folder's own (an error if it has
            none); a folder or repo id loads a ``StableDiffusionSafetyChecker`` from there.
        stage2, stage3: IF only: the super-resolution pipeline and the x4 upscaler.
        offload: ``"model"`` or ``"sequential"``: diffusers' CPU offload (needs accelerate and a
            CUDA GPU; on a CPU-only machine it is a no-op and a note says so).
        local_files_only: never contact the Hub (the local cache is still used).

    Returns:
        The pipeline, or an :class:`IFCascade` for kind ``if``.
    """
    diffusers = require("diffusers", "image", "The image stage")
    require("torch", "image", "The image stage")
    import torch

    kind = parse_kind(kind)
    notes = notes if notes is not None else []
    if offload is not None and offload not in OFFLOAD_MODES:
        raise RequestError(f"offload={offload!r} is not valid; choose 'model', 'sequential' or None")
    src = str(source)
    single = is_checkpoint_file(src)
    if not single and (config is not None or original_config is not None):
        raise RequestError("config and original_config are for single-file checkpoints; a pipeline folder or "
                           "repo id brings its own")
    if single:
        kind, _ = checkpoint_kind(src, kind, None if config is None else str(config), local_files_only)
        index: dict[str, Any] = {}
    else:
        kind, index = _detect(src, kind, local_files_only, "pipeline")
    if kind is not PipelineKind.IF and (stage2 is not None or stage3 is not None):
        raise RequestError("stage2 and stage3 are for the DeepFloyd IF cascade (kind 'if') only")
    if kind is PipelineKind.SDXL and safety_checker:
        raise RequestError("diffusers' SDXL pipeline has no image safety checker; leave safety_checker off for SDXL")
    device, dtype = _default_device_dtype(device, dtype)
    kwargs: dict[str, Any] = {_dtype_keyword(): dtype, "local_files_only": local_files_only}
    if variant:
        kwargs["variant"] = variant
    if kind is not PipelineKind.SDXL:
        if safety_checker is False:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        elif safety_checker is True:
            if single:
                raise RequestError(f"{Path(src).name} is a single-file checkpoint without a safety checker; pass "
                                   "safety_checker=<folder or id of a StableDiffusionSafetyChecker>")
            if not _has_component(index, "safety_checker"):
                raise RequestError(f"{src} has no safety checker of its own; pass safety_checker=<folder or id of a "
                                   "StableDiffusionSafetyChecker> (usually CompVis/stable-diffusion-safety-checker)")
        else:
            if kind is PipelineKind.IF:
                raise RequestError("an IF cascade uses its own IFSafetyChecker; pass safety_checker=True to keep it")
            checker, processor = _load_checker(str(safety_checker), local_files_only)
            kwargs.update(safety_checker=checker, feature_extractor=processor, requires_safety_checker=True)

    def load(cls_name: str, path: str, **extra: Any) -> Any:
        cls = getattr(diffusers, cls_name)
        try:
            with torch.random.fork_rng(devices=[]):  # loading must not move the caller's RNG
                return cls.from_pretrained(path, **{**kwargs, **extra})
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"diffusers could not load {path} as {cls_name}: {exc}") from None

    if single:
        if stage2 is not None or stage3 is not None:  # pragma: no cover - kind is never IF here
            raise RequestError("stage2 and stage3 are for the DeepFloyd IF cascade")
        pipe, kind = _load_single_file(Path(src).expanduser(), kind, None if config is None else str(config),
                                       None if original_config is None else str(original_config), kwargs)
    else:
        pipe = load(kind.pipeline_class, src)
    if kind is PipelineKind.IF:
        s2 = s3 = None
        if stage2 is not None:
            _check_class(str(stage2), "IFSuperResolutionPipeline", local_files_only)
            s2 = load("IFSuperResolutionPipeline", str(stage2), text_encoder=None, tokenizer=None)
        if stage3 is not None:
            _check_class(str(stage3), "StableDiffusionUpscalePipeline", local_files_only)
            extra = {k: v for k, v in kwargs.items() if k not in ("safety_checker", "requires_safety_checker",
                                                                   "feature_extractor")}
            s3 = diffusers.StableDiffusionUpscalePipeline.from_pretrained(str(stage3), **extra)
        pipe = IFCascade(pipe, s2, s3)
    if offload is None or not apply_offload(pipe, offload, notes):
        for p in stages(pipe):
            p.to(device)
    return pipe


def _check_class(source: str, expected: str, local_files_only: bool) -> None:
    name = pipeline_class_name(source, local_files_only)
    if name != expected:
        raise RequestError(f"{source} is a {name}, but this stage needs a {expected}")


def apply_offload(pipeline: Any, mode: str | None, notes: list[str]) -> bool:
    """Turn on diffusers' CPU offload when accelerate and a CUDA GPU are present.

    Returns True when offload is on; on a machine without a CUDA GPU it is a no-op, and a note
    says so (the models simply stay on the CPU).
    """
    if mode is None:
        return False
    if mode not in OFFLOAD_MODES:
        raise RequestError(f"offload={mode!r} is not valid; choose 'model', 'sequential' or None")
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        notes.append(f"offload={mode!r} is a no-op here: there is no CUDA GPU, the pipeline runs on the CPU")
        return False
    if importlib.util.find_spec("accelerate") is None:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("accelerate", "image", "diffusers' CPU offload")
    for p in stages(pipeline):
        if mode == "model":
            p.enable_model_cpu_offload()
        else:
            p.enable_sequential_cpu_offload()
    return True
