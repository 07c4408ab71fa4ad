"""TIPO token conventions shared by every backend and by training.

A prompt is BOS, then the text with each of the 13 added tokens as one token; every stretch of
text between added tokens is encoded as its own SentencePiece sentence (with the dummy-prefix
space). That is how llama.cpp tokenises a LLaMA GGUF and how the LLaMA-2 tokenizer the TIPO
weights were trained with behaves, so the transformers backend and the training recipe encode
through :func:`encode_spm` to get the very same ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = ["ADDED_TOKENS", "BOS_ID", "EOS_ID", "encode_spm", "split_added"]

ADDED_TOKENS: tuple[str, ...] = (
    "<|empty|>", "<|very_short|>", "<|short|>", "<|long|>", "<|very_long|>",
    "<|tag_to_long|>", "<|long_to_tag|>", "<|short_to_tag|>", "<|short_to_long|>",
    "<|tag_to_short_to_long|>", "<|short_to_tag_to_long|>", "<|short_to_long_to_tag|>", "<|gen_meta|>",
)
BOS_ID, EOS_ID = 1, 2
_ADDED = re.compile("(" + "|".join(re.escape(t) for t in ADDED_TOKENS) + ")")


def split_added(text: str) -> list[str]:
    """Split text into plain stretches and added tokens (kept as separate items).

    Example:
        >>> split_added("target: <|long|>\\ntag:")
        ['target: ', '<|long|>', '\\ntag:']
    """
    return [part for part in _ADDED.split(text) if part]


def encode_spm(text: str, encode_piece: Callable[[str], Sequence[int]], added_ids: dict[str, int],
               bos_id: int = BOS_ID) -> list[int]:
    """BOS + each plain stretch through ``encode_piece`` (a SentencePiece encode) + added ids."""
    ids = [bos_id]
    for part in split_added(text):
        if part in added_ids:
            ids.append(added_ids[part])
        else:
            ids.extend(int(i) for i in encode_piece(part))
    return ids
