"""A cache of loaded Expanders for host apps: load a model once, reuse it across runs.

Explicit and clearable (no module-level state): a host owns one :class:`ExpanderPool`. The
loading settings (``Settings.loading``, declared in :mod:`tipo.options`) are the keywords of
:func:`open_expander` and :meth:`ExpanderPool.get`.

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
from .options import by_name

__all__ = ["DEVICES", "ExpanderPool", "device_options", "file_identity", "open_expander"]

DEVICES = by_name("device").choices


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


def open_expander(model: str | None = None, backend: str = "auto", device: str = "cpu", torch_device: str = "cuda",
                  **options: object) -> Expander:
    """Load an Expander from the loading settings (``Settings.loading``): ``device`` becomes the
    backend options of :func:`device_options`, the rest are Expander keywords.

    Example:
        >>> from tipo.settings import from_values
        >>> with open_expander(**from_values({"model": "tiny.gguf"}).loading) as ex:  # doctest: +SKIP
        ...     ex.expand(...)
    """
    given = {k: v for k, v in options.items() if v is not None}  # None: the Expander's own default
    opts = {**device_options(model or None, backend, device, torch_device), **given}
    return Expander(model or None, backend=backend, **opts)  # type: ignore[arg-type]


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


PoolKey = tuple[object, ...]


class ExpanderPool:
    """Loaded Expanders keyed by everything that changes the loaded model: the model as named, the
    backend, the device, the loading options (``n_threads``, ``n_ctx``, ``known_tags_only``, ...) and
    the identity of the model's files (path, size, mtime_ns, inode). At most ``capacity`` stay
    loaded (the least recently used is closed first, and only after the new model loaded: a failed
    load never evicts a loaded model). A model whose file changed is loaded again and the stale
    one closed. ``loads`` counts loads; ``clear()`` frees them.
    """

    def __init__(self, capacity: int = 2) -> None:
        if capacity < 1:
            raise RequestError(f"capacity={capacity} is not valid; keep at least 1 model")
        self.capacity = capacity
        self._items: OrderedDict[PoolKey, Expander] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def key(self, model: str | None, backend: str = "auto", device: str = "cpu", torch_device: str = "cuda",
            **options: object) -> PoolKey:
        """The cache key of a ``get`` call (resolves the model name to its files)."""
        from .registry import resolve

        path = resolve(model or None, backend).path
        opts = tuple(sorted((k, repr(v)) for k, v in options.items() if v is not None))
        where = torch_device if device == "gpu" else ""
        return (model or "", backend, device, where, opts, file_identity(path))

    def get(self, model: str | None, backend: str = "auto", device: str = "cpu", torch_device: str = "cuda",
            **options: object) -> Expander:
        """The loaded Expander for these loading settings, loading it once when needed."""
        key = self.key(model, backend, device, torch_device, **options)
        with self._lock:
            expander = self._items.get(key)
            if expander is not None and expander.loaded:
                self._items.move_to_end(key)
                return expander
            self._items.pop(key, None)
            expander = open_expander(model, backend, device, torch_device, **options)  # may raise: nothing evicted
            self.loads += 1
            stale = [k for k in self._items if k[:5] == key[:5]]  # same settings, other files: replaced on disk
            for k in stale:
                self._items.pop(k).close()
            while len(self._items) >= self.capacity:
                self._items.popitem(last=False)[1].close()
            self._items[key] = expander
            return expander

    def clear(self, device: str | None = None) -> int:
        """Close the loaded models (only those on ``device`` when given); returns how many."""
        with self._lock:
            keys = [k for k in self._items if device is None or k[2] == device]
            for key in keys:
                self._items.pop(key).close()
            return len(keys)

    def keys(self) -> list[PoolKey]:
        """The keys of the loaded models, least recently used first: (model, backend, device,
        torch device, options, file identity)."""
        with self._lock:
            return list(self._items)

    def items(self) -> list[tuple[PoolKey, Expander]]:
        with self._lock:
            return list(self._items.items())

    def __len__(self) -> int:
        return len(self._items)
