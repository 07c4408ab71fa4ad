"""The model registry: the built-in model, the official TIPO checkpoints, local files.

A model is named by registry name (``TIPO-500M-ft``), local path (a ``.gguf`` file or an HF
folder) or HF repo id (``KBlueLeaf/TIPO-500M-ft``). Downloads go through huggingface_hub into its
cache, with its progress bar. Local files are also looked up in ``$TIPO_MODELS`` (default
``~/.cache/tipo/models``): offline, put the named file there.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from .errors import ModelError

__all__ = ["BUILTIN", "REGISTRY", "ModelInfo", "ResolvedModel", "list_models", "local_models", "models_dir",
           "offline_reason", "resolve"]

KOHAKU = "kohaku-license-1.0"


@dataclass(frozen=True)
class ModelInfo:
    """One known model: where it lives, its shape and its license."""

    name: str
    repo: str
    gguf: str
    params: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int = 32013
    ctx: int = 1024
    license: str = KOHAKU
    commercial: bool = False  # False: the license restricts commercial use
    format_version: str = "tipo-1"
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# The official TIPO checkpoints (prompt format: docs/FORMAT.md, "tipo-1").
REGISTRY: tuple[ModelInfo, ...] = (
    ModelInfo("TIPO-500M-ft", "KBlueLeaf/TIPO-500M-ft", "TIPO-500M-ft-F16.gguf", "508M", 1280, 20, 20, 3840,
              note="TIPO-500M fine-tuned; the reference's default"),
    ModelInfo("TIPO-500M", "KBlueLeaf/TIPO-500M", "TIPO-500M_epoch5-F16.gguf", "508M", 1280, 20, 20, 3840),
    ModelInfo("TIPO-200M-ft2", "KBlueLeaf/TIPO-200M-ft2", "TIPO-200M-ft2-F16.gguf", "203M", 768, 20, 12, 2304),
    ModelInfo("TIPO-200M-ft", "KBlueLeaf/TIPO-200M-ft", "TIPO-200M-ft-F16.gguf", "203M", 768, 20, 12, 2304),
    ModelInfo("TIPO-200M", "KBlueLeaf/TIPO-200M", "TIPO-200M-40Btok-F16.gguf", "203M", 768, 20, 12, 2304),
    ModelInfo("TIPO-100M", "KBlueLeaf/TIPO-100M", "TIPO-100M-F16.gguf", "101M", 512, 20, 8, 1536,
              note="shape not verified against the published config"),
)

BUILTIN_FILE = "tipo-builtin.gguf"
BUILTIN = ModelInfo(
    "tipo-builtin", "", BUILTIN_FILE, "small", 0, 0, 0, 0, license="Apache-2.0 (weights; data CC BY 4.0 and MIT)",
    commercial=True, note="trained by tipo's own recipe on shipped data; see tipo/data/MODEL_CARD.md",
)


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: a local path and what is known about it."""

    path: Path
    info: ModelInfo | None
    spec: str

    @property
    def label(self) -> str:
        return self.info.name if self.info else self.spec


def models_dir() -> Path:
    """Where tipo looks for model files first: ``$TIPO_MODELS`` or ``~/.cache/tipo/models``."""
    return Path(os.environ.get("TIPO_MODELS") or Path.home() / ".cache" / "tipo" / "models")


def builtin_path() -> Path:
    return Path(str(resources.files("tipo") / "data" / BUILTIN_FILE))


def _by_name(spec: str) -> ModelInfo | None:
    low = spec.lower()
    for info in REGISTRY:
        if low in (info.name.lower(), info.repo.lower()):
            return info
    return None


def _by_file(name: str) -> ModelInfo | None:
    return next((i for i in REGISTRY if i.gguf == name), None)


def _download(repo: str, filename: str | None, where_hint: Path) -> Path:
    try:
        import huggingface_hub as hub
    except ImportError:
        raise ModelError(
            f"{repo}/{filename or ''} is not on this machine and huggingface_hub is not installed to fetch it: "
            f"pip install 'tipo-prompt[llama]', or download it yourself and put it at {where_hint}"
        ) from None
    what = f"https://huggingface.co/{repo}" + (f"/blob/main/{filename}" if filename else "")
    fix = f"fetch {what} elsewhere and put it at {where_hint}"
    try:
        return Path(hub.snapshot_download(repo_id=repo, local_files_only=True) if filename is None
                    else hub.hf_hub_download(repo_id=repo, filename=filename, local_files_only=True))
    except Exception:
        pass  # not in the Hub cache: download below, if there is a network
    reason = offline_reason()
    if reason:
        raise ModelError(f"{filename or repo} is not on this machine and {reason}; {fix}")
    try:
        if filename is None:
            return Path(hub.snapshot_download(repo_id=repo))
        return Path(hub.hf_hub_download(repo_id=repo, filename=filename))
    except Exception as exc:
        raise ModelError(f"could not download {filename or repo} from {repo} ({type(exc).__name__}); {fix}") from None


def offline_reason(timeout: float = 3.0) -> str:
    """Why a download cannot work now ('' when it may): ``HF_HUB_OFFLINE`` is set, or the Hub's
    host cannot be reached within ``timeout`` seconds. A quick check instead of the Hub client's
    retries (which take about 24 s and print a line each when there is no network)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set (unset it to download)"
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return ""  # through a proxy: let the Hub client try
    import socket
    import threading
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    outcome: list[str] = []

    def probe() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append("")
        except OSError as exc:
            outcome.append(f"{host} cannot be reached ({type(exc).__name__}: no network?)")

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"{host} did not answer within {timeout:g} s (no network?)"


def resolve(spec: str | os.PathLike[str] | None, backend: str = "auto") -> ResolvedModel:
    """Find a model by registry name, local path or HF repo id; download when needed.

    Example:
        >>> resolve(None).info.name  # the built-in model  # doctest: +SKIP
        'tipo-builtin'
    """
    if spec is None or str(spec) in ("", BUILTIN.name):
        path = builtin_path()
        if not path.exists():
            raise ModelError(f"the built-in model is missing from this install ({path}); reinstall tipo "
                             "or pass --model with a .gguf file, an HF folder or a registry name")
        return ResolvedModel(path, BUILTIN, BUILTIN.name)
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        return ResolvedModel(path, None, text)
    local = models_dir() / text
    if local.exists() and local.name == text:
        return ResolvedModel(local, _by_file(text), text)
    info = _by_name(text)
    if info is not None:
        if backend == "hf":
            return ResolvedModel(_download(info.repo, None, models_dir() / info.name), info, text)
        local = models_dir() / info.gguf
        if local.exists():
            return ResolvedModel(local, info, text)
        return ResolvedModel(_download(info.repo, info.gguf, local), info, text)
    if text.endswith((".gguf", ".GGUF")) or os.sep in text and not _looks_like_repo(text):
        raise ModelError(f"model file {text} does not exist; check the path")
    if _looks_like_repo(text):
        if backend == "llama":
            raise ModelError(f"{text} is an HF repo id; for llama.cpp name its .gguf file: download it "
                             f"and pass the path, or use --backend hf for the HF checkpoint")
        return ResolvedModel(_download(text, None, models_dir() / text.replace("/", "--")), None, text)
    names = ", ".join(i.name for i in REGISTRY)
    raise ModelError(f"unknown model {text!r}: not a file, a folder, a registry name ({names}) or an HF repo id")


def _looks_like_repo(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts)


def license_notice(model: ResolvedModel, stream=None) -> None:  # noqa: ANN001
    """Print a model's license once per machine (a marker in the models folder records it)."""
    info = model.info
    if info is None or info is BUILTIN:
        return
    marker = models_dir() / ".licenses-shown" / info.name
    if marker.exists():
        return
    flag = "" if info.commercial else " It restricts COMMERCIAL use: read its terms before using outputs commercially."
    print(f"tipo: {info.name} is licensed under {info.license} (see https://huggingface.co/{info.repo}).{flag}",
          file=stream or sys.stderr)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass


@dataclass(frozen=True)
class ModelRow:
    name: str
    kind: str
    where: str
    license: str
    note: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.name:<16} {self.kind:<9} {self.license:<22} {self.where}" + (f"  ({self.note})" if self.note else "")


def local_models(*folders: str | os.PathLike[str]) -> dict[str, Path]:
    """Model files and folders in the given folders (default: the models folder): name -> path.

    ``.gguf`` files and HF folders (a sub-folder with a ``config.json``); the first folder wins
    a name. Each name also works as a model spec (``resolve`` looks it up in the models folder).
    """
    found: dict[str, Path] = {}
    for folder in folders or (models_dir(),):
        base = Path(folder)
        if not base.is_dir():
            continue
        for path in sorted(base.iterdir()):
            if path.name in found or path.name.startswith("."):
                continue
            if (path.is_file() and path.suffix.lower() == ".gguf") or (path / "config.json").is_file():
                found[path.name] = path
    return found


def list_models() -> list[ModelRow]:
    """The built-in model first, then the registry, then .gguf files in the models folder."""
    rows = []
    b = builtin_path()
    rows.append(ModelRow(BUILTIN.name, "built-in", str(b) if b.exists() else "(missing)", "Apache-2.0", "default"))
    d = models_dir()
    for info in REGISTRY:
        local = d / info.gguf
        where = str(local) if local.exists() else f"hf://{info.repo}/{info.gguf}"
        flag = "" if info.commercial else ", non-commercial"
        rows.append(ModelRow(info.name, "registry", where, info.license + flag, info.note))
    known = {i.gguf for i in REGISTRY}
    for name, path in local_models().items():
        if name not in known:
            rows.append(ModelRow(name, "local", str(path), "unknown", ""))
    return rows
