"""What the content-rating vocabulary (``tipo/data/rating_terms.tsv``) covers in the tag table.

For each term, the tags of tipo's packaged Danbooru table it forbids (a tag containing the term as
whole words, aliases resolved), with post counts; then the totals per rating. With ``--tags FILE``
(e.g. ``tipo/data/tipo-builtin.tags.txt``) the same for a model's trained-tag list.

    python -m models.rating_report                # summary
    python -m models.rating_report --list         # every matched tag, by term
    python -m models.rating_report --tags tipo/data/tipo-builtin.tags.txt
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tipo.rating import Rating, default_vocabulary
from tipo.tags import Category, default_table


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.rating_report", description=__doc__.splitlines()[0])
    p.add_argument("--list", action="store_true", help="print every matched tag, by term")
    p.add_argument("--tags", type=Path, help="a trained-tag list (tag<TAB>count lines) instead of the table")
    args = p.parse_args(argv)
    table = default_table()
    vocab = default_vocabulary()
    if args.tags:
        names = {}
        for line in args.tags.read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                tag, _, n = line.partition("\t")
                names[tag] = int(n or 0)
        where = str(args.tags)
    else:
        names = {n: c for n, c in table.counts.items() if table.categories[n] is Category.GENERAL}
        where = "general tags of the packaged Danbooru table"
    print(f"{len(names)} {where}")
    for rating in Rating:
        m = vocab.matcher(rating)
        hit = {n: c for n, c in names.items() if m.tag_reason(n)}
        share = sum(hit.values()) / max(1, sum(names.values()))
        print(f"  forbidden at {rating.value:<13} {len(hit):>6} tags ({share:.1%} of their {'posts' if not args.tags else 'records'})")
    if args.list:
        m = vocab.matcher(Rating.GENERAL)
        by_reason: dict[str, Counter] = {}
        for n, c in names.items():
            why = m.tag_reason(n)
            if why:
                by_reason.setdefault(why, Counter())[n] = c
        for why, tags in sorted(by_reason.items()):
            top = ", ".join(f"{t} ({c})" for t, c in tags.most_common(12))
            print(f"{why}: {len(tags)} tags: {top}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
