"""Build tipo's packaged tag table from the Danbooru tag list.

The source is ``danbooru.csv`` from a1111-sd-webui-tagcomplete (MIT, see
``tipo/data/LICENSE.danbooru-tags.MIT.txt``): rows ``name,category,post_count,"alias,alias"``.
The output is a gzip'd TSV with normalised names and aliases, so loading is a plain split.

    python -m models.build_tag_table ../shared/data/danbooru_tags/danbooru.csv \
        tipo/data/danbooru_tags.tsv.gz
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import sys
import tempfile
from pathlib import Path

from tipo.tags import TagTable, normalize

# Inverse of tipo.tags._TABLE_CATEGORIES, for writing.
_IDS = {"general": 0, "artist": 1, "copyrights": 3, "characters": 4, "meta": 5}


def build(csv_path: Path, out_path: Path) -> int:
    """Convert the CSV to the packaged format; returns the number of tags written."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = []
        for rec in csv.reader(fh):
            if len(rec) < 3:
                continue
            alias = rec[3].split(",") if len(rec) > 3 and rec[3] else []
            rows.append((rec[0], int(rec[1]), int(rec[2]), alias))
    table = TagTable.from_rows(rows)
    by_name: dict[str, list[str]] = {}
    for alias, name in table.aliases.items():
        by_name.setdefault(name, []).append(alias)
    buf = io.StringIO()
    for name, cat in table.categories.items():
        aliases = "\x1f".join(by_name.get(name, []))
        if "\t" in name or "\n" in name:
            continue
        buf.write(f"{name}\t{_IDS[cat.value]}\t{table.counts[name]}\t{aliases}\n")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write(buf.getvalue().encode("utf-8"))
        os.replace(tmp, out_path)
    except BaseException:
        os.unlink(tmp)
        raise
    assert normalize  # the same normaliser as the library (one source of truth)
    return len(table.categories)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", type=Path, help="danbooru.csv (name,category,post_count,aliases)")
    parser.add_argument("out", type=Path, help="output .tsv.gz")
    args = parser.parse_args(argv)
    n = build(args.csv, args.out)
    print(f"wrote {n} tags to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
