"""The web UI (``tipo ui``) in a real browser: the system's headless Chromium driven by Playwright.

The app is started the way a user starts it (``python -m tipo ui --port N``, the built-in model on
llama.cpp), and the pages are checked against the library's own result for the same request and
seed. A screenshot of the page after an expansion is saved under ``test-output/`` (and the test's
temporary folder) for people to look at.

Needs: the ``ui`` extra (gradio), the ``dev`` extra (playwright, used with the system browser only:
never ``playwright install``), the ``llama`` extra, and Debian's ``chromium`` package (``.ci/run``
installs it). Without the browser the module is skipped with a loud reason.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from servers import free_port, running

pytest.importorskip("gradio", reason="the web UI needs gradio: pip install 'tipo-prompt[ui]'")
pytest.importorskip("llama_cpp", reason="the web UI runs the built-in model with llama.cpp: pip install 'tipo-prompt[llama]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright: pip install 'tipo-prompt[dev]'")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("TIPO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000
TAGS = "1girl, forest"

if not os.path.exists(CHROMIUM):
    pytest.skip(f"NO BROWSER: {CHROMIUM} is missing, so the web UI was NOT tested in a browser; "
                "install it with: apt-get install -y chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``tipo ui`` in a subprocess (one llama.cpp thread: the test machines are shared)."""
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "server.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "TIPO_MODELS": str(tmp_path_factory.mktemp("models"))}
    url = f"http://127.0.0.1:{port}/"

    def ready() -> bool:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200

    with running([sys.executable, "-m", "tipo", "ui", "--port", str(port), "--threads", "1"], cwd=ROOT, env=env,
                 log=log, ready=ready, what="tipo ui", timeout=120, stop_timeout=20):
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def library():
    """The library's expansion of a request (the page must show exactly this)."""
    from tipo import Expander, Request, Sampling

    with Expander(n_threads=1) as ex:
        yield lambda seed, **fields: ex.expand(Request(TAGS, **fields), Sampling(seed=seed))


def open_page(browser, url):
    page = browser.new_context(viewport={"width": 1400, "height": 1400}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.locator("#tipo-tags textarea").wait_for()
    return page


def fill(page, name, value):
    box = page.locator(f"#tipo-{name} textarea, #tipo-{name} input[type=number], #tipo-{name} input[type=text]").first
    box.fill(str(value))
    box.press("Tab")  # commit the value (gradio reads it on change/blur)


def expand(page, tags, seed):
    fill(page, "tags", tags)
    fill(page, "seed", seed)
    page.locator("#tipo-expand").click()


def wait_for_seed(page, seed):
    page.wait_for_function(
        "s => (document.querySelector('#tipo-out-seed input') || {}).value === String(s)", arg=seed,
        timeout=TIMEOUT_MS)


def output(page, name):
    return page.locator(f"#tipo-out-{name} textarea").input_value()


def shot(page, name, tmp_path):
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = ROOT / "test-output"
    keep.mkdir(exist_ok=True)
    shutil.copy(path, keep / name)
    print(f"screenshot: {keep / name}")


def test_typing_tags_and_clicking_expand_shows_the_librarys_expansion(server, browser, library, tmp_path):
    page = open_page(browser, server)
    assert page.title() == "tipo"
    expand(page, TAGS, 7)
    wait_for_seed(page, 7)
    want = library(7)
    assert output(page, "prompt") == want.prompt
    assert output(page, "tags") == want.tags_text
    assert output(page, "caption") == want.caption_text
    assert output(page, "prompt").startswith("1girl, forest")
    assert page.locator("#tipo-out-changes textarea").input_value()  # says what changed, or that nothing did
    shot(page, "ui-expanded.png", tmp_path)
    page.context.close()


def test_an_invalid_option_shows_its_error_on_the_page(server, browser, tmp_path):
    page = open_page(browser, server)
    fill(page, "template", "tag")  # a mistyped preset name
    expand(page, TAGS, 3)
    error = page.get_by_text("did you mean 'tags'", exact=False).first
    error.wait_for()
    assert error.is_visible()
    shot(page, "ui-error.png", tmp_path)
    page.context.close()


def test_two_sessions_with_different_seeds_get_their_own_results(server, browser, library):
    a, b = open_page(browser, server), open_page(browser, server)
    expand(a, TAGS, 11)
    expand(b, TAGS, 12)
    wait_for_seed(a, 11)
    wait_for_seed(b, 12)
    assert output(a, "prompt") == library(11).prompt
    assert output(b, "prompt") == library(12).prompt
    assert library(11).prompt != library(12).prompt  # else the check above could not tell them apart
    a.context.close()
    b.context.close()


def test_the_http_api_expands_for_programs(server, library):
    from gradio_client import Client

    client = Client(server, verbose=False)
    from tipo.options import OPTIONS

    values = {o.name: o.widget_text(o.default) for o in OPTIONS}
    values.update(tags=TAGS, seed=5)
    prompt, tags, caption, seed, changes, _images, details = client.predict(*values.values(), api_name="/expand")
    assert (prompt, seed) == (library(5).prompt, 5)
    assert details["provenance"]["seed"] == 5


def test_stop_cancels_only_its_own_sessions_expansion(server, tiny_model):
    from gradio_client import Client

    from tipo.options import OPTIONS

    values = {o.name: o.widget_text(o.default) for o in OPTIONS}
    values.update(tags=TAGS, seed=3, max_new_tokens=1024, temperature=1.0, model=str(tiny_model.gguf_f32))
    mine, other = Client(server, verbose=False), Client(server, verbose=False)
    cancelled = False
    for _ in range(5):  # on a fast machine the expansion may end before the Stop arrives: try again
        job = mine.submit(**values, api_name="/expand")
        deadline = time.monotonic() + 60
        while not (job.status().progress_data or job.done()) and time.monotonic() < deadline:
            time.sleep(0.05)  # until the expansion reports its first tokens
        untouched = other.submit(**values, api_name="/expand")
        mine.predict(api_name="/stop")  # the Stop button's endpoint, in the first client's session
        try:
            job.result()  # finished before the Stop: no cancellation to see this time
        except Exception as exc:  # noqa: BLE001 - gradio_client wraps the server's error
            assert "cancelled after" in str(exc), exc
            cancelled = True
        assert untouched.result()[-1]["provenance"]["generated_tokens"] > 100  # the other session ran on
        if cancelled:
            break
    assert cancelled, "the Stop never arrived while the expansion ran (5 tries)"
