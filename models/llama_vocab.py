"""The real LLaMA SentencePiece vocabulary (the one the TIPO checkpoints use), from llama.cpp's vocab file.

``shared/data/tokenizers/llama-spm/ggml-vocab-llama-spm.gguf`` is llama.cpp's vocab-only GGUF of the
LLaMA / LLaMA-2 tokenizer: 32,000 pieces with their scores and token types (MIT, see the data folder's
``SOURCES.md``). This module reads it with the ``gguf`` package and gives:

- :func:`llama_vocab` - those pieces plus the 13 TIPO added tokens as a :class:`GGUFVocab` of 32,013
  (for GGUF files: the random-weight files of the published shapes, test models);
- :func:`llama_sentencepiece_model` - the same pieces as a SentencePiece ``tokenizer.model`` (BPE,
  byte fallback, dummy prefix, no whitespace folding: the LLaMA settings), for HF folders;
- :func:`llama_test_vectors` - llama.cpp's own tokenizer test vectors for this vocabulary.

The 13 added tokens take ids 32000-32012 in the order ``shared/FORMAT.md`` section 1 lists them
(:data:`tipo.tokens.ADDED_TOKENS`). That order is inferred from the format description, not read
from the published ``added_tokens.json``, which is not available offline here.

Example::

    from models.llama_vocab import find_llama_vocab, llama_vocab
    path = find_llama_vocab()          # None when the shared data folder is not next to the checkout
    vocab = llama_vocab(path)          # 32,013 tokens, <|empty|> = 32000 ... <|gen_meta|> = 32012
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from models.gguf_export import GGUFVocab
from models.tokenizer import ADDED_TOKENS

__all__ = [
    "LLAMA_PIECES",
    "find_llama_vocab",
    "llama_sentencepiece_model",
    "llama_test_vectors",
    "llama_vocab",
    "read_llama_pieces",
]

#: Pieces of the LLaMA SentencePiece vocabulary (before the TIPO added tokens).
LLAMA_PIECES = 32000
VOCAB_NAME = "ggml-vocab-llama-spm.gguf"
_RELATIVE = Path("data") / "tokenizers" / "llama-spm" / VOCAB_NAME
_SEPARATOR = "\n__ggml_vocab_test__\n"


def find_llama_vocab() -> Path | None:
    """The vocab file: ``$TIPO_LLAMA_VOCAB``, else ``shared/data/...`` next to the checkout (or one
    level up, for worktrees). None when neither exists."""
    env = os.environ.get("TIPO_LLAMA_VOCAB")
    if env:
        return Path(env) if Path(env).is_file() else None
    root = Path(__file__).resolve().parents[1]
    for base in (root.parent, root.parent.parent):
        candidate = base / "shared" / _RELATIVE
        if candidate.is_file():
            return candidate
    return None


def _field_values(reader, key: str) -> list:  # noqa: ANN001
    field = reader.fields[key]
    return [field.parts[i] for i in field.data]


def read_llama_pieces(path: str | Path, *, pieces: int | None = LLAMA_PIECES) -> GGUFVocab:
    """The 32,000 pieces, scores and token types of the vocab file, with its special ids.

    ``pieces=None`` reads any SentencePiece GGUF (a model file too, e.g. tipo's built-in model): its
    pieces without the TIPO added tokens that end it.
    """
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    if str(bytes(_field_values(reader, "tokenizer.ggml.model")[0]), "utf-8") != "llama":
        raise ValueError(f"{path} is not a SentencePiece ('llama') vocabulary")
    tokens = tuple(bytes(p).decode("utf-8") for p in _field_values(reader, "tokenizer.ggml.tokens"))
    scores = tuple(float(p[0]) for p in _field_values(reader, "tokenizer.ggml.scores"))
    types = tuple(int(p[0]) for p in _field_values(reader, "tokenizer.ggml.token_type"))

    def scalar(key: str, default: int) -> int:
        return int(_field_values(reader, key)[0][0]) if key in reader.fields else default

    if pieces is None:
        pieces = len(tokens) - len(ADDED_TOKENS) if tokens[-len(ADDED_TOKENS):] == tuple(ADDED_TOKENS) else len(tokens)
        tokens, scores, types = tokens[:pieces], scores[:pieces], types[:pieces]
    if len(tokens) != pieces:
        raise ValueError(f"{path} has {len(tokens)} pieces; the LLaMA vocabulary has {LLAMA_PIECES}")
    return GGUFVocab(tokens=tokens, scores=scores, types=types,
                     bos_id=scalar("tokenizer.ggml.bos_token_id", 1), eos_id=scalar("tokenizer.ggml.eos_token_id", 2),
                     unk_id=scalar("tokenizer.ggml.unknown_token_id", 0), pad_id=2, add_space_prefix=True)


def llama_vocab(path: str | Path, *, special: bool = True, added: Sequence[str] = ADDED_TOKENS) -> GGUFVocab:
    """The LLaMA pieces plus the TIPO added tokens (ids 32000-32012, FORMAT.md section 1 order).

    ``special`` makes the added tokens CONTROL tokens, else USER_DEFINED (see docs/language-model.md
    for how llama.cpp treats each).
    """
    from gguf import TokenType

    base = read_llama_pieces(path)
    kind = int(TokenType.CONTROL if special else TokenType.USER_DEFINED)
    return replace(base, tokens=base.tokens + tuple(added), scores=base.scores + (0.0,) * len(added),
                   types=base.types + (kind,) * len(added), pad_id=base.eos_id)


def llama_sentencepiece_model(path: str | Path, *, pieces: int | None = LLAMA_PIECES) -> bytes:
    """The vocab file's pieces as a SentencePiece ``tokenizer.model`` with the LLaMA settings.

    Pieces, scores and types are the file's; the model is BPE with byte fallback, a dummy prefix
    and whitespace kept as is (``remove_extra_whitespaces`` off, identity normalisation), as the
    LLaMA tokenizer. Checked against llama.cpp's test vectors in the test suite. ``pieces`` as in
    :func:`read_llama_pieces` (``None``: the pieces of any SentencePiece GGUF, such as a model file).
    """
    from gguf import TokenType
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    vocab = read_llama_pieces(path, pieces=pieces)
    proto = model_pb2.ModelProto()
    kinds = {
        int(TokenType.NORMAL): model_pb2.ModelProto.SentencePiece.NORMAL,
        int(TokenType.UNKNOWN): model_pb2.ModelProto.SentencePiece.UNKNOWN,
        int(TokenType.CONTROL): model_pb2.ModelProto.SentencePiece.CONTROL,
        int(TokenType.USER_DEFINED): model_pb2.ModelProto.SentencePiece.USER_DEFINED,
        int(TokenType.UNUSED): model_pb2.ModelProto.SentencePiece.UNUSED,
        int(TokenType.BYTE): model_pb2.ModelProto.SentencePiece.BYTE,
    }
    for token, score, kind in zip(vocab.tokens, vocab.scores, vocab.types, strict=True):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = token, score, kinds[kind]
    trainer = proto.trainer_spec
    trainer.model_type = model_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(vocab.tokens)
    trainer.byte_fallback = True
    trainer.split_digits = True
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = vocab.unk_id, vocab.bos_id, vocab.eos_id, -1
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto.SerializeToString()


def llama_test_vectors(path: str | Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test vectors next to the vocab file (``.inp`` / ``.out``): texts and
    the ids llama.cpp's SPM tokenizer gives them (no BOS, special tokens not parsed)."""
    path = Path(path)
    inp = path.with_name(path.name + ".inp").read_text(encoding="utf-8")
    out = path.with_name(path.name + ".out").read_text(encoding="utf-8").split("\n")
    texts = inp.split(_SEPARATOR)
    if texts and texts[-1].endswith("\n__ggml_vocab_test__"):
        texts[-1] = texts[-1][: -len("\n__ggml_vocab_test__")]
    if len(out) > len(texts) and out[-1] == "":
        out = out[: len(texts)]
    if len(texts) != len(out):
        raise ValueError(f"{path}: {len(texts)} inputs but {len(out)} expected-id lines")
    return [(text, [int(x) for x in line.split()]) for text, line in zip(texts, out, strict=True)]

