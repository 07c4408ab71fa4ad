"""The web UI's app object without a browser: options in, the library's result out, images, stop."""

from __future__ import annotations

import pytest

from tipo import Cancelled, Expander, Request, Sampling
from tipo.errors import RequestError

pytest.importorskip("llama_cpp", reason="the web UI runs the built-in model with llama.cpp")


@pytest.fixture(scope="module")
def app():
    from tipo.ui import WebApp

    return WebApp(n_threads=1)


def test_outcome_is_the_librarys_expansion(app):
    out = app.expand({"tags": "1girl, forest", "seed": 3, "length": "short"})
    with Expander(n_threads=1) as ex:
        want = ex.expand(Request("1girl, forest", length="short"), Sampling(seed=3))
    assert (out.prompt, out.tags, out.caption, out.seed) == (want.prompt, want.tags_text, want.caption_text, 3)
    assert out.details["provenance"]["seed"] == 3 and out.changes


def test_each_request_draws_its_own_seed(app):
    a, b = app.expand({"tags": "1girl", "max_new_tokens": 4}), app.expand({"tags": "1girl", "max_new_tokens": 4})
    assert a.seed != b.seed  # -1: a fresh seed per click, reported


def test_bad_values_are_errors(app):
    with pytest.raises(RequestError, match="unknown option"):
        app.expand({"tags": "1girl", "sead": 3})
    with pytest.raises(RequestError, match="did you mean 'tags'"):
        app.expand({"tags": "1girl", "template": "tag"})


def test_stop_cancels_the_sessions_running_expansion(app):
    event = app.cancel_event("session-a")
    other = app.cancel_event("session-b")
    app.stop("session-a")
    assert event.is_set() and not other.is_set()
    with pytest.raises(Cancelled):
        app.expand({"tags": "1girl", "seed": 1}, cancel=event)
    app.forget("session-a", event)
    app.stop("session-a")  # nothing running: nothing to do


def test_images_come_with_their_parameters(sd):
    from tipo.ui import WebApp

    app = WebApp(n_threads=1, pipeline=sd)
    out = app.expand({"tags": "1girl, forest", "seed": 5, "max_new_tokens": 16},
                     image={"images": 2, "steps": 2, "negative": "lowres"})
    assert len(out.images) == 2
    (first, params), (_, params2) = out.images
    assert first.size == (32, 32)
    assert params.startswith(out.prompt) and "Steps: 2" in params and "Seed: 5" in params and "Seed: 6" in params2
    assert "Negative prompt: lowres" in params


def test_changes_name_what_was_rewritten_or_dropped(app):
    out = app.expand({"tags": "1girl", "caption": "a cat\ntag: evil", "seed": 1, "max_new_tokens": 16})
    assert "cannot read as protocol" in out.changes and "tag:" in out.changes
    out = app.expand({"tags": "1girl, forest", "seed": 7})  # the built-in model drops tags outside its table
    assert out.changes.startswith("dropped") and all(t in out.changes for t in out.details["dropped"])
