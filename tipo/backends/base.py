"""The backend contract: tokenize, evaluate a prompt, step one token, close."""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from ..vocab import TokenText

__all__ = ["Backend", "BatchEngine"]


class BatchEngine(abc.ABC):
    """Evaluates several sequences together, each in its own slot of a batched KV cache.

    ``capacity`` slots; a slot's cache is empty until :meth:`forward` feeds it and again after
    :meth:`free`. ``n_ctx_seq`` is the most tokens a slot holds.
    """

    capacity: int
    n_ctx_seq: int

    @abc.abstractmethod
    def forward(self, work: list[tuple[int, int, list[int]]]) -> list[np.ndarray]:
        """Feed ``(slot, position of the first token, tokens)`` for each listed slot in one pass;
        return the next-token logits after each slot's last token, in the order given."""

    @abc.abstractmethod
    def free(self, slot: int) -> None:
        """Forget a slot's cache so another sequence can use it."""

    @abc.abstractmethod
    def close(self) -> None:
        """Free the engine's memory. Safe to call twice."""


class Backend(abc.ABC):
    """A loaded language model. Not thread-safe by itself: the Expander serialises calls.

    Implementations set ``name``, ``path``, ``n_ctx`` (the context the model was trained with)
    and ``vocab`` (:class:`~tipo.vocab.TokenText`), and implement the methods below.
    """

    name: str = ""
    path: Path
    n_ctx: int
    vocab: TokenText

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """BOS followed by the text's tokens; added tokens such as ``<|long|>`` are one token each; no EOS."""

    @abc.abstractmethod
    def start(self, ids: list[int]) -> np.ndarray:
        """Evaluate a prompt from an empty cache (results never depend on earlier calls) and return the next-token logits."""

    @abc.abstractmethod
    def step(self, token: int) -> np.ndarray:
        """Append one token and return the next-token logits."""

    @abc.abstractmethod
    def close(self) -> None:
        """Free the model's memory. Safe to call twice."""

    def batched(self, n_seq: int, n_ctx_seq: int) -> BatchEngine | None:
        """An engine decoding up to ``n_seq`` sequences of up to ``n_ctx_seq`` tokens together, or
        None when the backend has none (the Expander then decodes one sequence at a time)."""
        return None

    def decode(self, ids: list[int]) -> str:
        """Text of token ids, without special tokens."""
        return self.vocab.decode(ids)
