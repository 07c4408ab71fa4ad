"""The web UI: ``tipo ui`` serves a Gradio app on 127.0.0.1 for trying tipo in a browser.

Tags and a caption in; every option of :data:`tipo.options.OPTIONS` is a widget generated from its
declaration (kind, default, bounds, choices, help); out come the rendered prompt, the tags and the
caption (each copyable), the seed used, and what the safety layer and the ban list changed. Given
an image pipeline (``tipo ui --pipeline PATH``), the expansion is also rendered into images shown
with their parameters.

One :class:`WebApp` loads each model once (an :class:`~tipo.pool.ExpanderPool`) and serves every
browser session; each request carries its own seed (a fresh one per click when the seed is -1),
so concurrent users never share or shift each other's seeds. Progress is shown per token, *Stop*
cancels the session's running expansion between tokens (the library's ``cancel`` hook), and
Gradio's HTTP API is exposed (``/gradio_api/info``, endpoint ``/expand``) for programs.

Install with ``pip install 'tipo-prompt[ui]'`` (Gradio) plus ``[llama]`` for the models.

Example:
    >>> app = WebApp()                          # doctest: +SKIP
    >>> app.expand({"tags": "1girl, forest", "seed": 1}).seed  # doctest: +SKIP
    1
    >>> app.blocks().launch()                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import RequestError, TipoError, require
from .options import OPTIONS, Dest, Kind, Option, by_name
from .pool import ExpanderPool
from .registry import BUILTIN

__all__ = ["HOST", "Outcome", "WebApp", "gradio_component", "serve"]

HOST = "127.0.0.1"
#: The image settings shown when a pipeline is given (not TIPO options: the diffusion run's own).
IMAGE_DEFAULTS = {"images": 1, "steps": 20, "negative": ""}


@dataclass(frozen=True)
class Outcome:
    """What one expansion shows: the texts, the seed, the changes, the images."""

    prompt: str
    tags: str
    caption: str
    seed: int
    changes: str  # what the safety layer, the protocol guard, trimming and the ban list changed
    details: dict[str, object] = field(default_factory=dict)  # the result's to_dict (model, plan, timings)
    images: list[tuple[Any, str]] = field(default_factory=list)  # (PIL image, its parameters text)


def _plain(value: object) -> object:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def describe_changes(result: Any) -> str:
    """What was changed on the way from the model's text to the result, for people to read."""
    lines = []
    safety = getattr(result, "safety", None)  # the safety layer's report, where this version has one
    if safety:
        data = _plain(safety)
        lines.append("safety: " + (json.dumps(data, ensure_ascii=False, default=str)
                                   if not isinstance(data, str) else data))
    prov = getattr(result, "provenance", None)
    for name, title in (("neutralised", "your text rewritten so it cannot read as protocol"),
                        ("trimmed", "cut from the input to fit the context")):
        items = getattr(prov, name, ()) or ()
        if items:
            lines.append(f"{title}: " + "; ".join(map(str, items)))
    dropped = getattr(result, "dropped", ()) or ()
    if dropped:
        lines.append("dropped (banned or over the length cap): " + ", ".join(map(str, dropped)))
    return "\n".join(lines) or "nothing was changed"


class WebApp:
    """The web app's state: the model pool, the optional image pipeline, the running requests.

    Args:
        model, backend: the model selected when the page opens (None: the built-in model).
        pipeline: a diffusers pipeline (or a folder / Hub id for :func:`tipo.image.load_pipeline`);
            None shows no image section.
        n_threads, known_tags_only: passed to each :class:`~tipo.Expander`.
        preload: load the default model now, so a bad model fails at start, not on the first click.
    """

    def __init__(self, model: str | None = None, backend: str = "auto", *, pipeline: Any = None,
                 n_threads: int | None = None, known_tags_only: bool | None = None, capacity: int = 2,
                 preload: bool = True) -> None:
        self.model = model or BUILTIN.name
        self.backend = backend
        self.pool = ExpanderPool(capacity=capacity)
        self._load_options: dict[str, Any] = {"n_threads": n_threads, "known_tags_only": known_tags_only}
        if isinstance(pipeline, str):
            from .image import load_pipeline

            pipeline = load_pipeline(pipeline)
        self.pipeline = pipeline
        self._cancels: dict[str, threading.Event] = {}
        self._cancels_lock = threading.Lock()
        if preload:
            self.expander(self.model, backend)

    # -- the work --------------------------------------------------------------------------------
    def expander(self, model: str, backend: str) -> Any:
        return self.pool.get(model or None, backend or "auto", **self._load_options)

    def expand(self, values: Mapping[str, object], *, cancel: Any = None,
               progress: Callable[[int, int], None] | None = None,
               image: Mapping[str, object] | None = None) -> Outcome:
        """Expand one request given as option values (missing ones: their defaults).

        ``image`` (with a pipeline): ``images``, ``steps``, ``negative``.
        """
        unknown = set(values) - {o.name for o in OPTIONS}
        if unknown:
            raise RequestError(f"unknown option(s) {sorted(unknown)}; valid: {[o.name for o in OPTIONS]}")
        from .settings import from_values

        asked = from_values({"model": self.model, "backend": self.backend, **values})
        loading = {**asked.loading, **{k: v for k, v in self._load_options.items() if v is not None}}
        expander = self.pool.get(loading.pop("model"), loading.pop("backend"), loading.pop("device"), **loading)
        result = expander.expand(asked.request, asked.sampling, **asked.expand, cancel=cancel, progress=progress)
        seed = int(result.seed or 0)
        images: list[tuple[Any, str]] = []
        if self.pipeline is not None and image is not None and int(image.get("images", 0) or 0) > 0:  # type: ignore[call-overload]
            from .image import generate

            run = generate(result, self.pipeline, n=int(image["images"]),  # type: ignore[call-overload]
                           steps=int(image.get("steps") or IMAGE_DEFAULTS["steps"]),  # type: ignore[call-overload]
                           negative=str(image.get("negative") or ""), seed=seed)
            images = [(img, rec.parameters) for img, rec in zip(run.images, run.records, strict=True)]
        return Outcome(result.prompt, result.tags_text, result.caption_text, seed, describe_changes(result),
                       result.to_dict(timings=True), images)

    def cancel_event(self, session: str) -> threading.Event:
        """A fresh cancel event for a session's new request (Stop sets it)."""
        event = threading.Event()
        with self._cancels_lock:
            self._cancels[session] = event
        return event

    def stop(self, session: str) -> None:
        with self._cancels_lock:
            event = self._cancels.get(session)
        if event is not None:
            event.set()

    def forget(self, session: str, event: threading.Event) -> None:
        with self._cancels_lock:
            if self._cancels.get(session) is event:
                del self._cancels[session]

    # -- the page --------------------------------------------------------------------------------
    def model_choices(self) -> list[str]:
        from .registry import list_models

        rows = list_models()
        choices = [self.model] + [r.name for r in rows if r.where != "(missing)" or r.kind != "built-in"]
        return list(dict.fromkeys(choices))

    def blocks(self) -> Any:
        """The Gradio page (``.launch()`` it, or mount it in a FastAPI app)."""
        gr = require("gradio", "ui", "The web UI")
        names = [o.name for o in OPTIONS]
        with gr.Blocks(title="tipo") as page:
            gr.Markdown("# tipo\nExpand tags and a caption into a richer text-to-image prompt.")
            widgets: dict[str, Any] = {}
            with gr.Row():
                with gr.Column(scale=3):
                    for name in ("tags", "caption", "seed"):
                        widgets[name] = gradio_component(by_name(name), gr, elem_id=f"tipo-{name}")
                    with gr.Row():
                        run = gr.Button("Expand", variant="primary", elem_id="tipo-expand")
                        stop = gr.Button("Stop", elem_id="tipo-stop")
                    for dests, title in (((Dest.REQUEST, Dest.EXPAND), "Request"), ((Dest.SAMPLING,), "Sampling"),
                                         ((Dest.LOADING, Dest.HOST), "Model")):
                        with gr.Accordion(title, open=Dest.REQUEST in dests):
                            for o in OPTIONS:
                                if o.dest in dests and o.name not in widgets:
                                    overrides: dict[str, Any] = {"elem_id": f"tipo-{o.name}"}
                                    if o.name == "model":
                                        overrides.update(value=self.model, choices=self.model_choices())
                                    if o.name == "backend":
                                        overrides["value"] = self.backend
                                    widgets[o.name] = gradio_component(o, gr, **overrides)
                    image_widgets: list[Any] = []
                    if self.pipeline is not None:
                        with gr.Accordion("Images", open=True):
                            image_widgets = [
                                gr.Slider(0, 8, step=1, value=IMAGE_DEFAULTS["images"], label="Images",
                                          elem_id="tipo-images"),
                                gr.Slider(1, 150, step=1, value=IMAGE_DEFAULTS["steps"], label="Steps",
                                          elem_id="tipo-steps"),
                                gr.Textbox(value="", label="Negative prompt", elem_id="tipo-negative"),
                            ]
                with gr.Column(scale=3):
                    out_prompt = _copyable(gr, label="Prompt", lines=6, elem_id="tipo-out-prompt")
                    out_tags = _copyable(gr, label="Tags", lines=3, elem_id="tipo-out-tags")
                    out_caption = _copyable(gr, label="Caption", lines=3, elem_id="tipo-out-caption")
                    out_seed = gr.Number(label="Seed used", precision=0, interactive=False, elem_id="tipo-out-seed")
                    out_changes = gr.Textbox(label="What was changed (safety layer, protocol guard, trimming, bans)",
                                             lines=2, interactive=False, elem_id="tipo-out-changes")
                    out_images = gr.Gallery(label="Images", visible=self.pipeline is not None, elem_id="tipo-images-out")
                    with gr.Accordion("Details", open=False):
                        out_details = gr.JSON(label="Result", elem_id="tipo-out-details")

            app = self

            def on_expand(*args: Any, request: Any = None, progress: Any = None) -> tuple[Any, ...]:
                values = dict(zip(names, args[: len(names)], strict=True))
                image = dict(zip(IMAGE_DEFAULTS, args[len(names):], strict=False)) if image_widgets else None
                session = getattr(request, "session_hash", None) or "api"
                event = app.cancel_event(session)

                def report(n: int, total: int) -> None:
                    if progress is not None:
                        progress((n, total), desc="writing", unit="tokens")

                try:
                    out = app.expand(values, cancel=event, progress=report, image=image)
                except TipoError as exc:
                    raise gr.Error(str(exc), duration=None) from None
                finally:
                    app.forget(session, event)
                return (out.prompt, out.tags, out.caption, out.seed, out.changes, out.images, out.details)

            def handler(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
                # Gradio passes the inputs, then the request and the progress tracker it injects
                # (see _signature); pick those two out by type.
                given = list(args) + list(kwargs.values())
                request = next((a for a in given if isinstance(a, gr.Request)), None)
                tracker = next((a for a in given if isinstance(a, gr.Progress)), None)
                values = [a for a in args if not isinstance(a, gr.Request | gr.Progress)]
                return on_expand(*values, request=request, progress=tracker)

            handler.__signature__ = _signature(names + list(IMAGE_DEFAULTS)[: len(image_widgets)], gr)  # type: ignore[attr-defined]

            def on_stop(*args: Any) -> None:
                request = next((a for a in args if isinstance(a, gr.Request)), None)
                app.stop(getattr(request, "session_hash", None) or "api")

            on_stop.__signature__ = _signature([], gr, progress=False)  # type: ignore[attr-defined]

            run.click(handler, inputs=[widgets[n] for n in names] + image_widgets,
                      outputs=[out_prompt, out_tags, out_caption, out_seed, out_changes, out_images, out_details],
                      api_name="expand", concurrency_limit=None)
            stop.click(on_stop, inputs=None, outputs=None, api_name="stop", queue=False)
        return page


def _signature(names: list[str], gr: Any, progress: bool = True) -> inspect.Signature:
    """``handler(tags, caption, …, request: gr.Request, progress=gr.Progress())``: Gradio reads the
    signature to name the API's parameters after the options and to inject the request (for the
    session) and the progress tracker."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter(name, kind) for name in names]
    params.append(inspect.Parameter("request", kind, annotation=gr.Request, default=None))
    if progress:
        params.append(inspect.Parameter("progress", kind, default=gr.Progress()))
    return inspect.Signature(params)


def _copyable(gr: Any, **kwargs: Any) -> Any:
    """A read-only text box with a copy button (Gradio 6: ``buttons``; Gradio 5: ``show_copy_button``)."""
    accepted = inspect.signature(gr.Textbox.__init__).parameters
    if "buttons" in accepted:
        kwargs["buttons"] = ["copy"]
    elif "show_copy_button" in accepted:
        kwargs["show_copy_button"] = True
    return gr.Textbox(interactive=False, **kwargs)


def gradio_component(option: Option, gr: Any, **overrides: Any) -> Any:
    """The Gradio input for one option, from its declaration: kind -> component, default, bounds,
    choices, help as the info line. ``overrides`` replace any keyword (``value``, ``choices``...)."""
    common: dict[str, Any] = {"label": option.label, "info": option.help, "value": option.widget_text(option.default)}
    if option.name == "model":
        kw = {**common, "choices": [], "allow_custom_value": True, **overrides}
        return gr.Dropdown(**kw)
    if option.kind is Kind.CHOICE:
        return gr.Dropdown(**{**common, "choices": list(option.choices), **overrides})
    if option.kind is Kind.BOOL:
        return gr.Checkbox(**{**common, **overrides})
    if option.kind in (Kind.TEXT, Kind.MULTILINE):
        lines = 3 if option.kind is Kind.MULTILINE else 1
        return gr.Textbox(**{**common, "lines": lines, **overrides})
    bounds = {"minimum": option.widget_min, "maximum": option.widget_max}
    if option.kind is Kind.INT and (option.max is None or option.max > 10**6):  # seeds, threads: typed, not slid
        return gr.Number(**{**common, **bounds, "precision": 0, **overrides})
    step = option.step if option.step is not None else (1 if option.kind is Kind.INT else 0.01)
    return gr.Slider(**{**common, **bounds, "step": step, **overrides})


def serve(app: WebApp, port: int = 7860, host: str = HOST, *, block: bool = True, quiet: bool = False) -> Any:
    """Launch the page on ``host:port`` (127.0.0.1 by default; nothing is shared publicly)."""
    page = app.blocks()
    page.queue(default_concurrency_limit=None)
    page.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block, quiet=quiet,
                inbrowser=False)
    return page
