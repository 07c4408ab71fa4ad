"""Prompt text to the embeddings a diffusers pipeline takes: chunked, weighted, fitted.

* SD 1.x/2.x: the prompt is cut into 75-token chunks (:func:`tipo.image.prompts.chunk_tokens`),
  each encoded as its own 77-token CLIP window (BOS, tokens, EOS, padding: the layout diffusers
  uses, so a short unweighted prompt gives exactly diffusers' own embeddings) and the windows
  concatenated. Weights multiply the token embeddings, then each chunk is rescaled to its
  original mean (as A1111 does). The negative prompt is padded with empty chunks to the same
  length (or the prompt, when the negative is longer).
* SDXL: the same with both encoders (penultimate layer, concatenated features). The pooled
  embedding comes from the first chunk of ``pooled_text`` (the user's own prompt by default,
  so a long expansion cannot take it over); an empty negative gives zeros when the pipeline
  says ``force_zeros_for_empty_prompt``, as diffusers does.
* DeepFloyd IF: T5 reads one window of 77 tokens (diffusers' ``IFPipeline.encode_prompt`` fixes
  ``max_length = 77``); the prompt is lower-cased as IF's pipeline does, and the longest head
  that ends at a comma is kept. The x4 upscaler's CLIP gets the same kind of fitted text.

Every encoding reports, per encoder, the chunks used, the tokens, and the text cut, if any.

Example:
    >>> from tipo.image.testing import tiny_sd_pipeline  # doctest: +SKIP
    >>> e = encode_prompt(tiny_sd_pipeline(), ", ".join(["long hair"] * 80))  # doctest: +SKIP
    >>> e.prompt_embeds.shape, e.reports[0].chunks  # doctest: +SKIP
    (torch.Size([1, 231, 32]), 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import RequestError
from .kinds import PipelineKind, parse_kind
from .prompts import COMMA_BACKTRACK, PromptText, Segment, Token, chunk_tokens, fit_tokens, split_prompt

__all__ = ["CLIP_LENGTH", "T5_LENGTH", "EncoderReport", "PromptEmbeds", "encode_prompt", "encode_upscaler_prompt",
           "pipeline_kind", "tokenize"]

CLIP_LENGTH = 77
#: diffusers' IFPipeline.encode_prompt hard-codes max_length = 77 ("the text encoder was trained
#: with a max length of 77 for IF"), so that is IF's budget, EOS included.
T5_LENGTH = 77


@dataclass(frozen=True)
class EncoderReport:
    """What one text encoder read of the prompt.

    Attributes:
        encoder: ``clip`` (SD), ``clip-l``/``clip-g`` (SDXL), ``t5`` (IF), ``upscaler-clip``.
        chunks: windows used (1 for single-window encoders).
        tokens: prompt tokens read, without BOS/EOS/padding.
        cut: the text that did not fit (single-window encoders only); empty when all fit.
        weighted: whether attention weights other than 1 were applied.
    """

    encoder: str
    chunks: int
    tokens: int
    cut: str = ""
    weighted: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"encoder": self.encoder, "chunks": self.chunks, "tokens": self.tokens, "cut": self.cut,
                "weighted": self.weighted}


@dataclass
class PromptEmbeds:
    """Embeddings for one prompt and its negative, ready for a pipeline call, plus the reports."""

    prompt_embeds: Any
    negative_prompt_embeds: Any
    pooled_prompt_embeds: Any = None
    negative_pooled_prompt_embeds: Any = None
    reports: tuple[EncoderReport, ...] = ()
    ignored: tuple[str, ...] = ()  # extra-network tags (<lora:...>) left out of the text
    extra: tuple[Any, ...] = ()  # embeddings of extra texts (SLD's safety concept), same length

    def call_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the pipeline call."""
        kw = {"prompt_embeds": self.prompt_embeds, "negative_prompt_embeds": self.negative_prompt_embeds}
        if self.pooled_prompt_embeds is not None:
            kw["pooled_prompt_embeds"] = self.pooled_prompt_embeds
            kw["negative_pooled_prompt_embeds"] = self.negative_pooled_prompt_embeds
        return kw


def tokenize(tokenizer: Any, segment: Segment) -> list[Token]:
    """The tokens of one segment (no BOS/EOS), each with its weight, span and comma flag.

    Fast tokenizers give character offsets; a slow one is called piece by piece (runs of one
    weight, commas apart), which CLIP's word-level BPE tokenises the same way.
    """
    text = segment.text
    if not text:
        return []
    last = len(text) - 1
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        out = []
        for tid, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
            out.append(Token(int(tid), segment.weights[min(s, last)], s, e, "," in text[s:e]))
        return out
    out = []
    start = 0
    for i in range(1, len(text) + 1):
        boundary = i == len(text) or text[i] == "," or text[i - 1] == "," or segment.weights[i] != segment.weights[i - 1]
        if not boundary:
            continue
        piece = text[start:i]
        for tid in tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"]:
            out.append(Token(int(tid), segment.weights[start], start, i, "," in piece))
        start = i
    return out


def _window_length(tokenizer: Any, default: int) -> int:
    n = getattr(tokenizer, "model_max_length", default) or default
    return int(n) if n < 100_000 else default


class _Encoder:
    """One tokenizer + text encoder pair, with the window layout diffusers uses."""

    def __init__(self, tokenizer: Any, text_encoder: Any, device: Any, *, name: str, penultimate: bool = False,
                 t5: bool = False, clip_skip: int = 1) -> None:
        if tokenizer is None or text_encoder is None:
            raise RequestError(f"the pipeline has no {name} tokenizer/text encoder; load it with its text encoder")
        self.tokenizer, self.encoder, self.device = tokenizer, text_encoder, device
        self.name, self.penultimate, self.t5 = name, penultimate, t5
        self.clip_skip = clip_skip
        self.length = T5_LENGTH if t5 else _window_length(tokenizer, CLIP_LENGTH)
        self.bos = None if t5 else tokenizer.bos_token_id
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.window = self.length - (1 if t5 else 2)
        config = getattr(text_encoder, "config", None)
        self.use_mask = t5 or bool(getattr(config, "use_attention_mask", False))

    def tokens(self, segment: Segment) -> list[Token]:
        return tokenize(self.tokenizer, segment.lower() if self.t5 else segment)

    def layout(self, text: PromptText, backtrack: int) -> list[list[Token]]:
        return [c for seg in text.segments for c in chunk_tokens(self.tokens(seg), self.window, backtrack)]

    def fit(self, text: PromptText) -> tuple[list[Token], str]:
        segment = text.joined()
        tokens = self.tokens(segment)
        kept, cut = fit_tokens(tokens, self.window)
        if cut is None or cut >= len(tokens):
            return kept, ""
        source = segment.lower().text if self.t5 else segment.text
        return kept, source[tokens[cut].start:].strip()

    def embed(self, chunks: list[list[Token]], n_chunks: int) -> tuple[Any, Any]:
        """(hidden states (1, n_chunks * length, dim), pooled output of the first chunk or None)."""
        import torch

        chunks = list(chunks) + [[] for _ in range(max(1, n_chunks) - len(chunks))]
        ids, weights, masks = [], [], []
        for chunk in chunks:
            row = ([] if self.bos is None else [self.bos]) + [t.id for t in chunk] + [self.eos]
            w = ([] if self.bos is None else [1.0]) + [t.weight for t in chunk] + [1.0]
            masks.append([1] * len(row) + [0] * (self.length - len(row)))
            ids.append(row + [self.pad] * (self.length - len(row)))
            weights.append(w + [1.0] * (self.length - len(w)))
        ids_t = torch.tensor(ids, dtype=torch.long, device=self.device)
        kwargs: dict[str, Any] = {}
        if self.use_mask:
            kwargs["attention_mask"] = torch.tensor(masks, dtype=torch.long, device=self.device)
        if self.penultimate or self.clip_skip > 1:
            kwargs["output_hidden_states"] = True
        with torch.no_grad():
            out = self.encoder(ids_t, **kwargs)
            back = self.clip_skip + (1 if self.penultimate else 0)
            if "output_hidden_states" in kwargs and back > len(out.hidden_states):
                raise RequestError(f"clip_skip={self.clip_skip} is more than the {self.name} text encoder's "
                                   f"{len(out.hidden_states) - 1} layers allow")
            if self.penultimate:  # SDXL: clip_skip 1 is the penultimate layer, as SDXL was trained
                hidden = out.hidden_states[-(self.clip_skip + 1)]
            elif self.clip_skip > 1:  # A1111's "Clip skip" N: layer -N, then the final layer norm
                model = getattr(self.encoder, "text_model", self.encoder)
                hidden = model.final_layer_norm(out.hidden_states[-self.clip_skip])
            else:
                hidden = out[0]
        pooled = out[0][:1] if out[0].ndim == 2 else None
        w_t = torch.tensor(weights, dtype=hidden.dtype, device=hidden.device)
        if not bool(torch.all(w_t == 1)):
            # A1111: multiply by the weights, then restore each chunk's original mean.
            original = hidden.mean(dim=(1, 2), keepdim=True)
            hidden = hidden * w_t.unsqueeze(-1)
            hidden = hidden * (original / hidden.mean(dim=(1, 2), keepdim=True))
        return hidden.reshape(1, -1, hidden.shape[-1]), pooled


def pipeline_kind(pipeline: Any) -> PipelineKind:
    """The kind of a loaded pipeline object (or IF cascade)."""
    from .kinds import kind_of_class

    stage1 = getattr(pipeline, "stage1", None)
    if stage1 is not None:
        return PipelineKind.IF
    return kind_of_class(type(pipeline).__name__)


def _device(pipeline: Any) -> Any:
    return getattr(pipeline, "_execution_device", None) or pipeline.device


def encode_prompt(pipeline: Any, prompt: str, negative: str = "", *, kind: PipelineKind | str | None = None,
                  pooled_text: str | None = None, backtrack: int = COMMA_BACKTRACK,
                  extra: tuple[str, ...] = (), clip_skip: int = 1) -> PromptEmbeds:
    """Encode a prompt (host syntax) and its negative for ``pipeline``: chunked, weighted or fitted.

    Args:
        pipeline: a StableDiffusion, StableDiffusionXL or IF (stage I) pipeline, or an IF cascade.
        prompt, negative: the texts, with A1111 weight syntax and BREAK.
        kind: the pipeline kind; None reads it from the pipeline's class.
        pooled_text: SDXL only: the text whose first chunk gives the pooled embedding (None:
            the prompt itself).
        backtrack: how far back a chunk may end at a comma (SD/SDXL).
        extra: more texts encoded like the prompt and cut or padded to its chunk count (SLD's concept).
        clip_skip: A1111's "Clip skip" (SD, SDXL): 1 is the usual layer; N reads N - 1 layers earlier
            (diffusers' ``clip_skip=N - 1`` gives the same embeddings).

    Returns:
        A :class:`PromptEmbeds`; ``call_kwargs()`` gives the pipeline-call arguments.
    """
    kind = parse_kind(kind) or pipeline_kind(pipeline)
    pipe = getattr(pipeline, "stage1", None) or pipeline
    pos, neg = split_prompt(prompt), split_prompt(negative)
    device = _device(pipe)
    if kind is PipelineKind.IF:
        if clip_skip != 1:
            raise RequestError("clip_skip is for the CLIP encoders of SD and SDXL; DeepFloyd IF reads T5")
        enc = _Encoder(pipe.tokenizer, pipe.text_encoder, device, name="t5", t5=True)
        kept, cut = enc.fit(pos)
        neg_kept, _ = enc.fit(neg)
        report = EncoderReport("t5", 1, len(kept), cut, pos.weighted)
        return PromptEmbeds(enc.embed([kept], 1)[0], enc.embed([neg_kept], 1)[0], reports=(report,),
                            ignored=pos.extras)
    if kind is PipelineKind.SD:
        enc = _Encoder(pipe.tokenizer, pipe.text_encoder, device, name="clip", clip_skip=clip_skip)
        layouts = [enc.layout(pos, backtrack), enc.layout(neg, backtrack)]
        n = max(1, *(len(lay) for lay in layouts))
        # Extra texts (SLD's concept) take the prompt's length: cut to n chunks, never the reverse,
        # so switching SLD on does not pad the prompt itself.
        layouts += [enc.layout(split_prompt(t), backtrack)[:n] for t in extra]
        hidden = [enc.embed(lay, n)[0] for lay in layouts]
        report = EncoderReport("clip", max(1, len(layouts[0])), sum(map(len, layouts[0])), "", pos.weighted)
        return PromptEmbeds(hidden[0], hidden[1], reports=(report,), ignored=pos.extras, extra=tuple(hidden[2:]))
    if extra:
        raise RequestError("extra texts are only for Stable Diffusion 1.x/2.x pipelines (SLD)")
    # SDXL: both encoders, penultimate layer, features concatenated; pooled from encoder 2.
    encoders = [_Encoder(pipe.tokenizer, pipe.text_encoder, device, name="clip-l", penultimate=True,
                         clip_skip=clip_skip),
                _Encoder(pipe.tokenizer_2, pipe.text_encoder_2, device, name="clip-g", penultimate=True,
                         clip_skip=clip_skip)]
    zero_negative = not negative.strip() and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
    pairs = [(e.layout(pos, backtrack), e.layout(neg, backtrack)) for e in encoders]
    n = max(1, *(len(lay) for pair in pairs for lay in pair))
    pos_parts, neg_parts = [], []
    pooled = neg_pooled = None
    for e, (pos_lay, neg_lay) in zip(encoders, pairs, strict=True):
        h, p = e.embed(pos_lay, n)
        pos_parts.append(h)
        pooled = p if p is not None else pooled
        h, p = e.embed(neg_lay, n)
        neg_parts.append(h)
        neg_pooled = p if p is not None else neg_pooled
    import torch

    prompt_embeds = torch.cat(pos_parts, dim=-1)
    negative_embeds = torch.cat(neg_parts, dim=-1)
    if pooled is None:
        raise RequestError("the SDXL pipeline's second text encoder gives no pooled output "
                           "(it should be a CLIPTextModelWithProjection)")
    if pooled_text is not None and pooled_text != prompt:
        user = encoders[1].layout(split_prompt(pooled_text), backtrack)
        pooled = encoders[1].embed(user[:1], 1)[1]
    if zero_negative:
        negative_embeds = torch.zeros_like(prompt_embeds)
        neg_pooled = torch.zeros_like(pooled)
    reports = tuple(EncoderReport(e.name, max(1, len(pos_lay)), sum(map(len, pos_lay)), "", pos.weighted)
                    for e, (pos_lay, _) in zip(encoders, pairs, strict=True))
    return PromptEmbeds(prompt_embeds, negative_embeds, pooled, neg_pooled, reports=reports, ignored=pos.extras)


def encode_upscaler_prompt(upscaler: Any, prompt: str, negative: str = "") -> PromptEmbeds:
    """Embeddings for the x4 upscaler: one CLIP window, the prompt cut at a comma to fit."""
    enc = _Encoder(upscaler.tokenizer, upscaler.text_encoder, _device(upscaler), name="upscaler-clip")
    pos, neg = split_prompt(prompt), split_prompt(negative)
    kept, cut = enc.fit(pos)
    neg_kept, _ = enc.fit(neg)
    report = EncoderReport("upscaler-clip", 1, len(kept), cut, pos.weighted)
    return PromptEmbeds(enc.embed([kept], 1)[0], enc.embed([neg_kept], 1)[0], reports=(report,), ignored=pos.extras)
