"""``models.train.unpack``: the built-in GGUF back to a Hugging Face folder that continues training."""

from __future__ import annotations

from pathlib import Path

import pytest

for _module in ("torch", "transformers", "sentencepiece", "gguf", "llama_cpp"):
    pytest.importorskip(_module, reason=f"unpack needs {_module}: pip install 'tipo-prompt[train,llama]'")

from models.train import unpack  # noqa: E402
from models.train.export import check_logits  # noqa: E402
from models.train.prepare import Tokenizer  # noqa: E402
from tipo.registry import builtin_path  # noqa: E402


def test_unpacked_builtin_model_gives_llama_cpps_ids_and_logits(tmp_path: Path) -> None:
    gguf = builtin_path()
    out = tmp_path / "hf"
    assert unpack.main([str(gguf), "--out", str(out)]) == 0
    assert (out / "tokenizer.model").is_file() and (out / "model.safetensors").is_file()
    ids = Tokenizer(out).encode("target: <|short|> <|tag_to_long|>\ntag: 1girl, cat, window sill\nlong:")
    assert 4000 <= max(ids) < 4013  # the added tokens are single ids
    logits = check_logits(gguf, out, ids)
    assert logits["same_argmax"] and logits["relative"] < 1e-3


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="does not exist"):
        unpack.main([str(tmp_path / "nope.gguf"), "--out", str(tmp_path / "hf")])
