"""The tiny seeded models agree across transformers and llama.cpp.

What these tests pin down (tiny model, transformers 5.x, llama-cpp-python 0.3.x):

- The build is deterministic: same seed, byte-identical files; the global torch RNG is untouched.
- Each of the 13 TIPO added tokens is one token id (``base_vocab + i``) in both runtimes; BOS is
  prepended and no EOS appended. llama.cpp matches the added tokens only with ``special=True``
  (they are CONTROL tokens, like in GGUFs converted by llama.cpp from a HF folder whose added tokens
  are special or look like ``<|...|>``).
- Tokenisation differs in exactly one way. llama.cpp starts every stretch of text that follows an
  added token with the dummy-prefix space (its ids equal SentencePiece's own encoding of each
  stretch as a separate sentence); transformers' ``LlamaTokenizer`` does not (``legacy=False``), or
  only when the stretch does not already start with a space (``legacy=True``). In both cases
  llama.cpp's ids for a text equal transformers' ids for the same text with one space inserted
  after each added token that is followed by text (:func:`space_after_added_tokens`). Every golden
  prompt has text after an added token (``target: <|long|>\\ntag: ...``), so the two runtimes give
  different ids for every TIPO prompt, e.g. ``<|long|> <|tag_to_long|>\\ntag`` is
  ``<|long|> ▁ <|tag_to_long|> <0x0A> t ag`` in transformers but
  ``<|long|> ▁▁ <|tag_to_long|> ▁ <0x0A> t ag`` in llama.cpp. Text without added tokens (digits,
  tabs, newlines, CJK, emoji, runs of spaces) tokenises identically, except a leading space, which
  llama.cpp doubles. Feeding one tokenizer's ids to both runtimes removes the question.
- A LLaMA-2-style ``tokenizer.json`` (dummy prefix as ``Prepend`` + ``Replace`` normalizers, no
  pre-tokenizer) tokenises like llama.cpp when loaded with the ``tokenizers`` library, but
  transformers 5 ignores its normalizer and rebuilds ``LlamaTokenizer`` with ``Metaspace``.
- Fed the same ids, llama.cpp (F32 weights and KV cache) reproduces transformers' logits to about
  1e-5 relative and the same 20 greedy tokens on every golden prompt; with llama.cpp's default F16
  KV cache or F16 weights the logits differ by about 1e-2 relative at most.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.tokenizer import ADDED_TOKENS

# The project's copy of the golden prompts, else the shared one.
GOLDEN_FILES = (
    Path(__file__).parent / "golden" / "prompts.jsonl",
    Path(__file__).resolve().parents[2] / "shared" / "golden" / "prompts.jsonl",
)
# Text that tokenises identically in both runtimes: no added tokens, no leading space.
PLAIN_TEXTS = (
    "tag: 1girl, long hair, smile",
    "A quiet harbor at dawn.\nMist hangs over the hills.",
    "digits 0123456789 and 1.5 and 832x1216",
    "tabs\tand  double  spaces   and\n\nblank lines",
    "日本語のテキスト and émoji 🎉🐱",
    "aspect ratio: 0.7",
)
GGML_TYPE_F32 = 0  # ggml_type value for llama.cpp's KV cache
ADDED_PATTERN = "|".join(map(re.escape, ADDED_TOKENS))


def golden_prompts() -> list[str]:
    path = next((file for file in GOLDEN_FILES if file.is_file()), None)
    if path is None:
        pytest.fail(f"golden prompts not found in {[str(file) for file in GOLDEN_FILES]}")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["prompt"] for line in lines if line.strip()]


def space_after_added_tokens(text: str) -> str:
    """Insert one space at the start of each stretch of text that follows an added token."""
    parts = re.split(f"({ADDED_PATTERN})", text)
    out = []
    for index, part in enumerate(parts):
        follows_added = index > 0 and parts[index - 1] in ADDED_TOKENS
        out.append(" " + part if part and follows_added and part not in ADDED_TOKENS else part)
    return "".join(out)


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model.hf_dir)


@pytest.fixture(scope="module")
def hf_model(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model.hf_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def llama_cpp():
    return pytest.importorskip(
        "llama_cpp", reason="llama.cpp tests need llama-cpp-python: pip install 'tipo-prompt[llama]'"
    )


def load_llama(llama_cpp, path: Path, **kwargs):
    # One thread: the model is tiny, and spinning threads crawl on a busy 2-core machine.
    defaults = dict(n_ctx=256, n_threads=1, n_threads_batch=1, n_batch=256, logits_all=True, verbose=False)
    from tipo.backends.llama import open_llama

    return open_llama(llama_cpp, model_path=str(path), **{**defaults, **kwargs})


@pytest.fixture(scope="module")
def llama_vocab(llama_cpp, tiny_model):
    llm = load_llama(llama_cpp, tiny_model.gguf_f32, vocab_only=True)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def llama_f32(llama_cpp, tiny_model):
    llm = load_llama(llama_cpp, tiny_model.gguf_f32, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    yield llm
    llm.close()


def hf_logits(hf_model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return hf_model(torch.tensor([ids])).logits[0].numpy()


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


# --- the build --------------------------------------------------------------------------------


def test_build_is_deterministic_and_leaves_global_rng_alone(tiny_model, tmp_path):
    import torch

    from models.tiny import build_tiny

    state = torch.random.get_rng_state()
    again = build_tiny(tmp_path / "again", seed=0)
    other = build_tiny(tmp_path / "other", seed=1)
    assert torch.equal(state, torch.random.get_rng_state())

    files = sorted(p.relative_to(tiny_model.root) for p in tiny_model.root.rglob("*") if p.is_file())
    assert {str(p) for p in files} >= {
        "hf/model.safetensors",
        "hf/tokenizer.model",
        "tiny-f32.gguf",
        "tiny-f16.gguf",
    }
    for relative in files:
        assert (tiny_model.root / relative).read_bytes() == (again.root / relative).read_bytes(), relative
    for relative in ("hf/model.safetensors", "tiny-f32.gguf", "tiny-f16.gguf"):
        assert (tiny_model.root / relative).read_bytes() != (other.root / relative).read_bytes(), relative
    # The tokenizer does not depend on the weight seed.
    assert tiny_model.tokenizer_model.read_bytes() == other.tokenizer_model.read_bytes()


def test_gguf_metadata_matches_the_hf_folder(tiny_model):
    import gguf

    config = json.loads((tiny_model.hf_dir / "config.json").read_text())
    reader = gguf.GGUFReader(str(tiny_model.gguf_f32))

    def field(key: str):
        value = reader.fields[key]
        return value.contents()

    assert field("general.architecture") == "llama"
    assert field("llama.embedding_length") == config["hidden_size"]
    assert field("llama.block_count") == config["num_hidden_layers"]
    assert field("llama.attention.head_count") == config["num_attention_heads"]
    assert field("llama.attention.head_count_kv") == config["num_key_value_heads"]
    assert field("llama.feed_forward_length") == config["intermediate_size"]
    assert field("llama.context_length") == config["max_position_embeddings"]
    assert (field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")) == (1, 2)
    assert field("tokenizer.ggml.padding_token_id") == 2
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == config["vocab_size"] == 512 + 13
    names = {tensor.name for tensor in reader.tensors}
    assert {"token_embd.weight", "output.weight", "output_norm.weight", "blk.1.ffn_down.weight"} <= names
    types = {tensor.name: tensor.tensor_type for tensor in gguf.GGUFReader(str(tiny_model.gguf_f16)).tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32


# --- tokenizers -------------------------------------------------------------------------------


def test_added_tokens_are_single_ids_in_transformers(hf_tokenizer):
    for index, token in enumerate(ADDED_TOKENS):
        assert hf_tokenizer(token).input_ids == [1, 512 + index], token
    assert len(hf_tokenizer) == 512 + len(ADDED_TOKENS)


def test_added_tokens_are_single_ids_in_llama_cpp(llama_vocab):
    for index, token in enumerate(ADDED_TOKENS):
        assert llama_vocab.tokenize(token.encode(), add_bos=True, special=True) == [1, 512 + index], token
        # Without special=True llama.cpp spells CONTROL tokens out as text.
        assert len(llama_vocab.tokenize(token.encode(), add_bos=True, special=False)) > 2, token


def test_bos_is_prepended_and_eos_is_not(hf_tokenizer, llama_vocab):
    text = "target: <|long|>\ntag: 1girl"
    hf_ids = hf_tokenizer(text).input_ids
    llama_ids = llama_vocab.tokenize(text.encode(), add_bos=True, special=True)
    for ids in (hf_ids, llama_ids):
        assert ids[0] == 1 and ids.count(1) == 1
        assert 2 not in ids


def test_plain_text_tokenises_identically(hf_tokenizer, llama_vocab):
    for text in PLAIN_TEXTS:
        assert (
            llama_vocab.tokenize(text.encode(), add_bos=True, special=True) == hf_tokenizer(text).input_ids
        ), text


def test_leading_space_is_doubled_by_llama_cpp(hf_tokenizer, llama_vocab):
    hf_pieces = hf_tokenizer.convert_ids_to_tokens(hf_tokenizer(" x").input_ids)
    llama_pieces = hf_tokenizer.convert_ids_to_tokens(llama_vocab.tokenize(b" x", add_bos=True, special=True))
    assert "".join(llama_pieces[1:]) == "\u2581" + "".join(hf_pieces[1:])


@pytest.mark.parametrize("legacy", [False, True])
def test_golden_prompts_differ_only_by_a_space_after_added_tokens(
    tiny_model, hf_tokenizer, llama_vocab, legacy
):
    from models.tokenizer import build_hf_tokenizer

    tokenizer = (
        hf_tokenizer
        if not legacy
        else build_hf_tokenizer(tiny_model.tokenizer_model.read_bytes(), legacy=True)
    )
    assert tokenizer.legacy is legacy
    for prompt in golden_prompts():
        llama_ids = llama_vocab.tokenize(prompt.encode(), add_bos=True, special=True)
        assert llama_ids == tokenizer(space_after_added_tokens(prompt)).input_ids, prompt
        # legacy=True already adds the space unless the text after the added token starts with one.
        same = legacy and not re.search(f"(?:{ADDED_PATTERN}) ", prompt)
        assert (llama_ids == tokenizer(prompt).input_ids) is bool(same), prompt


def test_llama_cpp_encodes_each_stretch_as_a_sentencepiece_sentence(tiny_model, llama_vocab):
    from models.tokenizer import load_sentencepiece

    sp = load_sentencepiece(tiny_model.tokenizer_model)
    added_ids = {token: 512 + index for index, token in enumerate(ADDED_TOKENS)}
    for prompt in golden_prompts():
        ids = [1]
        for part in filter(None, re.split(f"({ADDED_PATTERN})", prompt)):
            ids += [added_ids[part]] if part in added_ids else sp.encode(part)
        assert llama_vocab.tokenize(prompt.encode(), add_bos=True, special=True) == ids, prompt


def test_transformers_5_ignores_a_llama2_style_tokenizer_json(
    tiny_model, hf_tokenizer, llama_vocab, tmp_path
):
    import shutil

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    # LLaMA-2's own tokenizer.json spells the dummy prefix as normalizers, per stretch of text.
    folder = shutil.copytree(tiny_model.hf_dir, tmp_path / "hf")
    data = json.loads((folder / "tokenizer.json").read_text())
    data["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        ],
    }
    data["pre_tokenizer"] = None
    (folder / "tokenizer.json").write_text(json.dumps(data))
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    reloaded = AutoTokenizer.from_pretrained(folder)
    for prompt in golden_prompts():
        # The tokenizers library honours it and then agrees with llama.cpp...
        assert raw.encode(prompt).ids == llama_vocab.tokenize(prompt.encode(), add_bos=True, special=True)
        # ...but transformers 5 rebuilds LlamaTokenizer's pipeline and keeps only vocab and merges.
        assert reloaded(prompt).input_ids == hf_tokenizer(prompt).input_ids


def test_pieces_after_an_added_token(hf_tokenizer, llama_vocab):
    text = "target: <|long|> <|tag_to_long|>\ntag:"
    hf_pieces = hf_tokenizer.convert_ids_to_tokens(hf_tokenizer(text).input_ids)
    llama_pieces = hf_tokenizer.convert_ids_to_tokens(
        llama_vocab.tokenize(text.encode(), add_bos=True, special=True)
    )
    assert hf_pieces[4:8] == ["<|long|>", "\u2581", "<|tag_to_long|>", "<0x0A>"]
    assert llama_pieces[4:9] == ["<|long|>", "\u2581\u2581", "<|tag_to_long|>", "\u2581", "<0x0A>"]


# --- models -----------------------------------------------------------------------------------


def test_llama_cpp_f32_logits_match_transformers(hf_tokenizer, hf_model, llama_f32):
    for prompt in golden_prompts():
        ids = hf_tokenizer(prompt).input_ids
        assert relative_error(llama_logits(llama_f32, ids), hf_logits(hf_model, ids)) < 1e-4, prompt


def test_llama_cpp_greedy_matches_transformers(hf_tokenizer, hf_model, llama_f32):
    import torch

    for prompt in golden_prompts():
        ids = hf_tokenizer(prompt).input_ids
        with torch.no_grad():
            output = hf_model.generate(
                torch.tensor([ids]), max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=2
            )
        hf_new = output[0, len(ids) :].tolist()

        llama_f32.reset()
        llama_f32.eval(ids)
        llama_new = []
        for _ in range(20):
            token = int(np.argmax(llama_f32.scores[llama_f32.n_tokens - 1]))
            llama_new.append(token)
            llama_f32.eval([token])
        assert llama_new == hf_new, prompt


@pytest.mark.parametrize(
    ("gguf_attr", "kv_cache", "tolerance"),
    [("gguf_f32", "default", 1e-2), ("gguf_f16", "default", 3e-2), ("gguf_f16", "f32", 3e-2)],
)
def test_llama_cpp_reduced_precision_logits_are_close(
    llama_cpp, tiny_model, hf_tokenizer, hf_model, gguf_attr, kv_cache, tolerance
):
    kwargs = {"type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32} if kv_cache == "f32" else {}
    llm = load_llama(llama_cpp, getattr(tiny_model, gguf_attr), **kwargs)
    try:
        for prompt in golden_prompts()[:5]:
            ids = hf_tokenizer(prompt).input_ids
            assert relative_error(llama_logits(llm, ids), hf_logits(hf_model, ids)) < tolerance, prompt
    finally:
        llm.close()


# --- GGUF export ------------------------------------------------------------------------------


def test_q8_0_export_matches_the_f32_export_and_runs(llama_cpp, tiny_model, hf_tokenizer, hf_model, tmp_path):
    import gguf

    from models.gguf_export import export_hf_to_gguf

    path = export_hf_to_gguf(tiny_model.hf_dir, tmp_path / "tiny-q8_0.gguf", outtype="q8_0")
    q8 = {tensor.name: tensor for tensor in gguf.GGUFReader(str(path)).tensors}
    f32 = {tensor.name: tensor for tensor in gguf.GGUFReader(str(tiny_model.gguf_f32)).tensors}
    assert q8.keys() == f32.keys()
    assert q8["output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    for name, tensor in q8.items():
        reference = np.asarray(f32[name].data, dtype=np.float32)
        if tensor.tensor_type == gguf.GGMLQuantizationType.F32:
            np.testing.assert_array_equal(np.asarray(tensor.data), reference, err_msg=name)
            continue
        assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0, name
        restored = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        # Q8_0 keeps each block of 32 to within half a step (max |w| / 127), plus the rounding of
        # the step itself to float16 (127 * 2**-11 steps at most).
        blocks = reference.reshape(-1, 32)
        step = np.abs(blocks).max(axis=1, keepdims=True) / 127
        assert (np.abs(restored.reshape(-1, 32) - blocks) <= 0.57 * step + 1e-6).all(), name

    llm = load_llama(llama_cpp, path, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    try:
        ids = hf_tokenizer(golden_prompts()[0]).input_ids
        # llama.cpp also rounds the activations to 8 bits in Q8_0 matmuls; on this random, chaotic
        # model that moves logits by up to ~15% of their range (a wrong layout would move them ~100%).
        assert relative_error(llama_logits(llm, ids), hf_logits(hf_model, ids)) < 0.3
    finally:
        llm.close()


def zero_tensors(hparams) -> list:
    from models.gguf_export import llama_tensor_shapes

    return [
        (name, (lambda shape=shape: np.zeros(shape, np.float32)))
        for name, shape in llama_tensor_shapes(hparams)
    ]


def test_export_failure_leaves_no_file(tiny_model, tmp_path):
    from models.gguf_export import write_llama_gguf
    from models.tiny import random_vocab

    def broken():
        raise RuntimeError("disk on fire")

    tensors = zero_tensors(tiny_model.hparams)
    tensors[-1] = (tensors[-1][0], broken)
    vocab = random_vocab(tiny_model.hparams.vocab_size)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_llama_gguf(tmp_path / "model.gguf", tiny_model.hparams, vocab, tensors)
    assert list(tmp_path.iterdir()) == []


def test_export_rejects_a_tokenizer_of_the_wrong_size(tiny_model, tmp_path):
    from dataclasses import replace

    from models.gguf_export import write_llama_gguf
    from models.tiny import random_vocab

    hparams = replace(tiny_model.hparams, vocab_size=tiny_model.hparams.vocab_size + 1)
    vocab = random_vocab(tiny_model.hparams.vocab_size)
    with pytest.raises(ValueError, match="vocab_size"):
        write_llama_gguf(tmp_path / "model.gguf", hparams, vocab, zero_tensors(hparams))
    assert list(tmp_path.iterdir()) == []


def test_build_random_pads_the_vocabulary_and_loads_in_llama_cpp(llama_cpp, tmp_path):
    from models.gguf_export import LlamaHParams
    from models.tiny import build_random

    hparams = LlamaHParams(
        vocab_size=2013, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4, intermediate_size=128
    )
    path = build_random(hparams, tmp_path / "random.gguf", "q8_0", seed=3)
    assert path.read_bytes() == build_random(hparams, tmp_path / "again.gguf", "q8_0", seed=3).read_bytes()
    llm = load_llama(llama_cpp, path)
    try:
        ids = llm.tokenize(
            b"target: <|long|> <|tag_to_long|>\ntag: 1girl, long hair", add_bos=True, special=True
        )
        assert ids[0] == 1 and 2003 in ids and 2005 in ids
        assert max(i for i in ids if i < 2000) < 1000  # text never lands on the filler pieces
        logits = llama_logits(llm, ids)
        assert logits.shape == (len(ids), 2013) and np.isfinite(logits).all()
    finally:
        llm.close()


def test_safetensors_reader_handles_half_precision(tmp_path):
    from safetensors.numpy import save_file

    from models.gguf_export import _read_safetensor

    values = np.array([[1.0, -2.5, 0.15625], [3.0e4, -1.0e-3, 0.0]], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)  # bfloat16 bits, by truncation
    save_file({"f16": values.astype(np.float16), "f32": values}, str(tmp_path / "a.safetensors"))
    np.testing.assert_array_equal(_read_safetensor(tmp_path / "a.safetensors", "f32"), values)
    np.testing.assert_allclose(_read_safetensor(tmp_path / "a.safetensors", "f16"), values, rtol=1e-3)
    # numpy has no bfloat16: write the file by hand (8-byte header size, JSON header, raw bits).
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, bf16.nbytes]}})
    header_bytes = header.encode().ljust(-(-len(header) // 8) * 8)
    (tmp_path / "b.safetensors").write_bytes(
        len(header_bytes).to_bytes(8, "little") + header_bytes + bf16.tobytes()
    )
    expected = (bf16.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(_read_safetensor(tmp_path / "b.safetensors", "w"), expected)


def test_hf_config_reader_refuses_what_llama_cpp_would_misread():
    from models.gguf_export import LlamaHParams

    base = {
        "model_type": "llama",
        "vocab_size": 32013,
        "hidden_size": 1280,
        "num_hidden_layers": 20,
        "num_attention_heads": 20,
        "intermediate_size": 3840,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
    }
    hparams = LlamaHParams.from_hf_config(base)
    assert (hparams.num_kv_heads, hparams.head_dim, hparams.context_length) == (20, 64, 2048)
    assert round(hparams.num_parameters / 1e6) == 508
    with pytest.raises(ValueError, match="model_type"):
        LlamaHParams.from_hf_config({**base, "model_type": "mistral"})
    with pytest.raises(ValueError, match="rope"):
        LlamaHParams.from_hf_config({**base, "rope_scaling": {"type": "linear", "factor": 2.0}})
    with pytest.raises(ValueError, match="head_dim"):
        LlamaHParams.from_hf_config({**base, "head_dim": 128})


@pytest.mark.parametrize("module", ["models.gguf_export", "models.tiny"])
def test_cli_help(module):
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True, cwd=repo
    )
    assert "usage: python -m " + module in result.stdout
    assert "--outtype" in result.stdout


def test_q8_0_model_evaluates_a_prompt_through_the_backend_on_amx_cpus(tiny_model, tmp_path):
    # llama.cpp's AMX buffers crashed (SIGSEGV) on any multi-token evaluation of a Q8_0 model;
    # the backend loads without them there. Run in a subprocess so a crash is a failure, not a
    # dead test session.
    pytest.importorskip("llama_cpp")
    from models.gguf_export import export_hf_to_gguf

    path = export_hf_to_gguf(tiny_model.hf_dir, tmp_path / "tiny-q8_0.gguf", outtype="q8_0")
    code = (
        "import sys, tipo\n"
        "with tipo.Expander(sys.argv[1], backend='llama', n_threads=1) as ex:\n"
        "    r = ex.expand(tipo.Request('1girl, forest'), tipo.Sampling(seed=1, max_new_tokens=8))\n"
        "print(r.provenance.generated_tokens)\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(run.stdout.strip()) > 0


def test_llama_backend_steps_leave_what_llama_eval_leaves(llama_cpp, tiny_model):
    """The backend hands single tokens to llama_decode itself: the logits are bit for bit those of
    ``Llama.eval``, and the Llama object's token count and record are as eval leaves them."""
    from tipo.backends.llama import LlamaCppBackend

    backend = LlamaCppBackend(tiny_model.gguf_f32, n_threads=1, n_ctx=64)
    ids = backend.encode("tag: 1girl, forest")
    try:
        ours = [backend.start(ids).copy()] + [backend.step(t).copy() for t in (5, 17, 5)]
        llm = backend._llm
        assert llm.n_tokens == len(ids) + 3
        assert llm.input_ids[: llm.n_tokens].tolist() == [*ids, 5, 17, 5]
        llm.n_tokens = 0
        theirs = []
        for tokens in (ids, [5], [17], [5]):
            llm.eval(tokens)
            theirs.append(backend._logits().copy())
        for a, b in zip(ours, theirs, strict=True):
            assert a.tobytes() == b.tobytes()
    finally:
        backend.close()
