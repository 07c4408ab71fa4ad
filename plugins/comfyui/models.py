"""Where the nodes' models come from and how long they stay loaded.

* The ``tipo`` model folder: ``ComfyUI/models/tipo`` (plus tipo's own ``$TIPO_MODELS``), registered
  with ComfyUI's ``folder_paths`` so ``extra_model_paths.yaml`` can add or redirect it (key ``tipo``).
  Its ``.gguf`` files and HF folders (sub-folders with a ``config.json``) are listed in the
  nodes' model combo, after the built-in model and before the registry names.
* :class:`tipo.pool.ExpanderPool`: the loaded :class:`tipo.Expander` objects, keyed by
  (model, backend, device). A second run with the same model reuses the loaded one.
* :func:`install_memory_hooks`: ComfyUI's "Unload models" / "Free model and node cache" requests
  (``comfy.model_management.unload_all_models``) close every cached model, and memory pressure on
  a GPU (``free_memory`` could not free enough) closes the models held on the GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from tipo.pool import ExpanderPool

FOLDER = "tipo"
GGUF = ".gguf"


def register_folder(folder_paths: ModuleType) -> None:
    """Register the ``tipo`` model folder (``.gguf`` files) with ComfyUI, keeping paths added before."""
    from tipo.registry import models_dir

    for path in (os.path.join(folder_paths.models_dir, FOLDER), str(models_dir())):
        if path not in folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))[0]:
            folder_paths.add_model_folder_path(FOLDER, path)
    paths, extensions = folder_paths.folder_names_and_paths[FOLDER]
    # extra_model_paths.yaml may have created the entry with an empty set (= every file).
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(extensions) | {GGUF})


def _hf_folders(folder_paths: ModuleType) -> dict[str, str]:
    """HF model folders (a ``config.json`` inside) directly under the tipo folder paths: name -> path."""
    from tipo.registry import local_models

    return {name: str(path) for name, path in local_models(*folder_paths.get_folder_paths(FOLDER)).items()
            if path.is_dir()}


def model_choices(folder_paths: ModuleType) -> list[str]:
    """The model combo: the built-in model (when installed), local files and folders, registry names."""
    from tipo.registry import list_models

    rows = list_models()
    choices = [r.name for r in rows if r.kind == "built-in" and r.where != "(missing)"]
    choices += folder_paths.get_filename_list(FOLDER)
    choices += list(_hf_folders(folder_paths))
    choices += [r.name for r in rows if r.kind == "registry"]
    return list(dict.fromkeys(choices))


def resolve_choice(folder_paths: ModuleType, choice: str) -> str:
    """A combo value -> what :class:`tipo.Expander` takes (a local path, or a registry name as is)."""
    full = folder_paths.get_full_path(FOLDER, choice)
    if full:
        return str(full)
    return _hf_folders(folder_paths).get(choice, choice)


@dataclass
class Host:
    """What the nodes need from the running ComfyUI, and the pack's one model cache."""

    folder_paths: ModuleType
    model_management: ModuleType | None = None
    cache: ExpanderPool = field(default_factory=ExpanderPool)

    def gpu_device(self) -> str:
        if self.model_management is None:
            raise RuntimeError("device 'gpu' needs comfy.model_management to name ComfyUI's device")
        return str(self.model_management.get_torch_device())

    def progress_hook(self) -> Callable[[int, int], None] | None:
        """The per-token hook of an expansion: ComfyUI's interrupt (``POST /interrupt``, the Cancel
        button) stops it between tokens, and the node's progress bar follows the tokens."""
        mm = self.model_management
        if mm is None:
            return None
        interrupted = getattr(mm, "throw_exception_if_processing_interrupted", None)
        bar: Any = None

        def hook(n: int, total: int) -> None:
            nonlocal bar
            if interrupted is not None:
                interrupted()  # raises ComfyUI's own exception: the queue shows "interrupted"
            if bar is None:
                bar = _progress_bar(total)
            if bar:
                bar.update_absolute(n, total)

        return hook

    def resolve(self, choice: str) -> str:
        return resolve_choice(self.folder_paths, choice)

    def expander(self, choice: str, backend: str, device: str, **options: Any) -> Any:
        """The cached Expander for a combo value, loaded on first use (``options``: the other loading
        settings, e.g. ``n_threads``)."""
        model = self.resolve(choice)
        torch_device = self.gpu_device() if device == "gpu" else "cuda"
        return self.cache.get(model, backend, device, torch_device=torch_device, **options)


def _progress_bar(total: int) -> Any:
    """ComfyUI's progress bar for the running node (False where this host has none)."""
    try:
        import comfy.utils

        return comfy.utils.ProgressBar(total)
    except Exception:  # noqa: BLE001 - stubbed or old hosts: no bar, the expansion goes on
        return False


_HOOK_MARK = "__tipo_cache__"


def install_memory_hooks(model_management: ModuleType, cache: ExpanderPool) -> None:
    """Let ComfyUI's memory manager free the cached models.

    ComfyUI has no registry for foreign models, so its two entry points are wrapped (once;
    a reloaded pack replaces its own wrappers):

    * ``unload_all_models()`` (the "Unload models" and "Free model and node cache" buttons, the
      ``/free`` API): closes every cached model, then runs ComfyUI's own unloading.
    * ``free_memory(memory_required, device)`` (called before ComfyUI loads a model): after
      ComfyUI unloaded its own models, if the device still has less free memory than required,
      the models cached on the GPU are closed too.
    """

    def original(name: str) -> Callable[..., Any]:
        fn = getattr(model_management, name)
        return getattr(fn, "__wrapped__", fn) if getattr(fn, _HOOK_MARK, None) is not None else fn

    unload_all = original("unload_all_models")
    free_memory = original("free_memory")

    def unload_all_models(*args: Any, **kwargs: Any) -> Any:
        cache.clear()
        return unload_all(*args, **kwargs)

    def free_memory_hook(memory_required: float, device: Any, *args: Any, **kwargs: Any) -> Any:
        result = free_memory(memory_required, device, *args, **kwargs)
        if any(k[2] == "gpu" for k in cache.keys()) and not model_management.is_device_cpu(device):
            if model_management.get_free_memory(device) < memory_required:
                cache.clear(device="gpu")
                model_management.soft_empty_cache()
        return result

    for name, wrapper, wrapped in (("unload_all_models", unload_all_models, unload_all),
                                   ("free_memory", free_memory_hook, free_memory)):
        wrapper.__wrapped__ = wrapped  # type: ignore[attr-defined]
        setattr(wrapper, _HOOK_MARK, cache)
        wrapper.__name__ = name
        setattr(model_management, name, wrapper)
