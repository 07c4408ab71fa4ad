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

__all__ = ["IFCascade", "apply_offload", "detect_kind", "load_pipeline", "pipeline_class_name", "stages"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
OFFLOAD_MODES = ("model", "sequential")


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
        raise ModelError(f"{path} is a file; give a diffusers pipeline folder (with model_index.json) or a "
                         "Hugging Face repo id")
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


def detect_kind(source: str, kind: PipelineKind | str | None = None, local_files_only: bool = False) -> PipelineKind:
    """The kind of the pipeline at ``source`` (from its model_index.json); an error if ``kind`` differs."""
    return _detect(source, parse_kind(kind), local_files_only, "pipeline")[0]


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
                  notes: list[str] | None = None) -> Any:
    """Load a diffusers pipeline (folder or Hub id), checking that it is the kind you expect.

    Args:
        source: a folder with model_index.json, or a Hugging Face repo id.
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
