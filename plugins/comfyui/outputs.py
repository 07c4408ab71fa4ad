"""The nodes' outputs, from one :class:`tipo.Expansion`, and the serialized result string.

Outputs, in this order (the first four are the reference nodes' outputs, in their order, so
existing workflows keep their links):

==========================  ==================================================================
``prompt``                  the expansion rendered with the template (the user's tags first,
                            weights, LoRA tags and BREAK restored; then the new tags, captions)
``user_prompt``             the user's input alone rendered with the same template (no model)
``unformatted_prompt``      the expansion without the template: tags, a blank line, the caption
``unformatted_user_prompt`` the user's raw input: the tag text, a blank line, the caption text
``tags``                    the tag string alone (``Expansion.tags_text``)
``caption``                 the caption alone (``Expansion.caption_text``)
``result``                  the whole result as JSON (``Expansion.to_dict`` plus the request), for
                            the TIPO Format node or for saving
==========================  ==================================================================

Re-rendering a serialized result uses only the public API (``plan``, ``parse_completion``, ``finish``):
tipo has no ``Expansion.from_dict``/``render(template)`` yet, see :func:`expansion_from_result`.
"""

from __future__ import annotations

import json

from tipo import Expansion, Parsed, Provenance, Sampling, finish, parse_completion, plan
from tipo.errors import RequestError
from tipo.options import from_values, to_values

OUTPUT_NAMES = ("prompt", "user_prompt", "unformatted_prompt", "unformatted_user_prompt", "tags", "caption",
                "result")
OUTPUT_TOOLTIPS = (
    "the expansion rendered with the template",
    "your input alone rendered with the same template",
    "the expansion without the template: tags, a blank line, the caption",
    "your raw input: the tag text, a blank line, the caption",
    "the tags alone",
    "the caption alone",
    "the whole result as JSON (for TIPO Format)",
)
RESULT_FORMAT = "tipo-result/1"


def _paragraphs(*parts: str) -> str:
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def node_outputs(result: Expansion, template: str | None, task: str, sampling: Sampling,
                 known_only: bool = False) -> tuple[str, ...]:
    """The seven output strings (see the module docstring) for one expansion."""
    request = result.plan.request
    user_prompt = finish(result.plan, Parsed(), template=template).prompt
    return (
        result.prompt,
        user_prompt,
        _paragraphs(result.tags_text, result.caption_text),
        _paragraphs(request.tags, request.caption),
        result.tags_text,
        result.caption_text,
        serialize(result, template, task, sampling, known_only),
    )


def serialize(result: Expansion, template: str | None, task: str, sampling: Sampling, known_only: bool = False) -> str:
    """The ``result`` output: ``Expansion.to_dict`` plus what re-rendering needs (the request, the
    forced task, and the known-tags setting the expansion was finished with)."""
    data = result.to_dict(timings=False)
    seed = result.seed if result.seed is not None else sampling.seed
    values = to_values(result.plan.request, sampling.with_seed(seed) if seed is not None else sampling)
    data.update({"format": RESULT_FORMAT, "request": values, "forced_task": task, "template": template or "",
                 "known_tags_only": bool(known_only)})
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def expansion_from_result(text: str, template: str | None) -> tuple[Expansion, Sampling, str, bool]:
    """Rebuild an expansion from a ``result`` string, rendered with another template.

    Helper pending a library ``Expansion.from_dict``: the plan is rebuilt from the saved request
    and forced task (``plan`` is deterministic), the saved model text is parsed again, and
    ``finish`` renders it, exactly as the Expander did.
    """
    try:
        data = json.loads(text)
        ok = isinstance(data, dict) and data.get("format") == RESULT_FORMAT
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise RequestError("result must be the 'result' output of a TIPO node (JSON with "
                           f"format {RESULT_FORMAT!r}); got {str(text)[:60]!r}")
    request, sampling = from_values(data["request"])
    task = data.get("forced_task") or "auto"
    planned = plan(request, task=None if task == "auto" else task)
    parsed = parse_completion(planned, data["completion"])
    prov = data.get("provenance")
    provenance = None if prov is None else Provenance(**{**prov, "trimmed": tuple(prov.get("trimmed", ())),
                                                          "neutralised": tuple(prov.get("neutralised", ()))})
    known_only = bool(data.get("known_tags_only", False))
    result = finish(planned, parsed, template=template, completion=data["completion"], provenance=provenance,
                    known_only=known_only)
    return result, sampling, task, known_only
