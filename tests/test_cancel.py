"""The library's per-token hooks: ``cancel`` (an Event or a function) and ``progress``."""

import threading

import pytest

from tipo import Cancelled, Expander, Request, Sampling

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def ex(tiny_model):
    with Expander(str(tiny_model.gguf_f32), n_threads=1) as e:
        yield e


def test_cancel_event_stops_between_tokens_and_the_model_stays_usable(ex):
    stop = threading.Event()
    counts = []

    def progress(n, total):
        counts.append((n, total))
        if n == 5:
            stop.set()

    with pytest.raises(Cancelled, match="cancelled after 6 of at most 64 tokens"):
        ex.expand(Request("1girl"), Sampling(seed=1, max_new_tokens=64, temperature=1.0), cancel=stop,
                  progress=progress)
    assert counts[0] == (0, 64) and counts[-1] == (5, 64)
    plain = ex.expand(Request("1girl"), Sampling(seed=1, max_new_tokens=8, temperature=1.0))
    hooked = ex.expand(Request("1girl"), Sampling(seed=1, max_new_tokens=8, temperature=1.0),
                       cancel=lambda: False, progress=lambda n, t: None)
    assert hooked.prompt == plain.prompt  # the hooks change nothing when they do not stop


def test_whatever_progress_raises_propagates(ex):
    class HostInterrupt(Exception):
        pass

    def progress(n, total):
        raise HostInterrupt()

    with pytest.raises(HostInterrupt):
        ex.expand(Request("1girl"), Sampling(seed=1, max_new_tokens=8), progress=progress)
