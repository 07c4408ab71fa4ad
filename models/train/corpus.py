"""Training records: the shipped captions with the tags found in them, or a user's own file.

A :class:`Record` is one unit of the train / held-out split (a COCO image, a DPG-Bench prompt,
one line of a user's file): its tags (special first, then general), meta-line tags, captions
and image size. Loading goes through ``datasets`` (local files only).

Sources under ``shared/data`` (licenses in :data:`SOURCES`):

- COCO 2017 val captions: five captions per image; the tags are those found in all five
  (:mod:`models.train.captions`); width and height from the file's ``images`` entries.
- DPG-Bench prompts: one dense caption each, used as a long caption with its tags.
- PartiPrompts and T2I-CompBench: short prompts without targets, used only as tokenizer text and
  as evaluation examples (:func:`extra_prompts`).

A user's file (``--data``) is a JSONL with ``tags`` (comma string or list) and optional
``short``, ``long``, ``width``, ``height``, ``group``; or a plain text file, one tag line each.

Example:
    >>> rec = record_from_user({"tags": "1girl, Long_Hair, hatsune miku, smile", "short": "A girl."}, 0)
    >>> rec.tags, rec.meta["characters"]
    (['1girl', 'long hair', 'smile'], ['hatsune miku'])
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tipo.planner import META_KEYS
from tipo.tags import Category, TagTable, default_table, normalize, split_tags

from .captions import CaptionTagger, subject_tags

__all__ = [
    "DATA_DIR",
    "SOURCES",
    "Record",
    "extra_prompts",
    "load_coco",
    "load_dpg",
    "load_user",
    "record_from_user",
    "split_records",
]

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
COCO_FILE = "captions/coco2017/captions_val2017.json"
DPG_FILE = "prompts/dpg_bench/dpg_bench_prompts.jsonl"
PARTI_FILE = "prompts/partiprompts/PartiPrompts.tsv"
T2I_DIR = "prompts/t2i_compbench"

#: Where each source comes from and under which terms (copied into the model card).
SOURCES: dict[str, str] = {
    "coco": "COCO 2017 val captions, CC BY 4.0. \"Microsoft COCO: Common Objects in Context\", Lin et al. 2014 "
            "(captions only; no images).",
    "dpg": "DPG-Bench prompts (TencentQQGYLab/ELLA), Apache-2.0.",
    "tags": "Danbooru tag list of DominikDoom/a1111-sd-webui-tagcomplete, MIT (the tipo tag table).",
    "parti": "PartiPrompts (google-research/parti), Apache-2.0 (tokenizer text and evaluation prompts only).",
    "t2i": "T2I-CompBench val prompts (Karine-Huang/T2I-CompBench), MIT (tokenizer text only).",
}
META_NAMES = tuple(key for _, key in META_KEYS)


@dataclass(frozen=True)
class Record:
    """One unit of the split (an image, a prompt, a line of the user's file).

    Attributes:
        group: the split key; records of one group always land on the same side.
        source: ``coco``, ``dpg`` or ``user``.
        tags: special tags first, then general tags, normalised, each once.
        meta: meta-line tags by key (``rating``, ``characters``, ...).
        captions: interchangeable captions of the same picture (COCO's five): a sample takes
            one as its short caption and others as its long caption.
        short, long: fixed short / long captions (used when given).
    """

    group: str
    source: str
    tags: list[str]
    meta: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in META_NAMES})
    captions: list[str] = field(default_factory=list)
    short: str = ""
    long: str = ""
    width: int = 0
    height: int = 0

    @property
    def ratio(self) -> float | None:
        return self.width / self.height if self.width > 0 and self.height > 0 else None

    @property
    def has_short(self) -> bool:
        return bool(self.short) or len(self.captions) >= 2

    @property
    def has_long(self) -> bool:
        return bool(self.long) or len(self.captions) >= 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Record:
        meta = {k: list((row.get("meta") or {}).get(k) or []) for k in META_NAMES}
        return cls(str(row["group"]), row["source"], list(row["tags"]), meta, list(row.get("captions") or []),
                   row.get("short") or "", row.get("long") or "", int(row.get("width") or 0),
                   int(row.get("height") or 0))


def clean_sentence(text: str) -> str:
    """One caption as a tidy sentence: whitespace collapsed, capitalised, ending in a full stop.

    Example:
        >>> clean_sentence(" a dog   on a couch ")
        'A dog on a couch.'
    """
    text = " ".join(text.split()).rstrip(" ,;:")
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _load(kind: str, path: Path, cache_dir: Path | None, **kwargs: Any):  # noqa: ANN202
    import datasets

    datasets.disable_progress_bars()
    return datasets.load_dataset(kind, data_files=str(path), split="train",
                                 cache_dir=str(cache_dir) if cache_dir else None, **kwargs)


def load_coco(data_dir: Path = DATA_DIR, tagger: CaptionTagger | None = None, *,
              cache_dir: Path | None = None, limit: int | None = None) -> list[Record]:
    """COCO 2017 val: one record per image (``limit``: the first N images by id)."""
    tagger = tagger or CaptionTagger.from_table()
    path = data_dir / COCO_FILE
    annotations = _load("json", path, cache_dir, field="annotations")
    images = _load("json", path, cache_dir, field="images")
    size = {int(r["id"]): (int(r["width"]), int(r["height"])) for r in images}
    captions: dict[int, list[tuple[int, str]]] = {}
    for row in annotations:
        captions.setdefault(int(row["image_id"]), []).append((int(row["id"]), clean_sentence(row["caption"])))
    out = []
    for image_id in sorted(captions)[:limit]:
        texts = [text for _, text in sorted(captions[image_id]) if text]
        tags = subject_tags(texts) + tagger.tags_of(texts)
        if not tags:
            continue
        width, height = size.get(image_id, (0, 0))
        out.append(Record(f"coco:{image_id}", "coco", tags, captions=texts, width=width, height=height))
    return out


def load_dpg(data_dir: Path = DATA_DIR, tagger: CaptionTagger | None = None, *,
             cache_dir: Path | None = None, limit: int | None = None) -> list[Record]:
    """DPG-Bench: one record per dense prompt, used as a long caption."""
    tagger = tagger or CaptionTagger.from_table()
    rows = _load("json", data_dir / DPG_FILE, cache_dir)
    out = []
    for row in rows.select(range(min(limit, len(rows)))) if limit else rows:
        text = " ".join(row["prompt"].split())
        tags = subject_tags([text]) + tagger.tags(text)
        if tags:
            out.append(Record(f"dpg:{row['id']}", "dpg", tags, long=text))
    return out


def extra_prompts(data_dir: Path = DATA_DIR, *, cache_dir: Path | None = None) -> dict[str, list[str]]:
    """PartiPrompts and T2I-CompBench prompts (no targets): tokenizer text and evaluation inputs."""
    parti = _load("csv", data_dir / PARTI_FILE, cache_dir, delimiter="\t")
    t2i = []
    for path in sorted((data_dir / T2I_DIR).glob("*_val.txt")):
        t2i += [r["text"].strip() for r in _load("text", path, cache_dir) if r["text"].strip()]
    return {"parti": [str(p).strip() for p in parti["Prompt"] if str(p).strip()], "t2i": t2i}


def record_from_user(row: dict[str, Any], index: int, table: TagTable | None = None) -> Record:
    """One record from a row of a user's file (``tags``, optional ``short``, ``long``, ``width``,
    ``height``, ``group``). Tags are normalised and sorted into content and meta lines by tipo's
    tag table, exactly as a request's tags are."""
    table = table or default_table()
    raw = row.get("tags") or ""
    items = split_tags(raw) if isinstance(raw, str) else [normalize(str(t)) for t in raw if normalize(str(t))]
    special: list[str] = []
    general: list[str] = []
    meta: dict[str, list[str]] = {k: [] for k in META_NAMES}
    seen: set[str] = set()
    for tag in items:
        key = table.canonical(tag)
        if key in seen:
            continue
        seen.add(key)
        category = table.category(tag)
        if category is Category.SPECIAL:
            special.append(tag)
        elif category is Category.GENERAL:
            general.append(tag)
        else:
            meta[dict(META_KEYS)[category]].append(tag)
    group = str(row.get("group", index))
    return Record(f"user:{group}", "user", special + general, meta, [],
                  " ".join(str(row.get("short") or "").split()),
                  "\n".join(" ".join(p.split()) for p in str(row.get("long") or "").splitlines() if p.strip()),
                  int(row.get("width") or 0), int(row.get("height") or 0))


def load_user(path: Path, *, cache_dir: Path | None = None, table: TagTable | None = None) -> list[Record]:
    """A user's own data: ``.jsonl`` rows or a text file of tag lines (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path} does not exist; give a .jsonl file or a text file of tag lines")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows: Iterable[dict[str, Any]] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                                          if line.strip()]
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or "tags" not in row:
                raise ValueError(f"{path} line {i + 1}: each JSONL row needs a 'tags' field (comma string or list)")
    else:
        rows = [{"tags": r["text"]} for r in _load("text", path, cache_dir) if r["text"].strip()]
    records = [record_from_user(row, i, table) for i, row in enumerate(rows)]
    return [r for r in records if r.tags]


def split_records(records: Sequence[Record], heldout: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Split by group (never inside one): a seeded ``heldout`` share of the groups is held out.

    Example:
        >>> recs = [Record(f"g{i}", "user", ["smile"]) for i in range(40)]
        >>> train, held = split_records(recs, 0.05, seed=0)
        >>> len(train), len(held)
        (38, 2)
    """
    groups = sorted({r.group for r in records})
    random.Random(seed).shuffle(groups)
    n_held = max(1, round(len(groups) * heldout)) if heldout > 0 and len(groups) > 1 else 0
    held = set(groups[:n_held])
    return [r for r in records if r.group not in held], [r for r in records if r.group in held]
