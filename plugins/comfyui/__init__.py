"""TIPO prompt expansion nodes for ComfyUI: copy this folder into ``ComfyUI/custom_nodes/``.

Needs tipo in ComfyUI's Python (``pip install "tipo-prompt[llama]"``; the ``hf`` extra for HF folders).
Loading the pack registers the ``tipo`` model folder and the memory hooks with the running
ComfyUI (see ``models.py``); it loads no model and downloads nothing.
"""

from __future__ import annotations

try:
    import tipo.options  # noqa: F401 - fail early, with the fix, when tipo is missing
except ImportError as exc:  # pragma: no cover - depends on the host's Python
    raise ImportError(f"the TIPO nodes need the tipo package in ComfyUI's Python ({exc}); "
                      "install it with: pip install 'tipo-prompt[llama]'") from exc

from .models import Host, install_memory_hooks, register_folder
from .nodes import NODE_DISPLAY_NAME_MAPPINGS, node_classes


def _setup() -> tuple[Host, dict[str, type]]:
    import comfy.model_management as model_management
    import folder_paths

    register_folder(folder_paths)
    host = Host(folder_paths, model_management)
    install_memory_hooks(model_management, host.cache)
    return host, node_classes(host)


HOST, NODE_CLASS_MAPPINGS = _setup()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
