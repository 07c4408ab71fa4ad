"""Bans: tags that must not be generated, matched as whole tags after normalisation and alias
resolution, plus full-match regular expressions. Used while decoding (a token that would complete
a banned tag is masked) and on the parsed result."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .tags import TagTable, default_table, normalize

if TYPE_CHECKING:
    from .request import Request

__all__ = ["BanList"]


class BanList:
    """Whole-tag bans after normalisation and alias resolution, plus full-match regexes.

    Example:
        >>> bans = BanList(["hat"], [])
        >>> bans.matches("hat"), bans.matches("chat"), bans.matches("Hat")
        (True, False, True)
    """

    def __init__(self, tags: Iterable[str], patterns: Iterable[str], table: TagTable | None = None) -> None:
        self._table = table or default_table()
        self.tags = tuple(t for t in tags if normalize(t))
        self._keys = {self._table.canonical(t) for t in self.tags} | {normalize(t) for t in self.tags}
        self.patterns = tuple(re.compile(p) for p in patterns)

    @classmethod
    def from_request(cls, request: Request, table: TagTable | None = None) -> BanList:
        return cls(request.ban, request.ban_regex, table)

    def __bool__(self) -> bool:
        return bool(self._keys or self.patterns)

    def matches(self, tag: str) -> bool:
        norm = normalize(tag)
        if norm in self._keys or self._table.canonical(norm) in self._keys:
            return True
        return any(p.fullmatch(norm) for p in self.patterns)
