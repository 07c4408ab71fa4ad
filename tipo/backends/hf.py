"""The transformers backend for HF checkpoint folders (config.json, safetensors, tokenizer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelError, require
from ..tokens import ADDED_TOKENS, encode_spm
from ..vocab import TokenText, piece_bytes
from .base import Backend

__all__ = ["TransformersBackend"]


class TransformersBackend(Backend):
    """A LLaMA checkpoint run by transformers, one token per step with a KV cache."""

    name = "hf"

    def __init__(self, path: Path, n_threads: int | None = None, n_ctx: int | None = None,
                 device: str = "cpu", dtype: str = "float32") -> None:
        torch = require("torch", "hf", "The transformers backend")
        transformers = require("transformers", "hf", "The transformers backend")
        self._torch = torch
        self.path = Path(path)
        if not self.path.is_dir() or not (self.path / "config.json").exists():
            raise ModelError(f"{self.path} is not an HF model folder (no config.json); "
                             "use a folder saved with save_pretrained, or a .gguf file with --backend llama")
        try:
            # Loading may initialise weights with the global generator: keep it untouched.
            with torch.random.fork_rng(devices=[]):
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.path))
                self.model = transformers.AutoModelForCausalLM.from_pretrained(
                    str(self.path), dtype=getattr(torch, dtype))
        except Exception as exc:
            raise ModelError(f"transformers could not load {self.path}: {exc}") from None
        self.model.to(device).eval()
        self.device = device
        config = self.model.config
        self.n_ctx = int(n_ctx or getattr(config, "max_position_embeddings", 1024) or 1024)
        tok = self.tokenizer
        n_vocab = int(config.vocab_size)
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
            self._spm = spm.SentencePieceProcessor(model_file=str(sp_file))
            self._added = {t: int(tok.convert_tokens_to_ids(t)) for t in ADDED_TOKENS}
            self._bos = int(tok.bos_token_id if tok.bos_token_id is not None else 1)

    def encode(self, text: str) -> list[int]:
        if self._spm is not None:
            return encode_spm(text, self._spm.encode, self._added, self._bos)
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return [int(i) for i in ids]

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

    def close(self) -> None:
        self._cache = None
        if getattr(self, "model", None) is not None:
            self.model = None
            import gc

            gc.collect()
