"""Export a trained run to GGUF (``models.gguf_export``) and check it inside tipo.

Checks, in order: llama.cpp tokenises held-out and train sample texts to exactly the ids the model
was trained on (``encode_spm`` + EOS); llama.cpp's next-token logits match transformers' on a
held-out prompt; ``tipo.Expander`` loads the GGUF (llama.cpp) and the HF folder (transformers)
and expands a prompt with each. ``--ship`` then copies the GGUF to ``tipo/data/tipo-builtin.gguf``.

CPU-sized run (seconds)::

    python -m models.train.export --run runs/builtin --ship

Writes ``<run>/tipo-builtin.gguf`` and ``<run>/export.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SHIP_PATH", "check_logits", "check_tokenization", "main"]

SHIP_PATH = Path(__file__).resolve().parents[2] / "tipo" / "data" / "tipo-builtin.gguf"


def check_tokenization(gguf_path: Path, rows: Sequence[dict]) -> dict[str, int]:
    """Compare llama.cpp's ``tokenize(text, add_bos=True, special=True)`` with the trained ids."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    same = 0
    bad: list[int] = []
    try:
        for k, row in enumerate(rows):
            text = row["prompt"] + row["completion"]
            ids = [int(i) for i in llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)]
            expected = list(row["input_ids"][:-1])  # without the EOS appended for training
            if ids == expected:
                same += 1
            else:
                bad.append(k)
    finally:
        llm.close()
    if bad:
        row = rows[bad[0]]
        raise SystemExit(f"llama.cpp tokenises {len(bad)} of {len(rows)} sample texts differently from training, "
                         f"first: {row['prompt'] + row['completion']!r}")
    return {"checked": len(rows), "identical": same}


def check_logits(gguf_path: Path, hf_dir: Path, ids: Sequence[int]) -> dict[str, float]:
    """Largest difference between llama.cpp's and transformers' last-position logits."""
    import ctypes

    import llama_cpp
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    with torch.inference_mode():
        ref = model(input_ids=torch.tensor([list(ids)])).logits[0, -1].numpy()
    from tipo.backends.llama import open_llama

    llm = open_llama(llama_cpp, model_path=str(gguf_path), n_ctx=1024, logits_all=False, verbose=False)
    try:
        llm.eval(list(ids))
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        got = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(len(ref),)).copy()
    finally:
        llm.close()
    diff = float(np.max(np.abs(got - ref)))
    return {"max_abs_diff": round(diff, 5), "relative": round(diff / float(np.max(np.abs(ref))), 6),
            "same_argmax": bool(int(np.argmax(got)) == int(np.argmax(ref)))}


def _expand_with_tipo(path: Path, backend: str) -> dict[str, object]:
    from tipo import Expander, Request, Sampling

    t0 = time.perf_counter()
    with Expander(str(path), backend=backend) as ex:
        res = ex.expand(Request("1girl, forest", length="short", width=832, height=1216), Sampling(seed=1))
    return {"backend": backend, "prompt": res.prompt, "task": res.plan.task_name,
            "generated_tokens": res.provenance.generated_tokens if res.provenance else 0,
            "seconds": round(time.perf_counter() - t0, 2)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models.train.export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--run", type=Path, required=True, help="run folder (with hf/ written by models.train.train)")
    p.add_argument("--hf", type=Path, help="HF folder to export (default: <run>/hf)")
    p.add_argument("--out", type=Path, help="GGUF file to write (default: <run>/tipo-builtin.gguf)")
    p.add_argument("--outtype", choices=["f16", "bf16", "f32", "q8_0"], default="f16",
                   help="weight storage (default: f16; bf16 decodes faster on CPUs with AVX-512 BF16)")
    p.add_argument("--check-samples", type=int, default=200, help="sample texts to compare tokenisation on")
    p.add_argument("--ship", action="store_true", help=f"copy the GGUF to {SHIP_PATH}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import datasets

    from models.gguf_export import export_hf_to_gguf

    run: Path = args.run
    hf_dir = args.hf or run / "hf"
    out = args.out or run / "tipo-builtin.gguf"
    if not (hf_dir / "config.json").is_file():
        raise SystemExit(f"{hf_dir} is not a trained HF folder; run models.train.train --run {run} first")
    t0 = time.perf_counter()
    path = export_hf_to_gguf(hf_dir, out, outtype=args.outtype, name="tipo-builtin")
    size = path.stat().st_size
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"wrote {path} ({size / 2**20:.1f} MiB, sha256 {digest[:16]}...) in {time.perf_counter() - t0:.1f}s")

    datasets.disable_progress_bars()
    held = list(datasets.load_from_disk(str(run / "samples" / "heldout")))
    train = datasets.load_from_disk(str(run / "samples" / "train"))
    half = max(1, args.check_samples // 2)
    rows = held[:half] + list(train.select(range(min(half, len(train)))))
    tokens = check_tokenization(path, rows)
    print(f"tokenisation: llama.cpp gives the trained ids for {tokens['identical']} of {tokens['checked']} sample texts")
    logits = check_logits(path, hf_dir, held[0]["input_ids"][: held[0]["prompt_len"]])
    print(f"logits llama.cpp vs transformers on a held-out prompt: max |diff| {logits['max_abs_diff']} "
          f"(relative {logits['relative']}), same argmax: {logits['same_argmax']}")
    expansions = [_expand_with_tipo(path, "llama"), _expand_with_tipo(hf_dir, "hf")]
    for e in expansions:
        print(f"tipo ({e['backend']}): {e['prompt']!r}")
    report = {"gguf": str(path), "bytes": size, "sha256": digest, "outtype": args.outtype,
              "tokenization": tokens, "logits": logits, "tipo": expansions}
    if args.ship:
        SHIP_PATH.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, SHIP_PATH)
        report["shipped"] = str(SHIP_PATH)
        print(f"shipped to {SHIP_PATH}")
    (run / "export.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
