"""The Markdown report and its plots, written from a run's results (``eval.runner.build_results``).

``report.md`` holds: the setup (prompt set, methods and their settings, images), a table of text
metrics and one of image metrics (methods as columns), the metrics that could not be computed and
why, failed items, per-item distributions as PNG plots (a histogram and a box plot per metric, one
colour per method, like the TIPO model card's figures), a few example prompts, and the definitions.

Plots use matplotlib's object API on an Agg canvas (no pyplot, no global backend change).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .summary import DISTRIBUTIONS, TEXT_METRICS

__all__ = ["IMAGE_METRICS", "plot_distribution", "render_markdown", "write_report"]

IMAGE_METRICS: dict[str, tuple[str, str]] = {
    "clip_score_input": ("CLIP score (given prompt)", "100 x mean cosine of image and the prompt as given"),
    "clip_score_prompt": ("CLIP score (rendered prompt)", "the same against the rendered prompt, cut at 77 tokens"),
    "aesthetic_mean": ("aesthetic score", "mean Aesthetic Predictor V2.5 score (SigLIP so400m)"),
    "dino_vendi": ("image Vendi (DINOv2)", "effective number of distinct images"),
    "fdd": ("FDD", "Fréchet DINOv2 distance to the reference images (lower is better)"),
    "inappropriate_image_rate": ("inappropriate images (NudeNet)",
                                 "share of images NudeNet's detector flags for exposed nudity (I2P-style; "
                                 "nudity only: no violence, gore or hate; lower is safer)"),
}
# Reference lines drawn on some plots: value -> label.
_LINES = {"clip_tokens": {77: "CLIP window (77)"}}
_UNIT_RANGE = {"known_rate"}


def _fmt(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "–"
    if "value" not in entry:
        return "n/a*"
    value = entry["value"]
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a*"
    text = f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    if entry.get("truncated"):
        text += f" ({entry['truncated']} cut)"
    return text


def plot_distribution(values: Mapping[str, Sequence[float | None]], label: str, path: Path,
                      lines: Mapping[float, str] | None = None, unit_range: bool = False,
                      band: tuple[float, float, str] | None = None) -> bool:
    """Histogram and box plot of one per-item value, one colour per method; False when there is nothing to plot.

    Example:
        >>> plot_distribution({"none": [1, 2, 2], "tipo": [5, 6, 9]}, "tags", Path("tags.png"))  # doctest: +SKIP
        True
    """
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    data = {m: np.array([v for v in vs if v is not None], dtype=float) for m, vs in values.items()}
    data = {m: v for m, v in data.items() if v.size}
    if not data:
        return False
    every = np.concatenate(list(data.values()))
    low, high = float(every.min()), float(every.max())
    if unit_range:
        low, high = min(low, 0.0), max(high, 1.0)
    if band is not None:  # bins over the band too, so bars keep their width when the axis grows to show it
        low, high = min(low, band[0]), max(high, band[1])
    integer = bool(np.all(every == np.round(every))) and not unit_range
    if integer:
        step = max(1, math.ceil((high - low + 1) / 40))
        bins = np.arange(low - 0.5, high + step + 0.5, step)
    else:
        bins = np.linspace(low, high if high > low else low + 1, 31)
    colors = [f"C{i}" for i in range(len(data))]
    height = 3.6 + 0.45 * len(data)
    fig = Figure(figsize=(11, height), dpi=100)
    # Fixed axes boxes (tight_layout costs more than the drawing): room on the left of the box plot
    # for method names of up to 28 characters.
    bottom, top = 0.55 / height, 1 - 0.55 / height
    ax_hist = fig.add_axes((0.06, bottom, 0.5, top - bottom))
    ax_box = fig.add_axes((0.76, bottom, 0.22, top - bottom))
    # Side-by-side bars per bin: no method hides another, even when two are identical.
    ax_hist.hist(list(data.values()), bins=bins, histtype="bar", rwidth=0.9, color=colors,
                 label=[f"{_short(m)} (n={v.size}, mean {v.mean():.3g})" for m, v in data.items()])
    ax_hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_hist.set_xlabel(label)
    ax_hist.set_ylabel("items")
    names = list(data)
    horizontal = {"orientation": "horizontal"} if _matplotlib_at_least(3, 10) else {"vert": False}
    box = ax_box.boxplot([data[m] for m in names], patch_artist=True, widths=0.6, medianprops={"color": "black"},
                         showfliers=False, **horizontal)
    rng = np.random.default_rng(0)  # jitter only; a local generator
    for index, (method, color) in enumerate(zip(names, colors, strict=True), 1):
        box["boxes"][index - 1].set_facecolor(color)
        box["boxes"][index - 1].set_alpha(0.35)
        vals = data[method]
        ax_box.scatter(vals, index + rng.uniform(-0.18, 0.18, vals.size), s=9, color=color, alpha=0.7, zorder=3)
    ax_box.set_yticks(range(1, len(names) + 1), [_short(m, 26) for m in names], fontsize=9)
    ax_box.invert_yaxis()
    ax_box.set_title("per method (box: quartiles)", fontsize=9)
    for ax in (ax_hist, ax_box):
        ax.grid(axis="x", alpha=0.3)
        for x, text in (lines or {}).items():
            ax.axvline(x, color="crimson", linestyle="--", linewidth=1, label=text)
        if band is not None:
            ax.axvspan(band[0], band[1], color="seagreen", alpha=0.12, label=band[2])
    ax_hist.legend(fontsize=8, loc="best")
    fig.suptitle(f"{label}: distribution per method", fontsize=12, y=1 - 0.12 / height)
    fig.savefig(path, format="png", pil_kwargs={"compress_level": 1})
    return True


def _matplotlib_at_least(major: int, minor: int) -> bool:
    import matplotlib

    parts = [int(p) for p in re.findall(r"\d+", matplotlib.__version__)[:2]]
    return tuple(parts) >= (major, minor)


def _short(method: str, width: int = 28) -> str:
    return method if len(method) <= width else method[: width - 1] + "…"


def write_report(results: Mapping[str, Any], values: Mapping[str, Mapping[str, Sequence[float | None]]],
                 out: Path) -> Path:
    """Write the plots and ``report.md`` into ``out``; returns the report's path.

    Args:
        results: the results dict (``results.json``).
        values: method -> per-item value name -> values (``summary.summarize(...)[m]["values"]``).
        out: the run folder.
    """
    plots = []
    lengths = {str((item.get("request") or {}).get("length") or "long") for item in results.get("items") or []}
    band = None
    if len(lengths) == 1:  # one asked length class for every item: shade its tag-count bounds
        from .metrics.text import LENGTH_BOUNDS

        name = lengths.pop()
        if name in LENGTH_BOUNDS:
            low, cap = LENGTH_BOUNDS[name]
            band = (low, cap, f"asked length class {name!r} ({low}-{cap})")
    for key, label in DISTRIBUTIONS.items():
        path = out / f"plot_{key}.png"
        by_method = {m: v.get(key, []) for m, v in values.items()}
        if plot_distribution(by_method, label, path, _LINES.get(key), key in _UNIT_RANGE,
                             band if key == "n_content_tags" else None):
            plots.append((label, path.name))
        elif path.exists():
            path.unlink()  # a stale plot of an earlier report
    report = out / "report.md"
    report.write_text(render_markdown(results, plots), encoding="utf-8")
    return report


def render_markdown(results: Mapping[str, Any], plots: Sequence[tuple[str, str]] = ()) -> str:
    """The report's Markdown text."""
    config = results["config"]
    methods = results["methods"]
    names = list(methods)
    pset = config["prompt_set"]
    lines = [f"# Evaluation: {pset['name']} × {', '.join(f'`{m}`' for m in names)}", ""]
    lines += ["## Setup", ""]
    lines.append(f"- Prompt set: **{pset['name']}** ({pset['items']} items"
                 + (f", `--limit {config['limit']}`" if config.get("limit") else "") + f"), spec `{pset['spec']}`, "
                 f"digest `{pset['digest'][:12]}`.")
    lines.append(f"- Base seed: {config['seed']} (per-item seeds derive from it and the item id; every method uses "
                 "the same seed for an item).")
    if config.get("request_defaults"):
        defaults = ", ".join(f"{k}={v!r}" for k, v in config["request_defaults"].items())
        lines.append(f"- Request defaults: {defaults}.")
    for name, desc in config["methods"].items():
        lines.append(f"- Method `{name}`: " + (", ".join(f"{k}={_inline(v)}" for k, v in desc.items()) or "the prompt as given") + ".")
    images = config.get("images")
    lines.append("- Images: " + ("none (text metrics only)." if not images else
                                 ", ".join(f"{k}={v}" for k, v in images.items() if v is not None) + "."))
    scoring = results.get("scoring") or {}
    for name, entry in (scoring.get("tokens") or {}).items():
        lines.append(f"- {name.upper()} tokenizer: " + (f"`{entry['source']}` (window {entry['window']})."
                                                          if "source" in entry else f"skipped: {entry.get('skipped')}."))
    for name, source in ((scoring.get("image") or {}).get("sources") or {}).items():
        lines.append(f"- {name} model: `{source}`.")
    lines += ["", "## Text metrics", ""]
    lines += _table(names, methods, TEXT_METRICS, "metrics", extra_rows=[
        ("items (finished / failed)", [f"{methods[m]['finished']} / {methods[m]['failed']}" for m in names])])
    image_rows = {k: v for k, v in IMAGE_METRICS.items() if any(k in methods[m].get("image_metrics", {}) for m in names)}
    lines += ["", "## Image metrics", ""]
    if image_rows:
        lines += _table(names, methods, image_rows, "image_metrics")
    else:
        reason = (scoring.get("image") or {}).get("skipped") or "no image metrics were computed"
        lines.append(f"Not computed: {reason}.")
    skipped = [(m, key, entry["skipped"]) for m in names for group in ("metrics", "image_metrics")
               for key, entry in methods[m].get(group, {}).items() if "skipped" in entry]
    if skipped:
        lines += ["", "## Not computed (n/a*)", ""]
        by_reason: dict[tuple[str, str], list[str]] = {}
        for m, key, reason in skipped:
            by_reason.setdefault((key, reason), []).append(m)
        for (key, reason), ms in by_reason.items():
            label = (TEXT_METRICS.get(key) or IMAGE_METRICS.get(key) or (key,))[0]
            lines.append(f"- **{label}** for {', '.join(f'`{m}`' for m in ms)}: {reason}")
    failures = [(m, f) for m in names for f in methods[m].get("failures", [])]
    if failures:
        lines += ["", "## Failed items", "", "Failed items are left out of the metrics and retried on the next run.", ""]
        for m, f in failures[:20]:
            lines.append(f"- `{m}` / `{f['item']}`: {f['error']}")
    if plots:
        lines += ["", "## Distributions", ""]
        for label, file in plots:
            lines += [f"![{label}]({file})", ""]
    lines += ["", "## Examples", ""]
    lines += _examples(results.get("items") or [], names)
    lines += ["", "## Definitions", ""]
    for key, (label, how) in {**TEXT_METRICS, **IMAGE_METRICS}.items():
        lines.append(f"- **{label}** (`{key}`): {how}.")
    lines.append("- Tags are split from the rendered prompt (tipo and kgen report them; for `none` and `cmd:` "
                 "outputs a line is tags when it has no sentence punctuation and a comma or one known tag).")
    return "\n".join(lines).rstrip() + "\n"


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + " ".join(str(v) for v in value) + "]"
    return str(value)


def _table(names: Sequence[str], methods: Mapping[str, Any], rows: Mapping[str, tuple[str, str]], group: str,
           extra_rows: Sequence[tuple[str, Sequence[str]]] = ()) -> list[str]:
    head = "| metric | " + " | ".join(f"`{_short(m, 40)}`" for m in names) + " |"
    lines = [head, "|---|" + "---:|" * len(names)]
    for label, cells in extra_rows:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for key, (label, _) in rows.items():
        lines.append(f"| {label} | " + " | ".join(_fmt(methods[m].get(group, {}).get(key)) for m in names) + " |")
    return lines


def _examples(items: Sequence[Mapping[str, Any]], names: Sequence[str], count: int = 3) -> list[str]:
    by_item: dict[str, dict[str, Mapping[str, Any]]] = {}
    order: list[str] = []
    for record in items:
        if record["item"] not in by_item:
            order.append(record["item"])
        by_item.setdefault(record["item"], {})[record["method"]] = record
    lines: list[str] = []
    for item in order[:count]:
        first = next(iter(by_item[item].values()))
        lines += [f"**{item}** (seed {first.get('seed')}): `{_clip(first.get('text', ''), 200)}`", ""]
        for m in names:
            record = by_item[item].get(m)
            if record is None:
                continue
            text = record["error"] if record.get("error") else (record.get("output") or {}).get("prompt", "")
            lines += [f"- `{_short(m, 40)}`" + (" (failed)" if record.get("error") else "") + ":", "",
                      "  ```text", *("  " + line for line in _clip(text, 600).splitlines() or [""]), "  ```", ""]
    return lines or ["No finished item."]


def _clip(text: str, width: int) -> str:
    text = "".join(ch if ch.isprintable() or ch == "\n" else "\ufffd" for ch in str(text))
    return text if len(text) <= width else text[: width - 1] + "…"
