"""The node classes: TIPO, TIPO Single Operation, TIPO Format.

Thin shells: they turn the widget values into option values, call :func:`tipo.settings.from_values`
and one :meth:`tipo.Expander.expand`, and return :func:`outputs.node_outputs`. Node ids and display
names are the reference pack's (``TIPO``, ``TIPOOperation``, ``TIPOFormat``) so saved workflows find
them. The classes are built by :func:`node_classes` around one :class:`models.Host`, which owns the
model cache: nothing is held at module level.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from tipo.pool import file_identity
from tipo.settings import from_values, to_values

from .models import Host, model_choices
from .outputs import OUTPUT_NAMES, OUTPUT_TOOLTIPS, expansion_from_result, node_outputs
from .widgets import OPERATION_INPUTS, OPTIONAL_INPUTS, TIPO_INPUTS, fold_seed, input_spec, node_inputs

NODE_CATEGORY = "utils/promptgen"


def _fingerprint(host: Host, inputs: dict[str, Any]) -> str:
    """A stable hash of the inputs (and of the model file's identity, so a replaced file re-runs;
    the pool then loads the new file, see :class:`tipo.pool.ExpanderPool`)."""
    payload = dict(inputs)
    if "model" in inputs:
        path = host.resolve(str(inputs["model"]))
        if os.path.exists(path):
            payload["model_file"] = file_identity(path)
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def node_classes(host: Host) -> dict[str, type]:
    """The three node classes, bound to ``host`` (its folders and its model cache)."""

    class _Expand:
        CATEGORY = NODE_CATEGORY
        FUNCTION = "execute"
        RETURN_TYPES = ("STRING",) * len(OUTPUT_NAMES)
        RETURN_NAMES = OUTPUT_NAMES
        OUTPUT_TOOLTIPS = OUTPUT_TOOLTIPS
        INPUT_NAMES: tuple[str, ...] = ()
        FORCED_TASK = False

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:  # ComfyUI's name
            return node_inputs(cls.INPUT_NAMES, model_choices(host.folder_paths), forced_task=cls.FORCED_TASK,
                               optional=OPTIONAL_INPUTS)

        @classmethod
        def IS_CHANGED(cls, **inputs: Any) -> str:  # ComfyUI's name
            return _fingerprint(host, inputs)

        def execute(self, **inputs: Any) -> tuple[str, ...]:
            unknown = set(inputs) - set(self.INPUT_NAMES) - set(OPTIONAL_INPUTS)
            if unknown:
                raise ValueError(f"unexpected input(s) {sorted(unknown)}; this node takes "
                                 f"{list(self.INPUT_NAMES) + list(OPTIONAL_INPUTS)}")
            values = dict(inputs)
            values["seed"] = fold_seed(inputs.get("seed", 0))
            model = str(values.pop("model"))  # a combo value: the host resolves it to a path
            settings = from_values(values)
            loading = dict(settings.loading)
            loading.pop("model")
            expander = host.expander(model, loading.pop("backend"), loading.pop("device"), **loading)
            result = expander.expand(settings.request, settings.sampling, **settings.expand,
                                     progress=host.progress_hook())
            return node_outputs(result, settings)

    class TIPO(_Expand):
        """Expand tags and/or a caption in one model pass (the task is picked automatically)."""

        DESCRIPTION = "Expand tags and/or a caption into a richer prompt with a TIPO model (one pass)."
        INPUT_NAMES = TIPO_INPUTS

    class TIPOOperation(_Expand):
        """Run one trained TIPO task; render it with TIPO Format."""

        DESCRIPTION = ("Run one trained TIPO task (tag_to_long, short_to_tag, ...). The prompt output uses the "
                       "default template; connect 'result' to TIPO Format for another.")
        INPUT_NAMES = OPERATION_INPUTS
        FORCED_TASK = True

    class TIPOFormat:
        """Render a TIPO result (the ``result`` output) with a template; no model is run."""

        DESCRIPTION = "Render a TIPO result with a template (no model pass)."
        CATEGORY = NODE_CATEGORY
        FUNCTION = "execute"
        RETURN_TYPES = ("STRING",) * len(OUTPUT_NAMES)
        RETURN_NAMES = OUTPUT_NAMES
        OUTPUT_TOOLTIPS = OUTPUT_TOOLTIPS

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:  # ComfyUI's name
            from tipo.options import by_name

            kind, spec = input_spec(by_name("template"))
            return {"required": {
                "result": ("STRING", {"forceInput": True, "tooltip": "the 'result' output of a TIPO node"}),
                "template": (kind, {**spec, "multiline": True}),
            }}

        def execute(self, result: str, template: str = "") -> tuple[str, ...]:
            expansion, settings = expansion_from_result(result, template or None)
            if template:
                settings = from_values({**to_values(settings), "template": template})
            return node_outputs(expansion, settings)

    return {"TIPO": TIPO, "TIPOOperation": TIPOOperation, "TIPOFormat": TIPOFormat}


NODE_DISPLAY_NAME_MAPPINGS = {"TIPO": "TIPO", "TIPOOperation": "TIPO Single Operation", "TIPOFormat": "TIPO Format"}
