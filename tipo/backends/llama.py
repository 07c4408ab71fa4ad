"""The llama.cpp backend (llama-cpp-python) for GGUF files: F16, Q8_0, Q4_K_M and others."""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, RequestError, require
from ..tokens import encode_prompt
from ..vocab import TokenText, piece_bytes
from .base import Backend, BatchEngine
from .validate import bounded_threads, check_batch_memory, context_size, read_gguf

__all__ = ["LlamaCppBackend", "check_gguf", "open_llama", "plain_buffers_needed"]

# Token types of a GGUF vocabulary (gguf.TokenType): 3 control, 4 user-defined.
_CONTROL, _USER_DEFINED = 3, 4


# Serialises the brief swap in open_llama (the only place tipo touches llama-cpp-python's module).
_PARAMS_SWAP = threading.Lock()


def open_llama(llama_cpp: Any, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(**kwargs)``, without llama.cpp's extra CPU buffer types on AMX machines.

    On CPUs with AMX (``AMX_INT8 = 1`` in ``llama_print_system_info()``), llama.cpp 0.3.x moves
    the weight matrices (F16 and quantised ones) into AMX buffers, and evaluating more than one
    token of a Q8_0 model then kills the process with SIGSEGV (seen with llama-cpp-python 0.3.36,
    from tiny shapes up to TIPO-500M). The plain CPU buffers compute the same model, with the same
    kernels as on CPUs without AMX. ``Llama()`` takes no
    ``use_extra_bufts`` argument, so the model defaults it reads are swapped for the length of
    the constructor, under a lock.

    Example::

        llm = open_llama(llama_cpp, model_path="model.gguf", n_ctx=1024, verbose=False)
    """
    module = llama_cpp.llama_cpp
    original = module.llama_model_default_params
    if not plain_buffers_needed(llama_cpp):
        return llama_cpp.Llama(**kwargs)

    def without_extra_buffers() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    with _PARAMS_SWAP:
        module.llama_model_default_params = without_extra_buffers
        try:
            return llama_cpp.Llama(**kwargs)
        finally:
            module.llama_model_default_params = original


def plain_buffers_needed(llama_cpp: Any) -> bool:
    """Whether models must load with ``use_extra_bufts=False`` on this machine (see :func:`open_llama`)."""
    return ("AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode("utf-8", "replace")
            and hasattr(llama_cpp.llama_model_default_params(), "use_extra_bufts"))


def check_gguf(path: Path) -> None:
    """Raise a clear one-line ModelError unless ``path`` is a GGUF file with a sane LLaMA header."""
    read_gguf(Path(path))


class LlamaCppBackend(Backend):
    """A GGUF model run by llama.cpp. The sampling loop is tipo's (see tipo.sampling).

    The file's header is read and checked first (:mod:`tipo.backends.validate`); the context is
    the format's 1024 tokens unless ``n_ctx`` asks for another size (at most what the file
    declares); threads are capped at the machine's cores.
    """

    name = "llama"

    def __init__(self, path: Path, n_threads: int | None = None, n_ctx: int | None = None,
                 n_gpu_layers: int = 0, verbose: bool = False) -> None:
        llama_cpp = require("llama_cpp", "llama", "The llama.cpp backend")
        self._lib = llama_cpp
        self.path = Path(path)
        header = read_gguf(self.path)
        self.shape = header.shape
        ctx = context_size(self.path, header.shape, n_ctx)
        threads = bounded_threads(n_threads)
        if isinstance(n_gpu_layers, bool) or not isinstance(n_gpu_layers, int) or n_gpu_layers < -1:
            raise RequestError(f"n_gpu_layers={n_gpu_layers!r} is not valid; give -1 (all), 0 (none) or a layer count")
        try:
            self._llm = open_llama(
                llama_cpp, model_path=str(self.path), n_ctx=ctx, n_batch=min(512, ctx),
                n_threads=threads, n_threads_batch=threads, n_gpu_layers=n_gpu_layers,
                logits_all=False, verbose=verbose,
            )
        except Exception as exc:  # llama.cpp raises ValueError on files it cannot load
            raise ModelError(f"llama.cpp could not load {self.path.name} ({type(exc).__name__}); "
                             "the file is corrupt or of an unsupported kind: re-download or re-export it") from None
        self.n_ctx = int(self._llm.n_ctx())
        llm = self._llm
        self._n_vocab = int(llm.n_vocab())
        self._row_type = ctypes.c_float * self._n_vocab
        self._row_address = 0
        self._row = np.zeros(0, dtype=np.float32)
        if self._n_vocab != len(header.tokens):
            self.close()
            raise ModelError(f"{self.path.name}: llama.cpp reads {self._n_vocab} tokens where the header lists "
                             f"{len(header.tokens)}; re-export the file")
        pieces = [piece_bytes(text, ttype == _CONTROL or _is_added(text))
                  for text, ttype in zip(header.tokens, header.token_types, strict=True)]
        self.vocab = TokenText(pieces, int(llm.token_eos()))
        self._bos = int(llm.token_bos())
        self._added = dict(header.added_ids)
        # Ids that plain user text must never produce (llama.cpp matches user-defined tokens even
        # without special parsing): the protocol's added tokens, BOS, EOS and user-defined tokens.
        self._protocol = np.zeros(self._n_vocab, dtype=bool)
        for tid in (*self._added.values(), self._bos, int(llm.token_eos())):
            self._protocol[tid] = True
        self._protocol[np.asarray(header.token_types) == _USER_DEFINED] = True
        self._ids: list[int] = []
        self._one = llama_cpp.llama_batch_init(1, 0, 1)  # the batch of step(): one token of sequence 0
        self._threads = threads
        self._n_gpu_layers = n_gpu_layers

    def _encode_text(self, text: str) -> list[int]:
        """One stretch of plain text, WITHOUT special-token parsing (its own SentencePiece sentence)."""
        ids = [int(i) for i in self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)]
        if ids and self._protocol[np.asarray(ids)].any():
            raise ModelError(f"{self.path.name} marks text pieces as user-defined tokens, so llama.cpp would read "
                             "user text as control tokens; use a GGUF whose added tokens are control tokens "
                             "(llama.cpp's converter does this for <|...|> tokens)")
        return ids

    def encode(self, text: str) -> list[int]:
        return encode_prompt(text, self._encode_text, self._added, self._bos)

    def _logits(self) -> np.ndarray:
        # A view of llama.cpp's logits row (valid until the next evaluation). It runs once per
        # token and the row stays at one address from token to token, so the view is made anew
        # only when the address changes.
        address = ctypes.addressof(self._lib.llama_get_logits_ith(self._llm.ctx, -1).contents)
        if address != self._row_address:
            self._row = np.frombuffer(self._row_type.from_address(address), dtype=np.float32)  # type: ignore[call-overload]
            self._row_address = address
        return self._row

    def start(self, ids: list[int]) -> np.ndarray:
        if len(ids) > self.n_ctx:
            raise ModelError(f"the prompt has {len(ids)} tokens but the context holds {self.n_ctx}")
        llm = self._llm
        # No KV-prefix reuse: a prefix evaluated in another batch gives (slightly) other numbers,
        # and a result must depend only on request, seed and model, never on what ran before.
        # Setting n_tokens to 0 makes eval() drop the whole cache first.
        llm.n_tokens = 0
        llm.eval(ids)
        self._ids = list(ids)
        return self._logits()

    def step(self, token: int) -> np.ndarray:
        llm = self._llm
        n = llm.n_tokens
        if n >= self.n_ctx:
            raise ModelError(f"the context of {self.n_ctx} tokens is full")
        self._decode_one(token, n)
        self._ids.append(token)
        return self._logits()

    def _decode_one(self, token: int, n: int) -> None:
        """``llm.eval([token])`` at position ``n``, without its per-call Python (a cache trim with
        nothing to cut, a batch filled in a loop): the same one-token batch goes to llama_decode,
        and the Llama object's token record is kept as eval keeps it."""
        llm = self._llm
        b = self._one
        b.n_tokens = 1
        b.token[0] = token
        b.pos[0] = n
        b.n_seq_id[0] = 1
        b.seq_id[0][0] = 0
        b.logits[0] = True
        rc = self._lib.llama_decode(llm.ctx, b)
        if rc != 0:
            raise ModelError(f"llama_decode failed ({rc}) on token {n + 1} of the context")
        llm.input_ids[n] = token
        llm.n_tokens = n + 1

    def batched(self, n_seq: int, n_ctx_seq: int) -> LlamaBatch:
        """A second context on the same weights that decodes up to ``n_seq`` sequences per
        ``llama_decode``, each with its own KV cache stream of ``n_ctx_seq`` cells."""
        check_batch_memory(self.path, self.shape, n_seq, n_ctx_seq)
        return LlamaBatch(self, n_seq, n_ctx_seq)

    def close(self) -> None:
        if getattr(self, "_one", None) is not None:
            self._lib.llama_batch_free(self._one)
            self._one = None
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
            self._llm = None  # type: ignore[assignment]


class LlamaBatch(BatchEngine):
    """Several sequences per ``llama_decode`` (llama.cpp's ``n_seq_max``), one KV stream each.

    The KV cache is not unified (``kv_unified=False``): every sequence has its own stream whose
    cells start at 0, laid out as when the sequence is decoded alone, so its attention sums run
    over the same cells in the same order. Logits are read per sequence with
    ``llama_get_logits_ith``.

    Prefixes are shared (:meth:`share`) unless the weights are F32 (``general.file_type`` 0):
    with F16 and quantised weights llama.cpp computes each row of a matrix product alone, so a
    token's numbers do not depend on which other tokens share its batch or whether its prefix
    was evaluated in another sequence; F32 weights are multiplied with another summation order
    for several rows, where neither batching nor sharing is bit-exact (docs/scale.md).
    """

    def __init__(self, backend: LlamaCppBackend, n_seq: int, n_ctx_seq: int) -> None:
        lib = backend._lib
        self._lib = lib
        self.capacity = int(n_seq)
        self.n_ctx_seq = int(n_ctx_seq)
        self._n_vocab = backend._n_vocab
        # The single-sequence context's settings (attention kernel, KV types, ...), so both contexts
        # compute alike; then only the sizes change.
        single = backend._llm.context_params
        params = type(single)()
        ctypes.memmove(ctypes.addressof(params), ctypes.addressof(single), ctypes.sizeof(single))
        params.n_ctx = self.capacity * self.n_ctx_seq
        params.n_seq_max = self.capacity
        self._chunk = int(min(single.n_batch, single.n_ubatch))
        params.n_threads = params.n_threads_batch = backend._threads
        params.kv_unified = False
        params.no_perf = True
        self._ctx = lib.llama_init_from_model(backend._llm.model, params)
        if not self._ctx:
            raise ModelError(f"llama.cpp could not make a context for {self.capacity} sequences of "
                             f"{self.n_ctx_seq} tokens (out of memory?); use a smaller batch size")
        got = int(lib.llama_n_ctx_seq(self._ctx))
        if got < self.n_ctx_seq:
            self.close()
            raise ModelError(f"llama.cpp gave {got} cells per sequence, not {self.n_ctx_seq}")
        self._mem = lib.llama_get_memory(self._ctx)
        file_type = backend._llm.metadata.get("general.file_type")
        self.sharing = "none" if file_type is None or file_type.strip() in ("0", "") else "prefixes"
        self.min_shared = 4
        self._batch = lib.llama_batch_init(self._chunk, 0, 1)

    def forward(self, work: list[tuple[int, int, list[int]]]) -> list[np.ndarray]:
        # Pieces of at most one chunk, cut at the positions where the single context's eval() cuts
        # a prompt (multiples of the chunk: also for a prompt that starts after a shared prefix),
        # and never split across two llama_decode calls: every token is evaluated with the same
        # companions of its own sequence as when the sequence runs alone.
        size = self._chunk
        pieces = []
        for slot, pos, toks in work:
            k = 0
            while k < len(toks):
                end = min(len(toks), k + size - (pos + k) % size)
                pieces.append((slot, pos + k, toks[k:end], end == len(toks)))
                k = end
        calls: list[list[tuple[int, int, list[int], bool]]] = [[]]
        room = size
        for piece in pieces:
            if len(piece[2]) > room:
                calls.append([])
                room = size
            calls[-1].append(piece)
            room -= len(piece[2])
        out: dict[int, np.ndarray] = {}
        for call in calls:
            self._decode(call, out)
        return [out[slot] for slot, _, _ in work]

    def _decode(self, call: list[tuple[int, int, list[int], bool]], out: dict[int, np.ndarray]) -> None:
        lib = self._lib
        b = self._batch
        want: dict[int, int] = {}  # slot -> index of its last token in this llama_batch
        i = 0
        for slot, pos, toks, last in call:
            for k, tok in enumerate(toks):
                b.token[i] = tok
                b.pos[i] = pos + k
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = slot
                b.logits[i] = last and k == len(toks) - 1
                i += 1
            if last:
                want[slot] = i - 1
        b.n_tokens = i
        rc = lib.llama_decode(self._ctx, b)
        if rc != 0:
            raise ModelError(f"llama_decode failed ({rc}); the KV cache may be full: use a smaller batch size")
        for slot, idx in want.items():
            ptr = lib.llama_get_logits_ith(self._ctx, idx)
            out[slot] = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                              shape=(self._n_vocab,)).copy()

    def free(self, slot: int) -> None:
        self._lib.llama_memory_seq_rm(self._mem, slot, -1, -1)

    def share(self, slot: int, keep: int, source: int | None = None) -> None:
        # Another sequence's stream is copied whole (llama.cpp copies between streams only whole,
        # when the next llama_decode starts), then cut to ``keep`` tokens: the prefix lies in cells
        # 0..keep-1 as if this sequence had evaluated it, and its next token goes to cell ``keep``
        # (cutting moves the stream's head back to the first freed cell).
        lib, mem = self._lib, self._mem
        if source is not None and source != slot:
            lib.llama_memory_seq_rm(mem, slot, -1, -1)
            lib.llama_memory_seq_cp(mem, source, slot, -1, -1)
        lib.llama_memory_seq_rm(mem, slot, keep, -1)

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            self._lib.llama_free(self._ctx)
            self._ctx = None


def _is_added(text: str) -> bool:
    return text.startswith("<|") and text.endswith("|>")
