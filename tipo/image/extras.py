"""Extra networks: LoRA tags and textual-inversion embeddings, loaded through diffusers.

* ``<lora:name:weight>`` (also ``<lyco:...>``, A1111's spelling for LyCORIS files) loads
  ``name.safetensors`` (or ``.pt``/``.ckpt``/``.bin``) from the LoRA folder with diffusers'
  ``load_lora_weights`` (diffusers and kohya/A1111 layouts) and applies it with ``set_adapters`` at
  that weight (default 1) for the prompt that carries it; other prompts of the run run without it.
* A textual-inversion embedding is used where its file name appears as a word of the prompt or the
  negative (A1111) or as ``embedding:name`` (ComfyUI). It is loaded with diffusers'
  ``load_textual_inversion`` (A1111 ``.pt``, ``emb_params`` safetensors, diffusers files; SDXL files
  with ``clip_l``/``clip_g``) under a private token, and the word is replaced by that token (one per
  vector) for the text encoder only. The words never reach the language model:
  :func:`split_embeddings` takes them out of the user's tags before expansion.
* Each applied file is hashed as A1111 does, for the infotext: ``Lora hashes`` (the safetensors
  body's sha256, A1111's "addnet" hash, first 12 hex digits) and ``TI hashes`` (the file's sha256,
  12 digits); a checkpoint file's ``Model hash`` is its sha256's first 10 digits.

Everything is undone when the run ends (adapters deleted, tokens removed), so a pipeline passed
in is left as it was.

Example:
    >>> parse_lora_tags(("<lora:film grain:0.6>", "<hypernet:x:1>", "<lora:detail>"))
    [LoraTag(name='film grain', weight=0.6, text='<lora:film grain:0.6>'), LoraTag(name='detail', weight=1.0, text='<lora:detail>')]
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError, RequestError

__all__ = ["Applied", "ExtraNetworks", "LoraTag", "embedding_index", "file_hash", "lora_hash", "parse_lora_tags",
           "split_embeddings"]

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
_TAG = re.compile(r"^<(lora|lyco):([^<>]*)>$", re.IGNORECASE)


@dataclass(frozen=True)
class LoraTag:
    """One ``<lora:name:weight>`` tag."""

    name: str
    weight: float
    text: str


def parse_lora_tags(extras: tuple[str, ...] | list[str]) -> list[LoraTag]:
    """The LoRA tags among extra-network tags (others, e.g. ``<hypernet:...>``, are not LoRAs).

    A1111's ``<lora:name:te:unet>`` (two weights) is refused with a clear error: diffusers applies one
    weight per adapter here.
    """
    out = []
    for text in extras:
        m = _TAG.match(text.strip())
        if m is None:
            continue
        parts = m.group(2).split(":")
        name = parts[0].strip()
        if not name:
            raise RequestError(f"{text}: the LoRA tag names no file; write <lora:NAME:WEIGHT>")
        if len(parts) > 2:
            raise RequestError(f"{text}: separate text-encoder and UNet weights are not supported; write "
                               f"<lora:{name}:WEIGHT> with one weight")
        weight = 1.0
        if len(parts) == 2 and parts[1].strip():
            try:
                weight = float(parts[1])
            except ValueError:
                raise RequestError(f"{text}: the weight {parts[1]!r} is not a number; write <lora:{name}:0.8>") \
                    from None
        out.append(LoraTag(name, weight, text))
    return out


def _private_rng() -> Any:
    """A block that cannot move the caller's torch CPU generator."""
    import torch

    return torch.random.fork_rng(devices=[])


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "none"


_HASHES: dict[tuple[str, int, int, str], str] = {}


def _cached(path: Path, kind: str, compute: Any) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, kind)
    if key not in _HASHES:
        _HASHES[key] = compute()
    return _HASHES[key]


def file_hash(path: str | os.PathLike[str], digits: int = 12) -> str:
    """The sha256 of a whole file, first ``digits`` hex digits (A1111's TI hash: 12; model hash: 10)."""
    p = Path(path)

    def compute() -> str:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    return _cached(p, "sha256", compute)[:digits]


def lora_hash(path: str | os.PathLike[str]) -> str:
    """A1111's LoRA hash: for safetensors the sha256 of the file after its header ("addnet" hash), else the
    whole file's; first 12 hex digits."""
    p = Path(path)
    if p.suffix.lower() != ".safetensors":
        return file_hash(p, 12)

    def compute() -> str:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            fh.seek(n + 8)
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    return _cached(p, "addnet", compute)[:12]


def _index(folder: Path | None, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """File stem (lower-cased) -> file, searching subfolders too; the first by sorted path wins."""
    found: dict[str, Path] = {}
    if folder is None:
        return found
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in suffixes:
            found.setdefault(path.stem.lower(), path)
    return found


def embedding_index(folder: Path | None) -> dict[str, Path]:
    """The embeddings in a folder (and its subfolders): lower-cased file stem -> file."""
    return _index(folder, EMBEDDING_SUFFIXES)


def _embedding_pattern(names: list[str]) -> re.Pattern[str] | None:
    if not names:
        return None
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![\w\-.:])(?:embedding:)?({alternatives})(?:\.(?:safetensors|pt|bin))?(?![\w\-])",
                      re.IGNORECASE)


def split_embeddings(tags: str, names: list[str] | tuple[str, ...]) -> tuple[str, list[str]]:
    """Take the tags that are embedding names (``name`` or ``embedding:name``) out of a tag text.

    Returns the remaining text (host syntax kept) and the removed items as written (with weights), so
    the language model never sees them and they can be put back in front of the expansion.

    Example:
        >>> split_embeddings("1girl, (easyneg:1.2), embedding:style, forest", ["EasyNeg", "style"])
        ('1girl, forest', ['(easyneg:1.2)', 'embedding:style'])
    """
    from ..syntax import ItemKind, parse_prompt, render_items, render_tag

    pattern = _embedding_pattern(list(names))
    if pattern is None or not tags.strip():
        return tags, []
    items = parse_prompt(tags)
    kept, removed = [], []
    for item in items:
        if item.kind is ItemKind.TAG and pattern.fullmatch(item.text.strip()):
            removed.append(render_tag(item.text.strip(), item.weight))
        else:
            kept.append(item)
    if not removed:
        return tags, []
    return render_items(kept), removed


def _load_tensors(path: Path) -> Any:
    import torch

    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is "not a readable file"
        raise ModelError(f"cannot read {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None


def _embedding_vectors(path: Path, sdxl: bool) -> list[Any]:
    """The embedding's vectors per text encoder: [clip] for SD, [clip_l, clip_g] for SDXL."""
    import torch

    data = _load_tensors(path)
    if isinstance(data, torch.Tensor):
        data = {"emb_params": data}
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a textual-inversion embedding (no tensors)")
    if "clip_l" in data or "clip_g" in data:
        if not sdxl:
            raise RequestError(f"{path.name} is an SDXL embedding (clip_l/clip_g); this is an SD 1.x/2.x pipeline")
        if "clip_l" not in data or "clip_g" not in data:
            raise ModelError(f"{path} has only one of clip_l/clip_g; an SDXL embedding needs both")
        return [data["clip_l"], data["clip_g"]]
    if "string_to_param" in data:  # A1111 .pt
        vec = data["string_to_param"].get("*") if isinstance(data["string_to_param"], dict) else None
    elif len(data) == 1:  # A1111 safetensors (emb_params) or diffusers ({token: tensor})
        vec = next(iter(data.values()))
    else:
        vec = None
    if not isinstance(vec, torch.Tensor):
        raise ModelError(f"{path} is not a textual-inversion embedding this version reads (expected A1111's "
                         "string_to_param or emb_params, a diffusers {token: tensor} file, or SDXL clip_l/clip_g)")
    if sdxl:
        raise RequestError(f"{path.name} is an SD 1.x/2.x embedding (one encoder); an SDXL pipeline needs clip_l "
                           "and clip_g vectors")
    return [vec]


@dataclass
class Applied:
    """What :meth:`ExtraNetworks.apply` did for one prompt."""

    prompt: str  # the text for the encoders (embedding words replaced by their tokens)
    negative: str
    loras: dict[str, str] = field(default_factory=dict)  # name -> hash
    embeddings: dict[str, str] = field(default_factory=dict)  # name -> hash
    lora_tags: tuple[LoraTag, ...] = ()

    def infotext(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.loras:
            out["Lora hashes"] = ", ".join(f"{k}: {v}" for k, v in self.loras.items())
        if self.embeddings:
            out["TI hashes"] = ", ".join(f"{k}: {v}" for k, v in self.embeddings.items())
        return out


class ExtraNetworks:
    """Loads and applies LoRAs and embeddings on one SD/SDXL pipeline for a run; :meth:`close` undoes it."""

    def __init__(self, pipe: Any, kind: Any, lora_dir: Path | None, embedding_dir: Path | None) -> None:
        from .kinds import PipelineKind

        self.pipe, self.kind = pipe, kind
        self.sdxl = kind is PipelineKind.SDXL
        self.supported = kind in (PipelineKind.SD, PipelineKind.SDXL)
        self.lora_dir = lora_dir
        self.loras = _index(lora_dir, LORA_SUFFIXES)
        self.embeddings = embedding_index(embedding_dir)
        self._names = {p.stem.lower(): p.stem for p in self.embeddings.values()}
        self._pattern = _embedding_pattern(list(self._names.values()))
        self._adapters: dict[str, str] = {}  # lora file key -> adapter name
        self._tokens: dict[str, str] = {}  # embedding key -> token text for the encoders
        self._lora_on = False
        self.notes: list[str] = []

    @property
    def embedding_names(self) -> list[str]:
        return sorted(self._names.values())

    def _encoders(self) -> list[tuple[Any, Any]]:
        pairs = [(self.pipe.tokenizer, self.pipe.text_encoder)]
        if self.sdxl:
            pairs.append((self.pipe.tokenizer_2, self.pipe.text_encoder_2))
        return pairs

    def _lora(self, tag: LoraTag) -> tuple[str, str]:
        key = tag.name.lower()
        path = self.loras.get(key)
        if path is None:
            raise RequestError(f"{tag.text}: no LoRA file {tag.name}{{{','.join(LORA_SUFFIXES)}}} in {self.lora_dir} "
                               "(or its subfolders)")
        if key not in self._adapters:
            adapter = f"tipo_lora_{len(self._adapters)}"
            try:
                with _private_rng():  # peft initialises the new layers before loading: not the caller's RNG
                    self.pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
            except (ValueError, KeyError, RuntimeError, OSError) as exc:
                with contextlib.suppress(Exception):  # a half-loaded adapter (the UNet part) goes too
                    self.pipe.delete_adapters([adapter])
                if "version of PEFT" in str(exc):
                    raise ModelError(f"{tag.text}: {path.name} has text-encoder LoRA weights, which this transformers "
                                     f"loads only with a newer peft ({str(exc).split('>=')[-1].strip()} or later; "
                                     f"installed: {_version('peft')}): pip install -U peft. Its UNet part alone is "
                                     "not applied (that would be another LoRA)") from None
                raise ModelError(f"{tag.text}: diffusers could not load {path} as a LoRA for this pipeline "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
            self._adapters[key] = adapter
        return self._adapters[key], lora_hash(path)

    def _embedding(self, key: str) -> str:
        if key in self._tokens:
            return self._tokens[key]
        path = self.embeddings[key]
        vectors = _embedding_vectors(path, self.sdxl)
        token = f"<tipo-ti-{len(self._tokens)}>"
        counts = set()
        for (tokenizer, encoder), vec in zip(self._encoders(), vectors, strict=True):
            vec = vec if vec.ndim > 1 else vec.unsqueeze(0)
            width = encoder.get_input_embeddings().weight.shape[-1]
            if vec.shape[-1] != width:
                raise RequestError(f"{path.name}: its vectors have {vec.shape[-1]} values; this pipeline's text "
                                   f"encoder takes {width} (an embedding made for another model)")
            with _private_rng():  # resizing the embedding matrix draws the new rows at random
                self.pipe.load_textual_inversion(vec, token=token, tokenizer=tokenizer, text_encoder=encoder)
            counts.add(int(vec.shape[0]))
        if len(counts) != 1:
            raise ModelError(f"{path}: clip_l and clip_g have different numbers of vectors")
        n = counts.pop()
        self._tokens[key] = " ".join([token] + [f"{token}_{i}" for i in range(1, n)])
        return self._tokens[key]

    def _replace(self, text: str, used: dict[str, str]) -> str:
        if self._pattern is None or not text:
            return text

        def sub(m: re.Match[str]) -> str:
            key = m.group(1).lower()
            used[self._names[key]] = file_hash(self.embeddings[key], 12)
            return self._embedding(key)

        return self._pattern.sub(sub, text)

    def encoder_text(self, text: str) -> str:
        """``text`` with its embedding words replaced by their tokens (loading them if needed)."""
        if not self.supported:
            return text
        return self._replace(text, {})

    def apply(self, prompt: str, negative: str, extras: tuple[str, ...]) -> Applied:
        """Load what ``prompt`` asks for, set the LoRA weights, and give the texts for the encoders."""
        tags = parse_lora_tags(extras)
        if tags and self.lora_dir is None:
            note = (f"{', '.join(t.text for t in tags)}: not applied, no LoRA folder given (lora_dir / --lora-dir); "
                    "left out of the text")
            if note not in self.notes:
                self.notes.append(note)
            tags = []
        applied = Applied(prompt, negative, lora_tags=tuple(tags))
        if (tags or self._pattern is not None) and not self.supported:
            if tags:
                raise RequestError("LoRA tags are for SD and SDXL pipelines; this is a DeepFloyd IF cascade")
            return applied
        if tags:
            weights: dict[str, float] = {}
            for tag in tags:
                adapter, digest = self._lora(tag)
                weights[adapter] = weights.get(adapter, 0.0) + tag.weight
                applied.loras[tag.name] = digest
            if not self._lora_on:
                self.pipe.enable_lora()
                self._lora_on = True
            self.pipe.set_adapters(list(weights), adapter_weights=list(weights.values()))
        elif self._adapters and self._lora_on:
            self.pipe.disable_lora()
            self._lora_on = False
        applied.prompt = self._replace(prompt, applied.embeddings)
        applied.negative = self._replace(negative, applied.embeddings)
        return applied

    def close(self) -> None:
        """Delete the adapters and remove the embedding tokens this run added."""
        if self._adapters:
            self.pipe.delete_adapters(list(self._adapters.values()))
            if not self._lora_on:
                self.pipe.enable_lora()
            self._adapters.clear()
            if not any(self.pipe.get_list_adapters().values()):  # none of the caller's: take the LoRA layers out
                self.pipe.unload_lora_weights()
        if self._tokens:
            tokens = [t for text in self._tokens.values() for t in text.split()]
            for tokenizer, encoder in self._encoders():
                with _private_rng():
                    self.pipe.unload_textual_inversion(tokens, tokenizer=tokenizer, text_encoder=encoder)
            self._tokens.clear()
