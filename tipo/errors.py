"""The exceptions tipo raises. Every message names the bad value and how to fix it."""

from __future__ import annotations


class TipoError(Exception):
    """Base class of every error tipo raises on purpose."""


class RequestError(TipoError, ValueError):
    """A request or option has an invalid value."""


class MissingDependencyError(TipoError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{module}', which is not installed. "
            f"Install it with: pip install 'tipo-prompt[{extra}]'"
        )
        self.module = module
        self.extra = extra


class ModelError(TipoError):
    """A model could not be found, downloaded or loaded."""


class GenerationError(TipoError):
    """The language model failed while generating."""


class Cancelled(TipoError):
    """An expansion was stopped through its ``cancel`` hook (the result is discarded)."""


def require(module: str, extra: str, purpose: str):  # noqa: ANN201 - returns a module
    """Import an optional dependency or raise MissingDependencyError naming the extra.

    Example:
        >>> llama_cpp = require("llama_cpp", "llama", "The llama.cpp backend")  # doctest: +SKIP
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module, extra, purpose) from exc
