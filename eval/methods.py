"""Prompt-expansion methods the runner compares: ``none``, ``tipo``, ``kgen`` and ``cmd:<command>``.

A method turns one :class:`~eval.prompt_sets.PromptItem` (as a tipo Request) and a seed into a
:class:`MethodOutput`: the rendered prompt that would condition the image model, its tags and its
caption, taken apart so the text metrics compare like with like.

- ``none``: the prompt as given (tags and/or caption, unchanged).
- ``tipo``: this package's :class:`~tipo.expander.Expander` (one model, loaded once for all items).
- ``kgen``: the reference implementation, ``tipo-kgen`` (module ``kgen``), on its llama.cpp path with
  a ``.gguf`` model (its transformers path seeds torch's global generator, so it is not offered).
  kgen draws from Python's ``random`` module and seeds it per call; the runner hands kgen a private
  ``random.Random`` for the call instead, so the process's global generator is never touched. kgen
  keeps its model in module globals; they are set for each call and put back after it.
- ``cmd:<command>``: any program that reads the prompt on stdin and prints the expanded prompt on
  stdout. The command is split with :func:`shlex.split` and run without a shell (no injection through
  prompts or quoting); it gets the item's seed in ``TIPO_EVAL_SEED`` and the request as JSON in
  ``TIPO_EVAL_REQUEST``. A non-zero exit or a timeout fails that item only (recorded, retried on resume).

Example:
    >>> [m.name for m in parse_methods(["none,cmd:cat -"])]
    ['none', 'cmd:cat -']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import EvalError, MethodFailure
from .prompt_sets import is_tag_line

if TYPE_CHECKING:
    from tipo.request import Request, Sampling

__all__ = [
    "METHOD_NAMES",
    "CommandMethod",
    "KgenMethod",
    "Method",
    "MethodOutput",
    "MethodSettings",
    "MethodSpec",
    "NoneMethod",
    "TipoMethod",
    "check_method",
    "describe_method",
    "open_method",
    "parse_methods",
    "request_json",
    "slug",
    "split_prompt",
    "tags_of",
]

METHOD_NAMES = ("none", "tipo", "tipo@<rating>", "kgen", "cmd:<command>")
TAG_ORDER = ("special", "characters", "copyrights", "artist", "general", "quality", "meta", "rating")


@dataclass(frozen=True)
class MethodOutput:
    """What one method made of one item.

    Attributes:
        prompt: the rendered prompt (what conditions the image model).
        tags: every tag of the prompt, normalised, in order (repeats kept: they are measured).
        caption: the natural-language part of the prompt ("" when there is none).
        detail: method-specific extras for the record (tipo: new tags, task, tokens, stop reason).
    """

    prompt: str
    tags: tuple[str, ...]
    caption: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "tags": list(self.tags), "caption": self.caption, "detail": self.detail}


@dataclass(frozen=True)
class MethodSpec:
    """A parsed ``--methods`` entry: ``none``, ``tipo``, ``kgen`` or ``cmd`` with its command;
    ``tipo@<rating>`` is tipo with every request's content rating set (``tipo@unrestricted``)."""

    kind: str
    command: str = ""
    rating: str = ""

    @property
    def name(self) -> str:
        if self.kind == "cmd":
            return f"cmd:{self.command}"
        return f"{self.kind}@{self.rating}" if self.rating else self.kind


@dataclass(frozen=True)
class MethodSettings:
    """Settings shared by the model-backed methods.

    Args:
        model: tipo's model (registry name, ``.gguf``, HF folder); None is the built-in model.
        backend: ``auto``, ``llama`` or ``hf`` for tipo.
        threads: CPU threads for the language model; None uses all cores.
        sampling: tipo Sampling settings (the seed is set per item).
        template: a tipo template text or preset name; None follows the request's ``output``.
        task: force one trained task (tipo only); None plans automatically.
        kgen_model: the ``.gguf`` for kgen; None uses ``model``.
        kgen_max_retry: kgen's retries when a result misses its length target (the reference uses 10).
        cmd_timeout: seconds a ``cmd:`` method may take per item.
        batch_size: items tipo decodes together (``Expander.expand_batch``; the outputs are the
            same as one at a time, so it is not part of a run's identity).
    """

    model: str | None = None
    backend: str = "auto"
    threads: int | None = None
    sampling: Sampling | None = None
    template: str | None = None
    task: str | None = None
    kgen_model: str | None = None
    kgen_max_retry: int = 10
    cmd_timeout: float = 60.0
    batch_size: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise EvalError(f"batch_size={self.batch_size!r} is not valid; give a whole number >= 1")
        if self.cmd_timeout <= 0:
            raise EvalError(f"cmd_timeout={self.cmd_timeout} is not valid; give a positive number of seconds")
        if self.kgen_max_retry < 0:
            raise EvalError(f"kgen_max_retry={self.kgen_max_retry} is not valid; give a whole number >= 0")


class Method(Protocol):
    """A loaded expansion method: ``expand`` one request with a seed; ``close`` frees its model."""

    name: str

    def expand(self, request: Request, text: str, seed: int) -> MethodOutput: ...

    def close(self) -> None: ...


def parse_methods(values: Sequence[str]) -> tuple[MethodSpec, ...]:
    """Parse ``--methods`` values: comma-separated names; ``cmd:`` takes the rest of its value.

    Because a command may contain commas, everything after ``cmd:`` up to the end of that value is
    the command: put ``cmd:`` last, or give it in its own ``--methods`` flag.

    Example:
        >>> [s.name for s in parse_methods(["none,tipo", "cmd:sed s/a,b/c/"])]
        ['none', 'tipo', 'cmd:sed s/a,b/c/']
    """
    specs: list[MethodSpec] = []
    for value in values:
        rest = value
        while rest.strip():
            head, _, tail = rest.partition(",")
            name = head.strip()
            if name.startswith("cmd:"):
                command = rest.strip()[len("cmd:"):].strip()
                if not command:
                    raise EvalError("method 'cmd:' needs a command after the colon, e.g. "
                                    "cmd:python my_expander.py")
                specs.append(MethodSpec("cmd", command))
                break
            if name in ("none", "tipo", "kgen"):
                specs.append(MethodSpec(name))
            elif name.startswith("tipo@"):
                from tipo.rating import Rating

                rating = name.split("@", 1)[1]
                if rating not in {r.value for r in Rating}:
                    raise EvalError(f"method {name!r}: {rating!r} is not a content rating; use tipo@ one of "
                                    f"{', '.join(r.value for r in Rating)}")
                specs.append(MethodSpec("tipo", rating=rating))
            elif name:
                raise EvalError(f"unknown method {name!r}; use {', '.join(METHOD_NAMES)} (comma-separated)")
            rest = tail
    if not specs:
        raise EvalError(f"no method given; use --methods with one or more of {', '.join(METHOD_NAMES)}")
    names = [s.name for s in specs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise EvalError(f"method {dup!r} is listed twice; list each method once")
    return tuple(specs)


def check_method(spec: MethodSpec) -> None:
    """Cheap checks before a run starts: the command exists, kgen and llama_cpp are installed."""
    import importlib.util

    if spec.kind == "cmd":
        CommandMethod(spec.command)
    elif spec.kind == "kgen":
        for module, install in (("kgen", "tipo-kgen"), ("llama_cpp", "llama-cpp-python")):
            if importlib.util.find_spec(module) is None:
                raise EvalError(f"method 'kgen' is not available: {module} is not installed; pip install {install}, "
                                "or drop kgen from --methods")


def open_method(spec: MethodSpec, settings: MethodSettings) -> Method:
    """Load one method (the model-backed ones load their model here, once)."""
    if spec.kind == "none":
        return NoneMethod()
    if spec.kind == "tipo":
        return TipoMethod(settings, spec.rating or None)
    if spec.kind == "kgen":
        return KgenMethod(settings)
    return CommandMethod(spec.command, settings.cmd_timeout)


def describe_method(spec: MethodSpec, settings: MethodSettings) -> dict[str, Any]:
    """What a method's outputs depend on, without loading it (stored in the run's config)."""
    sampling = asdict(settings.sampling) if settings.sampling is not None else None
    if sampling is not None:
        sampling.pop("seed", None)
    if spec.kind == "tipo":
        return {"model": _model_identity(settings.model), "backend": settings.backend, "sampling": sampling,
                "template": settings.template, "task": settings.task, "rating": spec.rating or None}
    if spec.kind == "kgen":
        return {"model": _model_identity(settings.kgen_model or settings.model), "sampling": sampling,
                "max_retry": settings.kgen_max_retry, "kgen_version": _version("tipo-kgen")}
    if spec.kind == "cmd":
        return {"argv": shlex.split(spec.command), "timeout": settings.cmd_timeout}
    return {}


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _model_identity(model: str | None) -> dict[str, Any]:
    """Name, and for a local file its size, so a resume notices a different model under one name."""
    spec = model or "tipo-builtin"
    path = Path(spec).expanduser()
    if spec == "tipo-builtin":
        from tipo.registry import builtin_path

        path = builtin_path()
    out: dict[str, Any] = {"spec": spec}
    if path.is_file():
        out["path"] = str(path.resolve())
        out["bytes"] = path.stat().st_size
    elif path.is_dir():
        out["path"] = str(path.resolve())
    return out


# -- taking a prompt apart --------------------------------------------------------------------


def tags_of(text: str) -> tuple[str, ...]:
    """The tags of a tag string, host syntax (weights, BREAK, ``<lora:…>``) off, normalised, repeats kept.

    Example:
        >>> tags_of("1girl, (long_hair:1.2), BREAK, forest, 1girl")
        ('1girl', 'long hair', 'forest', '1girl')
    """
    from tipo.syntax import ItemKind, parse_prompt
    from tipo.tags import default_table, normalize

    out = []
    for item in parse_prompt(text, default_table().is_known):
        if item.kind is ItemKind.TAG:
            tag = normalize(item.text)
            if tag:
                out.append(tag)
    return tuple(out)


def split_prompt(text: str) -> tuple[tuple[str, ...], str]:
    """Split a free-form prompt into (tags, caption): line by line, tag lines by :func:`is_tag_line`.

    Used for ``none`` and ``cmd:`` outputs, whose structure is not known; ``tipo`` and ``kgen``
    report their tags and captions directly.

    Example:
        >>> split_prompt("1girl, forest\\n\\nA girl stands among tall trees.")
        (('1girl', 'forest'), 'A girl stands among tall trees.')
    """
    tag_lines, caption_lines = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        (tag_lines if is_tag_line(line) else caption_lines).append(line.strip())
    return tags_of(", ".join(tag_lines)), "\n".join(caption_lines)


# -- the methods ------------------------------------------------------------------------------


class NoneMethod:
    """The prompt as given: the baseline every expansion is compared with."""

    name = "none"

    def expand(self, request: Request, text: str, seed: int) -> MethodOutput:
        return MethodOutput(prompt=text, tags=tags_of(request.tags), caption=request.caption.strip())

    def close(self) -> None:
        pass


class TipoMethod:
    """tipo's Expander, loaded once; each item is one model pass with the item's seed."""

    name = "tipo"

    def __init__(self, settings: MethodSettings, rating: str | None = None) -> None:
        from tipo.expander import Expander
        from tipo.request import Sampling

        self.settings = settings
        self.rating = rating
        if rating:
            self.name = f"tipo@{rating}"
        self.sampling = settings.sampling or Sampling()
        self.expander = Expander(settings.model or None, backend=settings.backend, n_threads=settings.threads)

    def expand(self, request: Request, text: str, seed: int) -> MethodOutput:
        request = self._rated(request)
        result = self.expander.expand(request, self.sampling.with_seed(seed), template=self.settings.template,
                                      task=self.settings.task)
        return self._output(result)

    def expand_many(self, jobs: list[tuple[Request, str, int]]) -> Iterator[tuple[int, MethodOutput | MethodFailure]]:
        """Several items decoded together (``settings.batch_size`` at a time), as they finish:
        ``(position in jobs, output or failure)``; each output equals :meth:`expand`'s."""
        from tipo.errors import TipoError

        results = self.expander.iter_expand_batch([self._rated(r) for r, _, _ in jobs],
                                                  [self.sampling.with_seed(s) for _, _, s in jobs],
                                                  template=self.settings.template, task=self.settings.task,
                                                  batch_size=self.settings.batch_size)
        for position, result in results:
            if isinstance(result, TipoError):
                yield position, MethodFailure(f"tipo: {result}")
            else:
                yield position, self._output(result)

    def _rated(self, request: Request) -> Request:
        """The request with this method's content rating (``tipo@<rating>``), if it has one."""
        from dataclasses import replace

        return replace(request, rating=self.rating) if self.rating else request

    def _output(self, result: Any) -> MethodOutput:
        from tipo.parse import JSON_ORDER

        tags = tuple(t for name in JSON_ORDER for t in result.tags.get(name, ()))
        prov = result.provenance
        detail = {
            "new_tags": {k: list(v) for k, v in result.new_tags.items() if v},
            "dropped": list(result.dropped),
            "task": result.plan.task_name,
            "generated_tokens": prov.generated_tokens if prov else None,
            "stop_reason": prov.stop_reason if prov else None,
            "seconds": prov.seconds.get("total") if prov else None,
            "completion": result.completion,
            "safety": result.safety.to_dict(),
        }
        return MethodOutput(prompt=result.prompt, tags=tags, caption=result.caption_text.strip(), detail=detail)

    def close(self) -> None:
        self.expander.close()


class KgenMethod:
    """The reference ``tipo-kgen`` on llama.cpp: ``parse_tipo_request`` -> ``tipo_runner`` -> ``apply_format``."""

    name = "kgen"
    _lock = threading.Lock()  # kgen's model lives in its module globals: one call at a time

    def __init__(self, settings: MethodSettings) -> None:
        try:
            import kgen  # noqa: F401
            from kgen import models as kgen_models
            from kgen.executor import tipo as kgen_tipo
        except ImportError as exc:
            raise EvalError(f"method 'kgen' is not available: the reference package does not import ({exc}); "
                            "pip install tipo-kgen llama-cpp-python, or drop kgen from --methods") from None
        try:
            from llama_cpp import Llama
        except ImportError:
            raise EvalError("method 'kgen' runs kgen's llama.cpp path, and llama_cpp is not installed: "
                            "pip install llama-cpp-python") from None
        from tipo.registry import resolve
        from tipo.request import Sampling

        spec = settings.kgen_model or settings.model
        path = resolve(spec or None, "llama").path
        if path.suffix.lower() != ".gguf":
            raise EvalError(f"method 'kgen' needs a .gguf model (kgen's llama.cpp path), got {path}; "
                            "pass --kgen-model FILE.gguf")
        self.settings = settings
        self.sampling = settings.sampling or Sampling()
        self.path = path
        self._models, self._tipo = kgen_models, kgen_tipo
        import kgen.utils as kgen_utils

        self._utils = kgen_utils
        self.llm = Llama(str(path), n_ctx=0, n_threads=settings.threads, verbose=False)

    @contextlib.contextmanager
    def _kgen_state(self, rng: random.Random, ban: Sequence[str]) -> Iterator[None]:
        """Point kgen's globals at our model, bans and private generator for one call; restore them after."""
        saved = (self._models.text_model, self._models.tokenizer, self._models.current_model_name,
                 self._tipo.random, self._utils.random, list(self._tipo.BAN_TAGS))
        self._models.text_model, self._models.tokenizer = self.llm, None
        self._models.current_model_name = self.path.stem
        self._tipo.random = self._utils.random = rng  # kgen calls random.seed/shuffle/randint on it
        self._tipo.BAN_TAGS[:] = list(ban)
        try:
            yield
        finally:
            (self._models.text_model, self._models.tokenizer, self._models.current_model_name,
             self._tipo.random, self._utils.random, ban_tags) = saved
            self._tipo.BAN_TAGS[:] = ban_tags

    def expand(self, request: Request, text: str, seed: int) -> MethodOutput:
        from kgen.formatter import apply_format, seperate_tags
        from kgen.metainfo import TIPO_DEFAULT_FORMAT

        output = request.output.value
        fmt = TIPO_DEFAULT_FORMAT[{"tags": "tag only (DTG mode)", "caption": "NL only (Tag to NL)"}.get(
            output, "Both, tag first (recommend)")]
        tag_map = seperate_tags(list(tags_of(request.tags)))
        length = request.length.value
        caption = request.caption.strip()
        meta, operations, general, nl_prompt = self._tipo.parse_tipo_request(
            tag_map, caption, expand_tags=output != "caption", expand_prompt=output != "tags",
            generate_extra_nl_prompt=output != "tags" and not caption, tag_length_target=length,
            nl_length_target=length,
        )
        s = self.sampling
        with self._lock, self._kgen_state(random.Random(seed), request.ban):
            parsed, timing = self._tipo.tipo_runner(
                meta, operations, general, nl_prompt, gen_meta=request.gen_meta, seed=seed,
                max_retry=self.settings.kgen_max_retry, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                min_p=s.min_p, repetition_penalty=s.repetition_penalty, max_new_tokens=s.max_new_tokens,
            )
        tags = tuple(t for name in TAG_ORDER for t in parsed.get(name, []) or [])
        prompt = apply_format(parsed, fmt)
        caption_text = ""
        if "<|extended|>" in fmt or "<|generated|>" in fmt:  # apply_format falls back to generated
            caption_text = str(parsed.get("extended") or "").strip() or str(parsed.get("generated") or "").strip()
        detail = {"generated_tokens": timing.get("generated_tokens"), "passes": timing.get("generate_pass")}
        return MethodOutput(prompt=prompt, tags=tags, caption=caption_text.strip(), detail=detail)

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()


class CommandMethod:
    """A user's program: the prompt on stdin, the expanded prompt on stdout; no shell is involved."""

    def __init__(self, command: str, timeout: float = 60.0,
                 runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise EvalError(f"cmd:{command}: cannot split the command ({exc}); check its quotes") from None
        if not argv:
            raise EvalError("method 'cmd:' needs a command after the colon")
        if shutil.which(argv[0]) is None:
            raise EvalError(f"cmd:{command}: program {argv[0]!r} not found; give its path or put it on PATH")
        self.name = f"cmd:{command}"
        self.argv = argv
        self.timeout = timeout
        self._run = runner


    def expand(self, request: Request, text: str, seed: int) -> MethodOutput:
        env = dict(os.environ, TIPO_EVAL_SEED=str(seed), TIPO_EVAL_REQUEST=json.dumps(request_json(request)))
        try:
            done = self._run(self.argv, input=text, capture_output=True, text=True, timeout=self.timeout, env=env,
                             check=False)
        except subprocess.TimeoutExpired:
            raise MethodFailure(f"timed out after {self.timeout:g} s (raise --cmd-timeout)") from None
        if done.returncode != 0:
            tail = (done.stderr or "").strip().splitlines()[-1:] or [""]
            raise MethodFailure(f"exited with status {done.returncode}: {tail[0][:300]}")
        prompt = done.stdout.strip()
        tags, caption = split_prompt(prompt)
        return MethodOutput(prompt=prompt, tags=tags, caption=caption)

    def close(self) -> None:
        pass


def request_json(request: Request) -> dict[str, Any]:
    """A Request as JSON values (enums as their values, tuples as lists): ``Request.to_dict``."""
    return request.to_dict()


def slug(name: str) -> str:
    """A file-name-safe label of a method name; commands get a short hash so two never collide.

    Example:
        >>> slug("tipo"), slug("cmd:python -c 'print(1)'")
        ('tipo', 'cmd-python-c-print-1-48023f')
    """
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "method"
    if name.startswith("cmd:"):
        text += "-" + hashlib.sha256(name.encode()).hexdigest()[:6]
    return text
