"""Evaluate a trained model on the held-out split, through ``tipo.Expander`` as users run it.

Requests are built from held-out records (never seen in training): a prefix of their tags
and/or their short or long caption, asking for tags, a caption or both, in each length class
(every combination of 9 request kinds x 4 classes, cycled; fixed seeds; tipo's default sampling).
Figures:

- parse rate: outputs whose requested fields all parse (well-formed tag line, non-empty captions)
  and that stopped by themselves (not at ``max_new_tokens``);
- known-tag rate: generated tags that are Danbooru tags, aliases or fixed-list tags (``tipo.tags.is_known``);
- duplicate tags: repeated tags in the model's raw tag line, and in the final result;
- user tags kept: the user's tags all present in the result;
- length-class hit rate per class: final tag count within the class's range (``Length.tag_range``);
- held-out loss (nats/token, transformers on ``<run>/hf``) next to a unigram model fitted on train;
- relevance (:mod:`models.train.relevance`): given a few true tags or a short caption of a held-out
  record, precision and recall of the remaining true tags and caption content words, next to a
  unigram and a tag co-occurrence baseline fitted on the training split; caption word validity.

CPU-sized run (a few minutes)::

    python -m models.train.evaluate --run runs/builtin

Relevance alone (a minute or two)::

    python -m models.train.evaluate --run runs/builtin --relevance-only

What the model knows apart from sampling (the model on ``<run>/hf`` ranking every trained tag by its
own probability, next to co-occurrence; a few minutes)::

    python -m models.train.evaluate --run runs/builtin --rank-items 72

Writes ``<run>/eval.json`` and ``<run>/eval.md`` (a Markdown table to paste); with ``--no-known-tags``
(the model's own spelling, without tipo's known-tags-only rule) ``eval-free-tags.*``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tipo.request import Length

from .corpus import Record

__all__ = ["KINDS", "EvalItem", "build_items", "main", "unigram_loss"]

LENGTHS = tuple(Length)


@dataclass(frozen=True)
class Kind:
    """One kind of request: what the user gives and what they want."""

    name: str
    gives_tags: bool
    caption: str  # "", "short" or "long"
    output: str  # "tags", "caption" or "both"


KINDS: tuple[Kind, ...] = (
    Kind("tags -> tags", True, "", "tags"),
    Kind("tags -> tags + caption", True, "", "both"),
    Kind("tags -> caption", True, "", "caption"),
    Kind("short -> tags + caption", False, "short", "both"),
    Kind("short -> tags", False, "short", "tags"),
    Kind("short -> caption", False, "short", "caption"),
    Kind("tags + short -> tags + caption", True, "short", "both"),
    Kind("long -> tags", False, "long", "tags"),
    Kind("tags + long -> tags", True, "long", "tags"),
)


@dataclass(frozen=True)
class EvalItem:
    """One evaluation request and the held-out record it comes from."""

    kind: Kind
    length: Length
    tags: str
    caption: str
    width: int | None
    height: int | None
    group: str


def _caption(rec: Record, which: str, rng: random.Random) -> str:
    if which == "short":
        return rec.short or (rng.choice(rec.captions) if rec.captions else "")
    if which == "long":
        return rec.long or " ".join(rec.captions)
    return ""


def build_items(records: Sequence[Record], count: int, seed: int) -> list[EvalItem]:
    """``count`` requests from held-out records: kinds x length classes cycled, seeded.

    Example:
        >>> recs = [Record("g", "user", ["1girl", "smile", "hat"], short="A girl.", long="A girl in a hat.")]
        >>> [i.kind.name for i in build_items(recs, 2, seed=0)]
        ['tags -> tags', 'tags -> tags']
    """
    rng = random.Random(seed)
    order = list(records)
    rng.shuffle(order)
    combos = [(k, length) for k in KINDS for length in LENGTHS]
    items = []
    i = 0
    for n in range(count):
        kind, length = combos[n % len(combos)]
        # The next record that can feed this kind.
        for _ in range(len(order)):
            rec = order[i % len(order)]
            i += 1
            if (kind.caption == "short" and not rec.has_short) or (kind.caption == "long" and not rec.has_long):
                continue
            if kind.gives_tags and not rec.tags:
                continue
            break
        else:
            continue
        tags = ""
        if kind.gives_tags:
            k = rng.randint(1, min(4, len(rec.tags)))
            tags = ", ".join(rec.tags[:k])
        items.append(EvalItem(kind, length, tags, _caption(rec, kind.caption, rng),
                              rec.width or None, rec.height or None, rec.group))
    return items


def unigram_loss(train_ids: Sequence[Sequence[int]], rows: Sequence[dict], vocab_size: int) -> dict[str, float]:
    """Cross-entropy (nats/token) of an add-one unigram model fitted on the train tokens (after BOS)."""
    counts = Counter()
    for ids in train_ids:
        counts.update(ids[1:])
    total = sum(counts.values()) + vocab_size
    logp = {t: math.log((c + 1) / total) for t, c in counts.items()}
    floor = math.log(1 / total)
    out: dict[str, float] = {}
    for name in ("all", "completion"):
        nll, n = 0.0, 0
        for r in rows:
            start = 1 if name == "all" else r["prompt_len"]
            for t in r["input_ids"][start:]:
                nll -= logp.get(t, floor)
                n += 1
        out[name] = nll / max(1, n)
    return out


def _line_ok(line: list[str], raw: str) -> bool:
    """A tag line is well-formed when no item between commas is empty."""
    items = raw.split(",")
    return bool(line) and all(item.strip() for item in items)


def evaluate_items(gguf: Path, items: Sequence[EvalItem], seed: int, table=None,  # noqa: ANN001
                   known_tags_only: bool = True, threads: int | None = None) -> tuple[list[dict], dict]:
    """Run every item through ``tipo.Expander`` (llama.cpp) and score it."""
    from tipo import Expander, Request, Sampling
    from tipo.parse import parse_completion
    from tipo.planner import Field
    from tipo.tags import default_table

    table = table or default_table()
    results = []
    gen_tokens, gen_seconds = 0, 0.0
    with Expander(str(gguf), backend="llama", table=table, known_tags_only=known_tags_only, n_threads=threads) as ex:
        for n, item in enumerate(items):
            req = Request(item.tags, caption=item.caption, caption_kind=item.kind.caption or None,
                          length=item.length, output=item.kind.output, width=item.width, height=item.height)
            res = ex.expand(req, Sampling(seed=seed + n))
            plan = res.plan
            parsed = parse_completion(plan, res.completion, table)
            prov = res.provenance
            gen_tokens += prov.generated_tokens if prov else 0
            gen_seconds += (prov.seconds.get("prompt", 0) + prov.seconds.get("generate", 0)) if prov else 0
            writes_tags = Field.TAG in plan.fields
            user_given = len(plan.inputs[Field.TAG].split(", ")) if Field.TAG in plan.inputs else 0
            raw_new = parsed.tag_line[user_given:] if writes_tags else []
            tag_raw = next((line[4:] for line in (plan.prompt + res.completion).split("\n")
                            if line.startswith("tag:")), "")
            fields_ok = {}
            for f in plan.fields:
                if f is Field.TAG:
                    fields_ok["tag"] = _line_ok(parsed.tag_line, tag_raw)
                else:
                    fields_ok[f.value] = bool(getattr(parsed, f.value).strip())
            stopped = prov is not None and prov.stop_reason not in ("max_new_tokens", "context full")
            keys = [table.canonical(t) for t in raw_new]
            final = [t for c in ("special", "general") for t in res.tags[c]]
            all_final = [t for c in res.tags for t in res.tags[c]]
            final_keys = [table.canonical(t) for t in all_final]
            user_tags = [t.text for t in plan.user.tags]
            new_final = [t for c in res.new_tags for t in res.new_tags[c]]
            results.append({
                "kind": item.kind.name, "length": item.length.value, "task": plan.task_name, "group": item.group,
                "fields": [f.value for f in plan.fields], "fields_ok": fields_ok, "stopped": stopped,
                "stop_reason": prov.stop_reason if prov else "",
                "parse_ok": all(fields_ok.values()) and stopped,
                "writes_tags": writes_tags, "raw_new_tags": raw_new,
                "raw_known": sum(table.is_known(t) for t in raw_new),
                "raw_duplicates": len(keys) - len(set(keys)) + sum(1 for k in set(keys) if k in {table.canonical(u) for u in user_tags}),
                "final_new_tags": new_final, "final_known": sum(table.is_known(t) for t in new_final),
                "final_duplicates": len(final_keys) - len(set(final_keys)),
                "user_kept": all(any(table.canonical(u) == k for k in final_keys) for u in user_tags),
                "n_tags": len(final), "length_hit": item.length.tag_range[0] <= len(final) <= item.length.tag_range[1],
                "input": {"tags": item.tags, "caption": item.caption},
                "prompt": res.prompt, "completion": res.completion,
                "long_paragraphs": len([p for p in res.long.split("\n") if p.strip()]) if res.long else 0,
            })
    return results, {"generated_tokens": gen_tokens, "seconds": round(gen_seconds, 2)}


def evaluate_relevance(gguf: Path, run: Path, count: int, seed: int, known_tags_only: bool = True,
                       table=None, threads: int | None = None) -> dict[str, object]:  # noqa: ANN001
    """The relevance report (:func:`models.train.relevance.score_relevance`) of a GGUF on the run's
    held-out records, baselines fitted on its train records."""
    from tipo import Expander, Request, Sampling
    from tipo.tags import default_table

    from .relevance import Baselines, build_relevance_items, score_relevance

    table = table or default_table()
    train = _records(run / "corpus" / "train.jsonl")
    held = _records(run / "corpus" / "heldout.jsonl")
    baselines = Baselines.fit(train)
    items = build_relevance_items(held, count, seed)
    outputs = []
    with Expander(str(gguf), backend="llama", table=table, known_tags_only=known_tags_only, n_threads=threads) as ex:
        for n, item in enumerate(items):
            req = Request(", ".join(item.tags), caption=item.caption, caption_kind="short" if item.caption else None,
                          length=item.length, output="both", width=item.width, height=item.height)
            res = ex.expand(req, Sampling(seed=seed + n))
            new = [t for c in ("special", "general") for t in res.new_tags[c]]
            outputs.append({"new_tags": new, "caption": res.long, "given": list(item.given_tags),
                            "caption_in": item.caption, "truth_tags": list(item.truth_tags)})
    report = score_relevance(items, outputs, baselines, canonical=table.canonical)
    report["examples"] = outputs[:12]
    return report


def _records(path: Path) -> list[Record]:
    return [Record.from_dict(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summarize(results: Sequence[dict]) -> dict[str, object]:
    n = len(results)
    raw_new = sum(len(r["raw_new_tags"]) for r in results)
    final_new = sum(len(r["final_new_tags"]) for r in results)
    by_class = {}
    for length in LENGTHS:
        rows = [r for r in results if r["length"] == length.value and r["writes_tags"]]
        by_class[length.value] = {
            "items": len(rows),
            "hit_rate": round(sum(r["length_hit"] for r in rows) / max(1, len(rows)), 4),
            "mean_tags": round(sum(r["n_tags"] for r in rows) / max(1, len(rows)), 1),
            "range": list(length.tag_range),
        }
    by_kind = {}
    for kind in KINDS:
        rows = [r for r in results if r["kind"] == kind.name]
        by_kind[kind.name] = {"items": len(rows), "parse_rate": round(sum(r["parse_ok"] for r in rows) / max(1, len(rows)), 4)}
    return {
        "items": n,
        "parse_rate": round(sum(r["parse_ok"] for r in results) / max(1, n), 4),
        "stopped_by_itself": round(sum(r["stopped"] for r in results) / max(1, n), 4),
        "known_tag_rate_raw": round(sum(r["raw_known"] for r in results) / max(1, raw_new), 4),
        "known_tag_rate_final": round(sum(r["final_known"] for r in results) / max(1, final_new), 4),
        "generated_tags_raw": raw_new,
        "generated_tags_final": final_new,
        "duplicate_tags_raw": sum(r["raw_duplicates"] for r in results),
        "duplicate_tags_final": sum(r["final_duplicates"] for r in results),
        "user_tags_kept": round(sum(r["user_kept"] for r in results) / max(1, n), 4),
        "length_class": by_class,
        "by_kind": by_kind,
    }


def markdown(summary: dict, loss: dict | None, speed: dict, model_line: str) -> str:
    lc = summary["length_class"]
    lines = [
        f"Evaluation of {model_line} on {summary['items']} held-out requests (tipo default sampling, fixed seeds):",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| requested fields parse (and generation stopped by itself) | {summary['parse_rate']:.1%} | ≥ 99% |",
        f"| generated tags that are known tags (raw model output) | {summary['known_tag_rate_raw']:.1%} "
        f"({summary['generated_tags_raw']} tags) | ≥ 95% |",
        f"| known tags among new tags in the result | {summary['known_tag_rate_final']:.1%} "
        f"({summary['generated_tags_final']} tags) | ≥ 95% |",
        f"| duplicate tags in the result (raw model output) | {summary['duplicate_tags_final']} "
        f"({summary['duplicate_tags_raw']}) | 0 |",
        f"| user tags kept | {summary['user_tags_kept']:.1%} | 100% |",
    ]
    for name, row in lc.items():
        lines.append(f"| length class `{name}` ({row['range'][0]}–{row['range'][1]} tags) hit rate | "
                     f"{row['hit_rate']:.1%} of {row['items']} (mean {row['mean_tags']} tags) | |")
    if loss:
        lines.append(f"| held-out loss, all tokens (nats/token) | {loss['model']['all']:.3f} "
                     f"(unigram baseline {loss['unigram']['all']:.3f}) | |")
        lines.append(f"| held-out loss, completions only (nats/token) | {loss['model']['completion']:.3f} "
                     f"(unigram baseline {loss['unigram']['completion']:.3f}) | |")
    if speed.get("seconds"):
        lines.append(f"| speed through tipo.Expander (llama.cpp F16, decode rules included) | "
                     f"{speed['generated_tokens'] / speed['seconds']:.0f} generated tokens/s | |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models.train.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--run", type=Path, required=True, help="run folder (prepared, trained and exported)")
    p.add_argument("--gguf", type=Path, help="GGUF to evaluate (default: <run>/tipo-builtin.gguf)")
    p.add_argument("--items", type=int, default=108, help="number of requests (default: 108 = 3 x 9 kinds x 4 classes)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the requests and the sampling (default: 1234)")
    p.add_argument("--examples", type=int, default=4, help="example expansions to print (default: 4)")
    p.add_argument("--known-tags", action=argparse.BooleanOptionalAction, default=True,
                   help="decode with tipo's known-tags-only rule, as the built-in model runs (default: on; "
                        "--no-known-tags shows the model's own spelling)")
    p.add_argument("--no-loss", action="store_true", help="skip the held-out loss (needs torch + transformers)")
    p.add_argument("--relevance-items", type=int, default=200,
                   help="held-out items of the relevance evaluation (default: 200; 0 skips it)")
    p.add_argument("--threads", type=int, default=1,
                   help="llama.cpp threads (default: 1, steady on a shared machine; 0: llama.cpp's default)")
    p.add_argument("--relevance-only", action="store_true",
                   help="only the relevance evaluation (writes <out>-relevance.json / .md)")
    p.add_argument("--direct-epochs", type=int, default=0,
                   help="only the data's headroom: train a small network for N epochs directly on the relevance task "
                        "(given tags -> remaining tags) and print its precision at k next to co-occurrence's on the "
                        "relevance items (needs torch; a few minutes)")
    p.add_argument("--rank-items", type=int, default=0,
                   help="only the ranker analysis: on the tags items among the first N relevance items, precision "
                        "at k of the model (<run>/hf, transformers) ranking every trained tag by its own probability, "
                        "next to co-occurrence (writes <out>-rank.json)")
    p.add_argument("--out", type=Path, help="report name prefix (default: <run>/eval, or <run>/eval-free-tags "
                                             "with --no-known-tags)")
    return p


def _write_precision(path: Path, report: dict, what: str) -> None:
    """Write an analysis report (JSON) and print its precision-at-k rows."""
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for method, row in report["precision_at_k"].items():
        print(f"{method}: precision at k " + ", ".join(f"{k}: {v:.1%}" for k, v in row.items()))
    print(f"({what}); wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Path = args.run
    for split in ("train", "heldout"):
        if not (run / "corpus" / f"{split}.jsonl").is_file():
            raise SystemExit(f"{run} has no corpus/{split}.jsonl; give the folder models.train.prepare --out wrote")
    t0 = time.perf_counter()
    stem = args.out or run / ("eval" if args.known_tags else "eval-free-tags")
    if args.direct_epochs > 0:
        from tipo.tags import default_table

        from .relevance import Baselines, build_relevance_items, direct_ranker_precision

        train = _records(run / "corpus" / "train.jsonl")
        items = build_relevance_items(_records(run / "corpus" / "heldout.jsonl"), args.relevance_items, args.seed)
        direct = direct_ranker_precision(items, train, Baselines.fit(train), canonical=default_table().canonical,
                                         epochs=args.direct_epochs)
        _write_precision(stem.with_name(stem.name + "-direct.json"), direct,
                         f"{direct['items']} items, {direct['pairs']} training pairs, {direct['epochs']} epochs")
        return 0
    gguf = args.gguf or run / "tipo-builtin.gguf"
    if not gguf.is_file():
        raise SystemExit(f"{gguf} does not exist; run models.train.export --run {run} first")
    if args.rank_items > 0:
        from tipo.tags import default_table

        from .relevance import Baselines, build_relevance_items, rank_precision

        items = build_relevance_items(_records(run / "corpus" / "heldout.jsonl"), args.rank_items, args.seed)
        rank = rank_precision(run / "hf", items, Baselines.fit(_records(run / "corpus" / "train.jsonl")),
                              canonical=default_table().canonical)
        _write_precision(stem.with_name(stem.name + "-rank.json"), rank,
                         f"{rank['items']} tags items, {rank['candidates']} candidate tags")
        return 0
    relevance = None
    if args.relevance_items > 0:
        from .relevance import relevance_markdown

        relevance = evaluate_relevance(gguf, run, args.relevance_items, args.seed, args.known_tags,
                                       threads=args.threads or None)
        rel_md = relevance_markdown(relevance)
        if args.relevance_only:
            rel_stem = stem.with_name(stem.name + "-relevance")
            rel_stem.with_name(rel_stem.name + ".json").write_text(
                json.dumps(relevance, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            rel_stem.with_name(rel_stem.name + ".md").write_text(rel_md, encoding="utf-8")
            print(rel_md)
            print(f"wrote {rel_stem}.json and .md in {time.perf_counter() - t0:.0f}s")
            return 0
    elif args.relevance_only:
        raise SystemExit("--relevance-only needs --relevance-items above 0")
    held = _records(run / "corpus" / "heldout.jsonl")
    items = build_items(held, args.items, args.seed)
    results, speed = evaluate_items(gguf, items, args.seed, known_tags_only=args.known_tags,
                                    threads=args.threads or None)
    summary = summarize(results)

    loss = None
    if not args.no_loss:
        import datasets
        import torch
        from transformers import LlamaForCausalLM

        from .train import heldout_loss

        datasets.disable_progress_bars()
        held_rows = list(datasets.load_from_disk(str(run / "samples" / "heldout")).select_columns(["input_ids", "prompt_len"]))
        train_ids = datasets.load_from_disk(str(run / "samples" / "train"))["input_ids"]
        with torch.random.fork_rng(devices=[]):
            model = LlamaForCausalLM.from_pretrained(str(run / "hf"), dtype=torch.float32)
        loss = {"model": heldout_loss(model, held_rows, 8192),
                "unigram": unigram_loss(train_ids, held_rows, model.config.vocab_size),
                "heldout_rows": len(held_rows)}
        loss = {k: ({m: round(x, 4) for m, x in v.items()} if isinstance(v, dict) else v) for k, v in loss.items()}

    model_line = (f"`{gguf.name}` ({gguf.stat().st_size / 2**20:.1f} MiB, known-tags-only decoding "
                  f"{'on' if args.known_tags else 'off'})")
    table = markdown(summary, loss, speed, model_line)
    if relevance is not None:
        table += "\n" + relevance_markdown(relevance)
    report = {"gguf": str(gguf), "seed": args.seed, "known_tags_only": args.known_tags, "summary": summary,
              "loss": loss, "speed": speed, "relevance": relevance, "seconds": round(time.perf_counter() - t0, 1),
              "items": results}
    json_path, md_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(table, encoding="utf-8")
    print(table)
    print("by request kind: " + ", ".join(f"{k}: {v['parse_rate']:.0%}" for k, v in summary["by_kind"].items()))
    wanted = [KINDS[i].name for i in (1, 3, 5, 7, 6, 0, 2, 4, 8)][: args.examples]
    for name in wanted:
        r = next((r for r in results if r["kind"] == name and r["parse_ok"]), None)
        if r is not None:
            print(f"\n[{r['kind']}, {r['length']}] input: {r['input']}\n  -> {r['prompt']}")
    print(f"\nwrote {json_path} and {md_path} in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
