"""The tags a model was trained on, written beside the model for known-tags-only decoding.

Known-tags-only decoding (``tipo.Expander(known_tags_only=True)``, on for the built-in model) keeps
tag lines on the way to tags the model knows. The whole Danbooru table (140k rows) is far more than
a small model saw, and admits tags it never learned (explicit ones included). So the recipe writes
the special and general tags of the TRAIN split's records, one per line with how many records carry
it, and tipo reads that file beside the model (``<model>.tags.txt``: ``tipo/data/tipo-builtin.tags.txt``
for the built-in model) as the list of tags known-tags-only decoding admits.

From a prepared run (``prepare`` wrote ``corpus/train.jsonl``)::

    python -m models.train.trained_tags --run runs/builtin --out tipo/data/tipo-builtin.tags.txt

Without a run folder, rebuilding the train records from the shipped data exactly as ``prepare``
does (same tagger, same split and seed; about a minute)::

    python -m models.train.trained_tags --rebuild --out tipo/data/tipo-builtin.tags.txt
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["count_tags", "main", "write_tag_list"]


def count_tags(records: Iterable[dict]) -> Counter:
    """How many records carry each tag (the records' ``tags``: special and general)."""
    counts: Counter = Counter()
    for rec in records:
        counts.update(set(rec.get("tags") or ()))
    return counts


def write_tag_list(counts: Counter, out: Path, source: str) -> int:
    """Write ``tag<TAB>records`` lines (most frequent first) under a provenance header."""
    lines = [
        "# Tags the model was trained on: the special and general tags of its train records,",
        f"# with how many records carry each. Source: {source}.",
        "# Written by models/train/trained_tags.py; read by tipo for known-tags-only decoding.",
    ]
    lines += [f"{tag}\t{n}" for tag, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return len(counts)


def _rebuild_records(data_dir: Path, heldout: float, seed: int) -> list[dict]:
    from .captions import CaptionTagger
    from .corpus import load_coco, load_dpg, split_records

    tagger = CaptionTagger.from_table()
    with tempfile.TemporaryDirectory() as cache:
        records = load_coco(data_dir, tagger, cache_dir=Path(cache)) + load_dpg(data_dir, tagger, cache_dir=Path(cache))
    train, _ = split_records(records, heldout, seed)
    return [r.to_dict() for r in train]


def main(argv: Sequence[str] | None = None) -> int:
    from .corpus import DATA_DIR

    p = argparse.ArgumentParser(prog="python -m models.train.trained_tags", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="a prepared run folder (reads corpus/train.jsonl)")
    src.add_argument("--rebuild", action="store_true", help="rebuild the train records from the shipped data")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR, help=f"with --rebuild: shared data (default: {DATA_DIR})")
    p.add_argument("--heldout", type=float, default=0.05, help="with --rebuild: the held-out share prepare used")
    p.add_argument("--seed", type=int, default=0, help="with --rebuild: the seed prepare used")
    p.add_argument("--out", type=Path, required=True, help="the tag list to write (e.g. tipo/data/tipo-builtin.tags.txt)")
    args = p.parse_args(argv)
    if args.run is not None:
        path = args.run / "corpus" / "train.jsonl"
        if not path.is_file():
            raise SystemExit(f"{path} does not exist; run python -m models.train.prepare --out {args.run} first")
        with open(path, encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh if line.strip()]
        source = f"{path} ({len(records)} records)"
    else:
        records = _rebuild_records(args.data_dir, args.heldout, args.seed)
        source = (f"the train split of the shipped COCO 2017 captions and DPG-Bench prompts, tagged and split as "
                  f"models.train.prepare does (held out {args.heldout}, seed {args.seed}; {len(records)} records)")
    n = write_tag_list(count_tags(records), args.out, source)
    print(f"{n} tags from {len(records)} records written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
