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
    #: What :meth:`share` may seed a slot with, leaving every later logit exactly as if the slot
    #: had evaluated those tokens itself: ``"prefixes"`` (any start of another slot's cache),
    #: ``"prompts"`` (only a whole prompt another slot evaluated) or ``"none"``.
    sharing: str = "none"
    #: The shortest prefix worth taking from another slot (a copy costs something too).
    min_shared: int = 1

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

    def share(self, slot: int, keep: int, source: int | None = None) -> None:
        """Make ``slot``'s cache hold the first ``keep`` tokens of ``source``'s cache (its own when
        None) and nothing else; the next :meth:`forward` of ``slot`` starts at position ``keep``.
        Engines that share nothing only empty a slot (``keep=0``)."""
        if keep or source is not None:
            raise NotImplementedError(f"{type(self).__name__} does not share prefixes")
        self.free(slot)


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
