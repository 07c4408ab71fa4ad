"""ComfyUI input specs generated from ``tipo.options.OPTIONS`` (the one declaration of every option).

Kind -> widget: ``multiline`` -> ``STRING`` (multiline), ``text`` -> ``STRING``, ``choice`` -> combo,
``int``/``float`` -> ``INT``/``FLOAT`` with the option's widget range (its bounds, widened to its
"unset" value such as 0 or -1) and step, ``bool`` -> ``BOOLEAN``; a repeated option is one text
(entries separated as the option says). The option's help text is the tooltip. Host conventions,
the only departures:

* ``seed``: ComfyUI's seed widget (0 .. 2**64-1, control after generate); the value is folded into
  tipo's seed range by :func:`tipo.seeds.fold`.
* ``model``: a combo of the installed and registry models (see ``models.model_choices``).
* ``task``: on the single-operation node, the trained tasks without ``auto``.
"""

from __future__ import annotations

from tipo.options import Kind, Option, by_name
from tipo.seeds import fold as fold_seed
from tipo.terms import Task

SEED_MAX = 0xFFFFFFFFFFFFFFFF  # ComfyUI's seed widget range
InputSpec = tuple[object, dict[str, object]]

__all__ = ["OPERATION_INPUTS", "OPTIONAL_INPUTS", "TIPO_INPUTS", "fold_seed", "input_spec", "node_inputs"]


def input_spec(option: Option) -> InputSpec:
    """The ComfyUI widget for one option, from its kind, default, bounds and help."""
    extra: dict[str, object] = {"default": option.widget_text(option.default), "tooltip": option.help}
    if option.kind in (Kind.TEXT, Kind.MULTILINE):
        return "STRING", {**extra, "multiline": option.kind is Kind.MULTILINE}
    if option.kind is Kind.CHOICE:
        return list(option.choices), extra
    if option.kind is Kind.BOOL:
        return "BOOLEAN", extra
    bounds = {k: v for k, v in (("min", option.widget_min), ("max", option.widget_max), ("step", option.step))
              if v is not None}
    if option.kind is Kind.INT:
        return "INT", {**extra, **{k: int(v) for k, v in bounds.items()}}
    return "FLOAT", {**extra, **bounds}


def node_inputs(names: tuple[str, ...], model_choices: list[str], forced_task: bool = False,
                optional: tuple[str, ...] = ()) -> dict[str, dict[str, InputSpec]]:
    """``INPUT_TYPES`` for a node showing these option names, in this order (``optional``: after them,
    as optional inputs).

    ``forced_task``: the ``task`` combo lists the trained tasks only (no ``auto``).
    """
    required = {name: _spec(name, model_choices, forced_task) for name in names}
    out: dict[str, dict[str, InputSpec]] = {"required": required}
    if optional:
        out["optional"] = {name: _spec(name, model_choices, forced_task) for name in optional}
    return out


def _spec(name: str, model_choices: list[str], forced_task: bool) -> InputSpec:
    kind, spec = input_spec(by_name(name))
    if name == "seed":
        kind, spec = "INT", {**spec, "default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True}
    elif name == "model":
        kind, spec = model_choices, {**spec, "default": model_choices[0] if model_choices else ""}
    elif name == "task" and forced_task:
        tasks = [t.value for t in Task]
        kind, spec = tasks, {**spec, "default": tasks[0]}
    return kind, spec


# The nodes' widgets, in a frozen order: saved workflows store widget values by position, so new
# options are appended (as optional inputs), never inserted. A test checks that every option is here.
TIPO_INPUTS = (
    "tags", "caption", "caption_kind", "length", "width", "height", "aspect_ratio", "output", "gen_meta", "ban",
    "ban_regex", "template", "seed", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
    "max_new_tokens", "model", "backend", "device",
)
OPERATION_INPUTS = tuple("task" if name == "template" else name for name in TIPO_INPUTS)
#: Options added after the first release: optional inputs, so older saved workflows still load.
OPTIONAL_INPUTS = ("threads", "known_tags", "n_ctx", "allow_pickle", "rating", "homoglyphs")
