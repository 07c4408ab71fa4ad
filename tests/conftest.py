"""Shared pytest fixtures.

``tiny_model`` builds one tiny seeded TIPO-like model per test session (a 2-layer LLaMA with a
TIPO-style tokenizer, as a HF folder plus F32 and F16 GGUF files; about 3 s on 2 cores) and
skips the tests that use it when the model tooling (``pip install 'tipo-prompt[train]'``) is missing.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _tipo_cache(tmp_path_factory: pytest.TempPathFactory):
    """tipo's cache folder (tag table, checked GGUF headers) in a temporary folder for the session:
    the suite builds many model files and must not fill the user's ~/.cache/tipo."""
    import os

    before = os.environ.get("TIPO_CACHE")
    os.environ["TIPO_CACHE"] = str(tmp_path_factory.mktemp("tipo_cache"))
    yield
    if before is None:
        os.environ.pop("TIPO_CACHE", None)
    else:
        os.environ["TIPO_CACHE"] = before


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    """A :class:`models.tiny.TinyModel` with ``.hf_dir``, ``.gguf_f32``, ``.gguf_f16``, ``.tokenizer_model``."""
    for module in ("torch", "transformers", "sentencepiece", "gguf", "safetensors"):
        pytest.importorskip(module, reason=f"the tiny test model needs {module}: pip install 'tipo-prompt[train]'")
    from models.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny_model"), seed=0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module: the test machines are shared, and one thread is faster
    there and keeps runs comparable. The previous setting is restored."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sd():
    """A tiny random Stable Diffusion pipeline (real diffusers classes)."""
    from tipo.image.testing import tiny_sd_pipeline

    return tiny_sd_pipeline(seed=0)


@pytest.fixture(scope="module")
def sdxl():
    """A tiny random SDXL pipeline."""
    from tipo.image.testing import tiny_sdxl_pipeline

    return tiny_sdxl_pipeline(seed=0)


@pytest.fixture(scope="module")
def cascade():
    """Tiny random DeepFloyd IF stage I, stage II and x4 upscaler pipelines."""
    from tipo.image.testing import tiny_if_pipelines

    return tiny_if_pipelines(seed=0)


@pytest.fixture
def expander_spy(monkeypatch):
    """tipo.Expander with each construction (model, options) and each expansion's seed recorded.

    Forces one llama.cpp thread: on a shared 2-core machine spinning threads make tokens ~50x slower.
    """
    import types

    import tipo.expander
    import tipo.pool

    record = types.SimpleNamespace(built=[], seeds=[], options=[])

    class Recording(tipo.expander.Expander):
        def __init__(self, model, **kwargs):
            record.built.append(model)
            record.options.append(kwargs)
            super().__init__(model, **{**kwargs, "n_threads": 1})

        def expand(self, request, sampling=None, **kwargs):
            record.seeds.append(sampling.seed)
            return super().expand(request, sampling, **kwargs)

    monkeypatch.setattr(tipo.expander, "Expander", Recording)
    monkeypatch.setattr(tipo.pool, "Expander", Recording)
    return record
