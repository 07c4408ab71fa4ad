"""Install tipo into ComfyUI's Python. ComfyUI-Manager runs this file after installing the pack;
by hand: ``python custom_nodes/<pack>/install.py`` with ComfyUI's Python.

tipo comes from the repository this pack ships in (``custom_nodes/tipo-nodes`` a symlink to
``plugins/comfyui`` of a tipo checkout), else from the package index (``tipo-prompt[llama]``);
``TIPO_SOURCE`` names another source (a path or a git URL). Nothing happens when tipo is installed.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import subprocess
import sys
from pathlib import Path

PACKAGE = "tipo-prompt"
EXTRA = "llama"


def requirement() -> str:
    """The pip requirement: the enclosing tipo checkout, else the index (see plugins/source.py)."""
    here = Path(os.path.realpath(__file__)).parent
    for folder in (here, *here.parents):
        if (folder / "plugins" / "source.py").is_file():
            return runpy.run_path(str(folder / "plugins" / "source.py"))["requirement"](here, EXTRA)
    return os.environ.get("TIPO_SOURCE", "").strip() or f"{PACKAGE}[{EXTRA}]"


def install(run=subprocess.check_call) -> bool:  # noqa: ANN001
    """pip-install tipo into this Python when ``import tipo`` fails; True if pip ran."""
    if importlib.util.find_spec("tipo") is not None:
        return False
    run([sys.executable, "-m", "pip", "install", requirement()])
    return True


if __name__ == "__main__":
    install()
