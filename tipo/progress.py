"""Progress bars for the command lines: tqdm when it is installed, else one plain status line.

Example:
    >>> bar = progress_bar(3, desc="tipo", unit="prompt", enabled=False)
    >>> bar is None
    True
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar"]


class _Line:
    """A plain ``desc: n/total`` line on stderr, rewritten in place (what a bar needs of tqdm)."""

    def __init__(self, total: int, initial: int, desc: str) -> None:
        self.total, self.n, self.desc, self._post, self._err = total, initial, desc, "", sys.stderr

    def update(self, k: int = 1) -> None:
        self.n += k
        self._show()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self._post = text
        self._show()

    def _show(self) -> None:
        print(f"\r{self.desc}: {self.n}/{self.total} {self._post}".rstrip(), end="", file=self._err)

    def close(self) -> None:
        print(file=self._err)


def progress_bar(total: int, *, desc: str, unit: str, initial: int = 0, enabled: bool | None = None) -> Any:
    """A progress bar on stderr (tqdm, or a plain line without it); None when ``enabled`` is False
    (``None``: only when stderr is a terminal)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return _Line(total, initial, desc)
    return tqdm(total=total, initial=initial, unit=unit, desc=desc, file=sys.stderr)
