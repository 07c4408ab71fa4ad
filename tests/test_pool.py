"""The Expander pool hosts use: load once, reuse, evict the least recently used, clear."""

import pytest

from tipo.errors import RequestError
from tipo.pool import ExpanderPool, device_options

pytest.importorskip("llama_cpp")


def test_pool_reuses_and_evicts(tiny_model):
    pool = ExpanderPool(capacity=1)
    a = pool.get(str(tiny_model.gguf_f32), n_threads=1)
    assert pool.get(str(tiny_model.gguf_f32), n_threads=1) is a and pool.loads == 1
    b = pool.get(str(tiny_model.gguf_f16), n_threads=1)
    assert not a.loaded and b.loaded and pool.loads == 2 and len(pool) == 1
    assert pool.clear() == 1 and not b.loaded and len(pool) == 0


def test_device_options(tiny_model):
    assert device_options(str(tiny_model.gguf_f32), "auto", "cpu") == {}
    assert device_options(str(tiny_model.gguf_f32), "auto", "gpu") == {"n_gpu_layers": -1}
    assert device_options(str(tiny_model.hf_dir), "auto", "gpu", "cuda:1") == {"device": "cuda:1"}
    with pytest.raises(RequestError, match="device='tpu'"):
        device_options(None, "auto", "tpu")


def test_a_replaced_model_file_is_loaded_again(tiny_model, tmp_path):
    import os
    import shutil

    path = tmp_path / "model.gguf"
    shutil.copy(tiny_model.gguf_f32, path)
    pool = ExpanderPool()
    a = pool.get(str(path), n_threads=1)
    assert pool.get(str(path), n_threads=1) is a
    shutil.copy(tiny_model.gguf_f16, tmp_path / "new.gguf")
    os.replace(tmp_path / "new.gguf", path)  # how a download or an export replaces a file
    b = pool.get(str(path), n_threads=1)
    assert b is not a and not a.loaded and b.loaded and pool.loads == 2 and len(pool) == 1
    pool.clear()


def test_a_failed_load_never_evicts_a_loaded_model(tiny_model, tmp_path):
    from tipo.errors import ModelError

    pool = ExpanderPool(capacity=1)
    a = pool.get(str(tiny_model.gguf_f32), n_threads=1)
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf")
    with pytest.raises(ModelError, match="not a GGUF file"):
        pool.get(str(bad))
    assert a.loaded and [k[:3] for k in pool.keys()] == [(str(tiny_model.gguf_f32), "auto", "cpu")]
    assert pool.get(str(tiny_model.gguf_f32), n_threads=1) is a
    pool.clear()


def test_the_key_holds_every_loading_option(tiny_model):
    """Another n_ctx or thread count is another loaded model, not the first one returned again."""
    pool = ExpanderPool(capacity=2)
    a = pool.get(str(tiny_model.gguf_f32), n_threads=1, n_ctx=256)
    b = pool.get(str(tiny_model.gguf_f32), n_threads=1, n_ctx=512)
    assert a is not b and a.backend.n_ctx == 256 and b.backend.n_ctx == 512 and pool.loads == 2
    assert pool.get(str(tiny_model.gguf_f32), n_threads=1, n_ctx=256) is a and pool.loads == 2
    pool.clear()
