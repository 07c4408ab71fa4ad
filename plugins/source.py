"""Where a plugin installs the tipo library from: the repository it ships in, else the index.

Both plugins' ``install.py`` run this file (found by walking up from their real path, so a
symlinked or in-repository plugin finds it; a plugin copied on its own falls back to the index).
Standard library only: it runs before tipo is installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DISTRIBUTION = "tipo-prompt"


def repository_root(start: str | os.PathLike[str]) -> Path | None:
    """The checkout of tipo above ``start`` (a folder whose pyproject.toml names the distribution)."""
    here = Path(os.path.realpath(start))
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and re.search(rf'^name\s*=\s*"{DISTRIBUTION}"',
                                             pyproject.read_text(encoding="utf-8"), re.M):
            return folder
    return None


def requirement(start: str | os.PathLike[str], extra: str = "llama") -> str:
    """What ``pip install`` gets: the checkout as ``PATH[extra]`` when the plugin lives in one
    (``TIPO_SOURCE`` overrides: a path, a git URL or a requirement), else ``tipo-prompt[extra]``."""
    override = os.environ.get("TIPO_SOURCE", "").strip()
    if override:
        return override
    root = repository_root(start)
    return f"{root}[{extra}]" if root is not None else f"{DISTRIBUTION}[{extra}]"
