"""``python -m eval run ...`` / ``python -m eval report DIR``: see eval/cli.py and eval/README.md."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
