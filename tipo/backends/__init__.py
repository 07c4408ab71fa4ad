"""Language-model backends: llama.cpp (GGUF) and transformers (HF folders), one interface.

Third parties add a backend the same way the built-in ones are added: a name in
:data:`BACKENDS` mapping to ``"module:Class"``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import RequestError
from .base import Backend

__all__ = ["BACKENDS", "Backend", "open_backend", "pick_backend"]

BACKENDS: dict[str, str] = {
    "llama": "tipo.backends.llama:LlamaCppBackend",
    "hf": "tipo.backends.hf:TransformersBackend",
}


def pick_backend(path: Path, backend: str = "auto") -> str:
    """The backend for a local model path: GGUF files use llama.cpp, folders transformers."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise RequestError(f"backend={backend!r} is unknown; choose one of auto, {', '.join(BACKENDS)}")
        return backend
    return "hf" if path.is_dir() else "llama"


def open_backend(name: str, path: Path, **options: object) -> Backend:
    """Load a model with the named backend."""
    import inspect

    module_name, cls_name = BACKENDS[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    accepted = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            valid = ", ".join(p for p in accepted if p not in ("self", "path"))
            raise RequestError(f"option(s) {', '.join(unknown)} do not apply to the {name} backend; its options: {valid}")
    return cls(path, **options)  # type: ignore[no-any-return]
