"""The A1111/Forge extension (plugins/webui), loaded as the WebUI loads it, with the host modules stubbed.

``gradio`` and ``modules.*`` are minimal fakes; the processing object mimics what
``process_images_inner`` hands to ``Script.process``; infotext goes through a copy of the WebUI's
quoting and parsing rules. The expansions run on the tiny test model.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import re
import runpy
import shutil
import sys
import types
from pathlib import Path

import pytest

from tipo.options import OPTIONS, Kind, by_name

pytest.importorskip("llama_cpp", reason="the extension runs the tiny model with llama.cpp: pip install 'tipo-prompt[llama]'")
EXT = Path(__file__).resolve().parents[1] / "plugins" / "webui"
TEMPLATE = "TIPO, <|special|>, <|general|>"  # a literal prefix marks expanded prompts
FROZEN_API_ARGS = (
    "enabled", "caption", "caption_kind", "length", "output", "gen_meta", "ban", "ban_regex", "task", "template",
    "seed", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens", "model", "backend",
    "device", "threads", "known_tags", "n_ctx", "allow_pickle", "rating", "homoglyphs",
)


# -- host stubs -------------------------------------------------------------------------------------
class Component:
    def __init__(self, value=None, **kwargs):
        self.value = value
        self.kwargs = kwargs

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def fake_gradio() -> types.ModuleType:
    gr = types.ModuleType("gradio")
    for name in ("Textbox", "Dropdown", "Slider", "Number", "Checkbox", "Accordion", "Row", "Column", "Group"):
        setattr(gr, name, type(name, (Component,), {}))
    gr.Accordion = type("Accordion", (Component,), {"__init__": lambda self, label="", **kw: Component.__init__(
        self, None, label=label, **kw)})
    gr.update = lambda **kw: kw
    return gr


def fake_modules(models_path: Path, with_input_accordion: bool) -> dict[str, types.ModuleType]:
    modules = types.ModuleType("modules")
    scripts = types.ModuleType("modules.scripts")
    scripts.AlwaysVisible = object()

    class Script:
        infotext_fields = None
        paste_field_names = None

    scripts.Script = Script
    callbacks = types.ModuleType("modules.script_callbacks")
    callbacks.pasted, callbacks.unloaded = [], []
    callbacks.on_infotext_pasted = callbacks.pasted.append
    callbacks.on_script_unloaded = callbacks.unloaded.append
    paths = types.ModuleType("modules.paths")
    paths.models_path = str(models_path)
    devices = types.ModuleType("modules.devices")
    devices.device = "cpu"
    shared = types.ModuleType("modules.shared")
    shared.opts = types.SimpleNamespace()
    processing = types.ModuleType("modules.processing")
    found = {"modules": modules, "modules.scripts": scripts, "modules.script_callbacks": callbacks,
             "modules.paths": paths, "modules.devices": devices, "modules.shared": shared,
             "modules.processing": processing}
    if with_input_accordion:
        ui_components = types.ModuleType("modules.ui_components")
        ui_components.InputAccordion = type("InputAccordion", (Component,), {})
        found["modules.ui_components"] = ui_components
    for name, module in found.items():
        if "." in name:
            setattr(modules, name.split(".", 1)[1], module)
    return found


def load_script(tmp_path, monkeypatch, tiny_model, with_input_accordion=True):
    (tmp_path / "models" / "tipo").mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_model.gguf_f32, tmp_path / "models" / "tipo" / "tiny.gguf")
    monkeypatch.setenv("TIPO_MODELS", str(tmp_path / "tipo-cache"))
    monkeypatch.setitem(sys.modules, "gradio", fake_gradio())
    if not with_input_accordion:
        monkeypatch.delitem(sys.modules, "modules.ui_components", raising=False)
    for name, module in fake_modules(tmp_path / "models", with_input_accordion).items():
        monkeypatch.setitem(sys.modules, name, module)
    # The WebUI's script_loading.load_module: a module named after the file, not kept in sys.modules.
    spec = importlib.util.spec_from_file_location("tipo_script.py", EXT / "scripts" / "tipo_script.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def spy(expander_spy):
    return expander_spy


@pytest.fixture
def ext(tmp_path, monkeypatch, tiny_model):
    module = load_script(tmp_path, monkeypatch, tiny_model)
    yield module
    module.MODELS.clear()


def make_p(prompts, seeds, hr=None):
    """What StableDiffusionProcessingTxt2Img holds when Script.process runs."""
    return types.SimpleNamespace(
        prompt=prompts[0], all_prompts=list(prompts), all_seeds=list(seeds),
        hr_prompt=(hr or prompts)[0], all_hr_prompts=list(hr if hr is not None else prompts),
        negative_prompt="lowres", all_negative_prompts=["lowres"] * len(prompts),
        width=832, height=1216, enable_hr=hr is not None, extra_generation_params={},
    )


def args(module, **settings):
    """Positional script arguments, in API order, from defaults plus overrides."""
    values = {**module.default_settings(), "enabled": True, "model": "tiny.gguf", "template": TEMPLATE,
              "max_new_tokens": 4, "temperature": 1.0, **settings}
    return [values[name] for name in module.API_ARGS]


# -- WebUI infotext rules (modules/infotext_utils.py) --------------------------------------------------
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def quote(text):
    text = str(text)
    return text if "," not in text and "\n" not in text and ":" not in text else json.dumps(text, ensure_ascii=False)


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def infotext(p, i=0):
    params = {"Steps": 20, "Seed": p.all_seeds[i], **p.extra_generation_params}
    line = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    return f"{p.all_prompts[i]}\nNegative prompt: {p.all_negative_prompts[i]}\n{line}"


def paste(module, components, text):
    """Parse an infotext like the WebUI, run the pasted callbacks, apply the script's infotext_fields."""
    *prompt_lines, last = text.split("\n")
    params = {"Prompt": "\n".join(line for line in prompt_lines if not line.startswith("Negative prompt:"))}
    params.update({k: unquote(v) for k, v in RE_PARAM.findall(last)})
    for callback in sys.modules["modules.script_callbacks"].pasted:
        callback(text, params)
    for comp, key in components:
        value = key(params) if callable(key) else params.get(key)
        if value is not None:
            kind = type(comp.value)
            comp.value = (value != "False") if kind is bool and isinstance(value, str) else kind(value)
    return params


# -- tests ------------------------------------------------------------------------------------------
def test_api_argument_order_is_frozen_and_covers_every_option(ext):
    assert ext.API_ARGS == FROZEN_API_ARGS
    assert {o.name for o in OPTIONS} == (set(ext.API_ARGS) | set(ext.HOST_PROVIDED)) - {"enabled"}
    assert ext.TipoScript().title() == "TIPO"  # the alwayson_scripts key


@pytest.mark.parametrize("input_accordion", [True, False])
def test_ui_returns_widgets_generated_from_options_in_api_order(tmp_path, monkeypatch, tiny_model, input_accordion):
    module = load_script(tmp_path, monkeypatch, tiny_model, with_input_accordion=input_accordion)
    script = module.TipoScript()
    components = script.ui(False)
    assert len(components) == len(FROZEN_API_ARGS)
    enabled = components[0]
    assert type(enabled).__name__ == ("InputAccordion" if input_accordion else "Checkbox") and enabled.value is False
    for name, comp in zip(FROZEN_API_ARGS[1:], components[1:], strict=True):
        o = by_name(name)
        assert comp.kwargs["label"] == o.label and comp.kwargs["info"] == o.help, name
        want = {Kind.MULTILINE: "Textbox", Kind.TEXT: "Textbox", Kind.CHOICE: "Dropdown", Kind.BOOL: "Checkbox",
                Kind.INT: "Slider", Kind.FLOAT: "Slider"}[o.kind]
        if o.kind is Kind.INT and (o.max is None or o.max > 10**6):  # seed, threads, n_ctx: typed, not slid
            want = "Number"
        want = {"model": "Dropdown"}.get(name, want)
        assert type(comp).__name__ == want, name
        if want == "Slider":
            assert (comp.kwargs["minimum"], comp.kwargs["maximum"], comp.value) == (o.widget_min, o.widget_max, o.default)
        elif name not in ("model",):
            assert comp.value == o.widget_text(o.default)
    model = components[FROZEN_API_ARGS.index("model")]
    assert model.value == model.kwargs["choices"][0] and "TIPO-500M-ft" in model.kwargs["choices"]
    assert [c for c in model.kwargs["choices"] if c != "tipo-builtin"][0] == "tiny.gguf"
    assert components[FROZEN_API_ARGS.index("device")].kwargs["choices"] == ["cpu", "gpu"]
    assert [key for _, key in script.infotext_fields] == script.paste_field_names


def test_disabled_leaves_the_job_alone(ext, spy):
    p = make_p(["1girl, forest"], [1])
    ext.TipoScript().process(p, *args(ext, enabled=False))
    assert p.all_prompts == ["1girl, forest"] and p.extra_generation_params == {} and spy.seeds == []


def test_each_image_is_expanded_with_a_seed_from_its_image_seed(ext, spy):
    prompts = ["1girl, forest", "1girl, beach", "1girl, forest"]
    p = make_p(prompts, [10, 11, 10])
    ext.TipoScript().process(p, *args(ext))
    assert spy.seeds == [10, 11]  # -1: the image seed itself; the repeated (prompt, seed) is reused
    assert all(a.startswith("TIPO, 1girl, ") for a in p.all_prompts) and p.all_prompts[0] == p.all_prompts[2]
    again = make_p(prompts, [10, 11, 10])  # "reuse seed": the same seeds give the same prompts
    ext.TipoScript().process(again, *args(ext))
    assert again.all_prompts == p.all_prompts
    offset = make_p(prompts[:2], [10, 2**32 - 1])
    ext.TipoScript().process(offset, *args(ext, seed=5))
    assert spy.seeds[-2:] == [15, 4]  # a fixed TIPO seed offsets the image seed (mod 2**32)


def test_hires_prompts_follow_only_when_equal_and_negatives_are_untouched(ext):
    p = make_p(["1girl, forest", "1girl, beach"], [1, 2], hr=["1girl, forest", "1girl, beach, sunset"])
    ext.TipoScript().process(p, *args(ext))
    assert p.all_hr_prompts[0] == p.all_prompts[0] != "1girl, forest"
    assert p.all_hr_prompts[1] == "1girl, beach, sunset"
    assert p.all_negative_prompts == ["lowres", "lowres"] and p.negative_prompt == "lowres"


def test_lora_tags_weights_and_break_are_kept(ext):
    prompt = "1girl, (long hair:1.2), <lora:style:0.7>, BREAK, forest"
    p = make_p([prompt], [3])
    ext.TipoScript().process(p, *args(ext))
    assert p.all_prompts[0].startswith("TIPO, 1girl, (long hair:1.2), <lora:style:0.7>, BREAK, forest")


def test_model_is_loaded_once_across_jobs_and_freed_on_script_reload(ext, spy):
    script = ext.TipoScript()
    for seed in (1, 2):
        script.process(make_p(["1girl"], [seed]), *args(ext))
    assert len(spy.built) == 1 and ext.MODELS.loads == 1
    (unload,) = sys.modules["modules.script_callbacks"].unloaded
    unload()
    assert len(ext.MODELS) == 0


def test_device_gpu_offloads_llama_layers_or_moves_the_hf_model(ext, spy, tiny_model, tmp_path):
    shutil.copytree(tiny_model.hf_dir, tmp_path / "models" / "tipo" / "tiny-hf")
    script = ext.TipoScript()
    script.process(make_p(["1girl"], [1]), *args(ext, device="gpu"))
    script.process(make_p(["1girl"], [1]), *args(ext, device="gpu", model="tiny-hf"))
    assert spy.options == [{"backend": "auto", "n_gpu_layers": -1}, {"backend": "auto", "device": "cpu"}]
    assert spy.built[1] == str(tmp_path / "models" / "tipo" / "tiny-hf")


def test_no_double_expansion(ext, spy):
    script = ext.TipoScript()
    p = make_p(["1girl, forest"], [1])
    script.process(p, *args(ext))
    expanded = list(p.all_prompts)
    script.process(p, *args(ext))  # the same job again: its infotext says it is expanded
    assert p.all_prompts == expanded and len(spy.seeds) == 1
    reuse = make_p(expanded, [1])  # an expansion output typed in as the prompt
    script.process(reuse, *args(ext))
    assert reuse.all_prompts == expanded and len(spy.seeds) == 1


def test_infotext_round_trip_restores_settings_and_the_original_prompt(ext):
    script = ext.TipoScript()
    components = script.ui(False)
    settings = dict(zip(ext.API_ARGS, args(ext, caption="a girl, in a forest: at dusk", ban="hat, \"chat\"",
                                          ban_regex=".*'s eyes", length="short", seed=42, top_k=40), strict=True))
    p = make_p(["1girl, forest"], [7])
    script.process(p, *settings.values())
    assert p.extra_generation_params["TIPO prompt"] == "1girl, forest"
    assert p.extra_generation_params["TIPO nl prompt"] == settings["caption"]
    assert p.extra_generation_params["TIPO format"] == TEMPLATE
    for comp in components:  # the user changed everything since
        comp.value = type(comp.value)()
    params = paste(ext, script.infotext_fields, infotext(p))
    assert params["Prompt"] == "1girl, forest"  # the prompt box gets the prompt before expansion
    assert {name: comp.value for name, comp in zip(ext.API_ARGS, components, strict=True)} == settings


def test_pasting_an_image_made_without_tipo_turns_it_off(ext):
    script = ext.TipoScript()
    components = script.ui(False)
    components[0].value = True
    params = paste(ext, script.infotext_fields, "1girl\nNegative prompt: x\nSteps: 20, Seed: 1")
    assert components[0].value is False and params["Prompt"] == "1girl"


def test_reference_extension_infotext_still_pastes(ext):
    script = ext.TipoScript()
    components = dict(zip(ext.API_ARGS, script.ui(False), strict=True))
    old = {"seed": 1234, "timing": "AFTER", "tag_length": "very long", "nl_length": "long", "ban_tags": "hat",
           "format_selected": "Both, NL first (recommend)", "format": "<|extended|>.\n\n<|general|>",
           "temperature": 0.7, "top_p": 0.9, "top_k": 60, "model": "KBlueLeaf/TIPO-500M-ft | TIPO-500M-ft-F16.gguf",
           "gguf_cpu": True, "no_formatting": False}
    params = json.dumps(old).translate(str.maketrans("'\"", "\"'"))
    text = (f"expanded prompt\nNegative prompt: x\nSteps: 20, TIPO Parameters: {quote(params)}, "
            f"TIPO prompt: {quote('1girl, forest')}, TIPO format: Both, NL first (recommend)")
    got = paste(ext, script.infotext_fields, text)
    assert got["Prompt"] == "1girl, forest"
    values = {name: comp.value for name, comp in components.items()}
    assert values["enabled"] is True and values["length"] == "very_long" and values["ban"] == "hat"
    assert (values["seed"], values["temperature"], values["top_k"]) == (1234, 0.7, 60)
    assert values["model"] == "KBlueLeaf/TIPO-500M-ft" and values["device"] == "cpu"
    assert values["template"] == "caption_first"


def test_api_callers_may_pass_a_prefix_of_the_arguments(ext, spy):
    assert ext.settings_from_args((True, "a cat")) == {**ext.default_settings(), "enabled": True, "caption": "a cat"}
    with pytest.raises(ValueError, match=f"at most {len(FROZEN_API_ARGS)} arguments"):
        ext.settings_from_args(tuple(range(len(FROZEN_API_ARGS) + 1)))
    p = make_p(["1girl"], [9])
    prefix = args(ext)[: ext.API_ARGS.index("model") + 1]  # up to the model; backend and device: defaults
    ext.TipoScript().process(p, *prefix)
    assert spy.seeds == [9] and p.all_prompts[0].startswith("TIPO, 1girl")


# -- install.py and metadata.ini ---------------------------------------------------------------------
def fake_launch(installed: bool) -> types.ModuleType:
    launch = types.ModuleType("launch")
    launch.calls = []
    launch.is_installed = lambda package: launch.calls.append(("is_installed", package)) or installed
    launch.run_pip = lambda command, desc=None, live=False: launch.calls.append(("run_pip", command))
    return launch


def test_install_py_runs_pip_only_when_launched_and_tipo_is_missing(monkeypatch):
    monkeypatch.delenv("TIPO_SOURCE", raising=False)
    launch = fake_launch(installed=False)
    monkeypatch.setitem(sys.modules, "launch", launch)
    spec = importlib.util.spec_from_file_location("tipo_install_under_test", EXT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert launch.calls == []  # importing does nothing
    assert module.install(fake_launch(installed=True)) is False
    runpy.run_path(str(EXT / "install.py"), run_name="__main__")  # how the WebUI runs it
    # Inside a tipo checkout, the library comes from that checkout (it is not on the index yet).
    root = EXT.parents[1]
    assert launch.calls == [("is_installed", "tipo-prompt"), ("run_pip", f'install "{root}[llama]"')]


def test_install_py_of_an_extension_copied_alone_installs_from_the_index(tmp_path, monkeypatch):
    monkeypatch.delenv("TIPO_SOURCE", raising=False)
    copied = tmp_path / "extensions" / "tipo"
    shutil.copytree(EXT, copied)
    launch = fake_launch(installed=False)
    monkeypatch.setitem(sys.modules, "launch", launch)
    runpy.run_path(str(copied / "install.py"), run_name="__main__")
    assert launch.calls[-1] == ("run_pip", 'install "tipo-prompt[llama]"')
    monkeypatch.setenv("TIPO_SOURCE", "git+https://example.invalid/tipo.git")
    runpy.run_path(str(copied / "install.py"), run_name="__main__")
    assert launch.calls[-1] == ("run_pip", 'install "git+https://example.invalid/tipo.git"')


def test_install_py_through_a_symlink_finds_the_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("TIPO_SOURCE", raising=False)
    (tmp_path / "extensions").mkdir()
    (tmp_path / "extensions" / "tipo").symlink_to(EXT, target_is_directory=True)
    launch = fake_launch(installed=False)
    monkeypatch.setitem(sys.modules, "launch", launch)
    runpy.run_path(str(tmp_path / "extensions" / "tipo" / "install.py"), run_name="__main__")
    assert launch.calls[-1] == ("run_pip", f'install "{EXT.parents[1]}[llama]"')


def test_metadata_orders_the_script_after_dynamic_prompts():
    config = configparser.ConfigParser()
    assert config.read(EXT / "metadata.ini")
    assert config.get("Extension", "Name")
    after = re.split(r"[,\s]+", config.get("scripts", "After").lower())
    assert "sd-dynamic-prompts" in after
    assert not config.has_option("scripts", "Requires") and not config.has_option("Extension", "Requires")


def test_errors_reach_the_generation_info_and_leave_the_prompt_unexpanded(ext):
    p = make_p(["1girl, forest"], [5])
    ext.TipoScript().process(p, *args(ext, template="tag"))
    assert p.all_prompts == ["1girl, forest"]
    error = p.extra_generation_params["TIPO error"]
    assert "did you mean 'tags'" in error and "left unexpanded" in error
    p = make_p(["1girl"], [5])
    p.comments = {}
    p.comment = lambda text: p.comments.__setitem__(text, 1)  # the WebUI's Processing.comment
    ext.TipoScript().process(p, *args(ext, ban_regex="("))
    assert any("TIPO error" in c and "left unexpanded" in c for c in p.comments)


def test_api_floats_become_ints_in_the_infotext(ext):
    p = make_p(["1girl"], [5])
    settings = args(ext, top_k=80.0, max_new_tokens=4.0, seed=-1.0, temperature=1)
    ext.TipoScript().process(p, *settings)
    written = json.loads(p.extra_generation_params["TIPO Parameters"].translate(ext.QUOTE_SWAP))
    assert written["top_k"] == 80 and isinstance(written["top_k"], int)
    assert isinstance(written["max_new_tokens"], int) and isinstance(written["seed"], int)
    assert isinstance(written["temperature"], float)
    assert "80.0" not in p.extra_generation_params["TIPO Parameters"]


# -- styles on paste (A1111 >= 1.8: infotext_utils.parse_generation_parameters infers them) -----------
class StyleDatabase:
    """The WebUI's style rules (modules/styles.py): a style's text is appended to the prompt (or wraps
    it at ``{prompt}``); pasting finds a style when the prompt and the negative prompt end with its text."""

    def __init__(self, styles):
        self.styles = styles  # name -> (prompt text, negative text)

    @staticmethod
    def _apply(text, prompt):
        if "{prompt}" in text:
            return text.replace("{prompt}", prompt)
        return ", ".join(x for x in (prompt, text) if x)

    @staticmethod
    def _strip(text, prompt):
        prompt, text = prompt.strip(), text.strip()
        if "{prompt}" in text:
            left, _, right = text.partition("{prompt}")
            ok = prompt.startswith(left) and prompt.endswith(right)
            return ok, prompt[len(left): len(prompt) - len(right)] if ok else prompt
        if not prompt.endswith(text):
            return False, prompt
        rest = prompt[: len(prompt) - len(text)]
        return True, rest[:-2] if rest.endswith(", ") else rest

    def apply_styles_to_prompt(self, prompt, names):
        for name in names:
            prompt = self._apply(self.styles[name][0], prompt)
        return prompt

    def extract_styles_from_prompt(self, prompt, negative):
        found, left = [], dict(self.styles)
        while True:
            for name, (pos, neg) in left.items():
                ok_p, new_p = self._strip(pos, prompt)
                ok_n, new_n = self._strip(neg, negative)
                if ok_p and ok_n:
                    found.append(name)
                    prompt, negative = new_p, new_n
                    del left[name]
                    break
            else:
                return list(reversed(found)), prompt, negative


def webui_parse(text):
    """parse_generation_parameters: prompt, negative prompt, key: value pairs, then the styles."""
    *lines, last = text.strip().split("\n")
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    res = {k: unquote(v) for k, v in RE_PARAM.findall(last)}
    found, p_text, n_text = sys.modules["modules.shared"].prompt_styles.extract_styles_from_prompt(
        "\n".join(prompt), "\n".join(negative))
    if found:
        res["Styles array"] = found
    res["Prompt"], res["Negative prompt"] = p_text, n_text
    return res


def test_styles_survive_paste(ext, monkeypatch):
    shared = sys.modules["modules.shared"]
    monkeypatch.setattr(shared, "prompt_styles", StyleDatabase({"nice": ("masterpiece, best quality", "bad hands")}),
                        raising=False)
    infotext_utils = types.ModuleType("modules.infotext_utils")
    infotext_utils.parse_generation_parameters = webui_parse
    monkeypatch.setitem(sys.modules, "modules.infotext_utils", infotext_utils)
    monkeypatch.setattr(sys.modules["modules"], "infotext_utils", infotext_utils, raising=False)
    p = make_p([shared.prompt_styles.apply_styles_to_prompt("1girl, forest", ["nice"])], [5])
    p.prompt, p.styles = "1girl, forest", ["nice"]
    p.all_negative_prompts = ["lowres, bad hands"]
    ext.TipoScript().process(p, *args(ext))
    assert not p.all_prompts[0].endswith("best quality")  # the expansion moved the style's text
    text = infotext(p)
    params = webui_parse(text)
    assert "Styles array" not in params  # what the WebUI alone finds in the expanded prompt
    for callback in sys.modules["modules.script_callbacks"].pasted:
        callback(text, params)
    assert params["Styles array"] == ["nice"]
    assert params["Prompt"] == "1girl, forest" and params["Negative prompt"] == "lowres"


# -- one infotext codec: PNGs of tipo generate paste here, and the WebUI's PNGs read in tipo ---------
def test_a_tipo_generate_png_pastes_every_setting(ext):
    from tipo.image.infotext import format_parameters
    from tipo.infotext import to_infotext
    from tipo.settings import from_values, to_values

    made = from_values({"tags": "1girl, forest", "caption": "a girl: at dusk, \"quoted\"", "length": "short",
                        "ban": ["hat", "red eyes"], "ban_regex": [".*'s eyes", "a,b"], "task": "tag_to_long",
                        "template": TEMPLATE, "seed": 9, "temperature": 0.7, "top_k": 40, "model": "tiny.gguf",
                        "backend": "llama", "device": "cpu", "threads": 2, "known_tags": "off"})
    values = to_values(made)
    text = format_parameters("expanded prompt", "lowres", {"Steps": 2, "Seed": 11, **to_infotext(values)})
    script = ext.TipoScript()
    components = dict(zip(ext.API_ARGS, script.ui(False), strict=True))
    params = paste(ext, script.infotext_fields, text)
    assert params["Prompt"] == "1girl, forest" and components["enabled"].value is True
    pasted = {name: comp.value for name, comp in components.items() if name != "enabled"}
    assert from_values({**pasted, "tags": "1girl, forest"}) == made  # every setting, as tipo wrote it


def test_a_webui_png_reads_back_in_tipo(ext):
    from tipo.image.infotext import parse_parameters
    from tipo.infotext import from_infotext
    from tipo.settings import from_values

    script = ext.TipoScript()
    settings = dict(zip(ext.API_ARGS, args(ext, caption="a cat, on a mat: \"yes\"", ban="hat", ban_regex="x\ny",
                                          length="short", seed=42, top_k=40, threads=1, known_tags="on"), strict=True))
    p = make_p(["1girl, forest"], [7])
    script.process(p, *settings.values())
    text = infotext(p).replace("Steps: 20, ", "Steps: 20, Size: 832x1216, ")  # A1111 writes the job's size
    read = from_values(from_infotext(parse_parameters(text)))
    want = from_values({**{k: v for k, v in settings.items() if k != "enabled"}, "tags": "1girl, forest",
                        "width": 832, "height": 1216})
    assert read == want
