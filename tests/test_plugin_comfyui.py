"""The ComfyUI node pack (plugins/comfyui), loaded as ComfyUI loads it, with the host modules stubbed.

``folder_paths`` and ``comfy.model_management`` are small fakes with ComfyUI's semantics (see
ComfyUI's folder_paths.py and comfy/model_management.py); the nodes run on the tiny test model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import types
from pathlib import Path

import pytest

from tipo.errors import RequestError
from tipo.options import OPTIONS, Kind, by_name
from tipo.planner import Task
from tipo.request import Length

pytest.importorskip("llama_cpp", reason="the nodes run the tiny model with llama.cpp: pip install 'tipo-prompt[llama]'")
PACK = Path(__file__).resolve().parents[1] / "plugins" / "comfyui"
PACK_NAME = "tipo_nodes_under_test"
FAST = {"max_new_tokens": 4, "temperature": 1.0}
# Saved workflows store widget values by position: this order only ever grows at the end.
FROZEN_TIPO_INPUTS = (
    "tags", "caption", "caption_kind", "length", "width", "height", "aspect_ratio", "output", "gen_meta", "ban",
    "ban_regex", "template", "seed", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
    "max_new_tokens", "model", "backend", "device",
)


def fake_folder_paths(models_dir: Path) -> types.ModuleType:
    """ComfyUI's folder_paths, reduced to what custom nodes use."""
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(models_dir)
    fp.folder_names_and_paths = {"checkpoints": ([str(models_dir / "checkpoints")], {".safetensors"})}

    def add_model_folder_path(name, path, is_default=False):
        if name in fp.folder_names_and_paths:
            paths = fp.folder_names_and_paths[name][0]
            paths.insert(0, path) if is_default else paths.append(path)
        else:
            fp.folder_names_and_paths[name] = ([path], set())

    def get_folder_paths(name):
        return fp.folder_names_and_paths[name][0][:]

    def get_filename_list(name):
        paths, exts = fp.folder_names_and_paths[name]
        out = set()
        for base in paths:
            for root, _, files in os.walk(base):
                for f in files:
                    rel = os.path.relpath(os.path.join(root, f), base)
                    if not exts or os.path.splitext(f)[1].lower() in exts:
                        out.add(rel)
        return sorted(out)

    def get_full_path(name, filename):
        if name not in fp.folder_names_and_paths:
            return None
        filename = os.path.relpath(os.path.join("/", filename), "/")
        for base in fp.folder_names_and_paths[name][0]:
            full = os.path.join(base, filename)
            if os.path.isfile(full):
                return full
        return None

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = get_folder_paths
    fp.get_filename_list = get_filename_list
    fp.get_full_path = get_full_path
    return fp


def fake_model_management() -> types.ModuleType:
    """comfy.model_management's memory entry points; records what ComfyUI itself would do."""
    mm = types.ModuleType("comfy.model_management")
    mm.calls = []
    mm.free_bytes = 10**12

    def free_memory(memory_required, device, keep_loaded=()):
        mm.calls.append(("free_memory", memory_required, device))
        return []

    def unload_all_models():
        mm.calls.append(("unload_all_models",))
        mm.free_memory(1e30, mm.get_torch_device())  # ComfyUI calls its module-level free_memory

    mm.free_memory = free_memory
    mm.unload_all_models = unload_all_models
    mm.get_torch_device = lambda: "cuda:0"
    mm.get_free_memory = lambda device=None, torch_free_too=False: mm.free_bytes
    mm.is_device_cpu = lambda device: str(device) == "cpu"
    mm.soft_empty_cache = lambda force=False: mm.calls.append(("soft_empty_cache",))
    return mm


@pytest.fixture
def comfy(tmp_path, monkeypatch, tiny_model):
    """A stubbed ComfyUI with the tiny model in models/tipo; yields the loaded pack module."""
    models = tmp_path / "models"
    (models / "tipo").mkdir(parents=True)
    shutil.copy(tiny_model.gguf_f32, models / "tipo" / "tiny.gguf")
    monkeypatch.setenv("TIPO_MODELS", str(tmp_path / "tipo-cache"))
    fp = fake_folder_paths(models)
    extra = tmp_path / "shared-tipo"  # as extra_model_paths.yaml adds it, before the pack loads
    fp.add_model_folder_path("tipo", str(extra))
    mm = fake_model_management()
    comfy_pkg = types.ModuleType("comfy")
    comfy_pkg.model_management = mm
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    monkeypatch.setitem(sys.modules, "comfy", comfy_pkg)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    # ComfyUI: spec_from_file_location(<folder name>, <folder>/__init__.py), registered in sys.modules.
    spec = importlib.util.spec_from_file_location(PACK_NAME, PACK / "__init__.py")
    pack = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, PACK_NAME, pack)
    spec.loader.exec_module(pack)
    pack.test_extra_dir = extra
    yield pack
    pack.HOST.cache.clear()
    for name in [m for m in sys.modules if m.startswith(PACK_NAME + ".")]:
        del sys.modules[name]


@pytest.fixture(autouse=True)
def spy(expander_spy):
    return expander_spy


def inputs_for(pack, node_id, **overrides):
    """The node's widget defaults (what a fresh node in the UI sends), with overrides."""
    spec = pack.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["required"]
    values = {name: opts.get("default") for name, (_, opts) in spec.items()}
    values.update(model="tiny.gguf", **FAST)
    values.update(overrides)
    return values


def run(pack, node_id, **overrides):
    node = pack.NODE_CLASS_MAPPINGS[node_id]()
    return node.execute(**inputs_for(pack, node_id, **overrides))


def test_pack_exports_the_reference_node_ids_and_registers_the_model_folder(comfy, spy):
    assert spy.built == [] and len(comfy.HOST.cache) == 0  # loading the pack loads no model
    assert set(comfy.NODE_CLASS_MAPPINGS) == {"TIPO", "TIPOOperation", "TIPOFormat"}
    assert comfy.NODE_DISPLAY_NAME_MAPPINGS["TIPOOperation"] == "TIPO Single Operation"
    fp = sys.modules["folder_paths"]
    paths, exts = fp.folder_names_and_paths["tipo"]
    assert exts == {".gguf"}
    assert paths[0] == str(comfy.test_extra_dir)  # the extra_model_paths.yaml entry is kept, first
    assert os.path.join(fp.models_dir, "tipo") in paths and os.environ["TIPO_MODELS"] in paths


def test_input_types_are_generated_from_options(comfy):
    required = comfy.NODE_CLASS_MAPPINGS["TIPO"].INPUT_TYPES()["required"]
    assert list(required) == list(FROZEN_TIPO_INPUTS)
    op = comfy.NODE_CLASS_MAPPINGS["TIPOOperation"].INPUT_TYPES()["required"]
    optional = comfy.NODE_CLASS_MAPPINGS["TIPO"].INPUT_TYPES()["optional"]
    assert list(optional) == ["threads", "known_tags", "n_ctx", "allow_pickle", "rating", "homoglyphs"]  # added later: optional, after the frozen ones
    required = {**required, **optional}
    assert set(required) | set(op) == {o.name for o in OPTIONS}  # every option is a widget
    for o in OPTIONS:
        if o.name in ("task", "seed", "model"):
            continue
        kind, spec = required[o.name]
        assert spec["tooltip"] == o.help
        if o.kind is Kind.MULTILINE:
            assert kind == "STRING" and spec["multiline"] is True
        elif o.kind is Kind.TEXT:
            assert kind == "STRING" and spec["multiline"] is False
        elif o.kind is Kind.CHOICE:
            assert kind == list(o.choices) and spec["default"] == o.default
        elif o.kind is Kind.BOOL:
            assert kind == "BOOLEAN" and spec["default"] is o.default
        else:
            assert kind == ("INT" if o.kind is Kind.INT else "FLOAT")
            assert (spec["default"], spec["min"], spec["max"]) == (o.default, o.widget_min, o.widget_max)
    assert required["length"][0] == [m.value for m in Length]
    assert required["seed"] == ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                        "control_after_generate": True, "tooltip": by_name("seed").help})
    assert required["device"][0] == ["cpu", "gpu"]
    assert list(op) == [("task" if n == "template" else n) for n in FROZEN_TIPO_INPUTS]
    assert op["task"][0] == [t.value for t in Task]
    fmt = comfy.NODE_CLASS_MAPPINGS["TIPOFormat"].INPUT_TYPES()["required"]
    assert list(fmt) == ["result", "template"] and fmt["result"][1]["forceInput"] is True


def test_model_combo_lists_files_folders_then_registry_names(comfy, tiny_model):
    shutil.copytree(tiny_model.hf_dir, comfy.test_extra_dir / "tiny-hf")
    (comfy.test_extra_dir / "not-a-model").mkdir()
    choices = comfy.NODE_CLASS_MAPPINGS["TIPO"].INPUT_TYPES()["required"]["model"][0]
    local = [c for c in choices if c != "tipo-builtin"]  # the built-in model, when installed, comes first
    assert choices[0] == "tipo-builtin" or choices == local
    assert local[:2] == ["tiny.gguf", "tiny-hf"]
    assert "TIPO-500M-ft" in choices and "not-a-model" not in choices
    assert comfy.HOST.resolve("tiny-hf") == str(comfy.test_extra_dir / "tiny-hf")
    assert comfy.HOST.resolve("TIPO-500M-ft") == "TIPO-500M-ft"  # tipo resolves registry names


def test_outputs_follow_the_reference_order_and_meanings(comfy):
    node = comfy.NODE_CLASS_MAPPINGS["TIPO"]
    assert node.RETURN_NAMES[:4] == ("prompt", "user_prompt", "unformatted_prompt", "unformatted_user_prompt")
    assert node.RETURN_NAMES[4:] == ("tags", "caption", "result") and node.RETURN_TYPES == ("STRING",) * 7
    tags, caption = "1girl, (long hair:1.2), <lora:x:0.5>, forest", "a girl in a forest"
    out = run(comfy, "TIPO", tags=tags, caption=caption, seed=3,
              template="TIPO, <|special|>, <|general|>\n\n<|extended|>")
    prompt, user_prompt, unformatted, raw, tag_text, caption_text, result = out
    assert all(isinstance(o, str) for o in out)
    assert prompt.startswith("TIPO, 1girl, (long hair:1.2), <lora:x:0.5>, forest")
    assert user_prompt == f"TIPO, 1girl, (long hair:1.2), <lora:x:0.5>, forest\n\n{caption}"
    assert raw == f"{tags}\n\n{caption}"
    assert unformatted == "\n\n".join(t for t in (tag_text, caption_text) if t)
    assert tag_text.startswith("1girl, (long hair:1.2), <lora:x:0.5>, forest")
    data = json.loads(result)
    assert data["prompt"] == prompt and data["request"]["tags"] == tags and data["provenance"]["seed"] == 3


def test_fixed_seed_gives_identical_outputs_and_a_stable_is_changed(comfy, spy):
    node = comfy.NODE_CLASS_MAPPINGS["TIPO"]
    a = inputs_for(comfy, "TIPO", tags="1girl, forest", seed=7)
    assert run(comfy, "TIPO", **a) == run(comfy, "TIPO", **a)
    assert node.IS_CHANGED(**a) == node.IS_CHANGED(**dict(a))
    assert node.IS_CHANGED(**a) != node.IS_CHANGED(**{**a, "seed": 8})
    run(comfy, "TIPO", **{**a, "seed": 8})
    assert spy.seeds == [7, 7, 8]  # the widget's seed is the sampler's seed


def test_comfy_seeds_beyond_tipo_range_are_folded(comfy):
    big = run(comfy, "TIPO", tags="1girl", seed=2**32 + 5)[-1]
    assert json.loads(big)["provenance"]["seed"] == 5
    assert run(comfy, "TIPO", tags="1girl", seed=2**32 + 5) == run(comfy, "TIPO", tags="1girl", seed=5)


def test_model_is_loaded_once_and_reused(comfy, spy):
    for seed in (1, 2):
        run(comfy, "TIPO", tags="1girl", seed=seed)
    run(comfy, "TIPOOperation", tags="1girl", task="tag_to_long")
    assert len(spy.built) == 1 and comfy.HOST.cache.loads == 1
    assert [k[:3] for k in comfy.HOST.cache.keys()] == [(spy.built[0], "auto", "cpu")]


def test_unload_all_models_closes_the_cached_model(comfy):
    run(comfy, "TIPO", tags="1girl", seed=1)
    (expander,) = [ex for _, ex in comfy.HOST.cache.items()]
    mm = sys.modules["comfy.model_management"]
    mm.unload_all_models()
    assert not expander.loaded and len(comfy.HOST.cache) == 0
    assert ("unload_all_models",) in mm.calls  # ComfyUI's own unloading still runs
    comfy.install_memory_hooks(mm, comfy.HOST.cache)  # a reloaded pack replaces its hooks, never stacks them
    assert not hasattr(mm.unload_all_models.__wrapped__, "__wrapped__")
    run(comfy, "TIPO", tags="1girl", seed=1)
    assert comfy.HOST.cache.loads == 2


def test_gpu_models_are_freed_under_memory_pressure_only(comfy, tiny_model):
    shutil.copytree(tiny_model.hf_dir, comfy.test_extra_dir / "tiny-hf")
    mm = sys.modules["comfy.model_management"]
    mm.get_torch_device = lambda: "cpu"  # the transformers model goes to ComfyUI's device
    run(comfy, "TIPO", tags="1girl", model="tiny-hf", device="gpu", seed=1)
    run(comfy, "TIPO", tags="1girl", seed=1)
    assert [k[1:3] for k in comfy.HOST.cache.keys()] == [("auto", "gpu"), ("auto", "cpu")]
    (hf,) = [ex for k, ex in comfy.HOST.cache.items() if k[2] == "gpu"]
    assert hf.backend_name == "hf"
    mm.free_memory(10**9, "cuda:0")  # enough memory left: nothing of ours is touched
    assert len(comfy.HOST.cache) == 2
    mm.free_bytes = 10**6
    mm.free_memory(10**9, "cuda:0")
    assert [k[2] for k in comfy.HOST.cache.keys()] == ["cpu"] and not hf.loaded
    assert ("soft_empty_cache",) in mm.calls


def test_single_operation_runs_a_forced_task(comfy):
    out = run(comfy, "TIPOOperation", tags="1girl, forest", task="tag_to_long", seed=2)
    assert json.loads(out[-1])["task"] == "tag_to_long"
    with pytest.raises(RequestError, match="starts from a short caption"):
        run(comfy, "TIPOOperation", tags="1girl", task="short_to_tag")


def test_format_node_renders_a_result_with_another_template(comfy):
    out = run(comfy, "TIPO", tags="1girl, (forest:0.8)", caption="a girl", seed=4)
    fmt = comfy.NODE_CLASS_MAPPINGS["TIPOFormat"]()
    same = fmt.execute(out[-1], "")
    assert same[:6] == out[:6]
    tags_only = fmt.execute(out[-1], "tags")
    assert tags_only[0] == out[4] and tags_only[4:6] == out[4:6]
    with pytest.raises(RequestError, match="'result' output of a TIPO node"):
        fmt.execute("1girl, forest", "")


def test_format_reproduces_tipo_outputs_when_the_builtin_model_dropped_tags(comfy):
    """The built-in model drops tags outside its table (known-tags-only); Format must too."""
    out = run(comfy, "TIPO", tags="1girl, forest", model="tipo-builtin", seed=7, max_new_tokens=512,
              temperature=0.5)
    assert json.loads(out[-1])["dropped"], "this seed no longer drops a tag: pick another to keep the test meaningful"
    again = comfy.NODE_CLASS_MAPPINGS["TIPOFormat"]().execute(out[-1], "")
    assert again[:6] == out[:6]


def test_a_replaced_model_file_reruns_and_reloads(comfy, spy, tiny_model):
    path = Path(sys.modules["folder_paths"].models_dir) / "tipo" / "tiny.gguf"
    node = comfy.NODE_CLASS_MAPPINGS["TIPO"]
    a = inputs_for(comfy, "TIPO", tags="1girl", seed=1)
    before = node.IS_CHANGED(**a)
    run(comfy, "TIPO", **a)
    shutil.copy(tiny_model.gguf_f16, path.with_name("new.gguf"))
    os.replace(path.with_name("new.gguf"), path)
    assert node.IS_CHANGED(**a) != before  # ComfyUI runs the node again...
    run(comfy, "TIPO", **a)
    assert len(spy.built) == 2 and comfy.HOST.cache.loads == 2  # ...and the new file is loaded


def test_comfy_interrupt_stops_the_expansion_between_tokens(comfy):
    mm = sys.modules["comfy.model_management"]

    class InterruptProcessingException(Exception):
        pass

    seen = []

    def throw_exception_if_processing_interrupted():
        seen.append(1)
        if len(seen) > 3:  # the user pressed Cancel while the fourth token was written
            raise InterruptProcessingException()

    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    with pytest.raises(InterruptProcessingException):
        run(comfy, "TIPO", tags="1girl", seed=1, max_new_tokens=64)
    assert len(seen) == 4
    del mm.throw_exception_if_processing_interrupted
    run(comfy, "TIPO", tags="1girl", seed=1)  # the model is free for the next run


CORE_NODES = {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage",
              "PreviewAny"}


def test_example_workflows_use_core_nodes_and_ours_with_valid_widgets(comfy):
    ui = json.loads((PACK / "examples" / "tipo_txt2img.json").read_text())
    types_used = {n["type"] for n in ui["nodes"]}
    assert types_used <= CORE_NODES | set(comfy.NODE_CLASS_MAPPINGS) and "TIPO" in types_used
    by_id = {n["id"]: n for n in ui["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        assert link_id in by_id[src]["outputs"][src_slot]["links"]
        assert by_id[dst]["inputs"][dst_slot]["link"] == link_id
        assert by_id[dst]["inputs"][dst_slot]["type"] in (kind, "*")
    (tipo_node,) = [n for n in ui["nodes"] if n["type"] == "TIPO"]
    spec = comfy.NODE_CLASS_MAPPINGS["TIPO"].INPUT_TYPES()["required"]
    values = list(tipo_node["widgets_values"])
    del values[list(spec).index("seed") + 1]  # the seed widget's "control after generate" value
    assert len(values) == len(spec)
    for (name, (kind, _)), value in zip(spec.items(), values, strict=True):
        if isinstance(kind, list) and name != "model":
            assert value in kind, name
    assert [o["name"] for o in tipo_node["outputs"]] == list(comfy.NODE_CLASS_MAPPINGS["TIPO"].RETURN_NAMES)
    api = json.loads((PACK / "examples" / "tipo_prompt_api.json").read_text())
    assert api["1"]["class_type"] == "TIPO" and api["2"] == {**api["2"], "class_type": "PreviewAny"}
    assert set(api["1"]["inputs"]) == set(spec)
    out = comfy.NODE_CLASS_MAPPINGS["TIPO"]().execute(**{**api["1"]["inputs"], "max_new_tokens": 8})
    assert out[0].startswith("1girl, forest")
