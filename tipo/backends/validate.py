"""Model files are untrusted: check a GGUF file or an HF folder before a runtime sees it.

llama.cpp aborts the whole process (SIGABRT, empty stderr) on some header values (0 or 1000
layers, a NaN norm epsilon) and allocates whatever context a file declares; transformers builds
whatever shape a ``config.json`` says and, when asked, runs code named in it. So tipo reads the
header itself first (the ``gguf`` package for GGUF files; ``config.json`` and the safetensors
headers for HF folders), checks every hyper-parameter against sane bounds and every tensor shape
against the hyper-parameters, and refuses a bad file with ONE line naming the problem. Messages
never quote bytes of the file.

One set of rules (:func:`check_llama`) serves both formats: both are first read into the same
:class:`LlamaShape` and tensor table (names and shapes in HF's row-major order).
"""

from __future__ import annotations

import hashlib
import json
import marshal
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError, RequestError, require
from ..tokens import ADDED_TOKENS

__all__ = [
    "FORMAT_CONTEXT",
    "LIMITS",
    "GGUFHeader",
    "LlamaShape",
    "bounded_threads",
    "check_batch_memory",
    "check_hf_folder",
    "check_llama",
    "context_size",
    "read_gguf",
]

#: The context TIPO was trained with (FORMAT.md): the default context of every model.
FORMAT_CONTEXT = 1024

#: Inclusive bounds of the hyper-parameters tipo accepts (TIPO-500M: 20 layers, hidden 1280,
#: 20 heads, intermediate 3840, vocabulary 32,013, context 1024).
LIMITS: dict[str, tuple[int, int]] = {
    "layers": (1, 256),
    "hidden": (8, 16384),
    "heads": (1, 256),
    "kv_heads": (1, 256),
    "intermediate": (1, 65536),
    "vocab": (len(ADDED_TOKENS) + 3, 262144),
    "context": (16, 1 << 20),
}
#: The KV cache tipo lets a model allocate at the chosen context (F16 keys and values).
MAX_KV_BYTES = 4 << 30
#: config.json larger than this is not a model config.
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class LlamaShape:
    """The hyper-parameters of a LLaMA model, from either file format."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    context: int
    eps: float
    rope_theta: float
    head_dim: int

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def kv_bytes(self, n_ctx: int) -> int:
        """F16 K and V cache of every layer at ``n_ctx`` tokens."""
        return 2 * 2 * n_ctx * self.layers * self.kv_dim


#: The tensors of a LLaMA model, in llama.cpp's file order: (tipo's key, GGUF name, HF name). Per-layer
#: rows are named without their layer (``blk.N.`` / ``model.layers.N.`` prefixes, ``.weight`` suffix).
#: The one table behind the load-time checks here and the exporters in ``models/``.
LLAMA_GLOBAL_TENSORS = (("embed", "token_embd", "model.embed_tokens"), ("norm", "output_norm", "model.norm"),
                        ("lm_head", "output", "lm_head"))
LLAMA_LAYER_TENSORS = (
    ("attn_norm", "attn_norm", "input_layernorm"), ("q", "attn_q", "self_attn.q_proj"),
    ("k", "attn_k", "self_attn.k_proj"), ("v", "attn_v", "self_attn.v_proj"),
    ("o", "attn_output", "self_attn.o_proj"), ("ffn_norm", "ffn_norm", "post_attention_layernorm"),
    ("gate", "ffn_gate", "mlp.gate_proj"), ("up", "ffn_up", "mlp.up_proj"), ("down", "ffn_down", "mlp.down_proj"),
)


def llama_tensor_shapes(shape: LlamaShape, tied: bool = False) -> dict[str, tuple[int, ...]]:
    """Every tensor a LLaMA model of ``shape`` holds, by tipo's key (``embed``, ``0.q``...), with its
    shape in row-major (HF) order, in llama.cpp's file order (``lm_head`` left out when ``tied``)."""
    h, v, f, q, kv = shape.hidden, shape.vocab, shape.intermediate, shape.heads * shape.head_dim, shape.kv_dim
    per_layer = {"attn_norm": (h,), "q": (q, h), "k": (kv, h), "v": (kv, h), "o": (h, q), "ffn_norm": (h,),
                 "gate": (f, h), "up": (f, h), "down": (h, f)}
    out: dict[str, tuple[int, ...]] = {"embed": (v, h)}
    for i in range(shape.layers):
        out.update({f"{i}.{key}": per_layer[key] for key, _, _ in LLAMA_LAYER_TENSORS})
    out["norm"] = (h,)
    if not tied:
        out["lm_head"] = (v, h)
    return out


def gguf_tensor_name(key: str) -> str:
    """The GGUF name of a tensor key (``0.q`` -> ``blk.0.attn_q.weight``)."""
    layer, _, part = key.partition(".")
    if part:
        return f"blk.{layer}.{_KEY_TO_GGUF[part]}.weight"
    return f"{_KEY_TO_GGUF[key]}.weight"


_KEY_TO_GGUF = {key: name for key, name, _ in LLAMA_GLOBAL_TENSORS + LLAMA_LAYER_TENSORS}


def _bad(where: Path, what: str) -> ModelError:
    return ModelError(f"{where.name}: {what}; this is not a usable TIPO model file (re-download or re-export it)")


def _as_int(where: Path, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if isinstance(value, float) and value.is_integer():
                return int(value)
        except (OverflowError, ValueError):
            pass
        raise _bad(where, f"{name} is not a whole number")
    return value


def check_llama(where: Path, shape: LlamaShape, tensors: dict[str, tuple[int, ...]], tied: bool) -> None:
    """Every hyper-parameter within :data:`LIMITS`, consistent, and every tensor of the right shape.

    ``tensors`` maps HF-style logical names (``embed``, ``norm``, ``lm_head``, ``L.q`` ...) to shapes
    in row-major (HF) order. Raises :class:`ModelError` with one line on the first problem.
    """
    for name, value in (("layers", shape.layers), ("hidden", shape.hidden), ("heads", shape.heads),
                        ("kv_heads", shape.kv_heads), ("intermediate", shape.intermediate),
                        ("vocab", shape.vocab), ("context", shape.context)):
        lo, hi = LIMITS[name]
        if not lo <= value <= hi:
            raise _bad(where, f"{_LABEL[name]} is {value}, outside [{lo}, {hi}]")
    if not (math.isfinite(shape.eps) and 0 < shape.eps < 1):
        raise _bad(where, f"the norm epsilon is {shape.eps!r}; it must be a finite number in (0, 1)")
    if not (math.isfinite(shape.rope_theta) and 0 < shape.rope_theta <= 1e9):
        raise _bad(where, f"the rotary base is {shape.rope_theta!r}; it must be a finite number in (0, 1e9]")
    if shape.kv_heads > shape.heads or shape.heads % shape.kv_heads:
        raise _bad(where, f"{shape.heads} attention heads are not a multiple of {shape.kv_heads} key/value heads")
    if shape.head_dim <= 0 or shape.head_dim % 2 or shape.head_dim > 1024:
        raise _bad(where, f"the head size is {shape.head_dim}; it must be even and in [2, 1024]")
    expected = llama_tensor_shapes(shape, tied)
    missing = [n for n in expected if n not in tensors]
    if missing:
        raise _bad(where, f"{len(missing)} of the {len(expected)} tensors its header's {shape.layers} layers "
                          f"need are missing (first: {_tensor_label(missing[0])})")
    for name, want in expected.items():
        got = tuple(tensors[name])
        if got != want:
            raise _bad(where, f"tensor {_tensor_label(name)} has shape {list(got)}, but the header's "
                              f"hyper-parameters need {list(want)}")


_LABEL = {"layers": "the layer count", "hidden": "the embedding size", "heads": "the attention head count",
          "kv_heads": "the key/value head count", "intermediate": "the feed-forward size",
          "vocab": "the vocabulary size", "context": "the declared context length"}


def _tensor_label(name: str) -> str:
    layer, _, part = name.partition(".")
    return f"{part} of layer {layer}" if part else name


def context_size(where: Path, shape: LlamaShape, n_ctx: int | None) -> int:
    """The context to allocate: the format's 1024 by default, never more than the file declares.

    ``n_ctx`` raises (or lowers) it explicitly, up to the declared context.
    """
    if n_ctx is not None:
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < LIMITS["context"][0]:
            raise RequestError(f"n_ctx={n_ctx!r} is not valid; give a whole number of tokens >= {LIMITS['context'][0]}")
        if n_ctx > shape.context:
            raise RequestError(f"n_ctx={n_ctx} is more than {where.name} declares ({shape.context} tokens); "
                               f"give at most {shape.context}")
        ctx = n_ctx
    else:
        ctx = min(FORMAT_CONTEXT, shape.context)
    if shape.kv_bytes(ctx) > MAX_KV_BYTES:
        raise RequestError(f"a context of {ctx} tokens would need a {shape.kv_bytes(ctx) >> 20} MiB cache for "
                           f"{where.name}; give a smaller n_ctx")
    return ctx


#: The most threads the default picks: TIPO models are small and batch-1 decoding is bound by
#: memory bandwidth, so more threads than this only add synchronisation (and contention).
MAX_DEFAULT_THREADS = 8


def default_threads() -> int:
    """The thread count used when none is given: the physical cores this process may run on, minus
    one (left to the rest of the machine: with every core busy, one other busy process stalls all
    of llama.cpp's threads at each step), at least 1 and at most :data:`MAX_DEFAULT_THREADS`.
    Hyper-threads of one core count once."""
    return max(1, min(_physical_cores() - 1, MAX_DEFAULT_THREADS))


def _physical_cores() -> int:
    """Distinct (package, core) pairs among the CPUs of this process's affinity (Linux sysfs);
    elsewhere the usable CPUs."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return _cores()
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(), topo.joinpath("core_id").read_text().strip()))
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def check_batch_memory(where: Path, shape: LlamaShape, n_seq: int, n_ctx_seq: int) -> None:
    """Refuse a batch whose KV cache (``n_seq`` sequences of ``n_ctx_seq`` tokens) would pass the cap:
    half of this machine's memory (at least :data:`MAX_KV_BYTES`)."""
    cap = max(MAX_KV_BYTES, _physical_memory() // 2)
    need = shape.kv_bytes(n_seq * n_ctx_seq)
    if need > cap:
        most = max(1, cap // max(1, shape.kv_bytes(n_ctx_seq)))
        raise RequestError(f"a batch of {n_seq} sequences of {n_ctx_seq} tokens would need a {need >> 20} MiB cache "
                           f"for {where.name} (cap {cap >> 20} MiB, half this machine's memory); use a batch size "
                           f"of at most {most}")


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return 0


def bounded_threads(n_threads: int | None) -> int:
    """A thread count for a runtime: None is :func:`default_threads`; more than the cores is capped to them."""
    cores = _cores()
    if n_threads is None:
        return default_threads()
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise RequestError(f"n_threads={n_threads!r} is not valid; give a whole number >= 1 (at most {cores}, "
                           "the cores of this machine)")
    return min(n_threads, cores)


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# --- GGUF -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GGUFHeader:
    """What tipo needs from a checked GGUF header."""

    shape: LlamaShape
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    added_ids: dict[str, int]
    bos_id: int
    eos_id: int


_GGUF_GLOBAL = {name: key for key, name, _ in LLAMA_GLOBAL_TENSORS}
_GGUF_LAYER = {name: key for key, name, _ in LLAMA_LAYER_TENSORS}


def _gguf_tensor_key(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) == 2 and parts[1] == "weight" and parts[0] in _GGUF_GLOBAL:
        return _GGUF_GLOBAL[parts[0]]
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[3] == "weight" and parts[2] in _GGUF_LAYER:
        return f"{int(parts[1])}.{_GGUF_LAYER[parts[2]]}"
    return None


def read_gguf(path: Path) -> GGUFHeader:
    """Read and check a GGUF file's header (and tensor table) before llama.cpp sees it."""
    if not path.exists():
        raise ModelError(f"model file {path} does not exist; check the path or give a registry name (tipo models)")
    if path.is_dir():
        raise ModelError(f"{path} is a folder; the llama.cpp backend needs a .gguf file (use --backend hf for HF folders)")
    if not path.is_file():
        raise ModelError(f"{path} is not a regular file; point at a .gguf file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read {path} ({exc.strerror}); check its permissions") from None
    if head != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file (it does not start with the GGUF magic); "
                         "convert it with 'python -m models.gguf_export' or point at a .gguf file")
    cached = _header_cache_read(path)
    if cached is not None:
        return cached
    gguf = require("gguf", "llama", "Reading GGUF headers")
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # any parse failure: truncated, corrupt, unknown types
        raise ModelError(f"{path.name}: the GGUF header or tensor table is unreadable ({type(exc).__name__}); "
                         "the file is truncated or corrupt: re-download or re-export it") from None
    try:
        header = _check_gguf(path, reader)
    except ModelError:
        raise
    except Exception as exc:  # a field of an unexpected type or layout
        raise ModelError(f"{path.name}: a GGUF header field has an unexpected type or layout "
                         f"({type(exc).__name__}); re-download or re-export the file") from None
    _header_cache_write(path, header)
    return header


# Reading a header with gguf's reader takes a noticeable part of a second (most of a cold start
# on the built-in model). A header that passed the checks is kept in tipo's cache folder, keyed by
# the file's identity (path, device, inode, size, modification and change times) and this
# module's source: any change to the file or to the checks reads it afresh.
def _header_key(path: Path) -> str | None:
    try:
        st = os.stat(path)
        source = Path(__file__).read_bytes()
    except OSError:
        return None
    ident = f"{os.path.realpath(path)}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    return hashlib.sha256(ident.encode("utf-8", "surrogateescape") + source).hexdigest()[:32]


def _header_cache_read(path: Path) -> GGUFHeader | None:
    from ..tags import cache_dir

    folder, key = cache_dir(), _header_key(path)
    if folder is None or key is None:
        return None
    try:
        fmt, stored, shape, tokens, types, added, bos, eos = marshal.loads((folder / f"gguf-{key}.marshal").read_bytes())
        if fmt != 1 or stored != key:
            return None
        return GGUFHeader(LlamaShape(*shape), tuple(tokens), tuple(types), dict(added), int(bos), int(eos))
    except (OSError, EOFError, ValueError, TypeError):
        return None


def _header_cache_write(path: Path, header: GGUFHeader) -> None:
    from ..tags import cache_dir, write_atomic

    folder, key = cache_dir(), _header_key(path)
    if folder is None or key is None:
        return
    sh = header.shape
    shape = (sh.layers, sh.hidden, sh.heads, sh.kv_heads, sh.intermediate, sh.vocab, sh.context, sh.eps,
             sh.rope_theta, sh.head_dim)
    blob = marshal.dumps((1, key, shape, list(header.tokens), list(header.token_types), dict(header.added_ids),
                          header.bos_id, header.eos_id))
    write_atomic(folder / f"gguf-{key}.marshal", blob)


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()


def _check_gguf(path: Path, reader: Any) -> GGUFHeader:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        what = "no architecture" if arch is None else ("an architecture other than 'llama'" if isinstance(arch, str)
                                                       else "an unreadable architecture")
        raise _bad(path, f"the header names {what}; TIPO models are LLaMA models")

    def num(key: str, default: object = None, required: bool = True) -> Any:
        value = _field(reader, key)
        if value is None:
            if required and default is None:
                raise _bad(path, f"the header lacks {key}")
            return default
        if isinstance(value, list) or isinstance(value, str):
            raise _bad(path, f"{key} is not a number")
        return value

    layers = _as_int(path, "the layer count", num("llama.block_count"))
    hidden = _as_int(path, "the embedding size", num("llama.embedding_length"))
    heads = _as_int(path, "the attention head count", num("llama.attention.head_count"))
    kv_heads = _as_int(path, "the key/value head count", num("llama.attention.head_count_kv", heads))
    intermediate = _as_int(path, "the feed-forward size", num("llama.feed_forward_length"))
    context = _as_int(path, "the context length", num("llama.context_length"))
    eps = float(num("llama.attention.layer_norm_rms_epsilon"))
    theta = float(num("llama.rope.freq_base", 10000.0))
    tokenizer = _field(reader, "tokenizer.ggml.model")
    if tokenizer != "llama":
        raise _bad(path, "the tokenizer is not a SentencePiece ('llama') tokenizer")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    scores = _field(reader, "tokenizer.ggml.scores")
    types = _field(reader, "tokenizer.ggml.token_type")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise _bad(path, "the token list is missing or not a list of strings")
    vocab = len(tokens)
    for name, arr in (("scores", scores), ("token types", types)):
        if arr is not None and (not isinstance(arr, list) or len(arr) != vocab):
            raise _bad(path, f"the token {name} do not match the {vocab} tokens")
    if scores is not None and not all(isinstance(s, float) and math.isfinite(s) for s in scores):
        raise _bad(path, "a token score is not a finite number")
    type_list = [int(t) for t in types] if types is not None else [1] * vocab
    if any(not 1 <= t <= 6 for t in type_list):
        raise _bad(path, "a token type is outside the known types 1-6")
    head_dim = hidden // heads if heads > 0 else 0
    key_len = num("llama.attention.key_length", required=False)
    if key_len is not None:
        head_dim = _as_int(path, "the head size", key_len)
    if heads > 0 and key_len is None and hidden % heads:
        raise _bad(path, f"the embedding size {hidden} is not a multiple of the {heads} attention heads")
    shape = LlamaShape(layers, hidden, heads, kv_heads, intermediate, vocab, context, eps, theta, head_dim)
    tensors: dict[str, tuple[int, ...]] = {}
    for t in reader.tensors:
        key = _gguf_tensor_key(t.name)
        if key is None:
            continue
        tensors[key] = tuple(int(d) for d in reversed(list(t.shape)))
    declared_vocab = num("llama.vocab_size", required=False)
    if declared_vocab is not None and _as_int(path, "the vocabulary size", declared_vocab) != vocab:
        raise _bad(path, f"the header declares {declared_vocab} tokens but lists {vocab}")
    check_llama(path, shape, tensors, tied="lm_head" not in tensors)
    index: dict[str, int] = {}
    for i, t in enumerate(tokens):
        index.setdefault(t, i)
    missing = [t for t in ADDED_TOKENS if t not in index]
    if missing:
        raise _bad(path, f"its vocabulary lacks the TIPO added token {missing[0]} (and {len(missing) - 1} more)"
                   if len(missing) > 1 else f"its vocabulary lacks the TIPO added token {missing[0]}")
    bos = _as_int(path, "the BOS id", num("tokenizer.ggml.bos_token_id", 1))
    eos = _as_int(path, "the EOS id", num("tokenizer.ggml.eos_token_id", 2))
    for name, tid in (("BOS", bos), ("EOS", eos)):
        if not 0 <= tid < vocab:
            raise _bad(path, f"the {name} token id {tid} is outside the vocabulary of {vocab}")
    return GGUFHeader(shape, tuple(tokens), tuple(type_list), {t: index[t] for t in ADDED_TOKENS}, bos, eos)


# --- HF folders -------------------------------------------------------------------------------

_HF_TENSORS = {f"{name}.weight": key for key, _, name in LLAMA_GLOBAL_TENSORS}
_HF_LAYER = {name: key for key, _, name in LLAMA_LAYER_TENSORS}


def _hf_tensor_key(name: str) -> str | None:
    if name in _HF_TENSORS:
        return _HF_TENSORS[name]
    if name.startswith("model.layers.") and name.endswith(".weight"):
        rest = name[len("model.layers."):-len(".weight")]
        layer, _, part = rest.partition(".")
        if layer.isdigit() and part in _HF_LAYER:
            return f"{int(layer)}.{_HF_LAYER[part]}"
    return None


@dataclass(frozen=True)
class HFFolder:
    """A checked HF folder: its hyper-parameters and whether its weights are safetensors."""

    shape: LlamaShape
    safetensors: bool


def check_hf_folder(path: Path, allow_pickle: bool = False) -> HFFolder:
    """Check an HF model folder before transformers sees it.

    ``config.json`` must be a LLaMA config without custom code (``auto_map``), with hyper-parameters
    within :data:`LIMITS`; the weights must be safetensors whose tensor shapes match it (pickled
    ``.bin`` weights can run code on load: only with ``allow_pickle=True``).
    """
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelError(f"{path} is not an HF model folder (no config.json); "
                         "use a folder saved with save_pretrained, or a .gguf file with --backend llama")
    cfg_file = path / "config.json"
    try:
        if cfg_file.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelError(f"{path.name}/config.json is over {MAX_CONFIG_BYTES >> 20} MiB; it is not a model config")
        config = json.loads(cfg_file.read_bytes().decode("utf-8"))
    except ModelError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        raise ModelError(f"{path.name}/config.json is not readable JSON; re-download or re-save the model") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path.name}/config.json is not a JSON object; re-download or re-save the model")
    if "auto_map" in config:
        raise ModelError(f"{path.name}/config.json asks to run custom code from the folder (auto_map); tipo never "
                         "runs code from model files: use a plain LLaMA checkpoint")
    for tok_cfg in ("tokenizer_config.json",):
        f = path / tok_cfg
        if f.is_file():
            try:
                tc = json.loads(f.read_bytes().decode("utf-8")) if f.stat().st_size <= MAX_CONFIG_BYTES else {}
            except (OSError, UnicodeDecodeError, ValueError, RecursionError):
                raise ModelError(f"{path.name}/{tok_cfg} is not readable JSON; re-download or re-save the model") from None
            if isinstance(tc, dict) and "auto_map" in tc:
                raise ModelError(f"{path.name}/{tok_cfg} asks to run custom code from the folder (auto_map); "
                                 "tipo never runs code from model files: use a plain LLaMA tokenizer")
    if config.get("model_type") != "llama":
        raise _bad(path, "config.json is not a LLaMA config (model_type must be 'llama')")

    def get(key: str, default: object = None) -> Any:
        value = config.get(key, default)
        if value is None:
            raise _bad(path, f"config.json lacks {key}")
        return value

    heads = _as_int(path, "num_attention_heads", get("num_attention_heads"))
    hidden = _as_int(path, "hidden_size", get("hidden_size"))
    rope_cfg = config.get("rope_parameters")
    rope: dict[str, Any] = rope_cfg if isinstance(rope_cfg, dict) else {}
    try:
        eps = float(get("rms_norm_eps", 1e-6))
        theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)) or 10000.0)
    except (TypeError, ValueError):
        raise _bad(path, "rms_norm_eps or rope_theta in config.json is not a number") from None
    head_dim = config.get("head_dim")
    if head_dim is None:
        if heads <= 0 or hidden % heads:
            raise _bad(path, f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
        head_dim = hidden // heads
    shape = LlamaShape(
        layers=_as_int(path, "num_hidden_layers", get("num_hidden_layers")),
        hidden=hidden, heads=heads,
        kv_heads=_as_int(path, "num_key_value_heads", config.get("num_key_value_heads") or heads),
        intermediate=_as_int(path, "intermediate_size", get("intermediate_size")),
        vocab=_as_int(path, "vocab_size", get("vocab_size")),
        context=_as_int(path, "max_position_embeddings", get("max_position_embeddings", FORMAT_CONTEXT)),
        eps=eps, rope_theta=theta, head_dim=_as_int(path, "head_dim", head_dim),
    )
    weights = sorted(path.glob("*.safetensors"))
    pickled = sorted(p for p in path.glob("*.bin") if p.name.startswith("pytorch_model"))
    if not weights:
        if pickled and not allow_pickle:
            raise ModelError(f"{path.name} holds only pickled .bin weights, which can run code when loaded; convert "
                             "them to safetensors, or opt in with allow_pickle=True (--allow-pickle) if you trust the file")
        if not pickled:
            raise ModelError(f"{path.name} has no weights (no .safetensors file); re-download or re-save the model")
        check_llama_bounds_only(path, shape)
        return HFFolder(shape, safetensors=False)
    safetensors = require("safetensors", "hf", "Reading safetensors headers")
    tensors: dict[str, tuple[int, ...]] = {}
    for file in weights:
        try:
            with safetensors.safe_open(str(file), framework="numpy") as fh:
                for name in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                    key = _hf_tensor_key(name)
                    if key is not None:
                        tensors[key] = tuple(int(d) for d in fh.get_slice(name).get_shape())
        except Exception as exc:
            raise ModelError(f"{path.name}/{file.name} is not a readable safetensors file ({type(exc).__name__}); "
                             "it is truncated or corrupt: re-download or re-save the model") from None
    tied = bool(config.get("tie_word_embeddings", False)) and "lm_head" not in tensors
    check_llama(path, shape, tensors, tied=tied)
    return HFFolder(shape, safetensors=True)


def check_llama_bounds_only(where: Path, shape: LlamaShape) -> None:
    """The hyper-parameter rules of :func:`check_llama` without a tensor table."""
    try:
        check_llama(where, shape, {}, tied=True)
    except ModelError as exc:
        if "tensors its header" not in str(exc):
            raise
