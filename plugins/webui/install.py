"""Install tipo into the WebUI's Python. A1111 and Forge run this file as a script at start-up.

tipo comes from the repository this extension ships in (``extensions/tipo`` a symlink to
``plugins/webui`` of a tipo checkout, or the checkout itself), else from the package index
(``tipo-prompt[llama]``); ``TIPO_SOURCE`` names another source (a path or a git URL). Only the
``__main__`` path below acts; importing this module runs nothing.
"""

from __future__ import annotations

import importlib
import os
import runpy
from pathlib import Path
from types import ModuleType

PACKAGE = "tipo-prompt"
EXTRA = "llama"  # llama.cpp runs the GGUF models; HF folders also need the hf extra


def requirement() -> str:
    """The pip requirement: the enclosing tipo checkout, else the index (see plugins/source.py)."""
    here = Path(os.path.realpath(__file__)).parent
    for folder in (here, *here.parents):
        if (folder / "plugins" / "source.py").is_file():
            return runpy.run_path(str(folder / "plugins" / "source.py"))["requirement"](here, EXTRA)
    return os.environ.get("TIPO_SOURCE", "").strip() or f"{PACKAGE}[{EXTRA}]"


def install(launch: ModuleType | None = None) -> bool:
    """pip-install tipo through the WebUI's ``launch`` helpers when it is missing; True if it ran."""
    launch = launch or importlib.import_module("launch")
    if launch.is_installed(PACKAGE):
        return False
    req = requirement()
    launch.run_pip(f'install "{req}"', f"{req} for the TIPO extension")
    return True


if __name__ == "__main__":
    install()
