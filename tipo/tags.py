"""Tag normalisation, categories and the Danbooru tag table (docs/FORMAT.md section 5).

The table ships as package data (``data/danbooru_tags.tsv.gz``, built by
``models/build_tag_table.py`` from the MIT-licensed tag list). It is loaded on first use and
cached; :func:`default_table` ``.cache_clear()`` drops it.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import functools
import gzip
import hashlib
import marshal
import os
import re
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = [
    "Category",
    "TagTable",
    "cache_table",
    "cached_table",
    "canonical",
    "categorize",
    "default_table",
    "is_known",
    "normalize",
    "read_tag_list",
    "split_tags",
]


class Category(str, enum.Enum):
    """Where a tag goes in the model input and in the rendered prompt."""

    SPECIAL = "special"
    GENERAL = "general"
    META = "meta"
    RATING = "rating"
    ARTIST = "artist"
    CHARACTERS = "characters"
    COPYRIGHTS = "copyrights"
    QUALITY = "quality"


def _counted(singular: str, plural: str) -> list[str]:
    return [f"1{singular}"] + [f"{n}{plural}" for n in range(2, 6)] + [f"6+{plural}", f"multiple {plural}"]


SPECIAL_TAGS: frozenset[str] = frozenset(
    _counted("girl", "girls") + _counted("boy", "boys") + _counted("other", "others") + ["male focus"]
)
QUALITY_TAGS: frozenset[str] = frozenset(
    [
        "masterpiece", "best quality", "great quality", "good quality", "normal quality",
        "low quality", "worst quality", "worse quality", "very aesthetic", "aesthetic",
        "displeasing", "very displeasing", "newest", "recent", "mid", "early", "old",
        "score_9", "source_anime", "source_cartoon", "source_furry", "source_pony",
    ]
    + [f"score_{n}_up" for n in range(4, 9)]
)
# The same tags as normalisation spells them (``score_9`` -> ``score 9``), so both forms match.
QUALITY_TAGS = QUALITY_TAGS | frozenset(t.replace("_", " ") for t in QUALITY_TAGS)
RATING_TAGS: frozenset[str] = frozenset(
    ["general", "sensitive", "questionable", "explicit", "safe", "sfw", "nsfw"]
)

# Danbooru category ids of the tag table.
_TABLE_CATEGORIES = {
    0: Category.GENERAL,
    1: Category.ARTIST,
    3: Category.COPYRIGHTS,
    4: Category.CHARACTERS,
    5: Category.META,
}

_WS = re.compile(r"\s+")


def normalize(tag: str) -> str:
    """Normalise one tag the way the model saw tags in training.

    ``_`` becomes a space except in tags of three characters or fewer (emoticons such as
    ``^_^``), the host-app escapes ``\\(`` ``\\)`` become ``(`` ``)``, whitespace is collapsed
    and the tag is lower-cased. Idempotent.

    Example:
        >>> normalize("  Long_Hair ")
        'long hair'
        >>> normalize("marker \\\\(medium\\\\)")
        'marker (medium)'
        >>> normalize("^_^")
        '^_^'
    """
    text = tag.replace("\\(", "(").replace("\\)", ")")
    text = _WS.sub(" ", text).strip().lower()
    if len(text) > 3:
        text = _WS.sub(" ", text.replace("_", " ")).strip()
    return text


def split_tags(text: str) -> list[str]:
    """Split a comma-separated tag string into normalised, non-empty tags (order kept).

    Example:
        >>> split_tags("1girl,smile ,  blue_eyes,,")
        ['1girl', 'smile', 'blue eyes']
    """
    out = []
    for part in re.split(r"[,\n]", text):
        tag = normalize(part)
        if tag:
            out.append(tag)
    return out


@dataclass(frozen=True)
class TagTable:
    """Danbooru tags: normalised name -> (category, post count), and alias -> name."""

    categories: dict[str, Category]
    counts: dict[str, int]
    aliases: dict[str, str]

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, int, int, Iterable[str]]]) -> TagTable:
        """Build a table from ``(name, danbooru_category_id, post_count, aliases)`` rows.

        Names and aliases are normalised here. A name always wins over an alias of the same
        spelling; of two tags claiming one alias, the more popular (earlier) one keeps it.
        """
        categories: dict[str, Category] = {}
        counts: dict[str, int] = {}
        aliases: dict[str, str] = {}
        for name, cat_id, count, alias_list in rows:
            key = normalize(name)
            if not key or key in categories:
                continue
            categories[key] = _TABLE_CATEGORIES.get(int(cat_id), Category.GENERAL)
            counts[key] = int(count)
            for alias in alias_list:
                akey = normalize(alias)
                if akey and not akey.startswith("/"):
                    aliases.setdefault(akey, key)
        for name in categories:
            aliases.pop(name, None)
        return cls(categories, counts, aliases)

    @classmethod
    def load_packaged(cls) -> TagTable:
        """Load the tag table shipped inside the package.

        Parsing the table and sorting its names takes a noticeable part of a second, so the
        result is kept in tipo's cache folder (``$TIPO_CACHE`` or ``~/.cache/tipo``; ``TIPO_CACHE=off``
        turns it off) in a form that loads in a few milliseconds: written once, atomically, when
        the table is first loaded (never at import), keyed by the table file and this module's
        source, and ignored when unreadable or stale.
        """
        ref = resources.files("tipo") / "data" / "danbooru_tags.tsv.gz"
        data = ref.read_bytes()
        key = hashlib.sha256(data + Path(__file__).read_bytes()).hexdigest()[:24]
        table = cached_table("tag-table", key)
        if table is None:
            table = cls.from_tsv_lines(gzip.decompress(data).decode("utf-8").splitlines())
            cache_table("tag-table", key, table)
        table.__dict__["_source_key"] = key
        return table

    @classmethod
    def from_tsv_lines(cls, lines: Iterable[str]) -> TagTable:
        """Read the packaged format: ``name<TAB>category_id<TAB>count<TAB>alias,alias``.

        Names in that file are already normalised, so this skips re-normalising them.
        """
        categories: dict[str, Category] = {}
        counts: dict[str, int] = {}
        aliases: dict[str, str] = {}
        cat_of = _TABLE_CATEGORIES
        for line in lines:
            name, cat_id, count, alias_text = line.rstrip("\n").split("\t")
            categories[name] = cat_of.get(int(cat_id), Category.GENERAL)
            counts[name] = int(count)
            if alias_text:
                for alias in alias_text.split("\x1f"):
                    aliases.setdefault(alias, name)
        return cls(categories, counts, aliases)

    @property
    def source_key(self) -> str | None:
        """A digest naming this table's content when it is known (the packaged table: its file and
        the code that reads it), for caches of what is derived from it; None for other tables."""
        return self.__dict__.get("_source_key")

    def restricted(self, names: Iterable[str]) -> TagTable:
        """The same table with only ``names`` (normalised; aliases of them kept): the tags a model
        was trained on, for known-tags-only decoding. The fixed special/quality/rating lists stay.

        Example:
            >>> t = default_table().restricted(["long hair", "smile"])
            >>> t.is_known("longhair"), t.is_known("forest"), t.is_known("1girl")
            (True, False, True)
        """
        keep = {self.canonical(n) for n in names}
        categories = {n: c for n, c in self.categories.items() if n in keep}
        counts = {n: self.counts[n] for n in categories}
        aliases = {a: n for a, n in self.aliases.items() if n in categories}
        return TagTable(categories, counts, aliases)

    def canonical(self, tag: str) -> str:
        """The canonical spelling of a tag: normalised, with a Danbooru alias resolved.

        Example:
            >>> default_table().canonical("Longhair")
            'long hair'
        """
        out = self._canonical_cache.get(tag)
        if out is None:
            key = normalize(tag)
            out = key if key in self.categories else self.aliases.get(key, key)
            cache = self._canonical_cache
            if len(cache) > 200_000:
                cache.clear()
            cache[tag] = out
        return out

    @functools.cached_property
    def _canonical_cache(self) -> dict[str, str]:
        return {}

    def prefix_range(self, text: str, content_only: bool = False) -> tuple[list[str], int, int]:
        """The sorted names (see :meth:`is_prefix`) and the range of those that start with ``text``."""
        names = self._sorted_content if content_only else self._sorted_names
        return names, bisect.bisect_left(names, text), bisect.bisect_left(names, text + "\U0010ffff")

    def is_known(self, tag: str) -> bool:
        """True when the tag (or an alias of it) is in the table or a fixed list."""
        key = self.canonical(tag)
        return key in self.categories or key in SPECIAL_TAGS or key in QUALITY_TAGS or key in RATING_TAGS

    @functools.cached_property
    def _sorted_names(self) -> list[str]:
        names = set(self.categories) | set(self.aliases) | SPECIAL_TAGS | QUALITY_TAGS | RATING_TAGS
        return sorted(names)

    @functools.cached_property
    def _sorted_content(self) -> list[str]:
        general = {n for n, c in self.categories.items() if c is Category.GENERAL}
        general |= {a for a, n in self.aliases.items() if n in general}
        return sorted(general | SPECIAL_TAGS)

    def is_prefix(self, text: str, content_only: bool = False, exclude: frozenset[str] | set[str] = frozenset(),
                  look: int = 64) -> bool:
        """True when some known tag or alias starts with ``text`` (already normalised);
        ``content_only`` looks only at tags of the ``tag:`` line (special and general); tags
        whose canonical spelling is in ``exclude`` do not count (the first ``look`` matches are
        checked, then any match counts).

        Example:
            >>> default_table().is_prefix("long ha"), default_table().is_prefix("qqqzz")
            (True, False)
        """
        info = self.prefix_info(text, content_only, look)
        if info is True or info is False:
            return info
        return not exclude or not info <= exclude

    def prefix_info(self, text: str, content_only: bool = False, look: int = 64) -> bool | frozenset[str]:
        """What :meth:`is_prefix` needs to know about ``text``, cached: False when no tag starts
        with it, True when at least ``look`` do (any exclusion leaves it a prefix), else the
        canonical spellings of the tags that do (it is a prefix unless all are excluded)."""
        cache = self._prefix_cache
        key = (text, content_only, look)
        info = cache.get(key)
        if info is None:
            names = self._sorted_content if content_only else self._sorted_names
            i = bisect.bisect_left(names, text)
            found = []
            for name in names[i : i + look]:
                if not name.startswith(text):
                    break
                found.append(name)
            if not found:
                info = False
            elif len(found) >= look:
                info = True
            else:
                info = frozenset(self.canonical(name) for name in found)
            if len(cache) > 400_000:
                cache.clear()
            cache[key] = info
        return info

    @functools.cached_property
    def _prefix_cache(self) -> dict[tuple[str, bool, int], bool | frozenset[str]]:
        return {}

    def is_content(self, tag: str) -> bool:
        """True for a known special or general tag (what belongs on the ``tag:`` line)."""
        return self.is_known(tag) and self.category(tag) in (Category.SPECIAL, Category.GENERAL)

    def category(self, tag: str) -> Category:
        """The category of a tag: fixed lists first, then the table, else ``general``."""
        key = normalize(tag)
        for candidate in (key, self.aliases.get(key, key)):
            if candidate in SPECIAL_TAGS:
                return Category.SPECIAL
            if candidate in QUALITY_TAGS:
                return Category.QUALITY
            if candidate in RATING_TAGS:
                return Category.RATING
        canon = self.canonical(key)
        return self.categories.get(canon, Category.GENERAL)


_CACHE_FORMAT = 2
_CATEGORY_LIST = list(Category)


def cache_dir() -> Path | None:
    """tipo's cache folder (``$TIPO_CACHE``, default ``~/.cache/tipo``); None when ``TIPO_CACHE=off``."""
    value = os.environ.get("TIPO_CACHE", "")
    if value.lower() in ("off", "0", "none"):
        return None
    return Path(value) if value else Path.home() / ".cache" / "tipo"


def _cache_path(kind: str, key: str) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / f"{kind}-{key}-py{sys.version_info[0]}{sys.version_info[1]}.marshal"


def cached_table(kind: str, key: str) -> TagTable | None:
    """A table :func:`cache_table` kept under ``kind`` and ``key``; None when there is none, or it is
    damaged or stale (the caller works the table out again and keeps it anew).

    The file holds a digest of its payload, checked before the payload is read: a truncated or
    otherwise damaged file is never unmarshalled."""
    path = _cache_path(kind, key)
    if path is None:
        return None
    try:
        fmt, stored, digest, payload = marshal.loads(path.read_bytes())
        if fmt != _CACHE_FORMAT or stored != key or not isinstance(payload, bytes) \
                or hashlib.blake2b(payload, digest_size=16).digest() != digest:
            return None
        names, cats, counts, alias_keys, alias_names, sorted_names, sorted_content = marshal.loads(payload)
        members = _CATEGORY_LIST
        table = TagTable(dict(zip(names, [members[c] for c in cats], strict=True)),
                         dict(zip(names, counts, strict=True)), dict(zip(alias_keys, alias_names, strict=True)))
        if not (isinstance(sorted_names, list) and isinstance(sorted_content, list)):
            return None
    except (OSError, EOFError, ValueError, TypeError, IndexError):
        return None
    table.__dict__["_sorted_names"] = sorted_names
    table.__dict__["_sorted_content"] = sorted_content
    return table


def cache_table(kind: str, key: str, table: TagTable) -> None:
    """Keep ``table`` (with its sorted name lists) in tipo's cache folder under ``kind`` and ``key``,
    written whole or not at all; nothing happens when the cache is off or cannot be written."""
    path = _cache_path(kind, key)
    if path is None:
        return
    index = {c: i for i, c in enumerate(_CATEGORY_LIST)}
    payload = marshal.dumps((list(table.categories), [index[c] for c in table.categories.values()],
                             [table.counts[n] for n in table.categories], list(table.aliases),
                             list(table.aliases.values()), table._sorted_names, table._sorted_content))
    write_atomic(path, marshal.dumps((_CACHE_FORMAT, key, hashlib.blake2b(payload, digest_size=16).digest(), payload)))


def write_atomic(path: Path, data: bytes) -> bool:
    """Write a cache file whole or not at all (a temporary file renamed over it); False when the
    folder cannot be written (a read-only or full disk: the next start works it out again)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        return False
    return True
def read_tag_list(path: str | os.PathLike[str]) -> list[str]:
    """The tags of a trained-tag list (``tag<TAB>count`` lines, ``#`` comments), e.g.
    ``tipo/data/tipo-builtin.tags.txt`` written by ``models/train/trained_tags.py``."""
    with open(path, encoding="utf-8") as fh:
        return [line.split("\t", 1)[0].strip() for line in fh if line.strip() and not line.startswith("#")]


@functools.lru_cache(maxsize=1)
def default_table() -> TagTable:
    """The packaged tag table, loaded on first use (``default_table.cache_clear()`` drops it)."""
    return TagTable.load_packaged()


def canonical(tag: str) -> str:
    """Normalise a tag and resolve a Danbooru alias (``longhair`` -> ``long hair``)."""
    return default_table().canonical(tag)


def is_known(tag: str) -> bool:
    """True when the tag is a known Danbooru tag, alias or fixed-list tag."""
    return default_table().is_known(tag)


def categorize(tag: str) -> Category:
    """The category of one tag by the packaged table (docs/FORMAT.md section 5)."""
    return default_table().category(tag)
