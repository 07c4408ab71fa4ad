"""A cache of loaded Expanders for host apps: load a model once, reuse it across runs.

Explicit and clearable (no module-level state): a host owns one :class:`ExpanderPool`.

Example:
    >>> pool = ExpanderPool(capacity=2)
    >>> ex = pool.get("model.gguf")        # doctest: +SKIP
    >>> pool.get("model.gguf") is ex       # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from .errors import RequestError
from .expander import Expander

__all__ = ["DEVICES", "ExpanderPool", "device_options", "file_identity"]

DEVICES = ("cpu", "gpu")


def device_options(model: str | None, backend: str, device: str, torch_device: str = "cuda") -> dict[str, object]:
    """Expander options that put a model on a device: nothing on ``cpu``; on ``gpu`` every llama.cpp
    layer is offloaded, or the transformers model goes to ``torch_device``."""
    if device not in DEVICES:
        raise RequestError(f"device={device!r} is not valid; choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return {}
    from .backends import pick_backend
    from .registry import resolve

    if pick_backend(resolve(model, backend).path, backend) == "llama":
        return {"n_gpu_layers": -1}
    return {"device": torch_device}


def file_identity(path: str | os.PathLike[str]) -> tuple[object, ...]:
    """What changes when a model file (or an HF folder's files) is replaced or rewritten: device,
    inode, size and modification time of each file. Empty when the path is gone."""
    base = Path(path)
    files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
    out: list[object] = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((str(f), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class ExpanderPool:
    """Loaded Expanders keyed by (model, backend, device); at most ``capacity`` stay loaded (the
    least recently used is closed first). ``loads`` counts loads; ``clear()`` frees them.

    A model file replaced or rewritten on disk since it was loaded is loaded again. A model that
    fails to load leaves the loaded ones as they were (the new one is loaded before the least
    recently used is closed)."""

    def __init__(self, capacity: int = 2) -> None:
        if capacity < 1:
            raise RequestError(f"capacity={capacity} is not valid; keep at least 1 model")
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str, str], tuple[Expander, tuple[object, ...]]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, model: str | None, backend: str = "auto", device: str = "cpu", torch_device: str = "cuda",
            **options: object) -> Expander:
        """The loaded Expander for (model, backend, device), loading it once when needed."""
        key = (model or "", backend, device)
        with self._lock:
            held = self._items.get(key)
            if held is not None and held[0].loaded and file_identity(held[0].model.path) == held[1]:
                self._items.move_to_end(key)
                return held[0]
            opts = {**device_options(model or None, backend, device, torch_device), **options}
            expander = Expander(model or None, backend=backend, **opts)  # type: ignore[arg-type]
            self.loads += 1
            old = self._items.pop(key, None)
            if old is not None:
                old[0].close()  # the file was replaced: the new one is loaded, the old one goes
            self._items[key] = (expander, file_identity(expander.model.path))
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)[1][0].close()
            return expander

    def clear(self, device: str | None = None) -> int:
        """Close the loaded models (only those on ``device`` when given); returns how many."""
        with self._lock:
            keys = [k for k in self._items if device is None or k[2] == device]
            for key in keys:
                self._items.pop(key)[0].close()
            return len(keys)

    def keys(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)
