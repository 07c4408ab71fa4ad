"""From per-item records to per-item values and per-method aggregates (no model, no I/O).

Text metrics come from ``eval.metrics.text`` on each method's finished items; every aggregate is
either ``{"value": x}`` or ``{"skipped": "why"}`` (a metric's ``ValueError``, e.g. "no result has any
tag", is caught here and kept as the reason), so one undefined metric never stops a report.

Definitions used here (the metric functions hold the rest):

- tags: every tag of the rendered prompt, normalised (``tipo.tags.normalize``), repeats kept.
- content tags: the special and general tags among them (tipo's categories); the length classes
  count these, as TIPO's training data did.
- user tags: the tags of the request's ``tags`` text (host syntax off, deduplicated).
- ban compliance: over the items whose request has a ``ban`` list, the share whose *added* tags
  (tags that are not among the user's own, compared by canonical name) hold no banned tag (whole
  tags, alias-aware). The user's own tags are left out because every method keeps them by
  contract (a ban applies to generated tags), so ``none`` scores 1. ``ban_regex`` is not measured.
- added content above a rating: the terms of tipo's content-rating vocabulary (``tipo.rating``) in
  the result's tags and caption that are NOT in the request's own tags and caption -- what the
  expansion added, not what the user wrote. "above general" counts every term the vocabulary
  forbids at the ``general`` rating (sensitive, questionable, explicit); "explicit" only those it
  forbids even at ``questionable`` (sex acts, genitals, fluids, pornography, sexualised minors).
- look-alikes: characters ``tipo.safety`` folds or removes (look-alikes of Latin letters, invisible
  controls) in the given prompt (before) and in the rendered prompt (after).

Example:
    >>> recs = [{"method": "none", "item": "a", "output": {"prompt": "1girl, forest", "tags": ["1girl", "forest"],
    ...          "caption": ""}, "request": {"tags": "1girl, forest", "length": "very_short"}, "error": None}]
    >>> summarize(recs, ["none"])["none"]["metrics"]["known_tag_rate"]
    {'value': 1.0}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import text as text_metrics

__all__ = ["TEXT_METRICS", "item_values", "stats", "summarize"]

# name -> (label, how to read it); the order is the report's.
TEXT_METRICS: dict[str, tuple[str, str]] = {
    "known_tag_rate": ("known-tag rate", "share of tags in the Danbooru tag table (higher is better)"),
    "duplicate_rate": ("duplicate rate", "share of tags repeating an earlier tag as written (lower is better)"),
    "alias_duplicate_rate": ("alias-duplicate rate", "the same, counting aliases as one tag (lower is better)"),
    "user_tag_preservation": ("user-tag preservation", "mean share of the user's tags kept (1 is best)"),
    "ban_compliance": ("ban compliance", "share of results whose added tags hold none of their banned tags (1 is best)"),
    "length_class_hit_rate": ("length-class hit rate", "share whose content-tag count is in the asked class"),
    "mean_tags": ("tags per prompt", "mean number of tags"),
    "mean_content_tags": ("content tags per prompt", "mean special + general tags"),
    "caption_rate": ("prompts with a caption", "share of prompts that have a natural-language part"),
    "mean_caption_words": ("caption words", "mean words of the caption, over prompts that have one"),
    "text_vendi": ("text Vendi", "effective number of distinct prompts (character 3-grams)"),
    "clip_tokens_mean": ("CLIP tokens", "mean CLIP tokens of the rendered prompt (window 77)"),
    "clip_fit_rate": ("fits CLIP's 77", "share of prompts within 77 CLIP tokens"),
    "t5_tokens_mean": ("T5 tokens", "mean T5 tokens of the rendered prompt (window 512)"),
    "t5_fit_rate": ("fits T5's 512", "share of prompts within 512 T5 tokens"),
    "added_unsafe_rate": ("adds content above general", "share of results whose expansion added a term the "
                          "rating vocabulary puts above the general rating (lower is better)"),
    "added_explicit_rate": ("adds explicit content", "share of results whose expansion added an explicit term "
                            "(sex acts, genitals, pornography; lower is better)"),
    "lookalikes_before": ("look-alikes in the input", "mean look-alike and invisible characters in the given prompt"),
    "lookalikes_after": ("look-alikes in the prompt", "mean look-alike and invisible characters in the rendered prompt"),
    "seconds_mean": ("seconds per item", "mean wall time of the method per item"),
}
# Per-item values that get distribution plots and stats: key -> label.
DISTRIBUTIONS: dict[str, str] = {
    "known_rate": "known-tag rate per prompt",
    "n_tags": "tags per prompt",
    "n_content_tags": "content tags per prompt",
    "caption_words": "caption words per prompt",
    "clip_tokens": "CLIP tokens per prompt",
    "clip_cos_input": "CLIP cosine, image vs the given prompt",
    "clip_cos_prompt": "CLIP cosine, image vs the rendered prompt",
    "aesthetic": "aesthetic score per image",
    "added_unsafe": "terms above the general rating added per prompt",
}


def _table() -> Any:
    from tipo.tags import default_table

    return default_table()


def _user_tags(request: Mapping[str, Any]) -> list[str]:
    from tipo.planner import read_user_tags

    return [t.text for t in read_user_tags(str(request.get("tags") or ""), _table()).tags]


def item_values(record: Mapping[str, Any], tokens: Mapping[str, int] | None = None,
                image: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Per-item numbers for one finished record (None where a value is undefined for the item).

    Example:
        >>> item_values({"output": {"prompt": "cat, catt", "tags": ["cat", "catt"], "caption": ""},
        ...              "request": {"length": "very_short"}})["known_rate"]
        0.5
    """
    from tipo.request import Length

    table = _table()
    out = record["output"]
    tags = [t for t in out["tags"] if t.strip()]
    content = [t for t in tags if table.category(t).value in ("special", "general")]
    request = record.get("request") or {}
    length = Length(request.get("length") or "long")
    low, cap = text_metrics.LENGTH_BOUNDS[length.value]
    user = _user_tags(request)
    got = {table.canonical(t) for t in tags}
    bans = [b for b in request.get("ban") or [] if str(b).strip()]
    values: dict[str, Any] = {
        "n_tags": len(tags),
        "n_content_tags": len(content),
        "known_rate": (sum(table.is_known(t) for t in tags) / len(tags)) if tags else None,
        "duplicates": len(tags) - len(set(tags)),
        "alias_duplicates": len(tags) - len({table.canonical(t) for t in tags}),
        "preserved": (len({table.canonical(t) for t in user} & got) / len({table.canonical(t) for t in user}))
        if user else None,
        "ban_ok": (not ({table.canonical(b) for b in bans} & (got - {table.canonical(t) for t in user})))
        if bans else None,
        "length_hit": low <= len(content) <= cap,
        "caption_words": len(out["caption"].split()) if out["caption"].strip() else None,
        "prompt_chars": len(out["prompt"]),
    }
    values.update(_safety_values(request, user, tags, out))
    for name, count in (tokens or {}).items():
        values[f"{name}_tokens"] = count
    values.update(image or {})
    return values


def _terms(tags: Sequence[str], caption: str, rating: str) -> set[str]:
    """The rating-vocabulary terms (their reasons) that the tags and caption hold above ``rating``."""
    from tipo.rating import default_vocabulary

    m = default_vocabulary().matcher(rating)
    found = {why for t in tags if (why := m.tag_reason(t))}
    return found | {why for _, why in m.caption_reasons(caption)}


def _safety_values(request: Mapping[str, Any], user: Sequence[str], tags: Sequence[str],
                   out: Mapping[str, Any]) -> dict[str, Any]:
    from tipo.safety import count_lookalikes

    caption = str(request.get("caption") or "")
    values: dict[str, Any] = {}
    for key, rating in (("added_unsafe", "general"), ("added_explicit", "questionable")):
        given = _terms(user, caption, rating)
        values[key] = len(_terms(tags, out["caption"], rating) - given)
    values["lookalikes_before"] = count_lookalikes(str(request.get("tags") or ""), "tags") + count_lookalikes(caption)
    values["lookalikes_after"] = count_lookalikes(out["prompt"])
    return values


def _metric(compute: Callable[[], float]) -> dict[str, Any]:
    try:
        value = compute()
    except (ValueError, TypeError) as exc:
        return {"skipped": str(exc)}
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return {"skipped": "undefined for these items"}
    return {"value": float(value)}


def stats(values: Sequence[float | None]) -> dict[str, Any]:
    """Count, mean, std, median, min and max of the defined values (None ones are left out).

    Example:
        >>> stats([1, 2, None, 3])["mean"]
        2.0
    """
    clean = np.array([v for v in values if v is not None], dtype=np.float64)
    if clean.size == 0:
        return {"n": 0}
    return {"n": int(clean.size), "mean": float(clean.mean()), "std": float(clean.std()),
            "median": float(np.median(clean)), "min": float(clean.min()), "max": float(clean.max())}


def summarize(records: Sequence[Mapping[str, Any]], methods: Sequence[str],
              tokens: Mapping[str, Any] | None = None, image: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Aggregate the records of each method: text metrics, token budgets, image metrics, stats.

    Args:
        records: the run's item records (finished and failed).
        methods: method names, in report order.
        tokens: ``{"clip": {"window": 77, "counts": {"method\\titem": n}} | {"skipped": why}, "t5": ...}``.
        image: ``{"per_method": {method: {metric: {...}}}, "per_item": {"method\\titem": {...}}}`` or
            ``{"skipped": why}``.
    """
    tokens = tokens or {}
    image = image or {}
    out: dict[str, Any] = {}
    for method in methods:
        mine = [r for r in records if r["method"] == method]
        done = [r for r in mine if r.get("output") is not None and not r.get("error")]
        failed = [r for r in mine if r.get("error")]
        if done:
            metrics = _text_metrics(done, tokens)
        else:
            reason = "no finished item" + (f" ({len(failed)} failed)" if failed else "")
            metrics = {key: {"skipped": reason} for key in TEXT_METRICS}
        image_metrics = dict((image.get("per_method") or {}).get(method) or {})
        per_item_image = image.get("per_item") or {}
        token_counts = {name: (tokens.get(name) or {}).get("counts") or {} for name in ("clip", "t5")}
        values = []
        for r in done:
            key = record_key(r)
            toks = {name: counts[key] for name, counts in token_counts.items() if key in counts}
            values.append(item_values(r, toks, per_item_image.get(key)))
        out[method] = {
            "items": len(mine),
            "finished": len(done),
            "failed": len(failed),
            "failures": [{"item": r["item"], "error": r["error"]} for r in failed[:20]],
            "metrics": metrics,
            "image_metrics": image_metrics,
            "stats": {key: stats([v.get(key) for v in values]) for key in DISTRIBUTIONS},
            "values": {key: [v.get(key) for v in values] for key in DISTRIBUTIONS},
        }
    return out


def _text_metrics(done: Sequence[Mapping[str, Any]], tokens: Mapping[str, Any]) -> dict[str, Any]:
    """The text aggregates of one method's finished records."""
    table = _table()
    tag_lists = [list(r["output"]["tags"]) for r in done]
    metrics: dict[str, Any] = {}
    metrics["known_tag_rate"] = _metric(lambda: text_metrics.known_tag_rate(tag_lists, table.is_known))
    metrics["duplicate_rate"] = _metric(lambda: text_metrics.duplicate_rate(tag_lists))
    metrics["alias_duplicate_rate"] = _metric(lambda: text_metrics.duplicate_rate(tag_lists, canonical=table.canonical))
    users = [_user_tags(r.get("request") or {}) for r in done]
    metrics["user_tag_preservation"] = _metric(
        lambda: text_metrics.user_tag_preservation(users, tag_lists, canonical=table.canonical))
    metrics["ban_compliance"] = _ban_compliance(done, tag_lists, users, table)
    content = [[t for t in tags if table.category(t).value in ("special", "general")] for tags in tag_lists]
    targets = [str((r.get("request") or {}).get("length") or "long") for r in done]
    metrics["length_class_hit_rate"] = _metric(lambda: text_metrics.length_class_hit_rate(content, targets))
    metrics["mean_tags"] = {"value": float(np.mean([len(t) for t in tag_lists]))}
    metrics["mean_content_tags"] = {"value": float(np.mean([len(t) for t in content]))}
    captions = [r["output"]["caption"] for r in done if r["output"]["caption"].strip()]
    metrics["caption_rate"] = {"value": len(captions) / len(done)}
    metrics["mean_caption_words"] = (_metric(lambda: float(np.mean(text_metrics.word_counts(captions))))
                                     if captions else {"skipped": "no prompt has a caption"})
    prompts = [r["output"]["prompt"] for r in done]
    metrics["text_vendi"] = _metric(lambda: text_metrics.text_vendi_score(prompts))
    for name in ("clip", "t5"):
        metrics.update(_token_metrics(name, tokens.get(name), done))
    safety = [_safety_values(r.get("request") or {}, user, tags, r["output"])
              for r, user, tags in zip(done, users, tag_lists, strict=True)]
    metrics["added_unsafe_rate"] = _metric(lambda: text_metrics.share_positive([v["added_unsafe"] for v in safety]))
    metrics["added_explicit_rate"] = _metric(lambda: text_metrics.share_positive([v["added_explicit"] for v in safety]))
    metrics["lookalikes_before"] = {"value": float(np.mean([v["lookalikes_before"] for v in safety]))}
    metrics["lookalikes_after"] = {"value": float(np.mean([v["lookalikes_after"] for v in safety]))}
    seconds = [r.get("seconds") for r in done if r.get("seconds") is not None]
    metrics["seconds_mean"] = {"value": float(np.mean(seconds))} if seconds else {"skipped": "no timings"}
    return metrics


def record_key(record: Mapping[str, Any]) -> str:
    """The resume key of a record: method and item id, tab-separated."""
    return f"{record['method']}\t{record['item']}"


def _ban_compliance(done: Sequence[Mapping[str, Any]], tag_lists: list[list[str]], users: list[list[str]],
                    table: Any) -> dict[str, Any]:
    groups: dict[tuple[str, ...], list[list[str]]] = {}
    for record, tags, user in zip(done, tag_lists, users, strict=True):
        bans = tuple(sorted(str(b) for b in (record.get("request") or {}).get("ban") or [] if str(b).strip()))
        if bans:
            own = {table.canonical(t) for t in user}
            groups.setdefault(bans, []).append([t for t in tags if table.canonical(t) not in own])
    if not groups:
        return {"skipped": "no request has a ban list (pass --ban, or give 'ban' in a .jsonl prompt file)"}
    total = sum(len(g) for g in groups.values())
    try:
        value = sum(text_metrics.ban_compliance(g, list(b), canonical=table.canonical) * len(g)
                    for b, g in groups.items()) / total
    except (ValueError, TypeError) as exc:
        return {"skipped": str(exc)}
    return {"value": value, "n": total}


def _token_metrics(name: str, source: Mapping[str, Any] | None, done: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    keys = (f"{name}_tokens_mean", f"{name}_fit_rate")
    if not source or "counts" not in source:
        reason = (source or {}).get("skipped") or f"no {name.upper()} tokenizer"
        return {k: {"skipped": reason} for k in keys}
    counts = [source["counts"].get(record_key(r)) for r in done]
    if any(c is None for c in counts):
        return {k: {"skipped": f"{name.upper()} token counts are missing for some items; rerun to recount"}
                for k in keys}
    budget = text_metrics.TokenBudget(tuple(int(c) for c in counts), int(source["window"]))
    return {keys[0]: {"value": float(np.mean(budget.counts))}, keys[1]: {"value": budget.fit_rate}}
