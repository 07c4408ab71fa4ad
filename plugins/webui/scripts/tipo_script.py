"""TIPO for the A1111 / Forge WebUI: an always-visible accordion that expands each image's prompt.

The tags come from the WebUI's prompt (after styles and sd-dynamic-prompts), the image size from the
job; every other setting is a widget generated from ``tipo.options.OPTIONS``. In ``process()`` each
prompt of the batch is expanded with its own seed, derived from the image's seed (``p.all_seeds[i]``,
plus the TIPO seed when it is not -1), so "reuse seed" reproduces the expansion. Hires prompts that
equalled the prompt follow it; negative prompts are never touched; LoRA tags, weights and BREAK are
kept by tipo's rendering.

Infotext: written and read by tipo's one codec (:mod:`tipo.infotext`, the keys shared with the
reference extension so old images still paste, and with ``tipo generate`` so its PNGs paste here):
``TIPO Parameters`` (JSON of the settings), ``TIPO prompt`` (the prompt before expansion),
``TIPO nl prompt`` (the caption), ``TIPO format`` (the template). Pasting restores the settings and
puts the original prompt, not the expanded one, back in the prompt box. Seeds follow
:mod:`tipo.seeds` (rule 6).

API: ``"alwayson_scripts": {"TIPO": {"args": [...]}}`` with the arguments in :data:`API_ARGS` order
(a prefix is enough; the rest keep their defaults). See docs/plugins.md.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import gradio as gr
from modules import script_callbacks, scripts

try:
    from tipo.infotext import PARAMETERS_KEY, QUOTE_SWAP, from_infotext, to_infotext
    from tipo.options import Kind, by_name
    from tipo.pool import ExpanderPool
    from tipo.seeds import offset_seed
    from tipo.settings import from_values
    from tipo.ui import gradio_component
except ImportError as exc:  # pragma: no cover - depends on the WebUI's Python
    raise ImportError(f"the TIPO extension needs the tipo package in the WebUI's Python ({exc}); "
                      "restart the WebUI to let install.py add it, or run: pip install 'tipo-prompt[llama]'") from exc

TITLE = "TIPO"
INFOTEXT_KEY = PARAMETERS_KEY
INFOTEXT_PROMPT = by_name("tags").infotext_key
INFOTEXT_NL_PROMPT = by_name("caption").infotext_key
INFOTEXT_FORMAT = by_name("template").infotext_key
INFOTEXT_ERROR = "TIPO error"
INFOTEXT_STYLES = "TIPO styles"

#: The argument order of ``alwayson_scripts["TIPO"]["args"]`` and of ``ui()``'s components: a contract.
#: New settings are appended, never inserted.
API_ARGS = (
    "enabled", "caption", "caption_kind", "length", "output", "gen_meta", "ban", "ban_regex", "task", "template",
    "seed", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens", "model", "backend",
    "device", "threads", "known_tags", "n_ctx", "allow_pickle", "rating", "homoglyphs",
)
#: Options the WebUI itself provides: the prompt box (tags) and the image size.
HOST_PROVIDED = ("tags", "width", "height", "aspect_ratio")
MODEL_FOLDER = "tipo"
_REMEMBERED_OUTPUTS = 512


def default_settings() -> dict[str, object]:
    """Every API argument's default (what an API caller gets for arguments it leaves out)."""
    return {name: False if name == "enabled" else by_name(name).widget_text(by_name(name).default) for name in API_ARGS}


def settings_from_args(args: tuple[object, ...]) -> dict[str, object]:
    """The script's positional arguments (API_ARGS order; a prefix is fine) -> settings by name,
    each of its option's type (JSON and gradio numbers arrive as floats: ``top_k`` 80.0 -> 80)."""
    if len(args) > len(API_ARGS):
        raise ValueError(f"TIPO takes at most {len(API_ARGS)} arguments ({', '.join(API_ARGS)}), got {len(args)}")
    settings = {**default_settings(), **dict(zip(API_ARGS, args, strict=False))}  # a prefix is fine
    return {name: _typed(name, value) for name, value in settings.items()}


def _typed(name: str, value: object) -> object:
    """A setting as its option's kind: integral numbers of INT options become ints."""
    if name in ("enabled", "device") or value is None:
        return value
    kind = by_name(name).kind
    if kind is Kind.INT and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind is Kind.FLOAT and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def image_seed(tipo_seed: int, seed: int) -> int:
    """The expansion seed of one image: its image seed, offset by the TIPO seed unless that is -1."""
    return offset_seed(int(seed), int(tipo_seed))


def paste_key(name: str) -> str:
    """The infotext key a setting is pasted from (``TIPO <name>``; the fixed keys for caption and template)."""
    return "TIPO enabled" if name == "enabled" else by_name(name).infotext_key


# -- models -----------------------------------------------------------------------------------------
def models_folder() -> str:
    """``<WebUI models>/tipo``: its .gguf files and HF folders are listed in the model dropdown."""
    from modules import paths

    return os.path.join(paths.models_path, MODEL_FOLDER)


def local_models() -> dict[str, str]:
    """Names -> paths of the .gguf files and HF folders (with a config.json) in the models folder."""
    from tipo.registry import local_models as find

    return {name: str(path) for name, path in find(models_folder()).items()}


def model_choices() -> list[str]:
    """The built-in model (when installed), the local files and folders, then the registry names."""
    from tipo.registry import list_models

    rows = list_models()
    choices = [r.name for r in rows if r.kind == "built-in" and r.where != "(missing)"]
    choices += list(local_models()) + [r.name for r in rows if r.kind == "registry"]
    return list(dict.fromkeys(choices))


def torch_device() -> str:
    """The WebUI's torch device, for transformers models on ``gpu``."""
    from modules import devices

    return str(devices.device)


MODELS = ExpanderPool()  # the extension's one model cache; freed when the WebUI reloads its scripts


# -- widgets ----------------------------------------------------------------------------------------
def component(name: str, choices: list[str]) -> Any:
    """The gradio component of one setting: tipo's one renderer (:func:`tipo.ui.gradio_component`) from
    its OPTIONS declaration (kind, default, bounds, help), with the WebUI's model list."""
    overrides: dict[str, Any] = {}
    if name == "model":
        overrides = {"choices": choices, "value": choices[0] if choices else ""}
    return gradio_component(by_name(name), gr, **overrides)


def _accordion() -> tuple[Any, Callable[[], Any] | None]:
    """A1111 >= 1.7 has InputAccordion (the accordion is the on/off input); older ones get a checkbox."""
    try:
        from modules.ui_components import InputAccordion
    except ImportError:
        return gr.Accordion(TITLE, open=False), (lambda: gr.Checkbox(label="Enabled", value=False))
    return InputAccordion(False, label=TITLE), None


# -- infotext ---------------------------------------------------------------------------------------
def write_infotext(p: Any, settings: dict[str, object], original_prompt: str) -> None:
    """Add TIPO's settings to the job's infotext (tipo's codec; the prompt before expansion as the tags)."""
    values = {k: v for k, v in settings.items() if k != "enabled"}
    values["tags"] = original_prompt
    p.extra_generation_params.update(to_infotext(values))
    styles = [str(s) for s in getattr(p, "styles", None) or []]
    if styles:
        p.extra_generation_params[INFOTEXT_STYLES] = json.dumps(styles, ensure_ascii=False).translate(QUOTE_SWAP)


def restore_infotext(infotext: str, params: dict[str, Any]) -> None:
    """``on_infotext_pasted``: decode TIPO's settings (tipo's codec, any writer's spelling) into one
    ``TIPO <name>`` key per setting (what ``infotext_fields`` read), and put the prompt before
    expansion in ``Prompt``."""
    params[paste_key("enabled")] = INFOTEXT_KEY in params
    try:
        values = from_infotext(params)
    except Exception as exc:  # noqa: BLE001 - a garbled paste must not break the WebUI's paste
        print(f"TIPO: could not read '{INFOTEXT_KEY}' from the infotext ({exc}); settings left as they are")
        return
    if values is None:
        return
    for name, value in values.items():
        if name in API_ARGS:
            params[paste_key(name)] = by_name(name).widget_text(value)
    if "tags" in values:
        params["Prompt"] = values["tags"]
        _restore_styles(infotext, params)
    for name in ("caption", "template"):
        params.setdefault(paste_key(name), values.get(name, ""))


def _restore_styles(infotext: str, params: dict[str, Any]) -> None:
    """Give the WebUI back the styles the job used, the way it finds them itself.

    The WebUI infers the styles (``Styles array``) and strips their text from the prompt and the
    negative prompt in ``parse_generation_parameters``, before paste callbacks run, by looking for
    each style's text at the end of the prompt (or around its ``{prompt}``). The expansion moved that
    text, so nothing is found and the negative prompt keeps the styles' text. The job's styles are
    recorded (``TIPO styles``); here they are applied to the prompt before expansion and the infotext
    is parsed again by the WebUI's own function, which then finds them, honouring its "infotext
    styles" setting; its prompt, negative prompt and styles replace the ones found before.
    """
    raw = params.get(INFOTEXT_STYLES)
    try:
        styles = json.loads(raw.translate(QUOTE_SWAP)) if isinstance(raw, str) else list(raw or [])
        from modules import infotext_utils, shared
    except (ImportError, TypeError, ValueError):  # no styles recorded, or a WebUI before 1.8
        return
    if not styles:
        return
    styled = shared.prompt_styles.apply_styles_to_prompt(str(params[INFOTEXT_PROMPT]), styles)
    lines = infotext.strip().split("\n")
    rest = next((i for i, line in enumerate(lines) if line.strip().startswith("Negative prompt:")), len(lines) - 1)
    again = infotext_utils.parse_generation_parameters("\n".join([styled, *lines[rest:]]))
    for key in ("Prompt", "Negative prompt", "Styles array"):
        if key in again:
            params[key] = again[key]


script_callbacks.on_infotext_pasted(restore_infotext)
script_callbacks.on_script_unloaded(MODELS.clear)


def report_error(p: Any, exc: BaseException) -> None:
    """Show a failure where the user looks: the generation info (infotext key ``TIPO error``), the
    info box's comments, and the console. The images are made from the prompts as they were."""
    message = f"{exc} (the prompt was left unexpanded)"
    p.extra_generation_params[INFOTEXT_ERROR] = message
    if callable(getattr(p, "comment", None)):
        p.comment(f"TIPO error: {message}")
    print(f"TIPO error: {message}")


class TipoScript(scripts.Script):
    """The always-visible TIPO accordion of txt2img and img2img."""

    def __init__(self) -> None:
        super().__init__()
        # Recent expansion outputs: a prompt that is one of them is not expanded again.
        self._outputs: OrderedDict[str, None] = OrderedDict()

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        choices = model_choices()
        accordion, checkbox = _accordion()
        components: dict[str, Any] = {}
        with accordion:
            components["enabled"] = checkbox() if checkbox else accordion
            for name in API_ARGS[1:]:
                components[name] = component(name, choices)
        self.infotext_fields = [(components[name], paste_key(name)) for name in API_ARGS]
        self.paste_field_names = [paste_key(name) for name in API_ARGS]
        return [components[name] for name in API_ARGS]

    def process(self, p: Any, *args: object) -> None:
        try:
            self._process(p, *args)
        except Exception as exc:  # noqa: BLE001 - the WebUI would log it and go on silently
            report_error(p, exc)

    def _process(self, p: Any, *args: object) -> None:
        settings = settings_from_args(args)
        if not settings["enabled"] or INFOTEXT_PROMPT in p.extra_generation_params:
            return  # off, or this job was expanded already: never expand twice
        originals = list(p.all_prompts)
        if len(p.all_seeds) != len(originals):
            raise ValueError(f"TIPO: {len(originals)} prompts but {len(p.all_seeds)} seeds in this job")
        base = {k: v for k, v in settings.items() if k != "enabled"}
        base.update(width=int(p.width), height=int(p.height))
        loading = dict(from_values(base).loading)  # validated once, here
        model = local_models().get(str(settings["model"]), str(settings["model"]))
        loading.pop("model")
        device = loading.pop("device")
        expander = MODELS.get(model, loading.pop("backend"), device,
                              torch_device=torch_device() if device == "gpu" else "cuda", **loading)
        done: dict[tuple[str, int], str] = {}
        expanded = []
        for prompt, seed in zip(originals, p.all_seeds, strict=True):
            if prompt in self._outputs:
                expanded.append(prompt)
                continue
            key = (prompt, image_seed(int(settings["seed"]), seed))  # type: ignore[call-overload]
            if key not in done:
                run = from_values({**base, "tags": prompt, "seed": key[1]})
                done[key] = expander.expand(run.request, run.sampling, **run.expand).prompt
            expanded.append(done[key])
        if not done:
            return
        for text in expanded:
            self._outputs[text] = None
            self._outputs.move_to_end(text)
        while len(self._outputs) > _REMEMBERED_OUTPUTS:
            self._outputs.popitem(last=False)
        hr = getattr(p, "all_hr_prompts", None)
        if hr is not None and len(hr) == len(originals):
            p.all_hr_prompts = [new if old == orig else old for orig, new, old in zip(originals, expanded, hr, strict=True)]
        p.all_prompts = expanded
        if isinstance(getattr(p, "main_prompt", None), str):
            p.main_prompt = expanded[0]  # the grid's infotext
        write_infotext(p, settings, p.prompt if isinstance(p.prompt, str) else originals[0])
