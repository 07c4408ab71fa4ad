"""Write LLaMA checkpoints as GGUF files for llama.cpp.

Reads a Hugging Face LLaMA folder (``config.json``, ``*.safetensors``, the SentencePiece
``tokenizer.model`` and the added tokens of ``tokenizer.json``) and writes one GGUF file with
``gguf.GGUFWriter``: the llama hyper-parameters, the SentencePiece vocabulary with scores and token
types, and the tensors under llama.cpp's names, with the Q and K projections permuted to llama.cpp's
rotary layout. numpy only: torch is not needed.

Example (CPU, a few seconds for a tiny model)::

    python -m models.gguf_export out/tiny/hf out/tiny.gguf --outtype f16

or from Python::

    from models.gguf_export import export_hf_to_gguf
    export_hf_to_gguf("out/tiny/hf", "out/tiny.gguf", outtype="f16")

The file is written to a temporary name next to the target and renamed at the end, so an error
never leaves a half-written GGUF behind.
"""

from __future__ import annotations

import argparse
import enum
import json
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tipo.backends.validate import LLAMA_GLOBAL_TENSORS, LLAMA_LAYER_TENSORS, LlamaShape
from tipo.backends.validate import gguf_tensor_name as key_to_gguf_name
from tipo.backends.validate import llama_tensor_shapes as tipo_tensor_shapes

#: Loads one tensor as float32, already in the layout llama.cpp wants.
TensorLoader = Callable[[], np.ndarray]


class OutType(str, enum.Enum):
    """Storage type of the 2-D weight matrices (norm vectors always stay F32)."""

    F32 = "f32"
    F16 = "f16"
    BF16 = "bf16"
    Q8_0 = "q8_0"


@dataclass(frozen=True)
class LlamaHParams:
    """Hyper-parameters of a LLaMA model, as llama.cpp needs them."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    context_length: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for field in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "intermediate_size",
        ):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_parameters(self) -> int:
        """Number of parameters, with untied input and output embeddings."""
        kv = self.num_kv_heads * self.head_dim
        attention = 2 * self.hidden_size * self.hidden_size + 2 * self.hidden_size * kv
        mlp = 3 * self.hidden_size * self.intermediate_size
        per_layer = attention + mlp + 2 * self.hidden_size
        return self.num_layers * per_layer + 2 * self.vocab_size * self.hidden_size + self.hidden_size

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> LlamaHParams:
        """Read the hyper-parameters from a transformers ``config.json`` (4.x or 5.x layout)."""
        if config.get("model_type", "llama") != "llama":
            raise ValueError(f"expected a llama config, got model_type={config.get('model_type')!r}")
        rope = config.get("rope_parameters") or {}
        rope_type = rope.get("rope_type", "default")
        if rope_type != "default" or config.get("rope_scaling"):
            raise ValueError(f"rope scaling is not supported by this exporter (rope_type={rope_type!r})")
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim")
        if head_dim is not None and head_dim * heads != config["hidden_size"]:
            raise ValueError(
                f"head_dim={head_dim} with {heads} heads does not cover hidden_size={config['hidden_size']}; "
                "llama.cpp's llama architecture needs head_dim = hidden_size / num_attention_heads"
            )
        return cls(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            intermediate_size=config["intermediate_size"],
            context_length=config.get("max_position_embeddings", 2048),
            rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        )


@dataclass(frozen=True)
class GGUFVocab:
    """A SentencePiece ("llama") vocabulary for GGUF: pieces, scores and ``gguf.TokenType`` values."""

    tokens: tuple[str, ...]
    scores: tuple[float, ...]
    types: tuple[int, ...]
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 0
    pad_id: int = 2
    add_space_prefix: bool = True

    def __post_init__(self) -> None:
        if not len(self.tokens) == len(self.scores) == len(self.types):
            raise ValueError("tokens, scores and types must have the same length")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("vocabulary pieces must be unique")
        for name in ("bos_id", "eos_id", "unk_id", "pad_id"):
            if not 0 <= getattr(self, name) < len(self.tokens):
                raise ValueError(
                    f"{name}={getattr(self, name)} is outside the vocabulary of {len(self.tokens)}"
                )


def vocab_from_sentencepiece(
    sp_model: bytes | str | Path,
    added_tokens: Sequence[tuple[str, bool]] = (),
    *,
    pad_to: int | None = None,
) -> GGUFVocab:
    """Build the GGUF vocabulary of a SentencePiece model plus added tokens.

    Args:
        sp_model: the ``tokenizer.model`` bytes or path.
        added_tokens: ``(text, special)`` pairs appended after the pieces (and after the padding);
            special ones become CONTROL tokens, others USER_DEFINED. llama.cpp matches both kinds
            as one token (CONTROL ones only when tokenizing with ``special=True``).
        pad_to: append unused filler pieces until the base vocabulary has this many pieces (used
            to give a small trained model the 32,000-piece shape of LLaMA-2). Fillers start with a
            private-use character and no merge can reach them, so text never tokenises into them.

    Example::

        vocab = vocab_from_sentencepiece("hf/tokenizer.model", [("<|long|>", True)])
    """
    from gguf import TokenType

    from models.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, load_sentencepiece

    sp = load_sentencepiece(sp_model)
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            types.append(TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(TokenType.CONTROL)
        elif sp.is_unused(i):
            types.append(TokenType.UNUSED)
        elif sp.is_byte(i):
            types.append(TokenType.BYTE)
        else:
            types.append(TokenType.NORMAL)
    if pad_to is not None:
        if pad_to < len(tokens):
            raise ValueError(f"pad_to={pad_to} is smaller than the {len(tokens)} pieces of the model")
        lowest = min(scores)
        for i in range(pad_to - len(tokens)):
            tokens.append(f"\ue000{i:05d}")
            scores.append(lowest - 1.0 - i)
            types.append(TokenType.UNUSED)
    for text, special in added_tokens:
        tokens.append(text)
        scores.append(-1000.0)
        types.append(TokenType.CONTROL if special else TokenType.USER_DEFINED)
    # With a dummy prefix, SentencePiece turns "a" into "▁a".
    add_space_prefix = sp.encode("a", out_type=str)[0].startswith("\u2581")
    return GGUFVocab(
        tokens=tuple(tokens),
        scores=tuple(scores),
        types=tuple(int(t) for t in types),
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        pad_id=PAD_ID,
        add_space_prefix=add_space_prefix,
    )


def to_llama_cpp_layout(gguf_name: str, data: np.ndarray, hparams: LlamaHParams) -> np.ndarray:
    """A tensor in llama.cpp's layout: Q and K weights permuted to its rotary order, others as is."""
    if gguf_name.endswith("attn_q.weight"):
        return permute_rotary(data, hparams.num_heads)
    if gguf_name.endswith("attn_k.weight"):
        return permute_rotary(data, hparams.num_kv_heads)
    return data


def permute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Reorder the rows of a Q or K projection from HF's rotary layout to llama.cpp's.

    HF rotates the two halves of each head (``rotate_half``); llama.cpp rotates adjacent pairs.
    ``num_heads`` is the number of heads of this projection (the KV heads for K).
    """
    rows = weight.shape[0]
    if rows % (2 * num_heads):
        raise ValueError(f"projection with {rows} rows does not split into {num_heads} heads of even size")
    return (
        weight.reshape(num_heads, 2, rows // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def llama_tensor_shapes(hparams: LlamaHParams) -> list[tuple[str, tuple[int, ...]]]:
    """GGUF tensor names of a llama model with their shapes in numpy (row-major, HF) order: tipo's
    one tensor table (:func:`tipo.backends.validate.llama_tensor_shapes`), which checks them on load."""
    shape = LlamaShape(
        layers=hparams.num_layers, hidden=hparams.hidden_size, heads=hparams.num_heads,
        kv_heads=hparams.num_kv_heads, intermediate=hparams.intermediate_size, vocab=hparams.vocab_size,
        context=hparams.context_length, eps=hparams.rms_norm_eps, rope_theta=hparams.rope_theta,
        head_dim=hparams.head_dim,
    )
    return [(key_to_gguf_name(key), dims) for key, dims in tipo_tensor_shapes(shape).items()]


def _storage_type(shape: Sequence[int], outtype: OutType) -> Any:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    if len(shape) < 2 or outtype is OutType.F32:
        return GGMLQuantizationType.F32
    if outtype is OutType.F16:
        return GGMLQuantizationType.F16
    if outtype is OutType.BF16:
        return GGMLQuantizationType.BF16
    block_size, _ = GGML_QUANT_SIZES[GGMLQuantizationType.Q8_0]
    # Rows that do not split into Q8_0 blocks stay F16, as llama.cpp's converter does.
    return GGMLQuantizationType.Q8_0 if shape[-1] % block_size == 0 else GGMLQuantizationType.F16


def _encode(data: np.ndarray, qtype: Any) -> np.ndarray:
    from gguf import GGMLQuantizationType, quants

    data = np.ascontiguousarray(data, dtype=np.float32)
    if qtype == GGMLQuantizationType.F32:
        return data
    if qtype == GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return quants.quantize(data, qtype)


def _file_type(outtype: OutType) -> int:
    from gguf import LlamaFileType

    return {
        OutType.F32: LlamaFileType.ALL_F32,
        OutType.F16: LlamaFileType.MOSTLY_F16,
        OutType.BF16: LlamaFileType.MOSTLY_BF16,
        OutType.Q8_0: LlamaFileType.MOSTLY_Q8_0,
    }[outtype]


def write_llama_gguf(
    out_path: str | Path,
    hparams: LlamaHParams,
    vocab: GGUFVocab,
    tensors: Iterable[tuple[str, TensorLoader]],
    *,
    outtype: OutType | str = OutType.F16,
    name: str = "llama",
) -> Path:
    """Write a llama GGUF file, streaming one tensor at a time, atomically.

    Args:
        out_path: the ``.gguf`` file to write (replaced if it exists).
        hparams: model hyper-parameters.
        vocab: the tokenizer (its size must equal ``hparams.vocab_size``).
        tensors: ``(gguf_name, loader)`` pairs covering exactly :func:`llama_tensor_shapes`;
            each loader returns a float32 array in HF layout with Q/K already permuted.
        outtype: storage type of the 2-D weights.
        name: ``general.name`` of the model.

    Example::

        write_llama_gguf("x.gguf", hparams, vocab, [(n, lambda s=s: np.zeros(s, np.float32))
                                                    for n, s in llama_tensor_shapes(hparams)])
    """
    import gguf

    outtype = OutType(outtype)
    if len(vocab.tokens) != hparams.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(vocab.tokens)} tokens but the model has vocab_size {hparams.vocab_size}"
        )
    expected = dict(llama_tensor_shapes(hparams))
    loaders = dict(tensors)
    missing, extra = sorted(set(expected) - set(loaders)), sorted(set(loaders) - set(expected))
    if missing or extra:
        raise ValueError(f"tensor set does not match the llama layout: missing {missing}, unexpected {extra}")

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A unique name in the target folder, so the final rename is atomic; opened by the writer
    # itself so the file gets the usual permissions.
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.part")
    writer = gguf.GGUFWriter(tmp, "llama")
    try:
        writer.add_name(name)
        writer.add_context_length(hparams.context_length)
        writer.add_embedding_length(hparams.hidden_size)
        writer.add_block_count(hparams.num_layers)
        writer.add_feed_forward_length(hparams.intermediate_size)
        writer.add_rope_dimension_count(hparams.head_dim)
        writer.add_head_count(hparams.num_heads)
        writer.add_head_count_kv(hparams.num_kv_heads)
        writer.add_layer_norm_rms_eps(hparams.rms_norm_eps)
        writer.add_rope_freq_base(hparams.rope_theta)
        writer.add_vocab_size(hparams.vocab_size)
        writer.add_file_type(_file_type(outtype))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

        writer.add_tokenizer_model("llama")
        writer.add_token_list(list(vocab.tokens))
        writer.add_token_scores(list(vocab.scores))
        writer.add_token_types(list(vocab.types))
        writer.add_bos_token_id(vocab.bos_id)
        writer.add_eos_token_id(vocab.eos_id)
        writer.add_unk_token_id(vocab.unk_id)
        writer.add_pad_token_id(vocab.pad_id)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(vocab.add_space_prefix)

        order = [tensor_name for tensor_name, _ in llama_tensor_shapes(hparams)]
        qtypes = {}
        for tensor_name in order:
            shape = expected[tensor_name]
            qtype = qtypes[tensor_name] = _storage_type(shape, outtype)
            if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                dtype = np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16
                writer.add_tensor_info(
                    tensor_name, shape, np.dtype(dtype), math.prod(shape) * np.dtype(dtype).itemsize
                )
            else:
                byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
                writer.add_tensor_info(
                    tensor_name, byte_shape, np.dtype(np.uint8), math.prod(byte_shape), raw_dtype=qtype
                )

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor_name in order:
            data = loaders[tensor_name]()
            if tuple(data.shape) != expected[tensor_name]:
                raise ValueError(
                    f"{tensor_name} has shape {tuple(data.shape)}, expected {expected[tensor_name]}"
                )
            writer.write_tensor_data(_encode(data, qtypes[tensor_name]))
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return out


# --- Hugging Face folders ---------------------------------------------------------------------

_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def _safetensors_index(hf_dir: Path) -> dict[str, Path]:
    """Map each tensor name of a HF folder to the safetensors file that holds it."""
    index_file = hf_dir / "model.safetensors.index.json"
    if index_file.is_file():
        weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
        return {name: hf_dir / file for name, file in weight_map.items()}
    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {hf_dir}; save the model with safe_serialization=True")
    index: dict[str, Path] = {}
    for file in files:
        for name in _safetensors_header(file):
            index[name] = file
    return index


def _safetensors_header(file: Path) -> dict[str, Any]:
    with open(file, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
    header.pop("__metadata__", None)
    return header


def _read_safetensor(file: Path, name: str) -> np.ndarray:
    """Read one tensor as float32 with numpy alone (F32, F16 and BF16 are supported)."""
    header = _safetensors_header(file)
    info = header[name]
    dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
    if dtype is None:
        raise ValueError(f"{name} in {file} has dtype {info['dtype']}; only F32, F16 and BF16 are supported")
    start, end = info["data_offsets"]
    with open(file, "rb") as handle:
        base = 8 + int.from_bytes(handle.read(8), "little")
    raw = np.fromfile(file, dtype=np.uint8, count=end - start, offset=base + start).view(dtype)
    if info["dtype"] == "BF16":
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32).reshape(info["shape"])


_HF_NAMES = {f"{hf}.weight": f"{name}.weight" for _, name, hf in LLAMA_GLOBAL_TENSORS}
_HF_LAYER_NAMES = {f"{hf}.weight": f"{name}.weight" for _, name, hf in LLAMA_LAYER_TENSORS}
_LAYER_PATTERN = re.compile(r"model\.layers\.(\d+)\.(.+)")


def gguf_tensor_name(hf_name: str) -> str | None:
    """The llama.cpp name of a HF LLaMA tensor, or None for tensors llama.cpp does not use."""
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    if hf_name in _HF_NAMES:
        return _HF_NAMES[hf_name]
    match = _LAYER_PATTERN.fullmatch(hf_name)
    if match and match.group(2) in _HF_LAYER_NAMES:
        return f"blk.{match.group(1)}.{_HF_LAYER_NAMES[match.group(2)]}"
    raise ValueError(f"unexpected tensor {hf_name!r} in a LLaMA checkpoint")


def _hf_tensor_loaders(hf_dir: Path, hparams: LlamaHParams, tied: bool) -> Iterator[tuple[str, TensorLoader]]:
    index = _safetensors_index(hf_dir)
    names = {gguf_tensor_name(hf_name): hf_name for hf_name in index}
    names.pop(None, None)
    if "output.weight" not in names and tied:
        names["output.weight"] = "model.embed_tokens.weight"

    def loader(hf_name: str, gguf_name: str) -> TensorLoader:
        def load() -> np.ndarray:
            return to_llama_cpp_layout(gguf_name, _read_safetensor(index[hf_name], hf_name), hparams)

        return load

    for gguf_name, hf_name in names.items():
        yield gguf_name, loader(hf_name, gguf_name)


def export_hf_to_gguf(
    hf_dir: str | Path,
    out_path: str | Path,
    *,
    outtype: OutType | str = OutType.F16,
    name: str | None = None,
) -> Path:
    """Convert a HF LLaMA folder with a SentencePiece tokenizer to one GGUF file.

    Args:
        hf_dir: folder with ``config.json``, ``*.safetensors``, ``tokenizer.model`` and, for added
            tokens, ``tokenizer.json`` / ``tokenizer_config.json`` / ``added_tokens.json``.
        out_path: the ``.gguf`` file to write.
        outtype: ``f32``, ``f16``, ``bf16`` or ``q8_0`` for the 2-D weights.
        name: ``general.name`` written into the file; defaults to the folder's name.

    Example::

        export_hf_to_gguf("out/tiny/hf", "out/tiny-f32.gguf", outtype="f32")
    """
    from models.tokenizer import added_tokens_of, load_sentencepiece

    folder = Path(hf_dir)
    for required in ("config.json", "tokenizer.model"):
        if not (folder / required).is_file():
            raise FileNotFoundError(
                f"{folder / required} is missing; a LLaMA HF folder with a SentencePiece model is needed"
            )
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    hparams = LlamaHParams.from_hf_config(config)

    sp_model = (folder / "tokenizer.model").read_bytes()
    base_size = load_sentencepiece(sp_model).get_piece_size()
    added = [
        (token_id, text, special)
        for token_id, text, special in added_tokens_of(folder)
        if token_id >= base_size
    ]
    ids = [token_id for token_id, _, _ in added]
    if ids != list(range(base_size, base_size + len(ids))):
        raise ValueError(
            f"added token ids {ids} do not follow the {base_size} SentencePiece pieces contiguously"
        )
    vocab = vocab_from_sentencepiece(sp_model, [(text, special) for _, text, special in added])
    if len(vocab.tokens) != hparams.vocab_size:
        raise ValueError(
            f"tokenizer has {len(vocab.tokens)} tokens but config.json says vocab_size={hparams.vocab_size}; "
            "padded embedding rows are not supported"
        )
    tensors = _hf_tensor_loaders(folder, hparams, tied=bool(config.get("tie_word_embeddings", False)))
    return write_llama_gguf(
        out_path, hparams, vocab, tensors, outtype=outtype, name=name or folder.resolve().name
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m models.gguf_export HF_DIR OUT.gguf [--outtype f16|bf16|f32|q8_0]``."""
    parser = argparse.ArgumentParser(
        prog="python -m models.gguf_export",
        description="Convert a Hugging Face LLaMA folder (safetensors + SentencePiece tokenizer) to a GGUF file.",
    )
    parser.add_argument(
        "hf_dir", type=Path, help="folder with config.json, *.safetensors and tokenizer.model"
    )
    parser.add_argument("out", type=Path, help="GGUF file to write")
    parser.add_argument(
        "--outtype",
        choices=[t.value for t in OutType],
        default=OutType.F16.value,
        help="storage type of the weight matrices (default: f16; norms always stay f32)",
    )
    args = parser.parse_args(argv)
    path = export_hf_to_gguf(args.hf_dir, args.out, outtype=args.outtype)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
