"""Aggregate tokens/s of Expander.expand_batch at several batch sizes, against sequential expansion
and against raw llama-cpp-python batched decoding written on its low-level API, in one run.

    python -m eval.bench_batch                            # TIPO-500M shape, F16 and Q8_0, 1 thread
    python -m eval.bench_batch --formats q8_0 --sizes 1,4,16 --requests 32
    python -m eval.bench_batch --hf                       # also transformers fp32/bf16 (TIPO-500M shape)
    python -m eval.bench_batch --shared                   # prefill sharing on/off, requests with common prefixes

Models are random GGUF files of the TIPO-500M shape (``models.tiny.build_random``, cached in
``--cache``). Every configuration decodes the same requests with fixed seeds; the raw engine
decodes, per request, the prompt tokens tipo planned and as many new tokens as tipo wrote for it
(argmax, no rules), with the same batch size, several sequences per ``llama_decode`` and a
sequence leaving when it has its count. "seq" is tipo's one-at-a-time ``expand`` over the same
requests. Ratios are printed from wall time and from the process's CPU time (steadier on a loaded
machine, where the CPU share a process gets drifts). expand_batch runs with prefill sharing off here, so that it evaluates the very tokens
the raw engine does (``--shared`` measures sharing on against off). The machine's load moves the
figures; the ratios of one run are the comparable part.
"""

from __future__ import annotations

import argparse
import ctypes
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

TAGS = ["1girl, forest", "1boy, city, night", "scenery, sky, cloud", "cat, window, sunlight", "2girls, beach",
        "dragon, castle, fantasy", "solo, smile, glasses", "car, road, rain"]


def requests(n: int):  # noqa: ANN201
    from tipo import Request

    lengths = ["very_short", "short", "long", "very_long"]
    return [Request(TAGS[i % len(TAGS)], length=lengths[i % len(lengths)], output="tags") for i in range(n)]


def shared_requests(n: int):  # noqa: ANN201
    """Requests with the same meta and target lines (a captioning job's usual shape), each tag
    set twice in a row (two variations: identical requests, other seeds)."""
    from tipo import Request

    return [Request(f"masterpiece, absurdres, {TAGS[(i // 2) % len(TAGS)]}", rating="general", aspect_ratio=0.7,
                    length="long", output="tags") for i in range(n)]


def samplings(n: int, max_new: int):  # noqa: ANN201
    from tipo import Sampling

    return [Sampling(seed=i, max_new_tokens=max_new) for i in range(n)]


def raw_batched(path: Path, prompts: list[list[int]], counts: list[int], batch: int,
                threads: int) -> tuple[float, float]:
    """Wall and CPU seconds for raw llama.cpp to decode counts[i] tokens after prompts[i], ``batch`` sequences
    per llama_decode (a sequence leaves when done, the next joins), argmax sampling."""
    import llama_cpp as lc

    from tipo.backends.llama import plain_buffers_needed

    lc.llama_backend_init()
    mparams = lc.llama_model_default_params()
    if plain_buffers_needed(lc):
        mparams.use_extra_bufts = False  # as tipo's backend loads it (AMX buffers crash on Q8_0)
    model = lc.llama_model_load_from_file(str(path).encode(), mparams)
    need = max(len(p) + c for p, c in zip(prompts, counts, strict=True))
    cparams = lc.llama_context_default_params()
    cparams.n_seq_max = batch
    cparams.n_ctx = batch * (-(-need // 256) * 256)
    cparams.n_batch = max(512, sum(len(p) for p in prompts) + batch)  # one llama_decode takes any step
    cparams.n_ubatch = 512
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.flash_attn_type = 0
    cparams.kv_unified = False
    ctx = lc.llama_init_from_model(model, cparams)
    n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    mem = lc.llama_get_memory(ctx)
    b = lc.llama_batch_init(cparams.n_batch, 0, 1)
    waiting = list(range(len(prompts)))
    slots: dict[int, list[int]] = {}  # slot -> [request, pos, written, next token]
    free = list(range(batch))
    t0, c0 = time.perf_counter(), time.process_time()
    while waiting or slots:
        feed = []
        while free and waiting:
            r = waiting.pop(0)
            s = free.pop(0)
            slots[s] = [r, 0, 0, -1]
            feed.append((s, prompts[r]))
        feed += [(s, [st[3]]) for s, st in slots.items() if st[3] >= 0]
        i = 0
        last = {}
        for s, toks in feed:
            pos = slots[s][1]
            for k, t in enumerate(toks):
                b.token[i], b.pos[i], b.n_seq_id[i] = t, pos + k, 1
                b.seq_id[i][0] = s
                b.logits[i] = k == len(toks) - 1
                i += 1
            last[s] = i - 1
            slots[s][1] += len(toks)
        b.n_tokens = i
        if lc.llama_decode(ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        for s, idx in last.items():
            ptr = lc.llama_get_logits_ith(ctx, idx)
            logits = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))
            st = slots[s]
            st[2] += 1
            if st[2] >= counts[st[0]]:
                del slots[s]
                lc.llama_memory_seq_rm(mem, s, -1, -1)
                free.append(s)
            else:
                st[3] = int(np.argmax(logits))
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    lc.llama_batch_free(b)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return secs, cpu


def bench_model(label: str, model: str, backend: str, sizes: list[int], n: int, seq_n: int, max_new: int,
                threads: int, raw: bool, **options: object) -> list[str]:
    from tipo import Expander, plan

    reqs, samps = requests(n), samplings(n, max_new)
    rows = []
    with Expander(model, backend=backend, n_threads=threads, **options) as ex:
        ex.expand_batch(reqs[:2], samps[:2], batch_size=2)  # warm up both paths
        ex.expand(reqs[0], samps[0])
        t0, c0 = time.perf_counter(), time.process_time()
        seq = [ex.expand(r, s) for r, s in zip(reqs[:seq_n], samps[:seq_n], strict=True)]
        seq_tokens = sum(e.provenance.generated_tokens for e in seq)
        seq_tps, seq_cpu_tps = seq_tokens / (time.perf_counter() - t0), seq_tokens / (time.process_time() - c0)
        prompts = [ex.backend.encode(plan(r, table=ex.table).prompt) for r in reqs]
        for size in sizes:
            t0, c0 = time.perf_counter(), time.process_time()
            out = ex.expand_batch(reqs, samps, batch_size=size, share_prefixes=False)  # the raw engine's work
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            tokens = sum(e.provenance.generated_tokens for e in out)
            same = all(a.to_dict(timings=False) == b.to_dict(timings=False) for a, b in zip(seq, out, strict=False))
            counts = [max(1, e.provenance.generated_tokens) for e in out]
            raw_secs, raw_cpu = raw_batched(Path(model), prompts, counts, size, threads) if raw else (0.0, 0.0)
            tps = tokens / secs
            rows.append(f"| {label} | {size} | {tps:.1f} | {seq_tps:.1f} | {tps / seq_tps:.2f}x | "
                        + (f"{tokens / raw_secs:.1f} | {raw_secs / secs:.2f}x" if raw else "- | -")
                        + f" | {tokens / cpu / seq_cpu_tps:.2f}x | " + (f"{raw_cpu / cpu:.2f}x" if raw else "-")
                        + f" | {'yes' if same else 'NO'} |")
            print(rows[-1], flush=True)
    return rows


def bench_sharing(label: str, model: str, backend: str, sizes: list[int], n: int, max_new: int, threads: int,
                  **options: object) -> list[str]:
    """expand_batch over :func:`shared_requests` with prefill sharing on and off, per batch size;
    each twice, in the order on, off, off, on, so that a load that drifts during the run weighs on
    both alike (the figures add up both runs)."""
    from tipo import Expander

    reqs, samps = shared_requests(n), samplings(n, max_new)
    rows = []
    with Expander(model, backend=backend, n_threads=threads, **options) as ex:
        ex.expand_batch(reqs[:2], samps[:2], batch_size=2)  # warm up
        for size in sizes:
            runs: dict[bool, tuple] = {}
            for share in (True, False, False, True):
                t0 = time.perf_counter()
                out = ex.expand_batch(reqs, samps, batch_size=size, share_prefixes=share)
                secs = time.perf_counter() - t0
                st = ex.batch_stats
                tokens = sum(e.provenance.generated_tokens for e in out)
                if share in runs:
                    tokens, secs = tokens + runs[share][5], secs + runs[share][4]
                runs[share] = (out, tokens / secs, st.prompt_tokens, st.shared_tokens, secs, tokens)
            on, off = runs[True], runs[False]
            same = [a.to_dict(timings=False) for a in on[0]] == [b.to_dict(timings=False) for b in off[0]]
            rows.append(f"| {label} | {size} | {on[1]:.1f} | {off[1]:.1f} | {on[1] / off[1]:.2f}x | "
                        f"{on[2]} ({on[3]} shared) | {off[2]} | {on[4]:.1f} / {off[4]:.1f} | {'yes' if same else 'NO'} |")
            print(rows[-1], flush=True)
    return rows


def random_hf(folder: Path) -> Path:
    """A random TIPO-500M-shape HF folder with the tiny test model's tokenizer (ids past it decode to nothing)."""
    import torch
    from transformers import LlamaForCausalLM

    from models.tiny import ARCH_SHAPES, _hf_config, build_tiny

    if (folder / "config.json").exists():
        return folder
    tiny = build_tiny(folder.parent / "tiny-for-tokenizer", seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(_hf_config(ARCH_SHAPES["TIPO-500M"].hparams))
    model.save_pretrained(folder)
    for f in Path(tiny.hf_dir).iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            (folder / f.name).write_bytes(f.read_bytes())
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.bench_batch", description=__doc__.split("\n")[0])
    p.add_argument("--formats", default="f16,q8_0",
                   help="GGUF types of the TIPO-500M shape (default: f16,q8_0; '' for none, e.g. with --hf)")
    p.add_argument("--sizes", default="1,4,16,64", help="batch sizes (default: 1,4,16,64)")
    p.add_argument("--requests", type=int, default=64, help="requests per configuration (default: 64)")
    p.add_argument("--seq-requests", type=int, default=8, help="of those, expanded one at a time (default: 8)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", action="append", default=[], metavar="GGUF",
                   help="benchmark these .gguf files instead of the random TIPO-500M ones (repeatable)")
    p.add_argument("--hf", action="store_true", help="also transformers fp32 and bf16")
    p.add_argument("--shared", action="store_true",
                   help="instead: prefill sharing on and off over requests with the same meta and target lines")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "tipo-bench"), help="where models are built")
    args = p.parse_args(argv)

    sizes = [int(x) for x in args.sizes.split(",")]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if args.shared:
        return main_shared(args, sizes, cache)
    print(f"{args.requests} requests (tags only, four length classes), at most {args.max_new_tokens} new tokens, "
          f"{args.threads} thread(s); seq = one at a time over the first {args.seq_requests}\n")
    print("| model | batch | expand_batch tok/s | seq tok/s | vs seq | raw llama.cpp batched tok/s | vs raw "
          "| vs seq, CPU time | vs raw, CPU time | same results as seq |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for c in _contenders(args, cache, sizes):
        bench_model(c.label, c.path, c.backend, c.sizes, c.requests, c.seq_requests, args.max_new_tokens,
                    args.threads, raw=c.backend == "llama", **c.options)
    return 0


class _Contender(NamedTuple):
    label: str
    path: str
    backend: str
    sizes: list[int]
    requests: int
    seq_requests: int
    options: dict[str, object]


def _contenders(args: argparse.Namespace, cache: Path, sizes: list[int]) -> Iterator[_Contender]:
    """Every model the arguments ask for, in table order: the given files, else the random
    TIPO-500M-shape GGUFs (built on first use), then transformers (batch sizes up to 16, at most 16
    requests and 4 sequential ones: a CPU forward of that shape is slow)."""
    from models.tiny import build_random

    for given in args.model:
        yield _Contender(Path(given).name, given, "llama", sizes, args.requests, args.seq_requests, {})
    for fmt in [] if args.model else [f for f in args.formats.split(",") if f]:
        path = cache / f"tipo-500m-random-{fmt}.gguf"
        if not path.exists():
            build_random("TIPO-500M", str(path), fmt)
        yield _Contender(f"500M {fmt.upper()} llama.cpp", str(path), "llama", sizes, args.requests,
                         args.seq_requests, {})
    if args.hf:
        import torch

        torch.set_num_threads(args.threads)
        folder = str(random_hf(cache / "tipo-500m-random-hf"))
        for dtype in ("float32", "bfloat16"):
            yield _Contender(f"500M {dtype} transformers", folder, "hf", [s for s in sizes if s <= 16],
                             min(args.requests, 16), min(args.seq_requests, 4), {"dtype": dtype})


def main_shared(args: argparse.Namespace, sizes: list[int], cache: Path) -> int:
    print(f"{args.requests} requests with the same meta and target lines, each tag set twice (other seeds), "
          f"at most {args.max_new_tokens} new tokens, {args.threads} thread(s)\n")
    print("| model | batch | shared tok/s | unshared tok/s | shared vs unshared | prompt tokens evaluated, shared "
          "| prompt tokens evaluated, unshared | seconds shared / unshared (two runs each) | same results |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for c in _contenders(args, cache, sizes):
        bench_sharing(c.label, c.path, c.backend, c.sizes, c.requests, args.max_new_tokens, args.threads, **c.options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
