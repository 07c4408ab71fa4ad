"""The llama.cpp backend (llama-cpp-python) for GGUF files: F16, Q8_0, Q4_K_M and others."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from ..errors import ModelError, require
from ..vocab import TokenText, piece_bytes
from .base import Backend

__all__ = ["LlamaCppBackend", "check_gguf"]

GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path) -> None:
    """Raise a clear ModelError unless ``path`` is a readable GGUF file."""
    if not path.exists():
        raise ModelError(f"model file {path} does not exist; check the path or give a registry name (tipo models)")
    if path.is_dir():
        raise ModelError(f"{path} is a folder; the llama.cpp backend needs a .gguf file (use --backend hf for HF folders)")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file (it starts with {head!r}, not b'GGUF'); "
                         "convert it with 'python -m models.gguf_export' or point at a .gguf file")


class LlamaCppBackend(Backend):
    """A GGUF model run by llama.cpp. The sampling loop is tipo's (see tipo.sampling)."""

    name = "llama"

    def __init__(self, path: Path, n_threads: int | None = None, n_ctx: int | None = None,
                 n_gpu_layers: int = 0, verbose: bool = False) -> None:
        llama_cpp = require("llama_cpp", "llama", "The llama.cpp backend")
        self._lib = llama_cpp
        self.path = Path(path)
        check_gguf(self.path)
        threads = n_threads or os.cpu_count() or 1
        try:
            # n_ctx=0: the context the model was trained with (1024 for TIPO).
            self._llm = llama_cpp.Llama(
                model_path=str(self.path), n_ctx=int(n_ctx or 0), n_batch=512,
                n_threads=threads, n_threads_batch=threads, n_gpu_layers=n_gpu_layers,
                logits_all=False, verbose=verbose,
            )
        except Exception as exc:  # llama.cpp raises ValueError on corrupt files
            raise ModelError(f"llama.cpp could not load {self.path}: {exc} (truncated or corrupt GGUF?)") from None
        self.n_ctx = int(self._llm.n_ctx())
        llm = self._llm
        self._n_vocab = int(llm.n_vocab())
        vocab_p = llama_cpp.llama_model_get_vocab(llm.model)
        pieces = []
        for i in range(self._n_vocab):
            text = llama_cpp.llama_vocab_get_text(vocab_p, i).decode("utf-8", "replace")
            control = bool(llama_cpp.llama_vocab_is_control(vocab_p, i)) or _is_added(text)
            pieces.append(piece_bytes(text, control))
        self.vocab = TokenText(pieces, int(llm.token_eos()))
        self._bos = int(llm.token_bos())
        self._ids: list[int] = []

    def encode(self, text: str) -> list[int]:
        ids = self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        return [int(i) for i in ids]

    def _logits(self) -> np.ndarray:
        ptr = self._lib.llama_get_logits_ith(self._llm.ctx, -1)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self._n_vocab,))

    def start(self, ids: list[int]) -> np.ndarray:
        if len(ids) > self.n_ctx:
            raise ModelError(f"the prompt has {len(ids)} tokens but the context holds {self.n_ctx}")
        llm = self._llm
        # Reuse the cached prefix (the same meta and target lines are common); keep at least
        # one token to evaluate so fresh logits exist.
        same = 0
        for a, b in zip(self._ids, ids, strict=False):
            if a != b:
                break
            same += 1
        same = min(same, len(ids) - 1, llm.n_tokens)
        llm.n_tokens = same
        llm.eval(ids[same:])
        self._ids = list(ids)
        return self._logits()

    def step(self, token: int) -> np.ndarray:
        if self._llm.n_tokens >= self.n_ctx:
            raise ModelError(f"the context of {self.n_ctx} tokens is full")
        self._llm.eval([token])
        self._ids.append(token)
        return self._logits()

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
            self._llm = None  # type: ignore[assignment]


def _is_added(text: str) -> bool:
    return text.startswith("<|") and text.endswith("|>")
