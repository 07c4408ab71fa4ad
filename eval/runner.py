"""The evaluation runner: a prompt set x expansion methods -> records, images, scores and a report.

Steps of :func:`run` (each resumable):

1. Validate the settings, load the prompt set (``eval.prompt_sets``) and the methods' specs.
2. Check ``DIR/config.json`` against this run's settings (a resume with other settings is refused),
   or write it for a new run.
3. For each method, expand every item not yet in ``DIR/items.jsonl`` (one record per (method, item),
   appended, flushed and fsynced as it finishes; a torn last line is dropped on resume). With images,
   each record's image is saved under ``DIR/images/<method>/`` before its record is written.
4. Score: CLIP/T5 token counts of the rendered prompts, and image metrics (CLIP score, DINOv2 Vendi and
   FDD, aesthetic score) when images and extractors are there -> ``DIR/scores.json``.
5. Summarise -> ``DIR/results.json``, and write ``DIR/report.md`` with PNG plots (``eval.report``).

Seeds: item ``i`` of the set uses ``sha256("tipo-eval:<seed>:<item id>")`` (first 4 bytes) for every
method, so all methods expand an item with the same seed; its image uses
``sha256("tipo-eval-image:<seed>:<item id>")``, also the same for every method, so image differences
come from the prompts. A ``seed`` field in a ``.jsonl`` prompt file overrides the first.

CPU-sized example (a tiny model from ``python -m models.tiny /tmp/tiny``)::

    python -m eval run --prompts my_prompts.txt --methods none,tipo --model /tmp/tiny/tiny-f32.gguf \\
        --max-new-tokens 32 --out runs/eval-demo
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tipo.seeds import derive

from .errors import EvalError, MethodFailure
from .methods import (
    MethodSettings,
    MethodSpec,
    check_method,
    describe_method,
    open_method,
    parse_methods,
    request_json,
    slug,
)
from .prompt_sets import PromptItem, PromptSet, load_prompt_set
from .summary import item_values, record_key, summarize

__all__ = [
    "Extractors",
    "ImageSettings",
    "ItemLog",
    "RunConfig",
    "RunResult",
    "ScoringSettings",
    "build_results",
    "item_seed",
    "run",
    "score_images",
]

CONFIG_VERSION = 1
OPTIONAL_METRICS = ("tokens", "clip", "dino", "aesthetic", "nudity")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_CLIP_TOKENIZER = "openai/clip-vit-large-patch14"
DEFAULT_T5_TOKENIZER = "google/t5-v1_1-xxl"


@dataclass(frozen=True)
class ImageSettings:
    """How to make one image per (method, item) through tipo's image stage.

    Args:
        pipeline: a diffusers pipeline folder or hub id, loaded with ``tipo.image``.
        steps, guidance, width, height: generation settings; None keeps ``tipo.image.generate``'s
            defaults (30 steps, the pipeline's guidance and size).
        config: for a single-file checkpoint as ``pipeline``: a diffusers folder (or hub id) of the same
            family whose configs and tokenizers are used (``tipo.image.load_pipeline``'s ``config``).
    """

    pipeline: str
    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    config: str | None = None

    def __post_init__(self) -> None:
        if not self.pipeline:
            raise EvalError("--images needs --pipeline PATH (a diffusers pipeline folder or hub id)")
        for name in ("steps", "width", "height"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise EvalError(f"image {name}={value} is not valid; give a whole number >= 1")


@dataclass(frozen=True)
class ScoringSettings:
    """Models for the optional metrics: local folders or hub ids, loaded with eval.metrics' own loaders.

    Args:
        clip: CLIP checkpoint for the CLIP score (and, when no ``clip_tokenizer``, for token counts).
        dino: DINOv2 checkpoint for image Vendi and FDD.
        siglip, aesthetic_head: SigLIP checkpoint and the Aesthetic Predictor V2.5 head file.
        reference: a folder of reference images for FDD (e.g. real photos for the prompt set).
        clip_tokenizer, t5_tokenizer: tokenizers for the 77/512 token budgets; None looks for one
            locally (the CLIP checkpoint, the pipeline's tokenizers, the Hugging Face cache).
        metrics: which optional metric groups to compute (``tokens``, ``clip``, ``dino``,
            ``aesthetic``, ``nudity``); None computes every group whose models are given (``nudity``:
            when the ``nudenet`` package, which carries its own detector, is installed).
        nudity_threshold: the NudeNet score at which an exposed-nudity detection flags an image.
        device: where the scoring models run.
    """

    clip: str | None = None
    dino: str | None = None
    siglip: str | None = None
    aesthetic_head: str | None = None
    reference: str | None = None
    clip_tokenizer: str | None = None
    t5_tokenizer: str | None = None
    metrics: tuple[str, ...] | None = None
    device: str = "cpu"
    nudity_threshold: float = 0.6

    def __post_init__(self) -> None:
        if self.metrics is not None:
            unknown = [m for m in self.metrics if m not in OPTIONAL_METRICS + ("text",)]
            if unknown:
                raise EvalError(f"unknown metric group(s) {unknown}; choose from text (always on), "
                                f"{', '.join(OPTIONAL_METRICS)}")
            needs = {"clip": ("clip", "--clip PATH"), "dino": ("dino", "--dino PATH"),
                     "aesthetic": ("aesthetic_head", "--aesthetic-head PATH and --siglip PATH")}
            for group, (attr, flag) in needs.items():
                if group in self.metrics and not getattr(self, attr):
                    raise EvalError(f"--metrics {group} needs {flag}")
        if bool(self.aesthetic_head) != bool(self.siglip):
            raise EvalError("the aesthetic score needs both --aesthetic-head FILE and --siglip PATH (SigLIP so400m)")
        if not 0 < self.nudity_threshold <= 1:
            raise EvalError(f"--nudity-threshold {self.nudity_threshold} is not valid; give a number in (0, 1]")
        if self.reference and not self.dino:
            raise EvalError("--reference images are for FDD, which needs --dino PATH as well")

    def wants(self, group: str) -> bool:
        return self.metrics is None or group in self.metrics

    @property
    def nudity(self) -> bool:
        """Whether to run the NudeNet image-safety metric: asked for, or (by default) nudenet installed."""
        if self.metrics is not None:
            return "nudity" in self.metrics
        import importlib.util

        return importlib.util.find_spec("nudenet") is not None


@dataclass(frozen=True)
class RunConfig:
    """Everything one run depends on.

    Args:
        prompts: a prompt set name (``partiprompts``, ``coco``, ``scenery``) or a ``.txt``/``.jsonl`` file.
        methods: ``--methods`` values (``none,tipo``, ``kgen``, ``cmd:<command>``).
        out: the output folder.
        data_dir: the shared data folder (default ``../shared/data``).
        split: for ``coco``: a held-out corpus file (default: the training recipe's, else a hash split).
        limit: a fixed sample of this many items.
        seed: base seed of the per-item seeds.
        request: default Request fields for every item (``length``, ``output``, ``ban``, ...); an item's
            own fields win.
        settings: settings of the model-backed methods.
        images: generate images (None: text only).
        scoring: models for the optional metrics.
        progress: show progress bars on stderr.
    """

    prompts: str
    methods: tuple[str, ...]
    out: Path
    data_dir: str | None = None
    split: str | None = None
    limit: int | None = None
    seed: int = 0
    request: Mapping[str, Any] = field(default_factory=dict)
    settings: MethodSettings = field(default_factory=MethodSettings)
    images: ImageSettings | None = None
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if isinstance(self.methods, str):
            object.__setattr__(self, "methods", (self.methods,))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise EvalError(f"seed={self.seed!r} is not valid; give a whole number >= 0")
        if (self.scoring.clip or self.scoring.dino or self.scoring.aesthetic_head) and self.images is None:
            raise EvalError("image metrics (--clip, --dino, --aesthetic-head) need images: add --images --pipeline PATH "
                            "(for CLIP token counts alone, pass --clip-tokenizer PATH instead)")


@dataclass(frozen=True)
class RunResult:
    """What a run left behind, and how much it computed this time."""

    out: Path
    results: dict[str, Any]
    computed: dict[str, int]  # method -> items expanded by this call (0 when all were already done)
    resumed: int  # records found from an earlier call

    @property
    def results_path(self) -> Path:
        return self.out / "results.json"

    @property
    def report_path(self) -> Path:
        return self.out / "report.md"


def item_seed(base: int, item: PromptItem, purpose: str = "tipo-eval") -> int:
    """The seed of one item under a base seed, the same for every method (stable across machines).

    Example:
        >>> item_seed(0, PromptItem("line:1", {"tags": "cat"})) == item_seed(0, PromptItem("line:1", {"tags": "dog"}))
        True
    """
    if purpose == "tipo-eval" and item.seed is not None:
        return item.seed
    return derive(base, item.id, purpose)  # tipo.seeds rule 3


# -- the item log ------------------------------------------------------------------------------


class ItemLog:
    """``DIR/items.jsonl``: one JSON record per line, appended and fsynced; later records of a key win."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dropped_torn_line = False

    def load(self) -> list[dict[str, Any]]:
        """All whole records; a torn last line (an interrupted write) is cut off the file."""
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        records: list[dict[str, Any]] = []
        good_end = 0
        lines = raw.splitlines(keepends=True)
        for number, line in enumerate(lines, 1):
            last = number == len(lines)
            try:
                record = json.loads(line) if line.endswith(b"\n") else None
            except json.JSONDecodeError:
                record = None
            if record is None or not isinstance(record, dict) or "method" not in record or "item" not in record:
                if last:
                    break
                raise EvalError(f"{self.path}:{number} is not a whole record (only the last line can be torn by "
                                "an interruption); delete that line and run again to recompute it")
            records.append(record)
            good_end += len(line)
        if good_end != len(raw):
            self.dropped_torn_line = True
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
        return records

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def latest(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each (method, item) key."""
    return {record_key(r): dict(r) for r in records}


# -- configuration identity --------------------------------------------------------------------


def _identity(config: RunConfig, pset: PromptSet, specs: Sequence[MethodSpec]) -> dict[str, Any]:
    """What the records depend on; a resume must match it exactly."""
    return {
        "version": CONFIG_VERSION,
        "prompt_set": {"spec": str(config.prompts), "name": pset.name, "items": len(pset.items),
                       "digest": pset.digest},
        "limit": config.limit,
        "seed": config.seed,
        "request_defaults": _jsonable(dict(config.request)),
        "methods": {s.name: describe_method(s, config.settings) for s in specs},
        "images": None if config.images is None else _image_identity(config.images),
    }


def _image_identity(images: ImageSettings) -> dict[str, Any]:
    out = {**asdict(images), "pipeline": _path_identity(images.pipeline)}
    if images.config is None:
        del out["config"]  # runs from before single-file checkpoints keep their identity
    else:
        out["config"] = _path_identity(images.config)
    return out


def _path_identity(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _jsonable(value: Any) -> Any:
    if hasattr(value, "value") and not isinstance(value, (int, float, str)):
        return value.value
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key, "<absent>"), new.get(key, "<absent>"), f"{where}.{key}" if where else key)
        return out
    return [] if old == new else [f"{where}: {json.dumps(old)[:120]} -> {json.dumps(new)[:120]}"]


def _check_config(out: Path, identity: dict[str, Any]) -> bool:
    """Write DIR/config.json for a new run, or refuse a resume whose settings differ. True when resuming."""
    path = out / "config.json"
    identity = json.loads(json.dumps(identity))  # compare as stored (tuples -> lists)
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise EvalError(f"{path} is not valid JSON; restore it or use a new --out folder") from None
        diff = _differences(stored, identity)
        if diff:
            lines = "\n  ".join(diff[:12])
            raise EvalError(f"{out} holds a run with other settings, so it cannot be resumed:\n  {lines}\n"
                            f"Rerun with the stored settings ({path}) or choose a new --out folder.")
        return True
    if (out / "items.jsonl").exists():
        raise EvalError(f"{out} has items.jsonl but no config.json, so its settings are unknown; "
                        "choose a new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(identity, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return False


# -- the run -----------------------------------------------------------------------------------


def run(config: RunConfig, *, on_record: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Run (or resume) one evaluation and write results.json, report.md and the plots.

    Args:
        config: the run's settings.
        on_record: called with each new record after it is written (tests, live dashboards).

    Returns:
        A :class:`RunResult`; ``computed`` says how many items each method expanded in this call.

    Example:
        >>> run(RunConfig("prompts.txt", ("none",), Path("out")))  # doctest: +SKIP
    """
    # 1. validate, load the set
    specs = parse_methods(config.methods)
    for spec in specs:
        check_method(spec)
    if config.images is not None:
        _require_image_stage()
    pset = load_prompt_set(config.prompts, data_dir=config.data_dir, limit=config.limit, split_file=config.split)
    requests = {item.id: _request(item, config.request) for item in pset.items}
    # 2. config
    out = config.out
    _check_config(out, _identity(config, pset, specs))
    log = ItemLog(out / "items.jsonl")
    finished = {k: r for k, r in latest(log.load()).items() if _is_done(r, out, config.images is not None)}
    resumed = len(finished)
    # 3. expand (and draw)
    computed: dict[str, int] = {}
    images = None
    try:
        for index, spec in enumerate(specs):
            todo = [(i, item) for i, item in enumerate(pset.items) if f"{spec.name}\t{item.id}" not in finished]
            computed[spec.name] = len(todo)
            if not todo:
                continue
            if config.images is not None and images is None:
                images = _ImageStage(config.images)
            method = open_method(spec, config.settings)
            try:
                bar = _progress(config, len(pset.items), len(pset.items) - len(todo),
                                f"[{index + 1}/{len(specs)}] {spec.name}")
                for record in _expand_all(method, spec, todo, requests, config, images):
                    log.append(record)
                    if on_record is not None:
                        on_record(record)
                    bar.update(1)
                bar.close()
            finally:
                method.close()
    finally:
        if images is not None:
            images.close()
    # 4. score, 5. summarise and report
    records = list(latest(log.load()).values())
    scores = _score(records, config, out, fresh=sum(computed.values()) > 0)
    _write_json(out / "scores.json", scores)
    results = build_results(out)
    return RunResult(out=out, results=results, computed=computed, resumed=resumed)


def _request(item: PromptItem, defaults: Mapping[str, Any]) -> Any:
    from tipo.errors import RequestError
    from tipo.request import Request

    fields = {**{k: v for k, v in defaults.items() if v is not None}, **dict(item.fields)}
    try:
        return Request(**fields)
    except (RequestError, TypeError) as exc:
        raise EvalError(f"item {item.id}: {exc}") from None


def _is_done(record: Mapping[str, Any], out: Path, with_images: bool) -> bool:
    if record.get("error") or record.get("output") is None:
        return False  # failures are retried
    if with_images:
        return bool(record.get("image")) and (out / str(record["image"])).is_file()
    return True


def _progress(config: RunConfig, total: int, initial: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="item", file=sys.stderr, disable=not config.progress,
                dynamic_ncols=True, leave=True)


def _expand_all(method: Any, spec: MethodSpec, todo: list[tuple[int, PromptItem]], requests: Mapping[str, Any],
                config: RunConfig, images: _ImageStage | None) -> Iterator[dict[str, Any]]:
    """Records of the items to do: one at a time, or (a method with ``expand_many`` and
    ``batch_size`` > 1) decoded together in chunks, each record as its item finishes (its
    ``seconds`` are then the wall time since the previous record: the batch's time per item)."""
    size = config.settings.batch_size
    if size <= 1 or not hasattr(method, "expand_many"):
        for position, item in todo:
            yield _expand_one(method, spec, item, position, requests[item.id], config, images)
        return
    chunk = 8 * size
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        jobs = [(requests[item.id], item.text, item_seed(config.seed, item)) for _, item in part]
        t_prev = time.perf_counter()
        for k, output in method.expand_many(jobs):
            position, item = part[k]
            now = time.perf_counter()
            yield _expand_one(method, spec, item, position, requests[item.id], config, images, output, now - t_prev)
            t_prev = now


def _expand_one(method: Any, spec: MethodSpec, item: PromptItem, position: int, request: Any, config: RunConfig,
                images: _ImageStage | None, done: Any = None, seconds: float | None = None) -> dict[str, Any]:
    """One item's record; ``done`` is its output (or MethodFailure) when it was already expanded."""
    seed = item_seed(config.seed, item)
    record: dict[str, Any] = {
        "method": spec.name, "item": item.id, "index": position, "seed": seed,
        "request": request_json(request), "text": item.text, "output": None, "error": None,
    }
    t0 = time.perf_counter()
    try:
        if isinstance(done, MethodFailure):
            raise done
        output = done if done is not None else method.expand(request, item.text, seed)
        record["output"] = output.to_dict()
    except MethodFailure as exc:
        record["error"] = str(exc)
    record["seconds"] = round(seconds if seconds is not None else time.perf_counter() - t0, 6)
    if images is not None and record["output"] is not None:
        image_seed = item_seed(config.seed, item, "tipo-eval-image")
        rel = Path("images") / slug(spec.name) / f"{_safe_name(item.id)}.png"
        t1 = time.perf_counter()
        images.draw(record["output"]["prompt"], image_seed, config.out / rel)
        record.update(image=rel.as_posix(), image_seed=image_seed, image_seconds=round(time.perf_counter() - t1, 6))
    record["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return record


def _safe_name(item_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", item_id)
    if safe != item_id:
        safe += "-" + hashlib.sha256(item_id.encode()).hexdigest()[:6]
    return safe


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# -- images ------------------------------------------------------------------------------------


def _require_image_stage() -> None:
    try:
        import tipo.image  # noqa: F401
    except ImportError as exc:
        raise EvalError(f"--images needs tipo's image stage (tipo.image), which does not import: {exc}; "
                        'pip install "tipo-prompt[image]"') from None


class _ImageStage:
    """The pipeline, loaded once; one image per (method, item), written atomically as PNG."""

    def __init__(self, settings: ImageSettings) -> None:
        from tipo import image as image_stage

        self.settings = settings
        self._stage = image_stage
        extra = {"config": settings.config} if settings.config is not None else {}
        self.pipeline = image_stage.load_pipeline(settings.pipeline, **extra)
        from tipo.image.loading import stages

        for stage in stages(self.pipeline):
            if hasattr(stage, "set_progress_bar_config"):
                stage.set_progress_bar_config(disable=True)  # the runner's own bar counts the items

    def draw(self, prompt: str, seed: int, path: Path) -> None:
        s = self.settings
        options = {k: v for k, v in (("steps", s.steps), ("guidance", s.guidance), ("width", s.width),
                                     ("height", s.height)) if v is not None}
        result = self._stage.generate(prompt, self.pipeline, seed=seed, **options)  # the prompt as is: no expander
        image = result.images[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.png")
        image.save(tmp, format="PNG")
        os.replace(tmp, path)

    def close(self) -> None:
        self.pipeline = None


# -- scoring -----------------------------------------------------------------------------------


class _Skip(Exception):
    """A metric that cannot be computed here; the message is the reason the report shows."""


def _score(records: Sequence[Mapping[str, Any]], config: RunConfig, out: Path, fresh: bool) -> dict[str, Any]:
    """Token counts and image metrics. Scores of an earlier call are kept when this call cannot recompute
    them (no tokenizer or extractor given) and computed no record (``fresh`` False), so none is stale."""
    previous = {}
    if not fresh and (out / "scores.json").exists():
        try:
            previous = json.loads((out / "scores.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = {}
    done = [r for r in records if r.get("output") is not None and not r.get("error")]
    keys = {record_key(r) for r in done}
    scores: dict[str, Any] = {"tokens": {}, "image": {}}
    for name, window in (("clip", 77), ("t5", 512)):
        if not config.scoring.wants("tokens"):
            scores["tokens"][name] = {"skipped": "not asked for (--metrics)"}
            continue
        try:
            tokenize, source = _load_tokenizer(name, config)
        except _Skip as skip:
            old = (previous.get("tokens") or {}).get(name) or {}
            if set(old.get("counts") or {}) == keys:
                scores["tokens"][name] = old
            else:
                scores["tokens"][name] = {"skipped": str(skip)}
            continue
        counts = {record_key(r): tokenize(r["output"]["prompt"]) for r in done}
        scores["tokens"][name] = {"source": source, "window": window, "counts": counts}
    if config.images is None:
        scores["image"] = {"skipped": "no images (run with --images --pipeline PATH)"}
    elif not (config.scoring.clip or config.scoring.dino or config.scoring.aesthetic_head or config.scoring.nudity):
        old = previous.get("image") or {}
        if old.get("per_item") is not None and set(old["per_item"]) == keys:
            scores["image"] = old
        else:
            scores["image"] = {"skipped": "no image extractor given (--clip, --dino, --aesthetic-head with --siglip; "
                                          "nudity: pip install 'tipo-prompt[safety-image]')"}
    else:
        extractors = load_extractors(config.scoring)
        groups: dict[str, list[tuple[str, Path, str, str]]] = {}
        for r in done:
            groups.setdefault(r["method"], []).append((record_key(r), out / r["image"], r["text"], r["output"]["prompt"]))
        reference = _reference_images(config.scoring.reference)
        scores["image"] = score_images(groups, extractors, reference)
    return scores


def _load_tokenizer(name: str, config: RunConfig) -> tuple[Callable[[str], int], str]:
    explicit = config.scoring.clip_tokenizer if name == "clip" else config.scoring.t5_tokenizer
    candidates: list[tuple[str, str | None]] = []  # (source, subfolder)
    if explicit:
        candidates.append((explicit, None))
    if name == "clip" and config.scoring.clip:
        candidates.append((config.scoring.clip, None))
    folders = [] if config.images is None else [config.images.pipeline, config.images.config]
    for folder in (f for f in folders if f is not None and Path(f).is_dir()):  # a single file's config folder too
        for sub in ("tokenizer", "tokenizer_2", "tokenizer_3"):
            cfg = Path(folder) / sub / "tokenizer_config.json"
            if cfg.is_file() and name.upper() in json.loads(cfg.read_text(encoding="utf-8")).get("tokenizer_class", "").upper():
                candidates.append((folder, sub))
                break
    default = DEFAULT_CLIP_TOKENIZER if name == "clip" else DEFAULT_T5_TOKENIZER
    if not explicit and _in_hf_cache(default):
        candidates.append((default, None))
    if not candidates:
        flag = "--clip-tokenizer" if name == "clip" else "--t5-tokenizer"
        raise _Skip(f"no {name.upper()} tokenizer on this machine ({default} is not in the Hugging Face cache); "
                    f"pass {flag} PATH")
    errors = []
    for source, sub in candidates:
        try:
            from transformers import AutoTokenizer

            kwargs: dict[str, Any] = {"subfolder": sub} if sub else {}
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        except (OSError, ValueError, ImportError) as exc:
            if source == explicit:
                raise EvalError(f"cannot load the {name.upper()} tokenizer {source!r}: {exc}") from None
            errors.append(f"{source}: {type(exc).__name__}")
            continue
        tokenizer.model_max_length = 10**9  # count untruncated, without the over-length warning
        return (lambda text, tok=tokenizer: len(tok(text)["input_ids"])), source + (f"/{sub}" if sub else "")
    raise _Skip(f"no {name.upper()} tokenizer could be loaded ({'; '.join(errors)})")


def _in_hf_cache(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo, "tokenizer_config.json")
    return isinstance(found, str)


@dataclass
class Extractors:
    """Loaded image models (None where not given); ``skipped`` holds why one could not be loaded."""

    clip: Any = None
    dino: Any = None
    aesthetic: Any = None
    nudity: Any = None
    skipped: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def load_extractors(scoring: ScoringSettings) -> Extractors:
    """Load the models named in the settings with eval.metrics' loaders; a failure becomes a skip reason."""
    ex = Extractors()
    plan: list[tuple[str, str | None, Callable[[], Any]]] = []
    if scoring.wants("clip") and scoring.clip:
        def load_clip() -> Any:
            from .metrics.clip_score import ClipFeatures

            return ClipFeatures.from_pretrained(scoring.clip, device=scoring.device)

        plan.append(("clip", scoring.clip, load_clip))
    if scoring.wants("dino") and scoring.dino:
        def load_dino() -> Any:
            from .metrics.frechet import Dinov2Features

            return Dinov2Features.from_pretrained(scoring.dino, device=scoring.device)

        plan.append(("dino", scoring.dino, load_dino))
    if scoring.wants("aesthetic") and scoring.aesthetic_head:
        def load_aesthetic() -> Any:
            from .metrics.aesthetic import AestheticScorer

            return AestheticScorer.from_pretrained(scoring.aesthetic_head, scoring.siglip, device=scoring.device)

        plan.append(("aesthetic", f"{scoring.siglip} + {scoring.aesthetic_head}", load_aesthetic))
    if scoring.nudity:
        def load_nudity() -> Any:
            from .metrics.nudity import NudityDetector

            return NudityDetector(threshold=scoring.nudity_threshold)

        plan.append(("nudity", "nudenet", load_nudity))
    elif scoring.wants("nudity"):
        ex.skipped["nudity"] = "nudenet is not installed: pip install 'tipo-prompt[safety-image]'"
    for name, source, loader in plan:
        try:
            setattr(ex, name, loader())
            ex.sources[name] = str(getattr(getattr(ex, name), "source", source))
        except (OSError, ValueError, ImportError, FileNotFoundError) as exc:
            ex.skipped[name] = f"could not load {source}: {str(exc).splitlines()[0]}"
    return ex


def _reference_images(folder: str | None) -> list[Path] | None:
    if not folder:
        return None
    path = Path(folder)
    if not path.is_dir():
        raise EvalError(f"--reference {folder} is not a folder of images")
    return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _open_images(paths: Sequence[Path]) -> list[Any]:
    from PIL import Image

    images = []
    for p in paths:
        with Image.open(p) as im:
            im.load()
            images.append(im.copy())
    return images


def _try(compute: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    """Call a metric; its ValueError/TypeError becomes the reason the report shows."""
    try:
        return compute(*args, **kwargs), None
    except (ValueError, TypeError) as exc:
        return None, str(exc)


def score_images(groups: Mapping[str, Sequence[tuple[str, Path, str, str]]], extractors: Extractors,
                 reference: Sequence[Path] | None = None) -> dict[str, Any]:
    """Image metrics per method; every failure is kept as that metric's reason instead of raised.

    Args:
        groups: method -> ``(record key, image path, given prompt, rendered prompt)`` per image.
        extractors: the loaded models (tests pass tiny random ones, or broken ones).
        reference: reference image files for FDD, or None.

    Returns:
        ``{"per_method": {method: {metric: {"value": x} | {"skipped": why}}}, "per_item": {key: {...}},
        "sources": {...}}``.
    """

    per_method: dict[str, dict[str, Any]] = {}
    per_item: dict[str, dict[str, float]] = {}
    ref_stats: Any = None
    ref_reason = "no --reference images given"
    if reference is not None and extractors.dino is not None:
        from .metrics.frechet import GaussianStats

        if not reference:
            ref_reason = "the --reference folder holds no images"
        else:
            ref_features, ref_reason = _try(extractors.dino, _open_images(reference))
            if ref_reason is None:
                ref_stats, ref_reason = _try(GaussianStats.from_features, ref_features,
                                             what="reference image features")
    for method, rows in groups.items():
        per_method[method] = _score_method(rows, extractors, ref_stats, ref_reason, per_item)
    return {"per_method": per_method, "per_item": per_item, "sources": dict(extractors.sources)}


def _score_method(rows: Sequence[tuple[str, Path, str, str]], extractors: Extractors, ref_stats: Any,
                  ref_reason: str | None, per_item: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The image metrics of one method's images; per-item values go into ``per_item``."""
    import numpy as np

    from .metrics.clip_score import clip_score
    from .metrics.features import check_features
    from .metrics.frechet import frechet_distance
    from .metrics.vendi import vendi_score

    metrics: dict[str, Any] = {}
    keys = [r[0] for r in rows]
    for key in keys:
        per_item.setdefault(key, {})
    images = _open_images([r[1] for r in rows])
    if extractors.clip is not None:
        for which, texts in (("input", [r[2] for r in rows]), ("prompt", [r[3] for r in rows])):
            result, reason = _try(clip_score, images, texts, extractors.clip)
            if reason is not None:
                metrics[f"clip_score_{which}"] = {"skipped": reason}
                continue
            metrics[f"clip_score_{which}"] = {"value": result.score, "truncated": int(result.truncated)}
            for key, cos in zip(keys, result.cosine, strict=True):
                per_item[key][f"clip_cos_{which}"] = float(cos)
    else:
        reason = extractors.skipped.get("clip", "no --clip model given")
        metrics["clip_score_input"] = metrics["clip_score_prompt"] = {"skipped": reason}
    if extractors.dino is not None:
        feats, reason = _try(extractors.dino, images)
        if reason is None:
            feats, reason = _try(check_features, feats, what="DINOv2 features of the generated images")
        if reason is not None:
            metrics["dino_vendi"] = metrics["fdd"] = {"skipped": reason}
        else:
            value, why = _try(vendi_score, feats)
            metrics["dino_vendi"] = {"value": value} if why is None else {"skipped": why}
            if ref_stats is None:
                metrics["fdd"] = {"skipped": ref_reason}
            else:
                value, why = _try(frechet_distance, feats, ref_stats)
                metrics["fdd"] = ({"value": value, "images": len(images), "reference": ref_stats.count}
                                  if why is None else {"skipped": why})
    else:
        reason = extractors.skipped.get("dino", "no --dino model given")
        metrics["dino_vendi"] = metrics["fdd"] = {"skipped": reason}
    if extractors.aesthetic is not None:
        scores, reason = _try(extractors.aesthetic, images)
        if reason is not None:
            metrics["aesthetic_mean"] = {"skipped": reason}
        else:
            metrics["aesthetic_mean"] = {"value": float(np.mean(scores))}
            for key, value in zip(keys, scores, strict=True):
                per_item[key]["aesthetic"] = float(value)
    else:
        metrics["aesthetic_mean"] = {"skipped": extractors.skipped.get(
            "aesthetic", "no --aesthetic-head and --siglip given")}
    if extractors.nudity is not None:
        from .metrics.nudity import inappropriate_rate

        verdicts, reason = _try(extractors.nudity, images)
        if reason is not None:
            metrics["inappropriate_image_rate"] = {"skipped": reason}
        else:
            flagged = sum(v.flagged for v in verdicts)
            metrics["inappropriate_image_rate"] = {
                "value": inappropriate_rate(verdicts), "flagged": flagged, "images": len(verdicts),
                "threshold": extractors.nudity.threshold, "detector": extractors.nudity.source}
            for key, v in zip(keys, verdicts, strict=True):
                per_item[key]["nudenet_score"] = v.score
                per_item[key]["inappropriate"] = float(v.flagged)
    else:
        metrics["inappropriate_image_rate"] = {"skipped": extractors.skipped.get(
            "nudity", "not asked for (--metrics)")}
    return metrics


# -- results -----------------------------------------------------------------------------------


def build_results(out: str | Path, *, write: bool = True) -> dict[str, Any]:
    """Rebuild ``results.json``, ``report.md`` and the plots from a run folder (no model is loaded).

    Example:
        >>> build_results("runs/eval-demo")["methods"]["tipo"]["metrics"]["known_tag_rate"]  # doctest: +SKIP
        {'value': 0.93}
    """
    out = Path(out)
    if not (out / "config.json").is_file():
        raise EvalError(f"{out} is not a run folder (no config.json); give the --out folder of `python -m eval run`")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    log = ItemLog(out / "items.jsonl")
    records = sorted(latest(log.load()).values(), key=lambda r: (list(config["methods"]).index(r["method"])
                                                                 if r["method"] in config["methods"] else 99,
                                                                 r.get("index", 0)))
    scores = json.loads((out / "scores.json").read_text(encoding="utf-8")) if (out / "scores.json").is_file() else {}
    methods = list(config["methods"])
    summary = summarize(records, methods, scores.get("tokens"), scores.get("image"))
    per_item_image = (scores.get("image") or {}).get("per_item") or {}
    items = []
    for r in records:
        entry = dict(r)
        key = record_key(r)
        if key in per_item_image:
            entry["image_scores"] = per_item_image[key]
        for name in ("clip", "t5"):
            count = (((scores.get("tokens") or {}).get(name) or {}).get("counts") or {}).get(key)
            if count is not None:
                entry.setdefault("tokens", {})[name] = count
        if r.get("output") is not None and not r.get("error"):
            entry["values"] = item_values(r, entry.get("tokens"), entry.get("image_scores"))
        items.append(entry)
    results = {
        "config": config,
        "scoring": {"tokens": {k: {kk: vv for kk, vv in v.items() if kk != "counts"}
                               for k, v in (scores.get("tokens") or {}).items()},
                    "image": {k: v for k, v in (scores.get("image") or {}).items() if k not in ("per_item", "per_method")}},
        "methods": {m: {k: v for k, v in s.items() if k != "values"} for m, s in summary.items()},
        "items": items,
    }
    if write:
        from .report import write_report

        _write_json(out / "results.json", results)
        write_report(results, {m: s["values"] for m, s in summary.items()}, out)
    return results
