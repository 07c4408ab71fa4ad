"""BF16 GGUF export: the weight matrices stored as BF16 load in llama.cpp and score like F32."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python: pip install 'tipo-prompt[llama]'")


def test_bf16_export_loads_and_scores_like_f32(tiny_model, tmp_path):
    gguf = pytest.importorskip("gguf")
    from models.gguf_export import export_hf_to_gguf
    from tipo import Expander

    out = export_hf_to_gguf(tiny_model.hf_dir, tmp_path / "tiny-bf16.gguf", outtype="bf16")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    assert types["blk.0.attn_q.weight"] == "BF16" and types["output_norm.weight"] == "F32"
    with Expander(out, n_threads=1) as bf16, Expander(tiny_model.gguf_f32, n_threads=1) as f32:
        for text in ("tag: 1girl, forest", "long: A quiet harbor at dawn."):
            ids = f32.backend.encode(text)
            a, b = bf16.backend.start(ids).copy(), f32.backend.start(ids).copy()
            assert np.max(np.abs(a - b)) < 0.05 * np.max(np.abs(b))  # BF16 keeps about 3 significant digits
            assert a.argmax() == b.argmax()
