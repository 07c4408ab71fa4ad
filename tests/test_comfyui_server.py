"""The node pack in a real ComfyUI server, through its HTTP API.

Runs only when ``COMFYUI_DIR`` names a ComfyUI checkout (with its requirements installed in the
Python named by ``COMFYUI_PYTHON``, default this one); skipped otherwise. The pack is symlinked into
that checkout's ``custom_nodes`` (and removed afterwards), the server is started on 127.0.0.1 with
``--cpu``, and the API-format example workflow (TIPO -> core PreviewAny,
``plugins/comfyui/examples/tipo_prompt_api.json``) is queued: outputs equal the library's, a
second identical run is cached, a new seed runs again, a bad template is reported as an error,
``/free`` and ``/interrupt`` work.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from servers import free_port, running

COMFYUI = os.environ.get("COMFYUI_DIR")
if not COMFYUI:
    pytest.skip("COMFYUI_DIR is not set: the real-ComfyUI test needs a ComfyUI checkout (see docs/plugins.md)",
                allow_module_level=True)
pytest.importorskip("llama_cpp", reason="the nodes run the built-in model with llama.cpp")

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "plugins" / "comfyui"
WORKFLOW = json.loads((PACK / "examples" / "tipo_prompt_api.json").read_text())


class Comfy:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
        return json.loads(text) if text.strip() else None

    def queue(self, workflow: dict) -> str:
        return str(self.call("/prompt", {"prompt": workflow, "client_id": uuid.uuid4().hex})["prompt_id"])

    def wait(self, prompt_id: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.call(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            if prompt_id in history and history[prompt_id].get("status", {}).get("status_str") in ("error", "success"):
                return history[prompt_id]
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, workflow: dict) -> dict:
        return self.wait(self.queue(workflow))


def workflow(**inputs: object) -> dict:
    wf = copy.deepcopy(WORKFLOW)
    wf["1"]["inputs"].update(inputs)
    return wf


def preview_text(entry: dict) -> str:
    text = entry["outputs"]["2"]["text"]
    return text[0] if isinstance(text, list) else text


def messages(entry: dict) -> dict[str, dict]:
    return {name: body for name, body in entry["status"]["messages"]}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    link = Path(COMFYUI) / "custom_nodes" / f"tipo_nodes_test_{os.getpid()}"
    link.symlink_to(PACK, target_is_directory=True)
    port = free_port()
    log = tmp_path_factory.mktemp("comfy") / "server.log"
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    # One CPU for the server (llama.cpp then runs one thread): spinning threads on a shared machine
    # make tokens many times slower.
    pin = ["taskset", "-c", str(min(os.sched_getaffinity(0)))] if shutil.which("taskset") else []
    server = Comfy(f"http://127.0.0.1:{port}")
    try:
        with running([*pin, python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                      "--disable-auto-launch"], cwd=COMFYUI, env=env, log=log,
                     ready=lambda: "TIPO" in server.call("/object_info/TIPO"),
                     what="ComfyUI with the pack", timeout=180, stop_timeout=30):
            yield server
    finally:
        link.unlink()
        print(log.read_text()[-2000:])


def library(seed: int, **fields: object) -> str:
    from tipo import Expander
    from tipo.settings import from_values

    values = {k: v for k, v in WORKFLOW["1"]["inputs"].items() if k not in ("model", "backend", "device")}
    values.update(seed=seed, **fields)
    settings = from_values(values)
    with Expander(n_threads=1) as ex:
        return ex.expand(settings.request, settings.sampling, **settings.expand).prompt


def test_the_example_workflow_runs_cached_and_reseeded(comfy):
    first = comfy.run(workflow(seed=1))
    assert first["status"]["status_str"] == "success"
    assert preview_text(first) == library(1)
    again = comfy.run(workflow(seed=1))
    assert "1" in messages(again).get("execution_cached", {}).get("nodes", [])
    other = comfy.run(workflow(seed=2))
    assert "1" not in messages(other).get("execution_cached", {}).get("nodes", [])
    assert preview_text(other) == library(2)


def test_a_bad_template_is_reported_as_an_error(comfy):
    entry = comfy.run(workflow(seed=3, template="tag"))
    assert entry["status"]["status_str"] == "error"
    error = messages(entry)["execution_error"]
    assert "did you mean 'tags'" in error["exception_message"]


def test_free_unloads_and_the_next_run_loads_again(comfy):
    comfy.call("/free", {"unload_models": True, "free_memory": True})
    entry = comfy.run(workflow(seed=4))
    assert preview_text(entry) == library(4)


def test_interrupt_stops_a_long_expansion(comfy):
    long_run = workflow(seed=5, length="very_long", max_new_tokens=1024, temperature=5.0, top_k=0, top_p=1.0,
                        min_p=0.0)
    prompt_id = comfy.queue(long_run)
    time.sleep(0.3)
    t0 = time.monotonic()
    comfy.call("/interrupt", {})
    entry = comfy.wait(prompt_id)
    seen = messages(entry)
    assert "execution_interrupted" in seen, seen
    assert time.monotonic() - t0 < 10


def test_format_reproduces_the_tipo_node(comfy):
    """Seed 7 on the built-in model drops tags outside its table; Format must render the same."""
    wf = workflow(seed=7)
    wf["3"] = {"class_type": "TIPOFormat", "inputs": {"result": ["1", 6], "template": ""}}
    wf["4"] = {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}
    entry = comfy.run(wf)
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["4"]["text"] == entry["outputs"]["2"]["text"]


def test_a_replaced_model_file_is_run_and_loaded_again(comfy, tiny_model):
    from tipo.registry import builtin_path

    folder = Path(COMFYUI) / "models" / "tipo"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"replaced-{os.getpid()}.gguf"
    shutil.copy(builtin_path(), path)
    try:
        from tipo import Expander, Request, Sampling

        def expected() -> str:
            with Expander(str(path), n_threads=1) as ex:
                return ex.expand(Request("1girl, forest", width=512, height=768),
                                 Sampling(seed=8, max_new_tokens=24)).prompt

        wf = workflow(seed=8, model=path.name, max_new_tokens=24)
        first = preview_text(comfy.run(wf))
        assert first == expected()
        shutil.copy(tiny_model.gguf_f32, folder / "incoming.tmp")
        os.replace(folder / "incoming.tmp", path)
        second = comfy.run(wf)
        assert "1" not in messages(second).get("execution_cached", {}).get("nodes", [])
        assert preview_text(second) == expected() != first
    finally:
        path.unlink(missing_ok=True)


def test_an_official_model_offline_fails_at_once(comfy):
    t0 = time.monotonic()
    entry = comfy.run(workflow(seed=9, model="TIPO-200M"))
    assert entry["status"]["status_str"] == "error" and time.monotonic() - t0 < 10
    assert "HF_HUB_OFFLINE is set" in messages(entry)["execution_error"]["exception_message"]
