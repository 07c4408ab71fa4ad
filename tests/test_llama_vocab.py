"""Real TIPO tokenisation: the LLaMA vocabulary (32,000 pieces) plus the 13 TIPO added tokens.

A tiny TIPO-shaped model (random weights, 2 layers) carries the real LLaMA vocabulary read from
llama.cpp's vocab file (``shared/data/tokenizers/llama-spm/``), as an HF folder and a GGUF. On it:

- llama.cpp's own tokenizer test vectors for that vocabulary pass through tipo's encode on both
  backends;
- every golden prompt gets identical ids on both backends, added tokens at 32000-32012;
- the evidence for docs/language-model.md: llama.cpp puts the dummy-prefix space after an added
  token whether the token is CONTROL or USER_DEFINED; a LLaMA-2-style ``tokenizer.json`` (dummy
  prefix as normalizers) does the same under the ``tokenizers`` library when the added tokens are
  special (not normalized); transformers 5's ``LlamaTokenizer`` does not (``legacy=False``) or only
  partly (``legacy=True``).

Skipped when the vocab file is not next to the checkout (a fresh clone without ``shared/``).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from golden_cases import load

from models.tokenizer import ADDED_TOKENS

llama_vocab_module = pytest.importorskip("models.llama_vocab")
VOCAB = llama_vocab_module.find_llama_vocab()
pytestmark = pytest.mark.skipif(VOCAB is None, reason="llama.cpp's LLaMA vocab file (shared/data) is not here")

for _module in ("torch", "transformers", "sentencepiece", "gguf", "llama_cpp"):
    pytest.importorskip(_module)

ADDED = "|".join(map(re.escape, ADDED_TOKENS))
PROMPT = "target: <|long|> <|tag_to_long|>\ntag: 1girl, smile"


def golden_prompts() -> list[str]:
    prompts = [case["prompt"] for case in load("prompts.jsonl")]
    assert prompts, "no golden prompts found"
    return prompts


@pytest.fixture(scope="module")
def real_model(tmp_path_factory, one_torch_thread):
    from models.llama_vocab import llama_sentencepiece_model
    from models.tiny import TINY_HPARAMS, build_tiny

    return build_tiny(tmp_path_factory.mktemp("llama_vocab"), seed=0,
                      hparams=replace(TINY_HPARAMS, vocab_size=32000 + len(ADDED_TOKENS)),
                      sp_model=llama_sentencepiece_model(VOCAB))


@pytest.fixture(scope="module")
def backends(real_model):
    from tipo.backends import open_backend

    llama = open_backend("llama", real_model.gguf_f32, n_threads=1)
    hf = open_backend("hf", real_model.hf_dir)
    yield llama, hf
    llama.close()
    hf.close()


def test_the_model_carries_the_real_vocabulary(real_model):
    from gguf import GGUFReader

    from models.llama_vocab import read_llama_pieces

    pieces = read_llama_pieces(VOCAB)
    reader = GGUFReader(str(real_model.gguf_f32))
    field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]).decode() for i in field.data]
    assert tokens[:32000] == list(pieces.tokens) and tokens[32000:] == list(ADDED_TOKENS)
    assert (pieces.tokens[1], pieces.tokens[2], pieces.tokens[29871]) == ("<s>", "</s>", "\u2581")


@pytest.mark.parametrize("which", [0, 1], ids=["llama", "hf"])
def test_llama_cpp_test_vectors_through_tipo_encode(backends, which):
    from models.llama_vocab import llama_test_vectors

    vectors = llama_test_vectors(VOCAB)
    assert len(vectors) >= 40
    for text, expected in vectors:
        assert backends[which].encode(text) == [1, *expected], repr(text)


def test_golden_prompts_get_identical_ids_on_both_backends(backends):
    llama, hf = backends
    for prompt in golden_prompts():
        ids = llama.encode(prompt)
        assert ids == hf.encode(prompt), prompt
        assert ids[0] == 1 and all(i < 32013 for i in ids)
    ids = llama.encode("target: " + " ".join(ADDED_TOKENS))
    assert [i for i in ids if i >= 32000] == list(range(32000, 32013))


def test_sentencepiece_model_from_the_vocab_file_matches_llama_cpp():
    from models.llama_vocab import llama_sentencepiece_model, llama_test_vectors
    from models.tokenizer import load_sentencepiece

    sp = load_sentencepiece(llama_sentencepiece_model(VOCAB))
    for text, expected in llama_test_vectors(VOCAB):
        assert sp.encode(text) == expected, repr(text)


def test_random_files_of_the_published_shapes_carry_the_real_vocabulary():
    from models.llama_vocab import read_llama_pieces
    from models.tiny import random_vocab

    vocab = random_vocab(32013)
    assert vocab.tokens == read_llama_pieces(VOCAB).tokens + ADDED_TOKENS


# --- evidence for docs/language-model.md --------------------------------------------------------


def test_llama_cpp_puts_a_space_after_control_and_user_defined_tokens_alike(real_model, tmp_path):
    import llama_cpp
    import numpy as np

    from models.gguf_export import llama_tensor_shapes, write_llama_gguf
    from models.llama_vocab import llama_vocab

    hparams = real_model.hparams
    user_defined = write_llama_gguf(tmp_path / "ud.gguf", hparams, llama_vocab(VOCAB, special=False),
                                    [(n, lambda s=s: np.zeros(s, np.float32)) for n, s in llama_tensor_shapes(hparams)],
                                    outtype="f32")
    control = llama_cpp.Llama(str(real_model.gguf_f32), vocab_only=True, verbose=False)
    defined = llama_cpp.Llama(str(user_defined), vocab_only=True, verbose=False)
    try:
        for prompt in golden_prompts():
            ids = control.tokenize(prompt.encode(), add_bos=True, special=True)
            assert ids == defined.tokenize(prompt.encode(), add_bos=True, special=True), prompt
        ids = control.tokenize(PROMPT.encode(), add_bos=False, special=True)
        # "<|long|> <|tag_to_long|>\n": "▁▁" (259) between the tokens, "▁" (29871) before the newline (13)
        assert ids[3:8] == [32003, 259, 32005, 29871, 13]
        # USER_DEFINED tokens are matched even without special-token parsing (CONTROL ones are not)
        assert 32003 in defined.tokenize(PROMPT.encode(), add_bos=False, special=False)
        assert 32003 not in control.tokenize(PROMPT.encode(), add_bos=False, special=False)
    finally:
        control.close()
        defined.close()


@pytest.mark.parametrize("normalized", [False, True])
def test_a_llama2_style_tokenizer_json_agrees_with_llama_cpp_when_added_tokens_are_special(
        real_model, backends, normalized):
    from tokenizers import Tokenizer

    data = json.loads((real_model.hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    data["pre_tokenizer"] = None
    for token in data["added_tokens"]:
        if token["content"] in ADDED_TOKENS:
            token["normalized"], token["special"] = normalized, not normalized
    raw = Tokenizer.from_str(json.dumps(data))
    llama = backends[0]
    same = [raw.encode(p).ids == llama.encode(p) for p in golden_prompts()]
    # special, not normalized (added with add_special_tokens): llama.cpp's ids on every prompt;
    # normalized: the token swallows the space before it and none follows it, on every prompt
    assert all(same) if not normalized else not any(same)


@pytest.mark.parametrize("legacy", [False, True])
def test_transformers_5_llama_tokenizer_differs_after_added_tokens(real_model, backends, legacy):
    from models.llama_vocab import llama_sentencepiece_model
    from models.tokenizer import build_hf_tokenizer

    tokenizer = build_hf_tokenizer(llama_sentencepiece_model(VOCAB), legacy=legacy)
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(PROMPT).input_ids)
    ours = tokenizer.convert_ids_to_tokens(backends[0].encode(PROMPT))
    assert ours[4:9] == ["<|long|>", "\u2581\u2581", "<|tag_to_long|>", "\u2581", "<0x0A>"]
    if legacy:  # a space after an added token, unless the text already starts with one
        assert pieces[4:8] == ["<|long|>", "\u2581", "<|tag_to_long|>", "\u2581"]
    else:  # no space after an added token
        assert pieces[4:8] == ["<|long|>", "\u2581", "<|tag_to_long|>", "<0x0A>"]
