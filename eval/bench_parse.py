"""Parsing and planning time on pathological text: time per MB at two sizes, and their ratio.

Each shape is planned (host syntax taken apart, tags normalised and categorised, the model input
built; :func:`tipo.plan`) and, for model text, parsed (:func:`tipo.parse_text`) at a size and at
twice that size. Times are CPU seconds of this process (``time.process_time``), so other
work on a shared machine does not distort the ratio. Linear time shows as a ratio near 2 (and an equal time per MB); quadratic time
as a ratio near 4.

    python -m eval.bench_parse                 # 0.5 MB and 1 MB
    python -m eval.bench_parse --size 2        # 2 MB and 4 MB
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from tipo.parse import parse_text
from tipo.planner import plan
from tipo.request import Request
from tipo.tags import default_table

MB = 1_000_000


def _shapes() -> dict[str, tuple[Callable[[int], str], str]]:
    """name -> (text of about n characters, what runs on it)."""
    return {
        "one long tag": (lambda n: "a" * n, "plan"),
        "many tags": (lambda n: "long hair, " * (n // 11), "plan"),
        "deep brackets": (lambda n: "(" * (n // 2) + "x" + ")" * (n // 2), "plan"),
        "crossed brackets": (lambda n: "[" * (n // 3) + "(" * (n // 3) + "x" + "]" * (n // 3), "plan"),
        "unmatched closers": (lambda n: "[" * (n // 2) + ")" * (n // 2), "plan"),
        "weighted runs": (lambda n: "a (b) " * (n // 6), "plan"),
        "long caption": (lambda n: "A cat sits.\nrating: x\n" * (n // 22), "caption"),
        "model text": (lambda n: "tag: " + "smile, " * (n // 7), "parse"),
    }


def _run(kind: str, text: str) -> None:
    if kind == "plan":
        try:
            plan(Request(text, length="very_short", output="tags"))
        except ValueError:
            pass  # e.g. a weight beyond the bound: refused, which is also an answer
    elif kind == "caption":
        plan(Request(caption=text, caption_kind="long", output="tags"))
    else:
        parse_text(text)


def measure(size_mb: float, repeat: int = 1) -> list[tuple[str, float, float, float]]:
    """(shape, seconds per MB at size, seconds per MB at twice the size, ratio of the times)."""
    default_table()  # load the tag table outside the timings
    rows = []
    for name, (make, kind) in _shapes().items():
        times = []
        for n in (int(size_mb * MB), int(2 * size_mb * MB)):
            text = make(n)
            best = float("inf")
            for _ in range(repeat):
                t0 = time.process_time()
                _run(kind, text)
                best = min(best, time.process_time() - t0)
            times.append((best, len(text) / MB))
        (t1, m1), (t2, m2) = times
        rows.append((name, t1 / m1, t2 / m2, t2 / t1))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.bench_parse", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=float, default=0.5, help="the smaller size in MB (default 0.5; the larger is twice)")
    p.add_argument("--repeat", type=int, default=1, help="best of this many runs per size")
    args = p.parse_args(argv)
    if not 0 < args.size <= 64 or args.repeat < 1:
        p.error("--size must be in (0, 64] and --repeat >= 1")
    print(f"{'shape':<18} {'s/MB at ' + format(args.size, 'g') + ' MB':>14} {'s/MB at ' + format(2 * args.size, 'g') + ' MB':>14} "
          f"{'time ratio (2x input)':>22}")
    for name, a, b, ratio in measure(args.size, args.repeat):
        print(f"{name:<18} {a:>14.3f} {b:>14.3f} {ratio:>22.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
