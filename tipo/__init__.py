"""tipo: presample better text-to-image prompts with TIPO language models.

Importing the package is cheap and does nothing: heavy modules load on first use.

Example:
    >>> import tipo
    >>> tipo.plan(tipo.Request("1girl, forest", output="tags")).prompt
    'target: <|long|>\\ntag: 1girl, forest'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Request": "tipo.request",
    "Sampling": "tipo.request",
    "Length": "tipo.request",
    "Output": "tipo.request",
    "CaptionKind": "tipo.request",
    "Task": "tipo.planner",
    "Plan": "tipo.planner",
    "plan": "tipo.planner",
    "parse_text": "tipo.parse",
    "parse_completion": "tipo.parse",
    "Parsed": "tipo.parse",
    "Expansion": "tipo.result",
    "Provenance": "tipo.result",
    "finish": "tipo.result",
    "Preset": "tipo.template",
    "render_template": "tipo.template",
    "parse_prompt": "tipo.syntax",
    "render_items": "tipo.syntax",
    "normalize": "tipo.tags",
    "canonical": "tipo.tags",
    "categorize": "tipo.tags",
    "Category": "tipo.tags",
    "TipoError": "tipo.errors",
    "Cancelled": "tipo.errors",
    "RequestError": "tipo.errors",
    "ModelError": "tipo.errors",
    "MissingDependencyError": "tipo.errors",
    "Expander": "tipo.expander",
    "expand": "tipo.expander",
    "ExpanderPool": "tipo.pool",
    "OPTIONS": "tipo.options",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .errors import Cancelled, MissingDependencyError, ModelError, RequestError, TipoError  # noqa: F401
    from .expander import Expander, expand  # noqa: F401
    from .options import OPTIONS  # noqa: F401
    from .parse import Parsed, parse_completion, parse_text  # noqa: F401
    from .planner import Plan, Task, plan  # noqa: F401
    from .pool import ExpanderPool  # noqa: F401
    from .request import CaptionKind, Length, Output, Request, Sampling  # noqa: F401
    from .result import Expansion, Provenance, finish  # noqa: F401
    from .syntax import parse_prompt, render_items  # noqa: F401
    from .tags import Category, canonical, categorize, normalize  # noqa: F401
    from .template import Preset, render_template  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tipo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
