"""Shared pytest fixtures.

``tiny_model`` builds one tiny seeded TIPO-like model per test session (a 2-layer LLaMA with a
TIPO-style tokenizer, as a HF folder plus F32 and F16 GGUF files; about 3 s on 2 cores) and
skips the tests that use it when the model tooling (``pip install 'tipo-prompt[train]'``) is missing.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    """A :class:`models.tiny.TinyModel` with ``.hf_dir``, ``.gguf_f32``, ``.gguf_f16``, ``.tokenizer_model``."""
    for module in ("torch", "transformers", "sentencepiece", "gguf", "safetensors"):
        pytest.importorskip(module, reason=f"the tiny test model needs {module}: pip install 'tipo-prompt[train]'")
    from models.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny_model"), seed=0)
