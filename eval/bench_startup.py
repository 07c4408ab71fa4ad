"""Cold-start benchmark: whole processes, `tipo expand` on the built-in model against a bare interpreter
and a minimal llama-cpp-python script doing the same generation.

Each contender is a fresh process; repetitions are interleaved (A, B, C, D, then D, C, B, A, ...) so
load from other processes hits all of them. For each: wall seconds, CPU seconds (user + system of the
child, from ``os.wait4``) and peak RSS, as median and min-max over the repetitions. Bytecode is
written to a temporary folder (``PYTHONPYCACHEPREFIX``) and one warm-up round fills it, as an
installed package has its ``.pyc`` files; tipo's own cache (tag table, checked GGUF headers) is warm
too, except in the row marked "first run", which starts from an empty ``TIPO_CACHE``.

Example::

    python -m eval.bench_startup --reps 7
    git worktree add /tmp/tipo-old <older commit>
    python -m eval.bench_startup --reps 7 --baseline /tmp/tipo-old   # before/after, interleaved
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REQUEST = "1girl, forest"
SEED = 1

MINIMAL_LLAMA = """
import sys
from llama_cpp import Llama
path, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
llm = Llama(model_path=path, n_ctx=1024, n_threads=1, n_threads_batch=1, verbose=False)
ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
out = []
for i, tok in enumerate(llm.generate(ids, temp=0.5, top_p=0.95, top_k=80, min_p=0.05, repeat_penalty=1.17)):
    if tok == llm.token_eos() or i >= n:
        break
    out.append(tok)
print(prompt + llm.detokenize(out).decode("utf-8", "replace"))
"""


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of one child process (:func:`eval.bench_lm.run_process`)."""
    from eval.bench_lm import run_process

    try:
        return run_process(cmd, env)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.bench_startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=7, help="interleaved repetitions (default: %(default)s)")
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="another checkout of tipo (e.g. `git worktree add /tmp/old <commit>`): its `tipo expand` "
                        "rows are timed beside this checkout's, interleaved, for a before/after on one machine state")
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error("--reps must be >= 1")
    if args.baseline is not None and not (args.baseline / "tipo" / "cli.py").is_file():
        p.error(f"--baseline {args.baseline}: no tipo/cli.py there; give the root of a tipo checkout")

    # What tipo writes for this request (the raw script writes as many tokens), worked out in a child
    # process: this one stays small, as forked children start from a copy of it (peak RSS).
    prep = ("import json; from tipo import Expander, Request, Sampling, plan\n"
            f"ex = Expander(None, n_threads=1); r = ex.expand(Request({REQUEST!r}), Sampling(seed={SEED}))\n"
            f"print(json.dumps([str(ex.model.path), plan(Request({REQUEST!r})).prompt, r.provenance.generated_tokens]))")
    out = subprocess.run([sys.executable, "-c", prep], capture_output=True, text=True, check=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    model, prompt, n_tokens = json.loads(out.stdout)

    tmp = Path(tempfile.mkdtemp(prefix="tipo-bench-startup-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPYCACHEPREFIX=str(tmp / "pycache"), TIPO_CACHE=str(tmp / "cache"),
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    py = sys.executable
    contenders = {
        "bare interpreter (python -c pass)": [py, "-c", "pass"],
        f"minimal llama-cpp-python script ({n_tokens} tokens)": [py, "-c", MINIMAL_LLAMA, model, prompt, str(n_tokens)],
        "tipo expand --dry-run": [py, "-m", "tipo", "expand", REQUEST, "--dry-run"],
        f"tipo expand (built-in model, defaults, --threads 1; {n_tokens} tokens)":
            [py, "-m", "tipo", "expand", REQUEST, "--seed", str(SEED), "--threads", "1"],
    }
    if args.baseline is not None:
        # The other checkout first on sys.path (the working folder is this checkout), its CLI as `tipo`.
        base = str(args.baseline.resolve())
        launch = f"import sys; sys.path.insert(0, {base!r}); from tipo.cli import main; raise SystemExit(main(sys.argv[1:]))"
        contenders["baseline: tipo expand --dry-run"] = [py, "-c", launch, "expand", REQUEST, "--dry-run"]
        contenders[f"baseline: tipo expand ({n_tokens} tokens)"] = [py, "-c", launch, "expand", REQUEST, "--seed",
                                                                    str(SEED), "--threads", "1"]
    names = list(contenders)
    for name in names:  # warm-up: bytecode, tipo's cache, the OS file cache
        run_once(contenders[name], env)
    figures: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
    first: list[tuple[float, float, float]] = []
    tipo_cmd = contenders[names[3]]
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            figures[name].append(run_once(contenders[name], env))
        cold_env = dict(env, TIPO_CACHE=str(tmp / f"empty-{rep}"))
        first.append(run_once(tipo_cmd, cold_env))
    figures["tipo expand, first run (empty tipo cache)"] = first

    def cell(values: list[float], nd: int) -> str:
        return f"{statistics.median(values):.{nd}f} ({min(values):.{nd}f}-{max(values):.{nd}f})"

    bare = statistics.median(w for w, _, _ in figures[names[0]])
    print(f"## Start-up, whole processes ({args.reps} interleaved reps; median (min-max))\n")
    print(f"Load average at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs.\n")
    print("Peak RSS is the child's own high-water mark (it is forked by a small launcher).\n")
    print("| process | wall s | CPU s | peak RSS MiB | wall / bare |")
    print("|---|---|---|---|---|")
    for name, rows in figures.items():
        walls = [w for w, _, _ in rows]
        print(f"| {name} | {cell(walls, 3)} | {cell([c for _, c, _ in rows], 3)} | "
              f"{cell([m for _, _, m in rows], 0)} | {statistics.median(walls) / bare:.2f} |")
    again = f" --baseline {args.baseline}" if args.baseline is not None else ""
    print(f"\nRerun: `python -m eval.bench_startup --reps {args.reps}{again}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
