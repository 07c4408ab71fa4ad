"""Prepare a training run: corpus, split by group, samples, tokenizer, token ids.

CPU-sized run (about a minute on 2 cores)::

    python -m models.train.prepare --out runs/builtin

Smoke-sized run (seconds)::

    python -m models.train.prepare --out /tmp/smoke --limit-coco 60 --limit-dpg 20 --vocab-size 320

Your own data instead of the shipped captions (a ``.jsonl`` with ``tags`` and optional ``short``,
``long``, ``width``, ``height``, ``group``; or a text file with one tag line per picture)::

    python -m models.train.prepare --out runs/mine --data my_tags.jsonl

Fine-tuning a published TIPO checkpoint: reuse ITS tokenizer (the ids must match its weights)::

    python -m models.train.prepare --out runs/ft --data my_tags.jsonl --tokenizer path/to/TIPO-200M-ft

Writes into ``--out``: ``corpus/{train,heldout}.jsonl`` (the records), ``samples/{train,heldout}``
(a ``datasets`` folder each: prompt, completion, task, length, ``input_ids``, ``prompt_len``),
``tokenizer/`` (a Hugging Face tokenizer folder with ``tokenizer.model``) and ``prepare.json``.

Token ids are ``tipo.tokens.encode_spm(prompt + completion)`` then EOS (2): exactly how llama.cpp
tokenises the exported GGUF at inference (checked by ``models.train.export``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tipo.tokens import ADDED_TOKENS, EOS_ID, encode_spm, split_added

from .captions import STOP_ALIASES, STOP_TAGS, CaptionTagger
from .corpus import DATA_DIR, SOURCES, Record, extra_prompts, load_coco, load_dpg, load_user, split_records
from .samples import LENGTH_WEIGHTS, TASK_WEIGHTS, Sample, make_samples, tag_frequencies

__all__ = ["Tokenizer", "load_tokenizer", "main", "tokenize_samples"]


class Tokenizer:
    """A SentencePiece model plus the ids of the 13 added tokens, encoding like llama.cpp."""

    def __init__(self, folder: Path) -> None:
        from models.tokenizer import added_tokens_of, load_sentencepiece

        self.folder = Path(folder)
        self.sp = load_sentencepiece(self.folder / "tokenizer.model")
        found = {text: token_id for token_id, text, _ in added_tokens_of(self.folder)}
        missing = [t for t in ADDED_TOKENS if t not in found]
        if missing:
            raise ValueError(f"the tokenizer in {self.folder} lacks the TIPO added tokens {missing}")
        self.added = {t: found[t] for t in ADDED_TOKENS}
        self.vocab_size = max(self.sp.get_piece_size(), max(self.added.values()) + 1)

    def encode(self, text: str) -> list[int]:
        """BOS + the text, added tokens as one id each (no EOS)."""
        return encode_spm(text, self.sp.encode, self.added)


def load_tokenizer(folder: Path) -> Tokenizer:
    return Tokenizer(folder)


def tokenize_samples(samples: Sequence[Sample], tok: Tokenizer, max_len: int) -> tuple[list[dict], Counter]:
    """Rows with ``input_ids`` (BOS ... EOS) and ``prompt_len``; samples over ``max_len`` are dropped."""
    rows = []
    stats: Counter = Counter()
    for s in samples:
        ids = tok.encode(s.prompt + s.completion) + [EOS_ID]
        prompt_ids = tok.encode(s.prompt)
        # The prompt's tokens are a prefix of the whole text's tokens unless a piece spans the
        # junction; then the loss mask starts where the two agree.
        n = 0
        while n < len(prompt_ids) and n < len(ids) and prompt_ids[n] == ids[n]:
            n += 1
        if n != len(prompt_ids):
            stats["prompt_not_prefix"] += 1
        if len(ids) > max_len:
            stats["dropped_too_long"] += 1
            continue
        stats["kept"] += 1
        stats["tokens"] += len(ids)
        stats["completion_tokens"] += len(ids) - n
        rows.append({**s.to_dict(), "input_ids": ids, "prompt_len": n})
    return rows, stats


def _tokenizer_text(samples: Sequence[Sample], extra: Sequence[str]) -> list[str]:
    # The stretches between added tokens, as encode_spm hands them to SentencePiece.
    out = []
    for s in samples:
        out += [part for part in split_added(s.prompt + s.completion) if part not in ADDED_TOKENS]
    return out + list(extra)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models.train.prepare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    p.add_argument("--data", type=Path, help="your own .jsonl or tag-line text file (default: the shipped data)")
    p.add_argument("--with-shipped", action="store_true", help="with --data: add the shipped data too")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR, help=f"shared data folder (default: {DATA_DIR})")
    p.add_argument("--limit-coco", type=int, help="use only the first N COCO images (smoke runs)")
    p.add_argument("--limit-dpg", type=int, help="use only the first N DPG-Bench prompts (smoke runs)")
    p.add_argument("--heldout", type=float, default=0.05, help="share of groups held out (default: 0.05)")
    p.add_argument("--samples-per-record", type=float, default=4.0, help="train samples per train record (default: 4)")
    p.add_argument("--heldout-samples-per-record", type=float, default=2.0, help="held-out samples per record (default: 2)")
    p.add_argument("--vocab-size", type=int, default=4000, help="SentencePiece pieces before the 13 added tokens (default: 4000)")
    p.add_argument("--tokenizer", type=Path, help="use this HF tokenizer folder (with tokenizer.model) instead of training one")
    p.add_argument("--max-len", type=int, default=512, help="drop samples longer than this many tokens (default: 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the samples (default: 0)")
    p.add_argument("--length-weights", type=_weights(LENGTH_WEIGHTS), default=dict(LENGTH_WEIGHTS),
                   help="share of each length class among the samples, e.g. very_short=0.75,short=0.1 (classes not "
                        "named keep their default; default: "
                        + ",".join(f"{k}={v}" for k, v in LENGTH_WEIGHTS.items()) + ")")
    p.add_argument("--tag-order", choices=("shuffled", "frequency"), default="shuffled",
                   help="order of the tags a sample asks for: shuffled, or most frequent in the train split first "
                        "(default: shuffled)")
    p.add_argument("--task-weights", type=_weights(TASK_WEIGHTS), default=dict(TASK_WEIGHTS),
                   help="share of each task among the samples, e.g. plain=0.4 (tasks not named keep their default; "
                        "default: " + ",".join(f"{k}={v}" for k, v in TASK_WEIGHTS.items()) + ")")
    return p


def _weights(defaults: dict[str, float]):  # noqa: ANN202
    """An argparse type: ``name=weight,...`` over ``defaults`` (names checked, weights >= 0)."""

    def parse(text: str) -> dict[str, float]:
        out = dict(defaults)
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep or name not in defaults:
                raise argparse.ArgumentTypeError(f"{part!r}: give name=weight with a name among {', '.join(defaults)}")
            try:
                out[name] = float(value)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{part!r}: the weight must be a number") from None
            if not out[name] >= 0:
                raise argparse.ArgumentTypeError(f"{part!r}: the weight must be 0 or more")
        if not any(out.values()):
            raise argparse.ArgumentTypeError("at least one weight must be above 0")
        return out

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cache = out / ".datasets-cache"

    # 1. records
    tagger = CaptionTagger.from_table()
    records: list[Record] = []
    sources = []
    if args.data is None or args.with_shipped:
        records += load_coco(args.data_dir, tagger, cache_dir=cache, limit=args.limit_coco)
        records += load_dpg(args.data_dir, tagger, cache_dir=cache, limit=args.limit_dpg)
        sources += ["coco", "dpg", "tags"]
    if args.data is not None:
        user = load_user(args.data, cache_dir=cache)
        if not user:
            raise SystemExit(f"{args.data} has no rows with tags")
        records += user
        sources.append(f"user file {args.data}")
    train_recs, held_recs = split_records(records, args.heldout, args.seed)
    if not held_recs:
        raise SystemExit("the held-out split is empty; give more data or a larger --heldout")
    _write_jsonl(out / "corpus" / "train.jsonl", [r.to_dict() for r in train_recs])
    _write_jsonl(out / "corpus" / "heldout.jsonl", [r.to_dict() for r in held_recs])
    print(f"records: {len(train_recs)} train, {len(held_recs)} held out ({Counter(r.source for r in records)})")

    # 2. samples (tipo.planner.build_sample), seeded; the held-out seed differs from the train seed
    mix = {"weights": args.length_weights, "task_weights": args.task_weights,
           "tag_order": tag_frequencies(train_recs) if args.tag_order == "frequency" else None}
    train_s = make_samples(train_recs, round(len(train_recs) * args.samples_per_record), seed=args.seed * 2 + 1, **mix)
    held_s = make_samples(held_recs, max(1, round(len(held_recs) * args.heldout_samples_per_record)),
                          seed=args.seed * 2 + 2, **mix)

    # 3. tokenizer
    tok_dir = out / "tokenizer"
    if args.tokenizer is not None:
        if tok_dir.resolve() != args.tokenizer.resolve():
            shutil.rmtree(tok_dir, ignore_errors=True)
            tok_dir.mkdir(parents=True)
            for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                         "added_tokens.json"):
                if (args.tokenizer / name).is_file():
                    shutil.copy2(args.tokenizer / name, tok_dir / name)
        tokenizer_note = f"reused from {args.tokenizer}"
    else:
        from models.tokenizer import save_hf_tokenizer, train_sentencepiece

        extra: list[str] = []
        if "coco" in sources:
            prompts = extra_prompts(args.data_dir, cache_dir=cache)
            extra = prompts["parti"] + prompts["t2i"]
        t1 = time.perf_counter()
        sp_model = train_sentencepiece(_tokenizer_text(train_s, extra), args.vocab_size)
        save_hf_tokenizer(sp_model, tok_dir)
        tokenizer_note = (f"SentencePiece BPE, {args.vocab_size} pieces + {len(ADDED_TOKENS)} added tokens, "
                          f"trained in {time.perf_counter() - t1:.1f}s on the train samples"
                          + (" and PartiPrompts + T2I-CompBench prompts" if extra else ""))
    tok = Tokenizer(tok_dir)
    print(f"tokenizer: {tokenizer_note}; vocab {tok.vocab_size}")

    # 4. token ids
    import datasets

    datasets.disable_progress_bars()
    summary: dict[str, object] = {}
    for name, samples in (("train", train_s), ("heldout", held_s)):
        rows, stats = tokenize_samples(samples, tok, args.max_len)
        folder = out / "samples" / name
        shutil.rmtree(folder, ignore_errors=True)
        datasets.Dataset.from_list(rows).save_to_disk(str(folder))
        summary[name] = {
            "records": len(train_recs if name == "train" else held_recs),
            "samples": len(rows),
            **dict(stats),
            "tasks": dict(Counter(r["task"] for r in rows)),
            "lengths": dict(Counter(r["length"] for r in rows)),
            "records_per_sample": dict(sorted(Counter(len(r["groups"]) for r in rows).items())),
        }
        print(f"{name}: {len(rows)} samples, {stats['tokens']} tokens ({stats['completion_tokens']} in completions), "
              f"{stats['dropped_too_long']} dropped as longer than {args.max_len}, "
              f"{stats['prompt_not_prefix']} with a piece across the prompt/completion junction")
    summary.update({
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sources": {k: SOURCES[k] for k in sources if k in SOURCES} | {k: k for k in sources if k not in SOURCES},
        "tokenizer": tokenizer_note,
        "vocab_size": tok.vocab_size,
        "task_weights": args.task_weights,
        "length_weights": args.length_weights,
        "stop_tags": sorted(STOP_TAGS),
        "stop_aliases": sorted(STOP_ALIASES),
        "seconds": round(time.perf_counter() - t0, 1),
    })
    (out / "prepare.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(cache, ignore_errors=True)
    print(f"wrote {out} in {time.perf_counter() - t0:.1f}s")
    return 0


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(list(rows)).to_json(str(path), lines=True, force_ascii=False)


if __name__ == "__main__":
    raise SystemExit(main())
