"""ComfyUI input specs generated from ``tipo.options.OPTIONS`` (the one declaration of every option).

Kind -> widget: ``multiline`` -> ``STRING`` (multiline), ``text`` -> ``STRING``, ``choice`` -> combo,
``int``/``float`` -> ``INT``/``FLOAT`` with the option's min/max/step, ``bool`` -> ``BOOLEAN``. The
option's help text is the tooltip. Host conventions, the only departures:

* ``seed``: ComfyUI's seed widget (0 .. 2**64-1, control after generate); the value is folded into
  tipo's seed range (``seed mod 2**32``) by :func:`fold_seed`.
* ``template``: a multiline text box (templates span lines).
* ``model``: a combo of the installed and registry models (see ``models.model_choices``).
* ``task``: on the single-operation node, the trained tasks without ``auto``.
* ``device`` (not a tipo option): ``cpu`` or ``gpu`` (the host's device).
"""

from __future__ import annotations

from tipo.options import Kind, Option, by_name
from tipo.planner import Task
from tipo.pool import DEVICES

SEED_MAX = 0xFFFFFFFFFFFFFFFF  # ComfyUI's seed widget range
InputSpec = tuple[object, dict[str, object]]


def fold_seed(seed: int) -> int:
    """A ComfyUI seed (up to 2**64-1) folded into tipo's declared seed range."""
    return int(seed) % (int(by_name("seed").max or 0) + 1)


def input_spec(option: Option) -> InputSpec:
    """The ComfyUI widget for one option, from its kind, default, bounds and help."""
    extra: dict[str, object] = {"default": option.default, "tooltip": option.help}
    if option.kind in (Kind.TEXT, Kind.MULTILINE):
        return "STRING", {**extra, "multiline": option.kind is Kind.MULTILINE}
    if option.kind is Kind.CHOICE:
        return list(option.choices), extra
    if option.kind is Kind.BOOL:
        return "BOOLEAN", extra
    bounds = {k: v for k, v in (("min", option.min), ("max", option.max), ("step", option.step)) if v is not None}
    if option.kind is Kind.INT:
        return "INT", {**extra, **{k: int(v) for k, v in bounds.items()}}
    return "FLOAT", {**extra, **bounds}


def node_inputs(names: tuple[str, ...], model_choices: list[str],
                forced_task: bool = False) -> dict[str, dict[str, InputSpec]]:
    """``INPUT_TYPES`` for a node showing these option names (and ``device``), in this order.

    ``forced_task``: the ``task`` combo lists the trained tasks only (no ``auto``).
    """
    required: dict[str, InputSpec] = {}
    for name in names:
        if name == "device":
            required[name] = (list(DEVICES), {"default": DEVICES[0], "tooltip": "cpu, or the GPU ComfyUI uses "
                                              "(llama.cpp: every layer offloaded; transformers: its torch device)"})
            continue
        option = by_name(name)
        kind, spec = input_spec(option)
        if name == "seed":
            kind, spec = "INT", {**spec, "default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True}
        elif name == "template":
            spec["multiline"] = True
        elif name == "model":
            kind, spec = model_choices, {**spec, "default": model_choices[0] if model_choices else ""}
        elif name == "task" and forced_task:
            tasks = [t.value for t in Task]
            kind, spec = tasks, {**spec, "default": tasks[0]}
        required[name] = (kind, spec)
    return {"required": required}


# The nodes' widgets, in a frozen order: saved workflows store widget values by position, so new
# options are appended (as optional inputs), never inserted. A test checks that every option is here.
TIPO_INPUTS = (
    "tags", "caption", "caption_kind", "length", "width", "height", "aspect_ratio", "output", "gen_meta", "ban",
    "ban_regex", "template", "seed", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
    "max_new_tokens", "model", "backend", "device",
)
OPERATION_INPUTS = tuple("task" if name == "template" else name for name in TIPO_INPUTS)
