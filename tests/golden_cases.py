"""Loading the golden cases: the project's copy in tests/golden and ../shared/golden when present."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
DIRS = [HERE / "golden", HERE.parent.parent / "shared" / "golden"]


def load(name: str) -> list[dict]:
    cases: dict[str, dict] = {}
    for d in DIRS:
        path = d / name
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    case = json.loads(line)
                    cases[f"{d.parent.name}/{case['id']}"] = case
    return list(cases.values())


def request_kwargs(req: dict) -> dict:
    """Map a golden request onto tipo.Request (golden default caption_kind is 'short')."""
    kw = dict(req)
    if kw.get("caption") and "caption_kind" not in kw:
        kw["caption_kind"] = "short"
    return kw


def cli_args(req: dict) -> list[str]:
    """The `tipo expand` flags for a golden request."""
    kw = request_kwargs(req)
    args = ["expand", kw.get("tags", "")]
    if kw.get("caption"):
        args += ["--caption", kw["caption"], "--caption-kind", kw["caption_kind"]]
    for key in ("length", "width", "height", "output"):
        if key in kw:
            args += [f"--{key}", str(kw[key])]
    if kw.get("gen_meta"):
        args.append("--gen-meta")
    return args + ["--dry-run", "--json"]
