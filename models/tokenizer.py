"""TIPO-style tokenizers: a LLaMA-2 SentencePiece BPE model plus the 13 TIPO added tokens.

The published TIPO checkpoints use the LLaMA-2 SentencePiece model (32,000 pieces) with 13 added
tokens appended as ids 32000..32012 (docs/FORMAT.md section 1). This module trains a small model with the
same settings in memory, so tests and tiny models get a tokenizer that behaves like the real one, and
saves it as a Hugging Face tokenizer folder.

Example (a CPU-sized run, well under a second)::

    from models.tokenizer import train_sentencepiece, save_hf_tokenizer
    sp_model = train_sentencepiece(["tag: 1girl, long hair, smile", "A cat on a mat."] * 50, vocab_size=300)
    tokenizer = save_hf_tokenizer(sp_model, "out/hf")
    tokenizer("target: <|long|>\\ntag:").input_ids  # [1, ..., 303, ...]: BOS first, <|long|> is one id

How the two runtimes tokenise text that follows an added token (measured on models built here):

- SentencePiece, and llama.cpp's SPM tokenizer, treat every stretch of text between added tokens as
  a fresh sentence and put the dummy-prefix space in front of it: ``<|long|>\\ntag`` becomes
  ``<|long|> ▁ <0x0A> tag``, and the single space in ``<|long|> <|tag_to_long|>`` becomes two
  (``▁▁`` or ``▁ ▁``).
- transformers 5 rebuilds ``LlamaTokenizer`` with a ``Metaspace`` pre-tokenizer whatever
  ``tokenizer.json`` says (it keeps only the vocabulary and merges: a LLaMA-2-style file, whose
  ``Prepend`` normalizer behaves like llama.cpp under the ``tokenizers`` library, loses it). With ``legacy=False`` (its default) only the first stretch gets the
  prefix: ``<|long|> <0x0A> tag``. With ``legacy=True`` every stretch gets it unless it already
  starts with a space, so ``\\ntag`` matches llama.cpp but the space between two added tokens stays
  single.

Either way llama.cpp's ids for a text are transformers' ids for the same text with one space
inserted after every added token that is followed by text. Every TIPO prompt has such text
(``target: <|long|>\\ntag: ...``), so the two runtimes give different ids for every TIPO prompt:
pick one tokenizer and hand the other runtime token ids. Which variant the published checkpoints
were trained with depends on the ``legacy`` setting of their own ``tokenizer_config.json``: training
used transformers 4.x's slow ``LlamaTokenizer``, which by its source (not measured here) encodes
each stretch with SentencePiece itself when ``legacy=True`` (the llama.cpp behaviour) and strips the
dummy prefix from stretches after the first when ``legacy=False`` (the transformers 5
``legacy=False`` behaviour). Check that setting before choosing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedTokenizerBase

#: The 13 TIPO added tokens, in id order: ``ADDED_TOKENS[i]`` gets id ``base_vocab_size + i``.
ADDED_TOKENS: tuple[str, ...] = (
    "<|empty|>",
    "<|very_short|>",
    "<|short|>",
    "<|long|>",
    "<|very_long|>",
    "<|tag_to_long|>",
    "<|long_to_tag|>",
    "<|short_to_tag|>",
    "<|short_to_long|>",
    "<|tag_to_short_to_long|>",
    "<|short_to_tag_to_long|>",
    "<|short_to_long_to_tag|>",
    "<|gen_meta|>",
)

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
#: TIPO pads with EOS.
PAD_ID = EOS_ID
#: The metaspace character SentencePiece writes for a space.
SPACE_PIECE = "\u2581"


def _require_sentencepiece() -> Any:
    try:
        import sentencepiece
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "models.tokenizer needs sentencepiece: pip install 'tipo-prompt[train]' (or: pip install sentencepiece)"
        ) from error
    return sentencepiece


def train_sentencepiece(
    lines: Iterable[str],
    vocab_size: int,
    *,
    added_tokens: Sequence[str] = ADDED_TOKENS,
) -> bytes:
    """Train a SentencePiece BPE model with the LLaMA-2 settings, in memory.

    Args:
        lines: training sentences, one per item (newlines inside an item are kept as text).
        vocab_size: number of pieces, including ``<unk>``, ``<s>``, ``</s>`` and the 256 byte pieces.
        added_tokens: strings removed from the training text first, so that they never become
            ordinary pieces of the base vocabulary (they are appended later as added tokens).

    Returns:
        The serialized model (the bytes of a ``tokenizer.model`` file).

    Example::

        sp_model = train_sentencepiece(["tag: 1girl, smile"] * 100, vocab_size=300)
    """
    sentencepiece = _require_sentencepiece()
    if vocab_size < 260:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the 3 control pieces and 256 byte pieces alone take 259"
        )
    corpus = []
    for line in lines:
        for token in added_tokens:
            line = line.replace(token, " ")
        if line.strip():
            corpus.append(line)
    if not corpus:
        raise ValueError("train_sentencepiece needs at least one non-empty line of text")

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_id=-1,
        max_sentence_length=4192,
        # One thread keeps the result independent of the machine.
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def load_sentencepiece(sp_model: bytes | str | Path) -> Any:
    """Load a SentencePiece model from its bytes or a ``tokenizer.model`` path.

    Example::

        sp = load_sentencepiece("out/hf/tokenizer.model")
        sp.encode("tag: 1girl", out_type=str)
    """
    sentencepiece = _require_sentencepiece()
    if isinstance(sp_model, (str, Path)):
        sp_model = Path(sp_model).read_bytes()
    return sentencepiece.SentencePieceProcessor(model_proto=sp_model)


def build_hf_tokenizer(
    sp_model: bytes,
    *,
    added_tokens: Sequence[str] = ADDED_TOKENS,
    legacy: bool = False,
) -> PreTrainedTokenizerBase:
    """Build a transformers ``LlamaTokenizer`` from a SentencePiece BPE model plus added tokens.

    Args:
        sp_model: serialized SentencePiece BPE model (see :func:`train_sentencepiece`).
        added_tokens: appended as special tokens with ids ``len(pieces)``, ``len(pieces) + 1``, ...
            so each is always one token.
        legacy: transformers' ``legacy`` flag; see the module docstring for what it changes.

    Example::

        tokenizer = build_hf_tokenizer(train_sentencepiece(lines, 300))
        tokenizer("tag:").input_ids[0] == 1  # BOS
    """
    from transformers import AddedToken, LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    sp = load_sentencepiece(sp_model)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    clashes = sorted(set(added_tokens) & set(vocab))
    if clashes:
        raise ValueError(
            f"added tokens {clashes} are already pieces of the SentencePiece model; retrain without them"
        )
    tokenizer = LlamaTokenizer(
        vocab=vocab,
        merges=generate_merges(vocab),
        legacy=legacy,
        add_bos_token=True,
        add_eos_token=False,
        pad_token=sp.id_to_piece(PAD_ID),
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in added_tokens]}
    )
    ids = tokenizer.convert_tokens_to_ids(list(added_tokens))
    expected = list(range(len(vocab), len(vocab) + len(added_tokens)))
    if ids != expected:  # pragma: no cover - guards against a transformers behaviour change
        raise RuntimeError(f"added tokens got ids {ids}, expected {expected}")
    return tokenizer


def save_hf_tokenizer(
    sp_model: bytes,
    out_dir: str | Path,
    *,
    added_tokens: Sequence[str] = ADDED_TOKENS,
    legacy: bool = False,
) -> PreTrainedTokenizerBase:
    """Save a TIPO-style tokenizer as a Hugging Face folder and return it.

    Writes ``tokenizer.json``, ``tokenizer_config.json`` and ``tokenizer.model`` (the SentencePiece
    model, which :mod:`models.gguf_export` reads). ``legacy``, ``add_bos_token`` and
    ``add_eos_token`` are written into ``tokenizer_config.json`` explicitly, because transformers 5
    does not save ``legacy`` and would read the folder back with its own default.

    Example::

        tokenizer = save_hf_tokenizer(train_sentencepiece(lines, 300), "out/hf")
        AutoTokenizer.from_pretrained("out/hf")  # the same tokenizer
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_hf_tokenizer(sp_model, added_tokens=added_tokens, legacy=legacy)
    tokenizer.save_pretrained(out)
    (out / "tokenizer.model").write_bytes(sp_model)

    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update({"legacy": legacy, "add_bos_token": True, "add_eos_token": False})
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return tokenizer


def added_tokens_of(hf_dir: str | Path) -> list[tuple[int, str, bool]]:
    """The added tokens of a Hugging Face tokenizer folder as ``(id, text, special)``, by id.

    Reads ``tokenizer.json`` when present, else ``tokenizer_config.json``'s ``added_tokens_decoder``,
    else ``added_tokens.json`` (whose tokens are not special).

    Example::

        added_tokens_of("out/hf")[-1]  # (512 + 12, '<|gen_meta|>', True)
    """
    folder = Path(hf_dir)
    found: dict[int, tuple[str, bool]] = {}
    if (folder / "tokenizer.json").is_file():
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        for token in data.get("added_tokens", []):
            found[int(token["id"])] = (token["content"], bool(token.get("special", False)))
    elif (folder / "tokenizer_config.json").is_file():
        data = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        for token_id, token in data.get("added_tokens_decoder", {}).items():
            found[int(token_id)] = (token["content"], bool(token.get("special", False)))
    if (folder / "added_tokens.json").is_file():
        data = json.loads((folder / "added_tokens.json").read_text(encoding="utf-8"))
        for text, token_id in data.items():
            found.setdefault(int(token_id), (text, False))
    return [(token_id, text, special) for token_id, (text, special) in sorted(found.items())]
