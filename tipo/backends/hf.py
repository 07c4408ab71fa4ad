"""The transformers backend for HF checkpoint folders (config.json, safetensors, tokenizer)."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import ModelError, require
from ..tokens import ADDED_TOKENS, encode_prompt
from ..vocab import TokenText, piece_bytes
from .base import Backend, BatchEngine
from .validate import bounded_threads, check_batch_memory, check_hf_folder, context_size

__all__ = ["TransformersBackend"]


class TransformersBackend(Backend):
    """A LLaMA checkpoint run by transformers, one token per step with a KV cache.

    The folder is checked first (:func:`tipo.backends.validate.check_hf_folder`): a LLaMA config
    without custom code, sane hyper-parameters, safetensors weights whose shapes match (pickled
    ``.bin`` weights only with ``allow_pickle=True``). transformers then loads it with
    ``trust_remote_code=False``, with stdin empty and stdout sent to stderr, so a load never asks a
    question or writes into the host's output.
    """

    name = "hf"

    def __init__(self, path: Path, n_threads: int | None = None, n_ctx: int | None = None,
                 device: str = "cpu", dtype: str = "float32", allow_pickle: bool = False) -> None:
        self.path = Path(path)
        # The folder is checked before torch and transformers are even imported.
        folder = check_hf_folder(self.path, allow_pickle=bool(allow_pickle))
        self.shape = folder.shape
        n_ctx_used = context_size(self.path, folder.shape, n_ctx)
        if n_threads is not None:
            bounded_threads(n_threads)  # validated; torch's own thread setting is left to the host
        torch = require("torch", "hf", "The transformers backend")
        transformers = require("transformers", "hf", "The transformers backend")
        self._torch = torch
        torch_dtype = getattr(torch, str(dtype), None) if isinstance(dtype, str) else None
        if not isinstance(torch_dtype, torch.dtype):
            raise ModelError(f"dtype={dtype!r} is not a torch dtype; use float32, bfloat16 or float16")
        try:
            # Loading may initialise weights with the global generator: keep it untouched.
            with torch.random.fork_rng(devices=[]), _guarded_io():
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.path), trust_remote_code=False)
                self.model = transformers.AutoModelForCausalLM.from_pretrained(
                    str(self.path), dtype=torch_dtype, trust_remote_code=False,
                    use_safetensors=folder.safetensors)
        except Exception as exc:
            raise ModelError(f"transformers could not load {self.path.name} ({type(exc).__name__}); "
                             "re-download or re-save the model") from None
        self.model.to(device).eval()
        self.device = device
        self.n_ctx = n_ctx_used
        tok = self.tokenizer
        n_vocab = int(self.model.config.vocab_size)
        pieces_text = tok.convert_ids_to_tokens(list(range(n_vocab)))
        special = set(tok.all_special_ids) | {int(i) for i in getattr(tok, "added_tokens_decoder", {})}
        pieces = [piece_bytes(p or "", i in special) for i, p in enumerate(pieces_text)]
        self.vocab = TokenText(pieces, int(tok.eos_token_id if tok.eos_token_id is not None else 2))
        self._cache = None
        self._ids: list[int] = []
        # Encode like llama.cpp and the LLaMA-2 tokenizer TIPO was trained with: each stretch
        # between added tokens is its own SentencePiece sentence (see tipo.tokens).
        self._spm = None
        sp_file = self.path / "tokenizer.model"
        if sp_file.exists():
            spm = require("sentencepiece", "hf", "The transformers backend")
            try:
                self._spm = spm.SentencePieceProcessor(model_file=str(sp_file))
            except Exception:
                raise ModelError(f"{self.path.name}/tokenizer.model is not a SentencePiece model; "
                                 "re-download or re-save the model") from None
        self._added = {}
        for t in ADDED_TOKENS:
            tid = tok.convert_tokens_to_ids(t)
            if not isinstance(tid, int) or tid == tok.unk_token_id or not 0 <= tid < n_vocab:
                raise ModelError(f"{self.path.name}: its tokenizer lacks the TIPO added token {t}; "
                                 "this is not a TIPO model")
            self._added[t] = tid
        self._bos = int(tok.bos_token_id if tok.bos_token_id is not None else 1)
        self._protocol = {*self._added.values(), self._bos, int(self.vocab.eos_id)}

    def _encode_text(self, text: str) -> list[int]:
        """One stretch of plain text, WITHOUT special-token parsing."""
        if self._spm is not None:
            ids = [int(i) for i in self._spm.encode(text)]
        else:
            ids = [int(i) for i in self.tokenizer(text, add_special_tokens=False,
                                                  split_special_tokens=True)["input_ids"]]
        if self._protocol.intersection(ids):
            raise ModelError(f"{self.path.name}: its tokenizer reads plain text as control tokens; "
                             "use a tokenizer.model (SentencePiece) with the folder")
        return ids

    def encode(self, text: str) -> list[int]:
        return encode_prompt(text, self._encode_text, self._added, self._bos)

    def _forward(self, ids: list[int]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            inp = torch.tensor([ids], dtype=torch.long, device=self.device)
            out = self.model(input_ids=inp, past_key_values=self._cache, use_cache=True)
        self._cache = out.past_key_values
        return out.logits[0, -1].float().cpu().numpy()

    def start(self, ids: list[int]) -> np.ndarray:
        if len(ids) > self.n_ctx:
            raise ModelError(f"the prompt has {len(ids)} tokens but the context holds {self.n_ctx}")
        self._cache = None
        self._ids = list(ids)
        return self._forward(ids)

    def step(self, token: int) -> np.ndarray:
        if len(self._ids) >= self.n_ctx:
            raise ModelError(f"the context of {self.n_ctx} tokens is full")
        self._ids.append(token)
        return self._forward([token])

    def batched(self, n_seq: int, n_ctx_seq: int) -> HFBatch:
        """Batched forwards over one left-padded KV cache (attention mask and position ids per row)."""
        check_batch_memory(self.path, self.shape, n_seq, n_ctx_seq)
        return HFBatch(self, n_seq, n_ctx_seq)

    def close(self) -> None:
        self._cache = None
        if getattr(self, "model", None) is not None:
            self.model = None
            import gc

            gc.collect()


@contextlib.contextmanager
def _guarded_io() -> Iterator[None]:
    """Nothing reads stdin or writes stdout while a model loads: stdin is empty (a question gets
    EOF, never an answer) and stdout goes to stderr (the host's stdout may be a data stream)."""
    old_in = sys.stdin
    sys.stdin = io.StringIO("")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdin = old_in


class HFBatch(BatchEngine):
    """Several sequences per forward over one left-padded KV cache.

    A joining sequence's prompt is evaluated alone (the very computation of a single expansion),
    and its keys and values are copied into its row of the batch cache, right-aligned, with the
    columns before it masked. Each step then feeds one token per row in one forward, with the
    attention mask and per-row position ids; rows without a token this step get a masked column.
    Columns masked in every row are cut from the left, so the cache holds at most the longest
    running sequence plus padding.

    Whole prompts are shared (``sharing = "prompts"``): a sequence whose prompt another row
    evaluated gets that row's keys and values of the prompt (:meth:`share`), the very numbers its
    own prompt pass would give. A common prefix of two different prompts is not shared: the
    rest of the prompt would be evaluated in a second, shorter forward, whose matrix products
    have other shapes than the single expansion's one prompt pass, so its numbers may differ.
    """

    sharing = "prompts"

    def __init__(self, backend: TransformersBackend, n_seq: int, n_ctx_seq: int) -> None:
        self._b = backend
        self._torch = backend._torch
        self.capacity = int(n_seq)
        self.n_ctx_seq = int(n_ctx_seq)
        self._kv: list[list] | None = None  # per layer [keys, values], each [rows, heads, T, dim]
        with self._torch.inference_mode():
            self._mask = self._torch.zeros((self.capacity, 0), dtype=self._torch.long, device=backend.device)
        self._len = [0] * self.capacity  # real tokens per row

    def _prefill(self, slot: int, ids: list[int]) -> np.ndarray:
        torch = self._torch
        b = self._b
        with torch.inference_mode():
            inp = torch.tensor([ids], dtype=torch.long, device=b.device)
            out = b.model(input_ids=inp, use_cache=True)
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        n = len(ids)
        if self._kv is None:
            self._kv = [[k.new_zeros((self.capacity, *k.shape[1:2], 0, k.shape[3])),
                         v.new_zeros((self.capacity, *v.shape[1:2], 0, v.shape[3]))] for k, v in layers]
        width = self._mask.shape[1]
        if n > width:  # widen everyone on the left with masked columns
            grow = n - width
            for kv in self._kv:
                for j in (0, 1):
                    t = kv[j]
                    kv[j] = torch.cat([t.new_zeros((*t.shape[:2], grow, t.shape[3])), t], dim=2)
            self._mask = torch.cat([self._mask.new_zeros((self.capacity, grow)), self._mask], dim=1)
            width = n
        for kv, (k, v) in zip(self._kv, layers, strict=True):
            kv[0][slot, :, width - n :] = k[0]
            kv[1][slot, :, width - n :] = v[0]
            kv[0][slot, :, : width - n] = 0
            kv[1][slot, :, : width - n] = 0
        self._mask[slot] = 0
        self._mask[slot, width - n :] = 1
        self._len[slot] = n
        return out.logits[0, -1].float().cpu().numpy()

    def forward(self, work: list[tuple[int, int, list[int]]]) -> list[np.ndarray]:
        with self._torch.inference_mode():  # the cache tensors are inference tensors
            return self._forward(work)

    def _forward(self, work: list[tuple[int, int, list[int]]]) -> list[np.ndarray]:
        torch = self._torch
        b = self._b
        out: dict[int, np.ndarray] = {}
        steps = {}
        for slot, pos, toks in work:
            if pos == 0:
                out[slot] = self._prefill(slot, toks)
            else:
                if len(toks) != 1 or pos != self._len[slot]:
                    raise ValueError("the transformers batch engine steps one token at the end of a row")
                steps[slot] = toks[0]
        if steps and self._kv is not None:
            from transformers import DynamicCache

            ids = torch.zeros((self.capacity, 1), dtype=torch.long, device=b.device)
            col = torch.zeros((self.capacity, 1), dtype=torch.long, device=b.device)
            pos_ids = torch.zeros((self.capacity, 1), dtype=torch.long, device=b.device)
            for slot, tok in steps.items():
                ids[slot, 0] = tok
                col[slot, 0] = 1
                pos_ids[slot, 0] = self._len[slot]
            mask = torch.cat([self._mask, col], dim=1)
            cache = DynamicCache(ddp_cache_data=[(k, v) for k, v in self._kv], config=b.model.config)
            with torch.inference_mode():
                res = b.model(input_ids=ids, attention_mask=mask, position_ids=pos_ids, past_key_values=cache,
                              use_cache=True)
            self._kv = [[layer.keys, layer.values] for layer in res.past_key_values.layers]
            self._mask = mask
            logits = res.logits[:, -1].float().cpu().numpy()
            for slot in steps:
                self._len[slot] += 1
                out[slot] = logits[slot].copy()
            self._trim()
        return [out[slot] for slot, _, _ in work]

    def _trim(self) -> None:
        """Cut the columns that are masked in every row (bounded memory)."""
        used = self._mask.any(dim=0).nonzero()
        first = int(used[0]) if used.numel() else self._mask.shape[1]
        if first >= 64 or (first and first * 4 >= self._mask.shape[1]):
            self._mask = self._mask[:, first:]
            assert self._kv is not None
            self._kv = [[k[:, :, first:], v[:, :, first:]] for k, v in self._kv]

    def free(self, slot: int) -> None:
        with self._torch.inference_mode():
            self._mask[slot] = 0
        self._len[slot] = 0

    def share(self, slot: int, keep: int, source: int | None = None) -> None:
        if keep == 0 or self._kv is None:
            if keep:
                raise ValueError("nothing to share from an empty batch cache")
            self.free(slot)
            return
        src = slot if source is None else source
        if keep > self._len[src]:
            raise ValueError(f"slot {src} holds {self._len[src]} tokens, not {keep}")
        with self._torch.inference_mode():
            cols = self._mask[src].nonzero().flatten()[:keep]  # its first ``keep`` tokens (rows may have holes)
            width = self._mask.shape[1]
            for kv in self._kv:
                for j in (0, 1):
                    piece = kv[j][src, :, cols].clone()
                    kv[j][slot] = 0
                    kv[j][slot, :, width - keep :] = piece
            self._mask[slot] = 0
            self._mask[slot, width - keep :] = 1
        self._len[slot] = keep

    def close(self) -> None:
        self._kv = None
