"""Language-model stage benchmark (issue 3, item 10): tipo against raw llama.cpp and tipo-kgen.

Prints a Markdown table; it is a measurement, not a test. Three parts, all on the same GGUF files:

(a) Decode speed: tokens/s of :class:`tipo.Expander` (tipo's own sampler and decode-time rules in
    Python) against raw llama-cpp-python generation (``Llama.generate`` with llama.cpp's sampler chain,
    same settings) on the same file and the same prompt; the built-in model opened as the CLI opens it
    (known-tags-only decoding on). Targets: tipo / raw >= 0.8 on the built-in model, >= 0.97 on the
    500M shape. Beside it, tipo's own CPU time per token with the logits replayed from a recording
    (target <= 0.15 ms on the built-in model).
(b) Model passes and end-to-end seconds per request against the reference library ``tipo-kgen``
    (``kgen``), driven exactly as the reference WebUI extension drives it (``seperate_tags`` ->
    ``parse_tipo_request`` -> ``tipo_runner`` -> ``apply_format``), on the same requests:
    (1) on a trained TIPO-format model where both stop naturally (``tipo/data/tipo-builtin.gguf``),
        with kgen's default settings and with its retries off;
    (2) on random TIPO-500M-shape files (F16, BF16, Q8_0), which never stop naturally, with an equal
        token budget per field (each kgen pass capped at N new tokens; tipo's single pass capped at
        N x fields); kgen's retries off there (its retry rule cannot be met by a random model).
    Both sides start cold: tipo evaluates every prompt afresh; kgen's context is reset before each
    request (llama-cpp-python would otherwise reuse the previous repetition's prompt prefix).
    kgen's passes are counted by wrapping ``kgen.executor.tipo.generate`` (in this process only);
    tipo always makes one pass. Target: tipo <= 0.6 x kgen's seconds.
(c) Prompts per second for a sequential loop of 64 mixed requests with fixed seeds (one Expander, no
    batching).
(d) Whole processes on the built-in model: ``tipo expand`` with the CLI defaults against a fresh
    Python process driving kgen (retries off and default): wall, CPU and peak RSS.

Repetitions are interleaved (A, B, A, B, ... with the order alternating) so that load from other
processes hits both sides; figures are medians with the min-max spread. Random model files are written under the system
temp folder (``--f16``, ``--q8`` paths) when missing, never into the repository.

Examples::

    python -m eval.bench_lm --threads 1                     # full run (about 6-7 min on 1 free core)
    python -m eval.bench_lm --quick --threads 1             # a smoke run (about 1 min)
    python -m eval.bench_lm --models /tmp/a.gguf --reps 5 --decode-tokens 256 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILTIN = REPO / "tipo" / "data" / "tipo-builtin.gguf"
TMP = Path(tempfile.gettempdir()) / "tipo-bench"
RANDOM_FILES = {"F16": TMP / "tipo-500m-random-f16.gguf", "BF16": TMP / "tipo-500m-random-bf16.gguf",
                "Q8_0": TMP / "tipo-500m-random-q8_0.gguf"}

# The reference UI's sampling defaults (z-tipo-extension): these are also tipo.Sampling's defaults.
TEMPERATURE, TOP_P, TOP_K, MIN_P, REPEAT_PENALTY = 0.5, 0.95, 80, 0.05, 1.17
# The reference UI's default output format ("Both, tag first (recommend)") and length targets.
KGEN_FORMAT_NAME = "Both, tag first (recommend)"
WIDTH, HEIGHT = 832, 1216

DECODE_TARGET = 0.95
TIME_TARGET = 0.6


# --- small helpers --------------------------------------------------------------------------------


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt(x: float, nd: int = 2) -> str:
    return "-" if x != x else f"{x:.{nd}f}"  # NaN -> "-"


def interleaved(reps: int, variants: list[str]) -> Iterator[tuple[int, str]]:
    """(rep, variant) in an interleaved order; the order within a repetition alternates (ABAB, BABA)."""
    for rep in range(reps):
        order = variants if rep % 2 == 0 else variants[::-1]
        for v in order:
            yield rep, v


def machine_info(threads: int) -> dict[str, object]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count() or 1
    return {
        "cpu": cpu,
        "cores (os.cpu_count)": os.cpu_count(),
        "cores usable (affinity)": affinity,
        "threads used (llama.cpp, both sides)": threads,
        "load average at start": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "llama-cpp-python": version("llama_cpp_python"),
        "tipo-kgen": version("tipo-kgen"),
        "numpy": version("numpy"),
        "tipo": f"{version('tipo-prompt')} (commit {_commit()})",
    }


def _commit() -> str:
    """The checkout's commit (what a figure was measured on), or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


# --- the requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request, as tipo takes it and as the reference UI takes it (same inputs, same fields out)."""

    name: str
    tags: str = ""
    caption: str = ""
    caption_kind: str | None = None
    output: str = "both"
    length: str = "long"

    def tipo_request(self):  # noqa: ANN201
        from tipo import Request

        return Request(self.tags, caption=self.caption, caption_kind=self.caption_kind, length=self.length,
                       output=self.output, width=WIDTH, height=HEIGHT)

    def n_fields(self) -> int:
        from tipo import plan

        return len(plan(self.tipo_request()).fields)


# The reference UI with its default format makes: tags only -> [tags, tag_to_long]; tags + caption ->
# [short_to_tag, tag_to_long]; caption only -> [long_to_tag]. The tipo requests write the same fields.
# Length "very_short": kgen's retry rule (at least 6 tags, 1 sentence for this class) can be met by a
# trained model, so its default retries stop when the output is good enough, as in real use.
CASES = (
    Case("tags -> tags + caption", tags="1girl, solo, long hair, forest, smile", length="very_short"),
    Case("tags + caption -> tags + caption", tags="1girl, forest",
         caption="a girl walking through a misty forest at dawn.", length="very_short"),
    Case("caption -> tags", caption="A red car is parked by the sea at sunset, its paint shining in the warm "
         "light.", caption_kind="long", output="tags", length="very_short"),
)

# (c): a mixed batch; cycled to the batch size, seeds derived from (base 0, index) as `tipo expand --batch`.
BATCH_TEMPLATES = (
    dict(tags="1girl, forest", length="short", output="tags"),
    dict(tags="1girl, solo, long hair, smile", length="long"),
    dict(tags="scenery, no humans, mountain, lake", length="very_short", output="tags"),
    dict(caption="a cat sleeping on a sunny windowsill", output="caption"),
    dict(tags="1boy, school uniform", caption="a boy waiting at a train station in the rain."),
    dict(tags="1girl, witch hat, night sky", length="short", ban=("hat", "smile"), ban_regex=(".*text",)),
    dict(caption="Snow falls softly on the mountain village. Smoke rises from the chimneys. A dog runs "
         "through the street. Children are playing.", output="tags", length="very_long"),
    dict(tags="2girls, multiple girls, classroom", length="long", gen_meta=True),
)


def batch_requests(n: int) -> list[tuple[object, int]]:
    from tipo import Request
    from tipo.seeds import record_seed

    out = []
    for i in range(n):
        t = BATCH_TEMPLATES[i % len(BATCH_TEMPLATES)]
        ratio = {"width": WIDTH, "height": HEIGHT} if i % 3 == 0 else {}
        out.append((Request(**t, **ratio), record_seed(0, i)))  # type: ignore[arg-type]
    return out


# --- (a) decode speed -------------------------------------------------------------------------------


DECODE_CASE = Case("caption -> caption", caption="a girl reading a book under a cherry tree in spring",
                   output="caption")


def clocks() -> tuple[float, float]:
    """(wall, CPU) seconds. CPU time is this process's (llama.cpp computes in it): with one thread it
    counts the work done and not the time spent waiting for a core other processes hold."""
    return time.perf_counter(), time.process_time()


class EvalTimer:
    """Times a Llama object's ``eval`` calls (instance attribute, removed on exit): the first call's
    end (the prompt is evaluated) and the seconds spent in later calls (one token each).

    ``steps``: (object, method name) of the call that evaluates one token when it is not
    ``llm.eval`` (tipo's llama.cpp backend hands single tokens to llama_decode itself); those calls
    are then the ones timed after the prompt."""

    def __init__(self, llm, steps: tuple[object, str] | None = None) -> None:  # noqa: ANN001
        self.llm = llm
        self.steps = steps or (llm, "eval")
        self.prompt_done: tuple[float, float] | None = None
        self.step_seconds = 0.0

    def __enter__(self) -> EvalTimer:
        original_eval = self.llm.eval
        owner, name = self.steps
        original_step = getattr(owner, name)
        steps_by_eval = owner is self.llm and name == "eval"

        def timed_eval(tokens):  # noqa: ANN001, ANN202
            t0 = time.perf_counter()
            original_eval(tokens)
            if self.prompt_done is None:
                self.prompt_done = clocks()
            elif steps_by_eval:
                self.step_seconds += time.perf_counter() - t0

        def timed_step(*args):  # noqa: ANN002, ANN202
            t0 = time.perf_counter()
            original_step(*args)
            self.step_seconds += time.perf_counter() - t0

        self.llm.eval = timed_eval
        if not steps_by_eval:
            setattr(owner, name, timed_step)
        return self

    def __exit__(self, *exc: object) -> None:
        del self.llm.eval  # back to the class methods
        owner, name = self.steps
        if not (owner is self.llm and name == "eval"):
            delattr(owner, name)


def raw_decode(llm, ids: list[int], n: int, seed: int) -> tuple[int, float, float, float]:  # noqa: ANN001
    """Raw llama-cpp-python generation of n tokens: (tokens, decode wall s, decode CPU s, model s).

    The decode span runs from the end of the prompt's evaluation to the n-th token: n samplings and
    n - 1 single-token evaluations, the span of tipo's ``provenance.seconds["generate"]``. "model s" is
    the part of it spent in llama.cpp's evaluation.
    """
    if hasattr(llm, "set_seed"):
        llm.set_seed(seed)
    count = 0
    with EvalTimer(llm) as timer:
        for _token in llm.generate(ids, temp=TEMPERATURE, top_p=TOP_P, top_k=TOP_K, min_p=MIN_P,
                                   repeat_penalty=REPEAT_PENALTY, reset=True):
            count += 1
            if count >= n:
                break
        wall, cpu = clocks()
    assert timer.prompt_done is not None
    return count, wall - timer.prompt_done[0], cpu - timer.prompt_done[1], timer.step_seconds


def tipo_decode(ex, req, n: int, seed: int):  # noqa: ANN001, ANN201
    """One Expander run: (provenance, decode CPU s, model s). The CPU span starts when the prompt is
    evaluated and ends when expand() returns (so it also holds parsing the result: conservative).
    Reaches into the llama.cpp backend's ``Llama`` object to time its evaluations."""
    from tipo import Sampling

    # The raw runs share this Llama object; tipo evaluates the whole prompt afresh on every request (no
    # KV-prefix reuse), outside the timed decode span, as the raw runs do (reset=True, another prompt state).
    with EvalTimer(ex.backend._llm, steps=(ex.backend, "_decode_one")) as timer:
        prov = ex.expand(req, Sampling(seed=seed, max_new_tokens=n)).provenance
        cpu = time.process_time()
    assert timer.prompt_done is not None
    return prov, cpu - timer.prompt_done[1], timer.step_seconds


def paired(a: list[float], b: list[float]) -> float:
    """Median of the per-repetition ratios a[i] / b[i] (each pair ran back to back)."""
    return median([x / y for x, y in zip(a, b, strict=False)])


def bench_decode(label: str, ex, args) -> dict[str, object]:  # noqa: ANN001
    """(a). Raw generation runs on the Expander's own ``Llama`` object: the same loaded weights, context
    size, batch size and threads, so only the sampling loop differs (two instances of one file were
    measured to differ by up to ~2% in evaluation speed on their own)."""
    from tipo import plan

    raw = ex.backend._llm
    req = DECODE_CASE.tipo_request()
    ids = ex.backend.encode(plan(req).prompt)
    n = args.decode_tokens
    # warm-up: page the weights in and settle caches on both sides
    tipo_decode(ex, req, 8, 0)
    raw_decode(raw, ids, 8, 0)
    wall: dict[str, list[float]] = {"tipo": [], "raw": []}
    cpu: dict[str, list[float]] = {"tipo": [], "raw": []}
    outside: dict[str, list[float]] = {"tipo": [], "raw": []}
    tokens: dict[str, list[int]] = {"tipo": [], "raw": []}
    stops = set()
    for rep, v in interleaved(args.reps, ["tipo", "raw"]):
        seed = 100 + rep
        if v == "tipo":
            prov, cpu_s, model_s = tipo_decode(ex, req, n, seed)
            got, wall_s = prov.generated_tokens, prov.seconds["generate"]
            stops.add(prov.stop_reason)
        else:
            got, wall_s, cpu_s, model_s = raw_decode(raw, ids, n, seed)
        wall[v].append(got / wall_s)
        cpu[v].append(got / cpu_s)
        outside[v].append((wall_s - model_s) / got * 1000)
        tokens[v].append(got)
    row = {
        "model": label, "prompt_tokens": len(ids), "new_tokens": n,
        "tipo_tok_s": median(wall["tipo"]), "raw_tok_s": median(wall["raw"]),
        "ratio": paired(wall["tipo"], wall["raw"]),
        "tipo_cpu_tok_s": median(cpu["tipo"]), "raw_cpu_tok_s": median(cpu["raw"]),
        "cpu_ratio": paired(cpu["tipo"], cpu["raw"]),
        "tipo_outside_ms": median(outside["tipo"]), "raw_outside_ms": median(outside["raw"]),
        "tipo_all": wall["tipo"], "raw_all": wall["raw"], "tipo_cpu_all": cpu["tipo"], "raw_cpu_all": cpu["raw"],
        "tipo_outside_all": outside["tipo"], "raw_outside_all": outside["raw"],
        "tipo_tokens": tokens["tipo"], "raw_tokens": tokens["raw"], "tipo_stop": sorted(stops),
    }
    log(f"(a) {label}: tipo {row['tipo_tok_s']:.2f} tok/s, raw {row['raw_tok_s']:.2f} tok/s, paired ratio "
        f"{row['ratio']:.3f} (CPU time: {row['tipo_cpu_tok_s']:.2f} vs {row['raw_cpu_tok_s']:.2f}, "
        f"{row['cpu_ratio']:.3f}); outside the model: {row['tipo_outside_ms']:.3f} vs {row['raw_outside_ms']:.3f} "
        "ms/token")
    return row


OVERHEAD_CASES = (
    Case("tags", tags="1girl, forest", length="long"),
    Case("caption", caption="a cat sitting on a sofa", length="long"),
    Case("tags only", tags="dog, grass", length="very_long", output="tags"),
)


class Replay:
    """A backend's ``start``/``step`` answering from recorded logits, one recorded run per ``start``."""

    def __init__(self, recorded: list[list[object]]) -> None:
        self.runs = iter(recorded)
        self.current: Iterator[object] = iter(())

    def start(self, ids: list[int]) -> object:
        self.current = iter(next(self.runs))
        return next(self.current)

    def step(self, token: int) -> object:
        return next(self.current)


def bench_overhead(ex, args, natural: bool) -> dict[str, object]:  # noqa: ANN001
    """tipo's own CPU time per token, without the model: each step's logits are recorded once, then the
    same expansions are replayed from the recording (the same tokens come out; checked), so what is
    timed is the decode rules, the sampler, the loop and the per-request planning and parsing."""
    from tipo import Sampling

    backend = ex.backend
    start, step = backend.start, backend.step
    recorded: list[list[object]] = []

    def rec_start(ids):  # noqa: ANN001, ANN202
        out = start(ids)
        recorded.append([out.copy()])
        return out

    def rec_step(token):  # noqa: ANN001, ANN202
        out = step(token)
        recorded[-1].append(out.copy())
        return out

    cap = {} if natural else {"max_new_tokens": args.decode_tokens}  # a random model never stops
    jobs = [(c.tipo_request(), Sampling(seed=200 + i, **cap)) for i, c in enumerate(OVERHEAD_CASES * 2)]
    backend.start, backend.step = rec_start, rec_step  # type: ignore[method-assign]
    try:
        want = [ex.expand(r, smp).completion for r, smp in jobs]
        per_token: list[float] = []
        for _ in range(max(3, args.reps)):
            replay = Replay(recorded)
            backend.start, backend.step = replay.start, replay.step  # type: ignore[method-assign]
            c0 = time.process_time()
            got = [ex.expand(r, smp) for r, smp in jobs]
            cpu = time.process_time() - c0
            if [g.completion for g in got] != want:
                raise RuntimeError("replaying the recorded logits gave other tokens")
            per_token.append(cpu / sum(g.provenance.generated_tokens for g in got) * 1000)
    finally:
        del backend.start, backend.step
    log(f"(a) tipo's own time per token without the model: {median(per_token):.3f} ms CPU")
    return {"tipo_python_ms": median(per_token), "tipo_python_ms_all": per_token}


KGEN_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from eval.bench_lm import CASES, kgen_expand, load_kgen
load_kgen(Path(sys.argv[2]), int(sys.argv[3]))
kgen_expand(CASES[int(sys.argv[4])], int(sys.argv[5]), **({"max_retry": 0} if sys.argv[6] == "noretry" else {}))
"""


# Linux keeps a process's peak RSS across fork and exec, so a child forked from this benchmark
# (which holds the models it measured, gigabytes) would report this process's peak. The child is
# therefore forked by a small launcher process, which times it and reports its rusage on a pipe.
_LAUNCHER = """
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
os.write(int(sys.argv[1]), f"{wall} {ru.ru_utime + ru.ru_stime} {ru.ru_maxrss} {os.waitstatus_to_exitcode(status)}".encode())
"""


def run_process(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of one child process (``os.wait4`` in a small launcher).

    ``env`` defaults to this environment with .pyc files written under the benchmark's folder."""
    import subprocess

    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(TMP / "pycache")  # .pyc files, as an installed package has them
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(write_fd), *cmd], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env, cwd=REPO, pass_fds=(write_fd,))
    finally:
        os.close(write_fd)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.wait()
    with os.fdopen(read_fd, "rb") as fh:
        report = fh.read().decode().split()
    if proc.returncode != 0 or len(report) != 4 or report[3] != "0":
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {err.strip()[-400:]}")
    wall, cpu, maxrss = float(report[0]), float(report[1]), float(report[2])
    return wall, cpu, maxrss / 1024


def bench_processes(args, kgen_ok: bool) -> list[dict[str, object]]:  # noqa: ANN001
    """(d) Whole processes on the built-in model, first case: ``tipo expand`` with the CLI defaults
    against a fresh Python process driving kgen the reference UI's way (retries off and default)."""
    case = CASES[0]
    py = sys.executable
    tipo_cmd = [py, "-m", "tipo", "expand", case.tags, "--length", case.length, "--width", str(WIDTH),
                "--height", str(HEIGHT), "--seed", "1000", "--threads", str(args.threads)]
    variants = {"tipo expand (CLI defaults)": tipo_cmd}
    if kgen_ok:
        for mode in ("noretry", "default"):
            variants[f"kgen, retries {'off' if mode == 'noretry' else 'default'}"] = [
                py, "-c", KGEN_SCRIPT, str(REPO), str(args.builtin), str(args.threads), "0", "1000", mode]
    for cmd in variants.values():  # warm-up: bytecode, tipo's cache, the OS file cache
        run_process(cmd)
    runs: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    for _rep, v in interleaved(args.reps, list(variants)):
        runs[v].append(run_process(variants[v]))
    rows = []
    for v, rs in runs.items():
        rows.append({"process": v, "wall": [r[0] for r in rs], "cpu": [r[1] for r in rs], "rss": [r[2] for r in rs]})
        log(f"(d) {v}: {median(rows[-1]['wall']):.2f} s wall, {median(rows[-1]['cpu']):.2f} s CPU, "  # type: ignore[arg-type]
            f"{median(rows[-1]['rss']):.0f} MiB")  # type: ignore[arg-type]
    return rows


# --- (b) against tipo-kgen ----------------------------------------------------------------------------


@dataclass
class Run:
    """One request's figures: model passes, generated tokens, wall and CPU seconds."""

    passes: int
    tokens: int
    seconds: float
    cpu: float


@dataclass
class PassCounter:
    """Wraps ``kgen.executor.tipo.generate`` to count model passes and their tokens (this process only)."""

    calls: list[tuple[int, int]] = field(default_factory=list)

    @contextlib.contextmanager
    def patch(self) -> Iterator[PassCounter]:
        import kgen.executor.tipo as ktipo

        original = ktipo.generate

        def counted(*a, **k):  # noqa: ANN002, ANN003, ANN202
            out = original(*a, **k)
            self.calls.append((int(out[1]), int(out[2])))
            return out

        ktipo.generate = counted
        try:
            yield self
        finally:
            ktipo.generate = original


def load_kgen(path: Path, threads: int) -> None:
    """Load a GGUF with kgen's own loader (n_ctx=2048 as in the reference), same thread count as tipo."""
    import kgen.models as kmodels

    # kgen logs to stdout; keep the table clean.
    logging.getLogger("TIPO-KGen").setLevel(logging.WARNING)
    if kmodels.text_model is not None and hasattr(kmodels.text_model, "close"):
        kmodels.text_model.close()
    kmodels.text_model = None
    kmodels.model_dir = path.parent
    kmodels.load_model(path.name, gguf=True, device="cpu", n_threads=threads, n_threads_batch=threads)


def kgen_expand(case: Case, seed: int, **extra: object) -> Run:
    """One request through the reference UI's code path (z-tipo-extension scripts/tipo.py `_process`)."""
    import kgen.executor.tipo as ktipo
    import kgen.models as kmodels
    from kgen.formatter import apply_format, seperate_tags
    from kgen.metainfo import TIPO_DEFAULT_FORMAT

    fmt_text = TIPO_DEFAULT_FORMAT[KGEN_FORMAT_NAME]
    counter = PassCounter()
    if hasattr(kmodels.text_model, "reset"):
        # The same cold state as tipo, which evaluates every prompt afresh: llama-cpp-python would
        # otherwise reuse the prompt prefix the previous repetition left in the context.
        kmodels.text_model.reset()
    t0, c0 = clocks()
    with counter.patch():
        all_tags = [t.strip() for t in case.tags.split(",") if t.strip()]
        tag_map = seperate_tags(all_tags)
        nl_prompt = case.caption
        meta, operations, general, nl_prompt = ktipo.parse_tipo_request(
            tag_map, nl_prompt, tag_length_target=case.length, nl_length_target=case.length,
            generate_extra_nl_prompt=(not nl_prompt and "<|extended|>" in fmt_text) or "<|generated|>" in fmt_text,
        )
        meta["aspect_ratio"] = f"{WIDTH / HEIGHT:.1f}"
        result_map, _timing = ktipo.tipo_runner(meta, operations, general, nl_prompt, temperature=TEMPERATURE,
                                                top_p=TOP_P, top_k=TOP_K, seed=seed, **extra)
        apply_format(result_map, fmt_text)
    t1, c1 = clocks()
    return Run(len(counter.calls), sum(c for _, c in counter.calls), t1 - t0, c1 - c0)


def bench_vs_kgen(label: str, ex, args, natural: bool) -> list[dict[str, object]]:  # noqa: ANN001
    """tipo vs kgen (retries off) vs kgen (default retries) on each case; returns one row per case x mode."""
    from tipo import Sampling

    budget = None if natural else args.field_tokens
    # kgen's default retries only where its retry rule can be met: a random model never writes 6 tags.
    variants = ["tipo", "kgen-noretry"] + (["kgen-default"] if args.kgen_default_reps > 0 and natural else [])
    rows: list[dict[str, object]] = []
    # warm-up both sides (kgen's model is a separate llama.cpp context)
    ex.expand(CASES[0].tipo_request(), Sampling(seed=1, max_new_tokens=8))
    kgen_expand(CASES[0], 1, max_retry=0, max_new_tokens=8)
    for case in CASES:
        n_fields = case.n_fields()
        req = case.tipo_request()
        kg_extra: dict[str, object] = {} if natural else {"max_new_tokens": budget}
        runs: dict[str, list[Run]] = {v: [] for v in variants}
        for rep, v in interleaved(args.reps, variants):
            if v == "kgen-default" and rep >= args.kgen_default_reps:
                continue
            seed = 1000 + rep
            if v == "tipo":
                sampling = Sampling(seed=seed) if natural else Sampling(seed=seed, max_new_tokens=budget * n_fields)
                t0, c0 = clocks()
                res = ex.expand(req, sampling)
                t1, c1 = clocks()
                runs[v].append(Run(1, res.provenance.generated_tokens, t1 - t0, c1 - c0))
            else:
                extra = dict(kg_extra)
                if v == "kgen-noretry":
                    extra["max_retry"] = 0
                runs[v].append(kgen_expand(case, seed, **extra))
        tipo = runs["tipo"]
        for v in variants[1:]:
            ks = runs[v]
            rows.append({
                "model": label, "case": case.name, "mode": v, "fields": n_fields, "budget_per_field": budget,
                "tipo_passes": 1, "tipo_tokens": median([float(r.tokens) for r in tipo]),
                "tipo_s": median([r.seconds for r in tipo]), "tipo_cpu": median([r.cpu for r in tipo]),
                "kgen_passes": median([float(r.passes) for r in ks]),
                "kgen_tokens": median([float(r.tokens) for r in ks]),
                "kgen_s": median([r.seconds for r in ks]), "kgen_cpu": median([r.cpu for r in ks]),
                "ratio": paired([r.seconds for r in tipo], [r.seconds for r in ks]),
                "cpu_ratio": paired([r.cpu for r in tipo], [r.cpu for r in ks]),
                "kgen_reps": len(ks), "tipo_runs": [vars(r) for r in tipo], "kgen_runs": [vars(r) for r in ks],
            })
            r = rows[-1]
            log(f"(b) {label} | {case.name} | {v}: tipo {r['tipo_s']:.2f}s, kgen {r['kgen_s']:.2f}s "
                f"({r['kgen_passes']:.0f} passes), paired ratio {r['ratio']:.3f} (CPU {r['cpu_ratio']:.3f})")
    return rows


# --- (c) batch ------------------------------------------------------------------------------------------


def bench_batch(label: str, ex, args, natural: bool) -> dict[str, object]:  # noqa: ANN001
    from tipo import Sampling

    reqs = batch_requests(args.batch)
    cap = None if natural else args.batch_tokens
    tokens = 0
    passes = 0
    t0, c0 = clocks()
    for req, seed in reqs:
        sampling = Sampling(seed=seed) if cap is None else Sampling(seed=seed, max_new_tokens=cap)
        res = ex.expand(req, sampling)  # type: ignore[arg-type]
        tokens += res.provenance.generated_tokens
        passes += 1
    t1, c1 = clocks()
    seconds, cpu = t1 - t0, c1 - c0
    row = {"model": label, "requests": len(reqs), "max_new_tokens": cap or "model stops",
           "seconds": seconds, "prompts_per_s": len(reqs) / seconds, "tokens": tokens, "passes": passes,
           "tokens_per_s": tokens / seconds, "cpu_seconds": cpu, "prompts_per_cpu_s": len(reqs) / cpu}
    log(f"(c) {label}: {row['prompts_per_s']:.3f} prompts/s ({tokens} tokens in {seconds:.1f}s)")
    return row


# --- driver ---------------------------------------------------------------------------------------------


def ensure_random_files(paths: dict[str, Path]) -> None:
    for label, path in paths.items():
        if path.exists():
            continue
        from models.tiny import build_random

        log(f"writing a random TIPO-500M-shape {label} GGUF to {path} ...")
        path.parent.mkdir(parents=True, exist_ok=True)
        build_random("TIPO-500M", path, outtype=label.lower(), seed=0)


def run(args: argparse.Namespace) -> dict[str, object]:
    from tipo import Expander

    threads = args.threads
    report: dict[str, object] = {"machine": machine_info(threads), "args": vars(args).copy(),
                                 "decode": [], "kgen": [], "batch": [], "processes": [], "pending": []}
    report["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    models: list[tuple[str, Path, bool]] = []  # (label, path, stops naturally)
    if args.models:
        models = [(Path(p).name, Path(p), False) for p in args.models]
    else:
        files = {"F16": args.f16, "BF16": args.bf16, "Q8_0": args.q8}
        ensure_random_files(files)
        models = [(f"TIPO-500M random {k}", v, False) for k, v in files.items()]
    if not args.skip_builtin:
        if args.builtin.exists():
            models.insert(0, ("built-in (trained; CLI defaults, known-tags on)", args.builtin, True))
        else:
            report["pending"].append(f"(b)(1) and (c) on the trained built-in model: {args.builtin} does not "  # type: ignore[union-attr]
                                     "exist yet; rerun this command once it does")
    kgen_ok = not args.skip_kgen
    if kgen_ok:
        try:
            import kgen.executor.tipo  # noqa: F401
            import kgen.models  # noqa: F401
        except Exception as exc:  # noqa: BLE001
            report["pending"].append(f"(b) skipped: tipo-kgen cannot be imported ({exc})")  # type: ignore[union-attr]
            kgen_ok = False
    t_all = time.perf_counter()
    for label, path, natural in models:
        log(f"loading {path} ({path.stat().st_size / 2**20:.0f} MiB), {threads} thread(s)")
        # The built-in model exactly as the CLI opens it by default (known-tags-only decoding on).
        ex = Expander(None if path == BUILTIN else path, n_threads=threads)
        try:
            if not args.skip_decode:
                row = bench_decode(label, ex, args)
                row.update(bench_overhead(ex, args, natural))
                report["decode"].append(row)  # type: ignore[union-attr]
            if kgen_ok:
                load_kgen(path, threads)
                report["kgen"].extend(bench_vs_kgen(label, ex, args, natural))  # type: ignore[union-attr]
            if args.batch > 0:
                report["batch"].append(bench_batch(label, ex, args, natural))  # type: ignore[union-attr]
        finally:
            ex.close()
            if kgen_ok:
                import kgen.models as kmodels

                if kmodels.text_model is not None:
                    kmodels.text_model.close()
                    kmodels.text_model = None
            gc.collect()
    if not args.skip_builtin and args.builtin.exists() and not args.skip_processes:
        report["processes"] = bench_processes(args, kgen_ok)
    report["seconds"] = time.perf_counter() - t_all
    report["machine"]["load average at end"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())  # type: ignore[index]
    return report


def spread(xs: list[float], nd: int = 2) -> str:
    """Median (min-max)."""
    if not xs:
        return "-"
    return f"{fmt(median(xs), nd)} ({fmt(min(xs), nd)}-{fmt(max(xs), nd)})"


def ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=False)]


def yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def markdown(report: dict[str, object], argv: list[str]) -> str:
    out: list[str] = []
    a = report["args"]
    out.append("## tipo LM-stage benchmark\n")
    out.append("| machine | |\n|---|---|")
    for k, v in report["machine"].items():  # type: ignore[attr-defined]
        out.append(f"| {k} | {v} |")
    out.append("")
    out.append("Ratios are medians of per-repetition ratios (each pair ran back to back). \"CPU\" figures use "
               "this process's CPU time, which other processes' load does not inflate; they are the steadier "
               "figure on a shared machine. \"Outside the model\" is the decode time not spent in llama.cpp's "
               "per-token evaluation: sampling, decode-time rules, detokenising and Python glue.\n")
    decode = report["decode"]
    if decode:
        out.append(f"### (a) decode speed, {a['decode_tokens']} new tokens, {a['reps']} interleaved reps\n")
        out.append("Each figure: median (min-max over the repetitions). \"tipo Python ms/token\" is tipo's own CPU "
                   "time per token with the model's logits replayed from a recording (decode rules, sampler, loop, "
                   "planning and parsing; the model not run).\n")
        out.append("| model | tipo tok/s | raw tok/s | tipo / raw | tipo CPU tok/s | raw CPU tok/s | "
                   "tipo / raw (CPU) | outside the model, ms/token: tipo / raw | tipo Python ms/token |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in decode:  # type: ignore[attr-defined]
            out.append(f"| {r['model']} | {spread(r['tipo_all'])} | {spread(r['raw_all'])} | "
                       f"{spread(ratios(r['tipo_all'], r['raw_all']), 3)} | {spread(r['tipo_cpu_all'])} | "
                       f"{spread(r['raw_cpu_all'])} | {spread(ratios(r['tipo_cpu_all'], r['raw_cpu_all']), 3)} | "
                       f"{fmt(r['tipo_outside_ms'], 3)} / {fmt(r['raw_outside_ms'], 3)} | "
                       f"{spread(r.get('tipo_python_ms_all', []), 3)} |")
        out.append("")
    kg = report["kgen"]
    if kg:
        out.append(f"### (b) seconds per request, tipo vs tipo-kgen ({a['reps']} interleaved reps; kgen with its "
                   f"default retries: {a['kgen_default_reps']} rep)\n")
        out.append("Both sides cold: tipo evaluates every prompt afresh and kgen's context is reset before each "
                   "request. kgen's default retries run only on the trained model, where its retry rule can be met.\n")
        out.append("| model | request | kgen mode | cap per field | tipo passes / tokens | kgen passes / tokens | "
                   "tipo s | kgen s | tipo / kgen | tipo / kgen (CPU) |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in kg:  # type: ignore[attr-defined]
            cap = r["budget_per_field"] or "none"
            ts, ks = [x["seconds"] for x in r["tipo_runs"]], [x["seconds"] for x in r["kgen_runs"]]
            tc, kc = [x["cpu"] for x in r["tipo_runs"]], [x["cpu"] for x in r["kgen_runs"]]
            out.append(f"| {r['model']} | {r['case']} | {r['mode']} | {cap} | 1 / {r['tipo_tokens']:.0f} | "
                       f"{r['kgen_passes']:.0f} / {r['kgen_tokens']:.0f} | {spread(ts)} | {spread(ks)} | "
                       f"{spread(ratios(ts, ks), 3)} | {spread(ratios(tc, kc), 3)} |")
        out.append("")
        out.append("All requests together (sums of the per-request medians):\n")
        out.append("| model | kgen mode | passes tipo / kgen | tipo s | kgen s | tipo / kgen | tipo CPU s | kgen CPU s | "
                   "tipo / kgen (CPU) | target | met (wall / CPU) |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        groups: dict[tuple[str, str], list[dict]] = {}
        for r in kg:  # type: ignore[attr-defined]
            groups.setdefault((r["model"], r["mode"]), []).append(r)
        for (model, mode), rs in groups.items():
            ts, ks = sum(r["tipo_s"] for r in rs), sum(r["kgen_s"] for r in rs)
            tc, kc = sum(r["tipo_cpu"] for r in rs), sum(r["kgen_cpu"] for r in rs)
            kp = sum(r["kgen_passes"] for r in rs)
            out.append(f"| {model} | {mode} | {len(rs)} / {kp:.0f} | {fmt(ts)} | {fmt(ks)} | {fmt(ts / ks, 3)} | "
                       f"{fmt(tc)} | {fmt(kc)} | {fmt(tc / kc, 3)} | <= {TIME_TARGET} | "
                       f"{yes(ts / ks <= TIME_TARGET)} / {yes(tc / kc <= TIME_TARGET)} |")
        out.append("")
    batch = report["batch"]
    if batch:
        out.append("### (c) a sequential loop of mixed requests through one Expander (fixed seeds, one pass each; "
                   "no batching, warm after the first)\n")
        out.append("| model | requests | max new tokens | seconds | prompts/s | prompts per CPU s | tokens | tokens/s |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in batch:  # type: ignore[attr-defined]
            out.append(f"| {r['model']} | {r['requests']} | {r['max_new_tokens']} | {fmt(r['seconds'], 1)} | "
                       f"{fmt(r['prompts_per_s'], 3)} | {fmt(r['prompts_per_cpu_s'], 3)} | {r['tokens']} | "
                       f"{fmt(r['tokens_per_s'])} |")
        out.append("")
    procs = report.get("processes") or []
    if procs:
        out.append(f"### (d) whole processes on the built-in model, \"{CASES[0].name}\" ({a['reps']} interleaved reps, "
                   "after one warm-up each)\n")
        out.append("| process | wall s | CPU s | peak RSS MiB |")
        out.append("|---|---|---|---|")
        for r in procs:  # type: ignore[attr-defined]
            out.append(f"| {r['process']} | {spread(r['wall'])} | {spread(r['cpu'])} | {spread(r['rss'], 0)} |")
        out.append("")
    for p in report["pending"]:  # type: ignore[attr-defined]
        out.append(f"- pending: {p}")
    out.append(f"\nWhole run: {report['seconds']:.0f} s. Rerun: `python -m eval.bench_lm {' '.join(argv)}` "
               "(`python -m eval.bench_lm --help` for the options).")
    return "\n".join(out)


FULL = {"reps": 3, "decode_tokens": 128, "field_tokens": 24, "kgen_default_reps": 1, "batch": 64, "batch_tokens": 16}
QUICK = {"reps": 1, "decode_tokens": 32, "field_tokens": 8, "kgen_default_reps": 0, "batch": 8, "batch_tokens": 8}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.bench_lm", description=__doc__.split("\n\n")[0])
    p.add_argument("--f16", type=Path, default=RANDOM_FILES["F16"],
                   help="random TIPO-500M-shape F16 GGUF, written there when missing (default: %(default)s)")
    p.add_argument("--bf16", type=Path, default=RANDOM_FILES["BF16"],
                   help="random TIPO-500M-shape BF16 GGUF, written there when missing (default: %(default)s)")
    p.add_argument("--q8", type=Path, default=RANDOM_FILES["Q8_0"],
                   help="random TIPO-500M-shape Q8_0 GGUF, written there when missing (default: %(default)s)")
    p.add_argument("--models", nargs="+", default=None, metavar="GGUF",
                   help="benchmark these GGUF files (as never-stopping models) instead of --f16/--q8")
    p.add_argument("--builtin", type=Path, default=BUILTIN,
                   help="the trained built-in model for (b)(1) and (c); figures pending when missing (default: %(default)s)")
    p.add_argument("--skip-builtin", action="store_true", help="do not use the built-in model")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="llama.cpp threads for every side; on a shared or busy machine 1 is steadier (default: all cores, "
                        "%(default)s here)")
    p.add_argument("--reps", type=int, help=f"interleaved repetitions per measurement (default: {FULL['reps']})")
    p.add_argument("--decode-tokens", type=int,
                   help=f"(a) new tokens per decode run (default: {FULL['decode_tokens']})")
    p.add_argument("--field-tokens", type=int,
                   help="(b)(2) token cap per field: kgen's per pass, tipo's one pass gets it times its fields "
                        f"(default: {FULL['field_tokens']})")
    p.add_argument("--kgen-default-reps", type=int,
                   help="(b) repetitions of kgen with its default retries (0 = skip; up to 11 passes per "
                        f"operation on a random model, the slow part) (default: {FULL['kgen_default_reps']})")
    p.add_argument("--batch", type=int, help=f"(c) requests in the batch, 0 = skip (default: {FULL['batch']})")
    p.add_argument("--batch-tokens", type=int,
                   help="(c) max new tokens per request on the random (never-stopping) models "
                        f"(default: {FULL['batch_tokens']})")
    p.add_argument("--skip-decode", action="store_true", help="skip (a)")
    p.add_argument("--skip-kgen", action="store_true", help="skip (b)")
    p.add_argument("--skip-processes", action="store_true", help="skip (d), the whole-process rows")
    p.add_argument("--quick", action="store_true",
                   help="smoke run (about 1-2 min): defaults become " + ", ".join(f"{k}={v}" for k, v in QUICK.items())
                        + "; options given explicitly still win")
    p.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.reps < 1 or args.decode_tokens < 2 or args.field_tokens < 1 or args.threads < 1:
        p.error("--reps, --field-tokens and --threads must be >= 1 and --decode-tokens >= 2")
    args.kgen_default_reps = min(args.kgen_default_reps, args.reps)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    report = run(args)
    text = markdown(report, argv)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
