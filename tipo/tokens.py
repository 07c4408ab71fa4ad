"""TIPO token conventions shared by every backend and by training.

A prompt is BOS, then the text. Only the protocol's own added tokens are token ids: the ones the
planner writes on the ``target:`` line (``<|long|> <|tag_to_long|>``). Everything else, and above
all every character the user typed (tags, caption, bans), is plain text, encoded WITHOUT
special-token parsing: a tag ``<|long|>`` or ``</s>`` is the characters ``<``, ``|``, ``l`` ...,
never the control token. Every stretch of text between protocol tokens is encoded as its own
SentencePiece sentence (with the dummy-prefix space). That is how llama.cpp tokenises a LLaMA GGUF
and how the LLaMA-2 tokenizer the TIPO weights were trained with behaves, so both backends call
:func:`encode_prompt` with their own plain-text encoder and feed the model the very same ids.

:func:`encode_spm` (every added-token string is a token, wherever it appears) is for the training
recipe, whose text the recipe writes itself (``long: <|empty|>`` completions).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = ["ADDED_TOKENS", "BOS_ID", "EOS_ID", "encode_prompt", "encode_spm", "protocol_parts", "split_added"]

ADDED_TOKENS: tuple[str, ...] = (
    "<|empty|>", "<|very_short|>", "<|short|>", "<|long|>", "<|very_long|>",
    "<|tag_to_long|>", "<|long_to_tag|>", "<|short_to_tag|>", "<|short_to_long|>",
    "<|tag_to_short_to_long|>", "<|short_to_tag_to_long|>", "<|short_to_long_to_tag|>", "<|gen_meta|>",
)
BOS_ID, EOS_ID = 1, 2
_ADDED = re.compile("(" + "|".join(re.escape(t) for t in ADDED_TOKENS) + ")")
_TARGET = "target:"


def split_added(text: str) -> list[str]:
    """Split text into plain stretches and added tokens (kept as separate items), wherever they are.

    Example:
        >>> split_added("target: <|long|>\\ntag:")
        ['target: ', '<|long|>', '\\ntag:']
    """
    return [part for part in _ADDED.split(text) if part]


def protocol_parts(prompt: str) -> list[tuple[str, bool]]:
    """Split a planned prompt into ``(text, is_protocol_token)`` parts.

    Only the protocol's ``target:`` line (the first line that starts with ``target:``; the planner
    writes user text only in meta lines, which never start with ``target:``, and after the target
    line) holds added tokens. An added-token string anywhere else is user text.

    Example:
        >>> protocol_parts("target: <|long|>\\ntag: <|long|>")
        [('target: ', False), ('<|long|>', True), ('\\ntag: <|long|>', False)]
    """
    start = 0 if prompt.startswith(_TARGET) else prompt.find("\n" + _TARGET)
    if start < 0:
        return [(prompt, False)] if prompt else []
    if start > 0:
        start += 1
    end = prompt.find("\n", start)
    end = len(prompt) if end < 0 else end
    parts: list[tuple[str, bool]] = []
    text = prompt[:start]
    for part in _ADDED.split(prompt[start:end]):
        if part in ADDED_TOKENS:
            if text:
                parts.append((text, False))
            parts.append((part, True))
            text = ""
        else:
            text += part
    text += prompt[end:]
    if text:
        parts.append((text, False))
    return parts


def encode_prompt(prompt: str, encode_text: Callable[[str], Sequence[int]], added_ids: dict[str, int],
                  bos_id: int = BOS_ID) -> list[int]:
    """BOS + the prompt: protocol tokens as their ids, every other stretch through ``encode_text``.

    ``encode_text`` must encode one stretch as a SentencePiece sentence WITHOUT special-token
    parsing (no BOS); see :func:`protocol_parts` for which added tokens count.
    """
    ids = [bos_id]
    for part, is_token in protocol_parts(prompt):
        if is_token:
            ids.append(added_ids[part])
        else:
            ids.extend(int(i) for i in encode_text(part))
    return ids


def encode_spm(text: str, encode_piece: Callable[[str], Sequence[int]], added_ids: dict[str, int],
               bos_id: int = BOS_ID) -> list[int]:
    """BOS + each plain stretch through ``encode_piece`` + added ids, wherever they appear.

    For text the training recipe writes itself; user text goes through :func:`encode_prompt`.
    """
    ids = [bos_id]
    for part in split_added(text):
        if part in added_ids:
            ids.append(added_ids[part])
        else:
            ids.extend(int(i) for i in encode_piece(part))
    return ids
