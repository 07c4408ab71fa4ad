"""Turn a LLaMA GGUF (tipo's built-in model, or one ``models.train.export`` wrote) back into a Hugging
Face folder: weights through transformers' GGUF loader, and a tokenizer folder (``tokenizer.model``
with the file's pieces, scores and types, plus the 13 TIPO added tokens) that ``prepare --tokenizer``
and ``train --init-from`` take. This is how a run continues training a shipped GGUF::

    python -m models.train.unpack tipo/data/tipo-builtin.gguf --out runs/base
    python -m models.train.prepare --out runs/ft --tokenizer runs/base
    python -m models.train.train --run runs/ft --init-from runs/base --lr 1e-3 --max-steps 700

The tokenizer is checked: on sample texts it must give the same ids as llama.cpp's tokenizer of the
GGUF (``--check-texts``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "unpack"]

_CHECK = [
    "target: <|very_short|> <|tag_to_long|>\ntag: 1girl, cat, window sill\nlong:",
    "aspect ratio: 1.5\nshort: A man riding a horse on the beach.",
    "Two planes fly in the air near each other, 1234 times!",
]


def unpack(gguf_path: Path, out: Path, check_texts: Sequence[str] = _CHECK) -> dict[str, int]:
    """Write ``out`` (``config.json``, ``model.safetensors``, tokenizer files) from ``gguf_path``.

    Returns ``{"texts": n, "mismatches": k}`` of the tokenizer check against llama.cpp.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from models.llama_vocab import llama_sentencepiece_model
    from models.tokenizer import save_hf_tokenizer

    from .prepare import Tokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise SystemExit(f"{gguf_path} does not exist; give a GGUF file")
    with torch.random.fork_rng(devices=[]):
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                      dtype=torch.float32)
        # transformers marks a GGUF-loaded model as not serialisable; a plain copy of it is.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    save_hf_tokenizer(llama_sentencepiece_model(gguf_path, pieces=None), out)
    tok = Tokenizer(out)
    if tok.vocab_size != model.config.vocab_size:
        raise SystemExit(f"{gguf_path}: tokenizer has {tok.vocab_size} ids but the model {model.config.vocab_size}")

    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    bad = sum(tok.encode(t) != llm.tokenize(t.encode("utf-8"), add_bos=True, special=True) for t in check_texts)
    return {"texts": len(check_texts), "mismatches": bad}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.train.unpack", description=__doc__.split("\n\n")[0])
    p.add_argument("gguf", type=Path, help="LLaMA GGUF to unpack")
    p.add_argument("--out", type=Path, required=True, help="HF folder to write")
    p.add_argument("--check-texts", type=Path,
                   help="text file, one text per line, to compare tokenisation on (default: a few built-in lines)")
    args = p.parse_args(argv)
    texts = _CHECK
    if args.check_texts is not None:
        texts = [t for t in args.check_texts.read_text(encoding="utf-8").splitlines() if t]
    check = unpack(args.gguf, args.out, texts)
    print(f"wrote {args.out}; tokenizer vs llama.cpp on {check['texts']} texts: {check['mismatches']} mismatches")
    return 1 if check["mismatches"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
