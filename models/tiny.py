"""Tiny seeded TIPO-like models, and randomly initialised GGUFs of the real TIPO shapes.

``build_tiny`` makes, from a seed and without network, a small LLaMA with a TIPO-style tokenizer
(a SentencePiece BPE model trained on built-in TIPO-format text, plus the 13 added tokens), saved
both as a Hugging Face folder and as F32 and F16 GGUF files. Tests use it to check that the
transformers and llama.cpp backends agree. Same seed, same bytes.

``build_random`` writes a randomly initialised GGUF with the shape of a published TIPO model, for
speed measurements. It streams the tensors from numpy and never builds a torch model.

Examples (CPU)::

    python -m models.tiny out/tiny --seed 0                      # a few seconds
    python -m models.tiny --random TIPO-500M out/500m.gguf --outtype q8_0  # ~15 s, 516 MiB

or from Python::

    from models.tiny import build_tiny
    tiny = build_tiny("out/tiny", seed=0)
    tiny.hf_dir, tiny.gguf_f32, tiny.gguf_f16, tiny.tokenizer_model
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from models.gguf_export import (
    GGUFVocab,
    LlamaHParams,
    OutType,
    export_hf_to_gguf,
    llama_tensor_shapes,
    to_llama_cpp_layout,
    vocab_from_sentencepiece,
    write_llama_gguf,
)
from models.tokenizer import ADDED_TOKENS, BOS_ID, EOS_ID, PAD_ID, save_hf_tokenizer, train_sentencepiece

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import LlamaConfig


@dataclass(frozen=True)
class ArchShape:
    """A published model's architecture, and where the numbers come from."""

    hparams: LlamaHParams
    source: str


#: Architectures of the published TIPO models (all LLaMA, vocabulary 32,000 + 13).
ARCH_SHAPES: MappingProxyType[str, ArchShape] = MappingProxyType(
    {
        "TIPO-500M": ArchShape(
            LlamaHParams(32013, 1280, 20, 20, 20, 3840, context_length=1024),
            "KohakuBlueleaf/UwULLM config/arch/NanoLLaMA-500m.json (used by config/model/tipo-500m.yaml)",
        ),
        "TIPO-200M": ArchShape(
            LlamaHParams(32013, 768, 20, 12, 12, 2304, context_length=1024),
            "KohakuBlueleaf/UwULLM config/arch/NanoLLaMA-200m.json (the 200M member of the family; "
            "the TIPO-200M config.json itself was not available to check)",
        ),
        "TIPO-100M": ArchShape(
            LlamaHParams(32013, 512, 20, 8, 8, 1536, context_length=1024),
            "UNVERIFIED: the NanoLLaMA family pattern (20 layers, head_dim 64, intermediate 3x hidden) "
            "scaled to about 100M parameters; no TIPO-100M config was available",
        ),
    }
)

#: The tiny model's shape: 2 layers, grouped-query attention, about 140k parameters.
TINY_HPARAMS = LlamaHParams(
    vocab_size=512 + len(ADDED_TOKENS),
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=128,
    context_length=1024,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
)


@dataclass(frozen=True)
class TinyModel:
    """Paths of a model built by :func:`build_tiny`."""

    root: Path
    hf_dir: Path
    gguf_f32: Path
    gguf_f16: Path
    tokenizer_model: Path
    seed: int
    hparams: LlamaHParams


# --- built-in training text -------------------------------------------------------------------

# fmt: off
_GENERAL_TAGS = (
    "solo", "long hair", "short hair", "smile", "blush", "open mouth", "looking at viewer", "blue eyes",
    "red eyes", "green eyes", "brown hair", "black hair", "blonde hair", "twintails", "ponytail", "hat",
    "witch hat", "school uniform", "serafuku", "dress", "red dress", "white shirt", "skirt", "thighhighs",
    "gloves", "jewelry", "flower", "flowers", "garden", "outdoors", "indoors", "night", "sky", "cloud",
    "scenery", "mountain", "lake", "tree", "water", "rain", "snow", "classroom", "window", "sitting",
    "standing", "holding", "cat", "animal ears", "bow", "ribbon", "upper body", "full body", "simple background",
    "white background", "no humans", "harbor", "boat", "night sky", "star (sky)", "^_^", "o_o", ":d",
)
_SPECIAL_TAGS = ("1girl", "1boy", "2girls", "2boys", "multiple girls", "male focus", "1other")
_META = ("absurdres", "highres", "lowres", "commentary request", "translated")
_RATINGS = ("general", "sensitive", "questionable", "explicit", "safe")
_QUALITY = ("masterpiece", "best quality", "high quality", "newest", "very aesthetic")
_CHARACTERS = ("hatsune miku", "kagamine rin", "hakurei reimu", "kirisame marisa", "saber (fate)")
_COPYRIGHTS = ("vocaloid", "touhou", "fate (series)", "original")
_ARTISTS = ("ciloranko", "wlop", "as109", "mika pikazo")
_LENGTHS = ("very_short", "short", "long", "very_long")
_TASKS = (
    "tag_to_long", "long_to_tag", "short_to_tag", "tag_to_short_to_long", "short_to_tag_to_long",
    "short_to_long_to_tag",
)
# fmt: on
_SENTENCES = (
    "A girl with long hair stands in a garden at night.",
    "The sky is full of stars above the quiet lake.",
    "A red car is parked by the sea, its paint shining in the sun.",
    "Two boys are playing soccer in the rain.",
    "A witch flies over a small town on her broom.",
    "She smiles at the viewer, holding a bunch of flowers.",
    "Fishing boats rest on the calm water while gulls circle overhead.",
    "Mist hangs over the hills behind the town.",
    "The classroom is empty except for a cat sleeping on a desk.",
    "Snow falls softly on the mountain village in 1998.",
    "He wears a white shirt and a black tie, standing by the window.",
    "The picture shows 3 cats, 12 birds and 100 leaves.",
    "This image is a detailed illustration in an anime style.",
    "Bright colors and soft lighting give the scene a warm mood.",
)


def sample_lines(count: int = 400, seed: int = 0) -> list[str]:
    """Built-in TIPO-format training text: meta, target, tag and caption lines plus plain English.

    Returns ``count`` sample lines followed by 20 lines with runs of spaces. Deterministic for a
    given ``(count, seed)``; uses a local ``random.Random``.

    Example::

        sample_lines(40)[:3]  # e.g. ['rating: general', 'target: <|long|> <|tag_to_long|>', 'tag: 1girl, ...']
    """
    rng = random.Random(seed)
    lines: list[str] = []
    while len(lines) < count:
        if rng.random() < 0.5:
            lines.append(f"rating: {rng.choice(_RATINGS)}")
        if rng.random() < 0.3:
            lines.append(f"characters: {rng.choice(_CHARACTERS)}")
            lines.append(f"copyrights: {rng.choice(_COPYRIGHTS)}")
        if rng.random() < 0.2:
            lines.append(f"artist: {rng.choice(_ARTISTS)}")
        if rng.random() < 0.3:
            lines.append("meta: " + ", ".join(rng.sample(_META, rng.randint(1, 2))))
        if rng.random() < 0.4:
            lines.append("quality: " + ", ".join(rng.sample(_QUALITY, rng.randint(1, 2))))
        if rng.random() < 0.4:
            lines.append(f"aspect ratio: {rng.choice((0.6, 0.7, 0.8, 1.0, 1.3, 1.5, 1.8)):.1f}")
        task = rng.choice((None, *_TASKS))
        length = rng.choice(_LENGTHS)
        lines.append(f"target: <|{length}|>" + (f" <|{task}|>" if task else ""))
        tags = [rng.choice(_SPECIAL_TAGS), *rng.sample(_GENERAL_TAGS, rng.randint(2, 12))]
        lines.append("tag: " + ", ".join(tags))
        lines.append("short: " + rng.choice(_SENTENCES))
        lines.append("long: " + " ".join(rng.sample(_SENTENCES, rng.randint(2, 4))))
    # Whitespace runs, so that pieces such as "▁▁" exist as in LLaMA-2's vocabulary.
    return (
        lines[:count] + ["    indented  text   with  runs of    spaces", "  two  spaces  between  words"] * 10
    )


# --- tiny HF + GGUF model ---------------------------------------------------------------------


def _hf_config(hparams: LlamaHParams) -> LlamaConfig:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=hparams.vocab_size,
        hidden_size=hparams.hidden_size,
        intermediate_size=hparams.intermediate_size,
        num_hidden_layers=hparams.num_layers,
        num_attention_heads=hparams.num_heads,
        num_key_value_heads=hparams.num_kv_heads,
        max_position_embeddings=hparams.context_length,
        rms_norm_eps=hparams.rms_norm_eps,
        rope_theta=hparams.rope_theta,
        tie_word_embeddings=False,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
    )


def build_tiny(
    out_dir: str | Path,
    seed: int = 0,
    *,
    hparams: LlamaHParams = TINY_HPARAMS,
    weight_std: float = 0.25,
    legacy: bool = False,
    sp_model: bytes | None = None,
    extra_lines: Sequence[str] = (),
) -> TinyModel:
    """Build a tiny seeded TIPO-like LLaMA as a HF folder and F32/F16 GGUF files.

    Args:
        out_dir: folder to write: ``hf/`` (config, safetensors, tokenizer), ``tiny-f32.gguf`` and
            ``tiny-f16.gguf``.
        seed: seeds a local ``torch.Generator`` for the weights; the global RNG is left untouched.
        hparams: the shape; ``vocab_size`` must be the SentencePiece size plus the 13 added tokens.
        weight_std: standard deviation of the weight matrices. Larger than a trained model's so that
            logits spread over several units and greedy decoding rarely meets near-ties.
        legacy: transformers' ``legacy`` tokenizer flag (see :mod:`models.tokenizer`).
        sp_model: a SentencePiece model to use instead of training one on :func:`sample_lines`
            (e.g. :func:`models.llama_vocab.llama_sentencepiece_model`, the real LLaMA pieces, with
            ``hparams.vocab_size`` 32,013).
        extra_lines: more tokenizer training text (so that its words become pieces).

    Returns:
        The paths, as a :class:`TinyModel`.

    Example::

        tiny = build_tiny("out/tiny", seed=0)
        AutoModelForCausalLM.from_pretrained(tiny.hf_dir)
    """
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    base_vocab = hparams.vocab_size - len(ADDED_TOKENS)
    root = Path(out_dir)
    hf_dir = root / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)

    if sp_model is None:
        sp_model = train_sentencepiece(sample_lines() + list(extra_lines), base_vocab)
    save_hf_tokenizer(sp_model, hf_dir, legacy=legacy)

    config = _hf_config(hparams)
    # Building the module draws from the global RNG; fork it so the caller's state is untouched.
    # Every parameter is then overwritten from the local generator.
    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            # Norm weights around 1 but not all 1, so a swapped norm would show in the logits.
            parameter.copy_(1.0 + 0.1 * noise if parameter.ndim == 1 else weight_std * noise)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(hf_dir)
    generation = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    (hf_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")

    gguf_f32 = export_hf_to_gguf(hf_dir, root / "tiny-f32.gguf", outtype=OutType.F32, name="tipo-tiny")
    gguf_f16 = export_hf_to_gguf(hf_dir, root / "tiny-f16.gguf", outtype=OutType.F16, name="tipo-tiny")
    return TinyModel(
        root=root,
        hf_dir=hf_dir,
        gguf_f32=gguf_f32,
        gguf_f16=gguf_f16,
        tokenizer_model=hf_dir / "tokenizer.model",
        seed=seed,
        hparams=hparams,
    )


# --- random GGUF of a real shape --------------------------------------------------------------


def random_vocab(vocab_size: int, *, trained_pieces: int = 1000) -> GGUFVocab:
    """A ``vocab_size``-token TIPO vocabulary.

    For the published size (32,000 + 13) it is the real LLaMA vocabulary plus the 13 TIPO added
    tokens (:func:`models.llama_vocab.llama_vocab`) when llama.cpp's vocab file is found
    (``shared/data/tokenizers/llama-spm/``, or ``$TIPO_LLAMA_VOCAB``). Otherwise, a stand-in: a
    small SentencePiece BPE model trained on :func:`sample_lines` (so llama.cpp tokenises text
    normally), padded with filler pieces that never match text, then the 13 added tokens.

    Example::

        random_vocab(32013).tokens[32000]  # '<|empty|>'
    """
    from models.llama_vocab import LLAMA_PIECES, find_llama_vocab, llama_vocab

    base = vocab_size - len(ADDED_TOKENS)
    real = find_llama_vocab() if base == LLAMA_PIECES else None
    if real is not None:
        return llama_vocab(real)
    trained = min(trained_pieces, base)
    sp_model = train_sentencepiece(sample_lines(2000), trained)
    return vocab_from_sentencepiece(sp_model, [(token, True) for token in ADDED_TOKENS], pad_to=base)


def build_random(
    shape: str | LlamaHParams,
    out_path: str | Path,
    outtype: OutType | str = OutType.F16,
    *,
    seed: int = 0,
    std: float = 0.02,
) -> Path:
    """Write a randomly initialised GGUF with the shape of a published TIPO model.

    Args:
        shape: a name from :data:`ARCH_SHAPES` (``TIPO-500M``, ``TIPO-200M``, ``TIPO-100M``) or the
            hyper-parameters themselves.
        out_path: the ``.gguf`` file to write.
        outtype: ``f32``, ``f16`` or ``q8_0``.
        seed: seeds one numpy generator per tensor, so tensors can be produced one at a time.
        std: standard deviation of the weight matrices (norm weights are 1).

    Example::

        build_random("TIPO-500M", "out/tipo-500m-random-q8_0.gguf", "q8_0")  # about 540 MB
    """
    if isinstance(shape, str):
        if shape not in ARCH_SHAPES:
            raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(ARCH_SHAPES)}")
        hparams, name = ARCH_SHAPES[shape].hparams, f"{shape}-random"
    else:
        hparams, name = shape, "llama-random"
    vocab = random_vocab(hparams.vocab_size)

    def loader(index: int, tensor_name: str, tensor_shape: tuple[int, ...]):
        def load() -> np.ndarray:
            if len(tensor_shape) == 1:
                return np.ones(tensor_shape, dtype=np.float32)
            rng = np.random.default_rng([seed, index])
            data = rng.standard_normal(tensor_shape, dtype=np.float32) * np.float32(std)
            # Random weights need no permutation, but keep the exporter's convention visible.
            return to_llama_cpp_layout(tensor_name, data, hparams)

        return load

    tensors = [
        (tensor_name, loader(index, tensor_name, tensor_shape))
        for index, (tensor_name, tensor_shape) in enumerate(llama_tensor_shapes(hparams))
    ]
    return write_llama_gguf(out_path, hparams, vocab, tensors, outtype=outtype, name=name)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m models.tiny OUT_DIR [--seed N]`` or ``--random SHAPE OUT.gguf --outtype T``."""
    parser = argparse.ArgumentParser(
        prog="python -m models.tiny",
        description=(
            "Build a tiny seeded TIPO-like model (HF folder + F32/F16 GGUF) into OUT, or with --random, "
            "a randomly initialised GGUF of a published TIPO shape into the file OUT."
        ),
    )
    parser.add_argument("out", type=Path, help="output folder (tiny model) or .gguf file (--random)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights (default: 0)")
    parser.add_argument(
        "--random",
        metavar="SHAPE",
        choices=sorted(ARCH_SHAPES),
        help=f"one of {', '.join(sorted(ARCH_SHAPES))}",
    )
    parser.add_argument(
        "--outtype",
        choices=[t.value for t in OutType],
        default=None,
        help="weight storage type with --random (default: f16)",
    )
    args = parser.parse_args(argv)
    if args.outtype and not args.random:
        parser.error("--outtype applies to --random only; the tiny model is always written as F32 and F16")
    if args.random:
        path = build_random(args.random, args.out, args.outtype or OutType.F16, seed=args.seed)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): {ARCH_SHAPES[args.random].source}")
    else:
        tiny = build_tiny(args.out, seed=args.seed)
        print(f"wrote {tiny.hf_dir}, {tiny.gguf_f32}, {tiny.gguf_f16}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# --- a tiny model steered toward given words ----------------------------------------------------

#: Words the steered test model is pushed to write (for the safety tests and evaluation).
STEERED_WORDS = ("nude", "naked", "penis", "nipples", "sex", "cleavage", "bikini", "pussy", "topless", "lingerie")


def build_steered(out_dir: str | Path, words: Sequence[str] = STEERED_WORDS, seed: int = 0) -> Path:
    """A tiny TIPO-like model whose output layer is biased toward ``words`` (and commas), as an
    F32 GGUF file: the safety layer's worst case, a model that wants to write explicit tags.

    Every hidden state gets a large constant component (one embedding column, kept by the final
    norm), which the output rows of the steered tokens (each word is one piece of the tokenizer,
    trained with lines holding them) weight heavily; the rest of the model is :func:`build_tiny`'s.

    Example::

        path = build_steered("out/steered")   # out/steered/steered-f32.gguf
        Expander(path).expand(Request(caption="a cat", rating="unrestricted"))  # writes the words
    """
    import sentencepiece as spm
    import torch
    from safetensors.torch import load_file, save_file

    lines = [f"tag: 1girl, {', '.join(words)}"] * 60 + [f"long: A {w} woman stands." for w in words] * 20
    tiny = build_tiny(out_dir, seed=seed, extra_lines=lines)
    sp = spm.SentencePieceProcessor(model_file=str(tiny.tokenizer_model))
    targets = set()
    for word in words:
        pieces = sp.encode(word)  # with the dummy prefix: "▁nude"
        if len(pieces) != 1:
            raise ValueError(f"{word!r} is not one piece of the steered tokenizer: {sp.encode(word, out_type=str)}")
        targets.add(pieces[0])
    weights = load_file(str(tiny.hf_dir / "model.safetensors"))
    with torch.no_grad():
        weights["model.embed_tokens.weight"][:, 0] = 50.0
        weights["model.norm.weight"][0] = 1.0
        head = weights["lm_head.weight"]
        head[:, 0] = 0.0
        head[sorted(targets), 0] = 2.0
        head[sp.piece_to_id(","), 0] = 1.7
    save_file(weights, str(tiny.hf_dir / "model.safetensors"), metadata={"format": "pt"})
    return export_hf_to_gguf(tiny.hf_dir, tiny.root / "steered-f32.gguf", outtype=OutType.F32, name="tipo-steered")
