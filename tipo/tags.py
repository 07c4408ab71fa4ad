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
import threading
import time
import zlib
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
        source, and ignored when unreadable or stale. The table read from it answers lookups of
        single tags from a sorted index and builds its dictionaries only when something needs
        them whole (see :class:`_IndexedTable`).
        """
        ref = resources.files("tipo") / "data" / "danbooru_tags.tsv.gz"
        data = ref.read_bytes()
        key = hashlib.sha256(data + Path(__file__).read_bytes()).hexdigest()[:24]
        table: TagTable | None = _IndexedTable.read(key)
        if table is None:
            table = cls.from_tsv_lines(gzip.decompress(data).decode("utf-8").splitlines())
            _IndexedTable.write(key, table)
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
            out = key if self._category_of(key) is not None else (self._alias_of(key) or key)
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
        return (self._category_of(key) is not None or key in SPECIAL_TAGS or key in QUALITY_TAGS
                or key in RATING_TAGS)

    @functools.cached_property
    def _sorted_names(self) -> list[str]:
        names = set(self.categories) | set(self.aliases) | SPECIAL_TAGS | QUALITY_TAGS | RATING_TAGS
        return sorted(names)

    @functools.cached_property
    def _sorted_content(self) -> list[str]:
        general = {n for n, c in self.categories.items() if c is Category.GENERAL}
        general |= {a for a, n in self.aliases.items() if n in general}
        general |= SPECIAL_TAGS
        return [n for n in self._sorted_names if n in general]  # a subset of the names: no second sort

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
        """The category of a tag: fixed lists first, then the table, else ``general`` (cached)."""
        cache = self._category_cache
        out = cache.get(tag)
        if out is None:
            if len(cache) > 200_000:
                cache.clear()
            out = cache[tag] = self._category(tag)
        return out

    @functools.cached_property
    def _category_cache(self) -> dict[str, Category]:
        return {}

    def _category(self, tag: str) -> Category:
        key = normalize(tag)
        for candidate in (key, self._alias_of(key) or key):
            if candidate in SPECIAL_TAGS:
                return Category.SPECIAL
            if candidate in QUALITY_TAGS:
                return Category.QUALITY
            if candidate in RATING_TAGS:
                return Category.RATING
        canon = self.canonical(key)
        return self._category_of(canon) or Category.GENERAL

    # Point lookups: every method above reads the table through these two.
    def _category_of(self, name: str) -> Category | None:
        """The category of a table name (None: not a name of the table)."""
        return self.categories.get(name)

    def _alias_of(self, key: str) -> str | None:
        """The name an alias stands for (None: not an alias)."""
        return self.aliases.get(key)


_CACHE_FORMAT = 3
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

    The file holds a checksum (CRC-32) of its payload, checked before the payload is read: a
    truncated or otherwise damaged file is never unmarshalled."""
    path = _cache_path(kind, key)
    if path is None:
        return None
    try:
        fmt, stored, digest, payload = marshal.loads(path.read_bytes())
        if fmt != _CACHE_FORMAT or stored != key or not isinstance(payload, bytes) or zlib.crc32(payload) != digest:
            return None
        return _table_from_payload(payload)
    except (OSError, EOFError, ValueError, TypeError, IndexError):
        return None


def cache_table(kind: str, key: str, table: TagTable) -> None:
    """Keep ``table`` (with its sorted name lists) in tipo's cache folder under ``kind`` and ``key``,
    written whole or not at all; nothing happens when the cache is off or cannot be written."""
    path = _cache_path(kind, key)
    if path is None:
        return
    payload = _table_payload(table)
    write_atomic(path, marshal.dumps((_CACHE_FORMAT, key, zlib.crc32(payload), payload)))


def _table_payload(table: TagTable) -> bytes:
    index = {c: i for i, c in enumerate(_CATEGORY_LIST)}
    return marshal.dumps((list(table.categories), [index[c] for c in table.categories.values()],
                          [table.counts[n] for n in table.categories], list(table.aliases),
                          list(table.aliases.values()), table._sorted_names, table._sorted_content))


def _table_from_payload(payload: bytes) -> TagTable:
    """The table of :func:`_table_payload` (raises ValueError, TypeError or IndexError on a
    payload of another shape)."""
    names, cats, counts, alias_keys, alias_names, sorted_names, sorted_content = marshal.loads(payload)
    members = _CATEGORY_LIST
    table = TagTable(dict(zip(names, [members[c] for c in cats], strict=True)),
                     dict(zip(names, counts, strict=True)), dict(zip(alias_keys, alias_names, strict=True)))
    if not (isinstance(sorted_names, list) and isinstance(sorted_content, list)):
        raise TypeError("sorted names are not lists")
    table.__dict__["_sorted_names"] = sorted_names
    table.__dict__["_sorted_content"] = sorted_content
    return table


def write_atomic(path: Path, data: bytes) -> bool:
    """Write a cache file whole or not at all (a temporary file renamed over it); False when the
    folder cannot be written (a read-only or full disk: the next start works it out again).
    Then the cache is pruned (:func:`prune_cache`)."""
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
    prune_cache(path)
    return True


#: The most files of one kind (``gguf-<key>``, ``tag-index-<key>``, ...) the cache folder keeps;
#: writing one more removes the oldest beyond it. Everything there is worked out again when missing.
CACHE_KEEP: dict[str, int] = {"gguf": 256}
CACHE_KEEP_DEFAULT = 4
#: Temporary files a killed process left behind are removed once they are this old (seconds).
CACHE_TMP_AGE = 3600
_CACHE_NAME = re.compile(r"(?P<kind>.+?)-[0-9a-f]{16,}(?:-py[0-9]+)?\.marshal")
_CACHE_TMP = re.compile(r"\.(?P<name>.+\.marshal)\.[^./]+\.tmp")


def prune_cache(written: Path) -> None:
    """Remove, in ``written``'s folder, the oldest cache files of its kind beyond
    :data:`CACHE_KEEP` (by modification time; ``written`` stays) and temporary files older than
    :data:`CACHE_TMP_AGE`. Only names tipo's cache writes are touched (``<kind>-<hex key>[-pyNN].marshal``
    and their temporary files), so other files in a shared folder are never removed."""
    match = _CACHE_NAME.fullmatch(written.name)
    if match is None:
        return
    kind = match["kind"]
    keep = CACHE_KEEP.get(kind, CACHE_KEEP_DEFAULT)
    same: list[tuple[int, str]] = []
    stale: list[str] = []
    try:
        now = time.time()
        with os.scandir(written.parent) as entries:
            for entry in entries:
                if not entry.is_file(follow_symlinks=False) or entry.name == written.name:
                    continue
                tmp = _CACHE_TMP.fullmatch(entry.name)
                if tmp is not None and _CACHE_NAME.fullmatch(tmp["name"]) is not None:
                    if now - entry.stat(follow_symlinks=False).st_mtime > CACHE_TMP_AGE:
                        stale.append(entry.name)
                    continue
                other = _CACHE_NAME.fullmatch(entry.name)
                if other is not None and other["kind"] == kind:
                    same.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
    except OSError:
        return
    same.sort(reverse=True)
    for name in stale + [name for _, name in same[max(0, keep - 1):]]:
        with contextlib.suppress(OSError):
            os.unlink(written.parent / name)
_INDEX_MAGIC = b"tipo-tag-index\x00\x01"
_WHOLE_LOCK = threading.Lock()


class _IndexedTable(TagTable):
    """The packaged table as read from tipo's cache: point lookups (:meth:`canonical`,
    :meth:`category`, :meth:`is_known`) are answered from a sorted index of the names and aliases
    (binary search over their UTF-8 bytes), so a start that looks up a few tags never builds the
    dictionaries of 170,000 entries; the dictionaries and sorted lists are made the first time
    something needs them, from a second part of the same file.

    File layout: a magic string, a marshalled header (format, key, byte order, the five parts'
    lengths and CRC-32 checksums), then the parts: the keys' UTF-8 bytes in byte order (= code point
    order), their offsets (uint32, one more than the keys), each key's category index (int8, -1
    when it is no name), each key's alias target (int32 index of the name, -1 when it is no alias)
    and the whole table in :func:`cache_table`'s form (read lazily, its checksum checked then).
    """

    categories = property(lambda self: self._whole()[0])  # type: ignore[assignment]
    counts = property(lambda self: self._whole()[1])  # type: ignore[assignment]
    aliases = property(lambda self: self._whole()[2])  # type: ignore[assignment]

    def __reduce__(self) -> tuple[object, ...]:  # pickles as a plain table
        return (TagTable, (self.categories, self.counts, self.aliases))

    @functools.cached_property
    def _sorted_names(self) -> list[str]:
        self._whole()
        return self.__dict__["_sorted_names"]  # type: ignore[no-any-return]

    @functools.cached_property
    def _sorted_content(self) -> list[str]:
        self._whole()
        return self.__dict__["_sorted_content"]  # type: ignore[no-any-return]

    def _whole(self) -> tuple[dict[str, Category], dict[str, int], dict[str, str]]:
        whole = self.__dict__.get("_dicts")
        if whole is not None:
            return whole  # type: ignore[no-any-return]
        with _WHOLE_LOCK:
            return self._read_whole()

    def _read_whole(self) -> tuple[dict[str, Category], dict[str, int], dict[str, str]]:
        whole = self.__dict__.get("_dicts")
        if whole is None:
            path, start, length, digest = self.__dict__["_payload"]
            table = None
            with contextlib.suppress(OSError, EOFError, ValueError, TypeError, IndexError):
                with open(path, "rb") as fh:  # (replaced since it was opened: another digest, read afresh)
                    fh.seek(start)
                    payload = fh.read(length)
                if len(payload) == length and zlib.crc32(payload) == digest:
                    table = _table_from_payload(payload)
            if table is None:  # damaged since it was opened: read the packaged file again
                data = (resources.files("tipo") / "data" / "danbooru_tags.tsv.gz").read_bytes()
                table = TagTable.from_tsv_lines(gzip.decompress(data).decode("utf-8").splitlines())
            self.__dict__.setdefault("_sorted_names", table._sorted_names)
            self.__dict__.setdefault("_sorted_content", table._sorted_content)
            whole = self.__dict__["_dicts"] = (table.categories, table.counts, table.aliases)
            del self.__dict__["_payload"]
        return whole  # type: ignore[no-any-return]

    def _find(self, key: str) -> int:
        """The index of ``key`` among the sorted keys, or -1."""
        try:
            want = key.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: never a key
            return -1
        blob, off = self.__dict__["_blob"], self.__dict__["_off"]
        lo, hi = 0, len(off) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if blob[off[mid]:off[mid + 1]] < want:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < len(off) - 1 and blob[off[lo]:off[lo + 1]] == want else -1

    def _category_of(self, name: str) -> Category | None:
        whole = self.__dict__.get("_dicts")
        if whole is not None:
            return whole[0].get(name)
        return self._entry(name)[0]

    def _alias_of(self, key: str) -> str | None:
        whole = self.__dict__.get("_dicts")
        if whole is not None:
            return whole[2].get(key)
        return self._entry(key)[1]

    def _entry(self, key: str) -> tuple[Category | None, str | None]:
        """(category if ``key`` is a name, the name it stands for if it is an alias), remembered."""
        seen = self.__dict__.setdefault("_entries", {})
        found = seen.get(key)
        if found is None:
            i = self._find(key)
            c = self.__dict__["_cat"][i] if i >= 0 else -1
            j = self.__dict__["_target"][i] if i >= 0 else -1
            blob, off = self.__dict__["_blob"], self.__dict__["_off"]
            if not (-1 <= c < len(_CATEGORY_LIST) and -1 <= j < len(off) - 1):
                c = j = -1  # out of range (a file altered with its checksums): no entry, never an IndexError
            found = (_CATEGORY_LIST[c] if c >= 0 else None, blob[off[j]:off[j + 1]].decode("utf-8") if j >= 0 else None)
            if len(seen) > 200_000:
                seen.clear()
            seen[key] = found
        return found  # type: ignore[no-any-return]

    @classmethod
    def read(cls, key: str) -> _IndexedTable | None:
        """The table kept under ``key``, or None when there is none or it is damaged or stale.
        Only the index is read now; the whole table at the end of the file when it is needed."""
        path = _cache_path("tag-index", key)
        if path is None:
            return None
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(_INDEX_MAGIC) + 4)
                if len(head) != len(_INDEX_MAGIC) + 4 or head[: len(_INDEX_MAGIC)] != _INDEX_MAGIC:
                    return None
                n_head = int.from_bytes(head[len(_INDEX_MAGIC) :], "little")
                fmt, stored, order, lengths, digests = marshal.loads(fh.read(n_head))
                if fmt != _CACHE_FORMAT or stored != key or order != sys.byteorder or len(lengths) != 5 \
                        or len(digests) != 5:
                    return None
                starts, at = [], len(head) + n_head
                for length in lengths:
                    at += -at % 8
                    starts.append(at)
                    at += length
                if at != os.fstat(fh.fileno()).st_size:
                    return None
                index = memoryview(fh.read(starts[4] - len(head) - n_head))
            parts = [index[i - len(head) - n_head : i - len(head) - n_head + n] for i, n in zip(starts[:4], lengths[:4], strict=True)]
            if any(len(part) != n or zlib.crc32(part) != d for part, n, d in zip(parts, lengths, digests, strict=False)):
                return None
            blob, off, cat, target = bytes(parts[0]), parts[1].cast("I"), parts[2].cast("b"), parts[3].cast("i")
            n = len(cat)
            if len(off) != n + 1 or len(target) != n or off[0] != 0 or off[n] != len(blob):
                return None
        except (OSError, EOFError, ValueError, TypeError):
            return None
        table = object.__new__(cls)
        table.__dict__.update(_blob=blob, _off=off, _cat=cat, _target=target,
                              _payload=(path, starts[4], lengths[4], digests[4]))
        return table

    @staticmethod
    def write(key: str, table: TagTable) -> None:
        """Keep ``table`` under ``key`` (whole or not at all; nothing when the cache is off)."""
        path = _cache_path("tag-index", key)
        if path is None:
            return
        import array
        import itertools

        # Code point order, which is the UTF-8 bytes' order that lookups compare in (the table's
        # sorted names hold every name and alias, and the fixed-list tags: no second sort).
        categories, aliases = table.categories, table.aliases
        keys = [k for k in table._sorted_names if k in categories or k in aliases]
        try:
            encoded = [k.encode("utf-8") for k in keys]
        except UnicodeEncodeError:  # a lone surrogate in a table built by hand: keep no index
            return
        where = {k: i for i, k in enumerate(keys)}
        index = {c: i for i, c in enumerate(_CATEGORY_LIST)}
        off = array.array("I", [0])
        off.extend(itertools.accumulate(map(len, encoded)))
        cat = array.array("b", [index[categories[k]] if k in categories else -1 for k in keys])
        target = array.array("i", [where.get(aliases[k], -2) if k in aliases else -1 for k in keys])
        if -2 in target:  # an alias of a name the table lacks: keep the plain form only
            return
        parts = [b"".join(encoded), off.tobytes(), cat.tobytes(), target.tobytes(), _table_payload(table)]
        head = marshal.dumps((_CACHE_FORMAT, key, sys.byteorder, [len(p) for p in parts], [zlib.crc32(p) for p in parts]))
        out = bytearray(_INDEX_MAGIC + len(head).to_bytes(4, "little") + head)
        for part in parts:
            out += bytes(-len(out) % 8)
            out += part
        write_atomic(path, bytes(out))


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
