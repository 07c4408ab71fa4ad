"""The backend contract: tokenize, evaluate a prompt, step one token, close."""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from ..vocab import TokenText

__all__ = ["Backend"]


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

    def decode(self, ids: list[int]) -> str:
        """Text of token ids, without special tokens."""
        return self.vocab.decode(ids)
