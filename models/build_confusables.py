"""Build tipo's look-alike table from the Unicode confusables data (UTS #39).

The source is ``confusables.txt`` of Unicode 17.0.0 (Unicode License v3, see
``tipo/data/LICENSE.unicode.txt``). tipo only folds characters that look like ASCII, so the
packaged file keeps exactly the source lines (ASCII ones such as ``I`` -> ``l`` included, to
choose among ASCII spellings) whose skeleton, ``NFD(map(NFD(c)))``, is plain
ASCII (letters, digits, punctuation), byte for byte, under a header that says where they came from.

    python -m models.build_confusables ../shared/data/unicode/confusables.txt \
        tipo/data/confusables-ascii.txt
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import unicodedata
from pathlib import Path


def _parse(line: str) -> tuple[str, str] | None:
    body = line.split("#", 1)[0].strip()
    if not body:
        return None
    source, target, _kind = (part.strip() for part in body.split(";"))
    return chr(int(source, 16)), "".join(chr(int(x, 16)) for x in target.split())


def build(src: Path, out: Path) -> int:
    """Write the ASCII-target subset of ``src`` to ``out``; returns the number of mappings kept."""
    raw = src.read_bytes()
    lines = raw.decode("utf-8-sig").splitlines()
    mapping: dict[str, str] = {}
    for line in lines:
        parsed = _parse(line)
        if parsed:
            mapping[parsed[0]] = parsed[1]

    def skeleton(text: str) -> str:
        text = unicodedata.normalize("NFD", text)
        return unicodedata.normalize("NFD", "".join(mapping.get(c, c) for c in text))

    header = [line for line in lines[:12] if line.startswith("#")]
    kept = []
    for line in lines:
        parsed = _parse(line)
        if parsed is None:
            continue
        source = parsed[0]
        skel = skeleton(source)
        if skel and all(32 < ord(c) < 127 for c in skel):
            kept.append(line)
    digest = hashlib.sha256(raw).hexdigest()
    text = "\n".join(
        header
        + [
            "#",
            "# tipo: the lines of the file above whose skeleton NFD(map(NFD(c))) is plain ASCII,",
            f"# unchanged. Source sha256 {digest}; built by models/build_confusables.py.",
            "# License: Unicode License v3, tipo/data/LICENSE.unicode.txt.",
            "#",
        ]
        + kept
    ) + "\n"
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return len(kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="confusables.txt (UTS #39)")
    parser.add_argument("out", type=Path, help="the packaged subset to write")
    args = parser.parse_args(argv)
    if not args.src.is_file():
        print(f"build_confusables: {args.src} does not exist; pass the path of confusables.txt", file=sys.stderr)
        return 2
    n = build(args.src, args.out)
    print(f"{n} mappings written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
