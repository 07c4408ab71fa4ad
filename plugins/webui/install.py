"""Install tipo into the WebUI's Python. A1111 and Forge run this file as a script at start-up.

Only the ``__main__`` path below acts; importing this module runs nothing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

PACKAGE = "tipo-prompt"
REQUIREMENT = "tipo-prompt[llama]"  # llama.cpp runs the GGUF models; HF folders also need tipo-prompt[hf]


def install(launch: ModuleType | None = None) -> bool:
    """pip-install tipo through the WebUI's ``launch`` helpers when it is missing; True if it ran."""
    launch = launch or importlib.import_module("launch")
    if launch.is_installed(PACKAGE):
        return False
    launch.run_pip(f"install {REQUIREMENT}", f"{REQUIREMENT} for the TIPO extension")
    return True


if __name__ == "__main__":
    install()
