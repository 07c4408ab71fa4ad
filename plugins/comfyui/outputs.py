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

The TIPO Format node reads a ``result`` back with ``Expansion.from_dict`` and renders it with
another template (``Expansion.render``): no model pass and no re-planning of the text.
"""

from __future__ import annotations

import json

from tipo import Expansion, Parsed, finish
from tipo.errors import RequestError
from tipo.settings import Settings, from_values, to_values

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
RESULT_FORMAT = "tipo-result/2"  # 2: the settings as tipo.settings.to_values, read back by Expansion.from_dict


def _paragraphs(*parts: str) -> str:
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def node_outputs(result: Expansion, settings: Settings) -> tuple[str, ...]:
    """The seven output strings (see the module docstring) for one expansion."""
    request = result.plan.request
    user_prompt = finish(result.plan, Parsed(), template=settings.template).prompt
    return (
        result.prompt,
        user_prompt,
        _paragraphs(result.tags_text, result.caption_text),
        _paragraphs(request.tags, request.caption),
        result.tags_text,
        result.caption_text,
        serialize(result, settings),
    )


def serialize(result: Expansion, settings: Settings) -> str:
    """The ``result`` output: ``Expansion.to_dict`` plus the settings (``to_values``; the seed used)."""
    data = result.to_dict(timings=False)
    if result.seed is not None:
        settings = Settings(settings.request, settings.sampling.with_seed(result.seed), settings.expand,
                            settings.loading, settings.host)
    data.update({"format": RESULT_FORMAT, "settings": to_values(settings)})
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def expansion_from_result(text: str, template: str | None) -> tuple[Expansion, Settings]:
    """An expansion read back from a ``result`` string (``Expansion.from_dict``), rendered with
    ``template`` (None: the template it was made with), and its settings."""
    try:
        data = json.loads(text)
        ok = isinstance(data, dict) and data.get("format") == RESULT_FORMAT
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise RequestError("result must be the 'result' output of a TIPO node (JSON with "
                           f"format {RESULT_FORMAT!r}); got {str(text)[:60]!r}")
    settings = from_values(data["settings"])
    expansion = Expansion.from_dict(data)
    return expansion.render(template if template is not None else settings.template), settings
