"""Tiny random diffusers pipelines built in code, for tests and benchmarks (no downloads).

Every builder uses the real diffusers and transformers classes with tiny configs, seeds its
weights inside ``torch.random.fork_rng`` (the caller's global generator is left untouched) and
returns components in eval mode (IF's T5 has dropout). A 2-step 32 px image takes about 0.1 s
on a CPU. The tokenizers are real too: a byte-level CLIP BPE with a few hundred merges learnt
from a built-in word list, and a T5 (Unigram) tokenizer over a small piece list.

Example:
    >>> from tipo.image.testing import tiny_sd_pipeline  # doctest: +SKIP
    >>> pipe = tiny_sd_pipeline(seed=0)  # doctest: +SKIP
    >>> pipe("1girl, forest", num_inference_steps=2).images[0].size  # doctest: +SKIP
    (32, 32)
"""

from __future__ import annotations

import collections
import string
from pathlib import Path
from typing import Any

__all__ = [
    "CORPUS",
    "save_tiny_sd",
    "tiny_clip_tokenizer",
    "tiny_if_pipelines",
    "tiny_safety_checker",
    "tiny_sd_pipeline",
    "tiny_sdxl_pipeline",
    "tiny_t5_tokenizer",
]

#: The words the tiny tokenizers know best (danbooru-style tags and caption words).
CORPUS = (
    "1girl 1boy solo long hair short hair smile looking at viewer blue eyes green eyes red eyes "
    "blonde hair black hair white hair dress shirt skirt standing sitting outdoors indoors forest "
    "tree trees sky cloud clouds day night sunlight water river lake mountain flower flowers grass "
    "masterpiece best quality absurdres highres newest safe sensitive general scenery landscape "
    "a girl stands in the forest with her hair in the wind the sky is blue and the trees are green "
    "she is smiling and looking at the viewer light shines through the leaves"
)

_WORDS = tuple(CORPUS.split())


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _learn_merges(words: tuple[str, ...], n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE merge learning with CLIP's end-of-word suffix (deterministic tie-break)."""
    counts: collections.Counter[tuple[str, ...]] = collections.Counter()
    for w in words:
        counts[tuple(w[:-1]) + (w[-1] + "</w>",)] += 1
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for seq, c in counts.items():
            for a, b in zip(seq, seq[1:]):  # noqa: B905 - lengths differ by one on purpose
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        merged: collections.Counter[tuple[str, ...]] = collections.Counter()
        for seq, c in counts.items():
            out: list[str] = []
            i = 0
            while i < len(seq):
                if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            merged[tuple(out)] += c
        counts = merged
    return merges


def tiny_clip_tokenizer(pad_token: str | None = None, n_merges: int = 200):  # noqa: ANN201
    """A byte-level CLIP tokenizer with ``n_merges`` merges learnt from :data:`CORPUS`.

    ``pad_token="!"`` gives SDXL's second-tokenizer padding; the default pads with EOS (SD 1.x).
    """
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges = _learn_merges(_WORDS, n_merges)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # the highest id, as in CLIP
    kw: dict[str, Any] = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, **kw)


def tiny_t5_tokenizer():  # noqa: ANN201
    """A T5 (Unigram) tokenizer: every character of ASCII, plus the corpus words as whole pieces."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    for c in string.ascii_lowercase + string.digits + string.punctuation:
        pieces.append((c, -5.0))
        pieces.append(("▁" + c, -5.5))
    for w in sorted(set(_WORDS)):
        if len(w) > 1:
            pieces.append(("▁" + w, -2.0))
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=77)


def _clip_text_config(tokenizer, hidden: int = 32, layers: int = 2, projection: int = 32):  # noqa: ANN001, ANN202
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=projection, hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, layer_norm_eps=1e-5,
    )


def _seeded(seed: int):  # noqa: ANN202
    """Run a block with a private copy of torch's CPU generator seeded to ``seed``."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def block():  # noqa: ANN202
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield

    return block()


def _eval(*modules: Any) -> None:
    for m in modules:
        if m is not None:
            m.eval()
            m.requires_grad_(False)


def tiny_sd_components(seed: int = 0, scheduler: str = "ddim") -> dict[str, Any]:
    """Components of a tiny Stable Diffusion 1.x pipeline (32 px by default, 4x VAE)."""
    from diffusers import AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    with _seeded(seed):
        unet = UNet2DConditionModel(
            block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=4, norm_num_groups=4,
        )
        vae = AutoencoderKL(
            block_out_channels=(8, 8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        )
        text_encoder = CLIPTextModel(_clip_text_config(tokenizer))
    _eval(unet, vae, text_encoder)
    common = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
    if scheduler == "euler":
        sched = EulerDiscreteScheduler(**common)
    else:
        sched = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **common)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": sched,
            "safety_checker": None, "feature_extractor": None, "image_encoder": None}


def tiny_sd_pipeline(seed: int = 0, scheduler: str = "ddim"):  # noqa: ANN201
    """A tiny :class:`~diffusers.StableDiffusionPipeline` on CPU (images 32x32 by default)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**tiny_sd_components(seed, scheduler), requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_sd(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny SD pipeline as a diffusers folder (``model_index.json`` and subfolders)."""
    path = Path(path)
    tiny_sd_pipeline(seed).save_pretrained(path, safe_serialization=True)
    return path


def tiny_sdxl_pipeline(seed: int = 0):  # noqa: ANN201
    """A tiny :class:`~diffusers.StableDiffusionXLPipeline` (two CLIP encoders, pooled embedding)."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tok1 = tiny_clip_tokenizer()
    tok2 = tiny_clip_tokenizer(pad_token="!")
    with _seeded(seed):
        unet = UNet2DConditionModel(
            block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64, norm_num_groups=4,
        )
        vae = AutoencoderKL(
            block_out_channels=(8, 8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        )
        te1 = CLIPTextModel(_clip_text_config(tok1))
        te2 = CLIPTextModelWithProjection(_clip_text_config(tok2))
    _eval(unet, vae, te1, te2)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1, tokenizer_2=tok2,
                                     unet=unet, scheduler=sched, force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _if_unet(stage: int):  # noqa: ANN202
    from diffusers import UNet2DConditionModel

    extra: dict[str, Any] = {}
    if stage == 2:
        extra = {"class_embed_type": "timestep", "mid_block_scale_factor": 1.414, "time_embedding_act_fn": "gelu",
                 "time_embedding_dim": 32}
    unet = UNet2DConditionModel(
        sample_size=16 if stage == 1 else 32, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        in_channels=3 if stage == 1 else 6, out_channels=6, cross_attention_dim=32, encoder_hid_dim=32,
        attention_head_dim=8, addition_embed_type="text", addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift", act_fn="gelu",
        norm_num_groups=8, **extra,
    )
    return unet


def tiny_if_pipelines(seed: int = 0):  # noqa: ANN201
    """The tiny DeepFloyd IF cascade: ``(IFPipeline, IFSuperResolutionPipeline, StableDiffusionUpscalePipeline)``.

    Stage I makes 16 px images, stage II 32 px, the x4 upscaler 128 px.
    """
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        IFPipeline,
        IFSuperResolutionPipeline,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    t5_tok = tiny_t5_tokenizer()
    clip_tok = tiny_clip_tokenizer()
    with _seeded(seed):
        t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                     relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1))
        unet1 = _if_unet(1)
        unet2 = _if_unet(2)
        up_unet = UNet2DConditionModel(
            block_out_channels=(16, 16, 32), layers_per_block=1, sample_size=32, in_channels=7, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=4, use_linear_projection=True,
            only_cross_attention=(True, True, False), num_class_embeds=351, norm_num_groups=4,
        )
        up_vae = AutoencoderKL(
            block_out_channels=(8, 8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            scaling_factor=0.08333,
        )
        up_te = CLIPTextModel(_clip_text_config(clip_tok))
    _eval(t5, unet1, unet2, up_unet, up_vae, up_te)

    def if_scheduler(**kw: Any):  # noqa: ANN202
        return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", beta_start=0.0001,
                             beta_end=0.02, **kw)

    stage1 = IFPipeline(tokenizer=t5_tok, text_encoder=t5, unet=unet1,
                        scheduler=if_scheduler(thresholding=True, dynamic_thresholding_ratio=0.95,
                                               sample_max_value=1.0, prediction_type="epsilon",
                                               variance_type="learned_range"),
                        safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)
    stage2 = IFSuperResolutionPipeline(tokenizer=None, text_encoder=None, unet=unet2,
                                       scheduler=if_scheduler(thresholding=True, dynamic_thresholding_ratio=0.95,
                                                              sample_max_value=1.0, prediction_type="epsilon",
                                                              variance_type="learned_range"),
                                       image_noising_scheduler=if_scheduler(),
                                       safety_checker=None, feature_extractor=None, watermarker=None,
                                       requires_safety_checker=False)
    stage3 = StableDiffusionUpscalePipeline(
        vae=up_vae, text_encoder=up_te, tokenizer=clip_tok, unet=up_unet, low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction", steps_offset=1), max_noise_level=350,
    )
    for p in (stage1, stage2, stage3):
        p.set_progress_bar_config(disable=True)
    return stage1, stage2, stage3


def tiny_safety_checker(seed: int = 0, flag: bool | None = None):  # noqa: ANN201
    """A tiny random :class:`StableDiffusionSafetyChecker` and its ``CLIPImageProcessor``.

    ``flag=True`` sets every concept threshold to -1 (every image is flagged and blacked out),
    ``flag=False`` to 2 (nothing is flagged); None keeps the random thresholds.
    """
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 100, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    with _seeded(seed):
        checker = StableDiffusionSafetyChecker(config)
        checker.concept_embeds.data = torch.randn(17, 16)
        checker.special_care_embeds.data = torch.randn(3, 16)
    if flag is not None:
        value = -1.0 if flag else 2.0
        checker.concept_embeds_weights.data.fill_(value)
        checker.special_care_embeds_weights.data.fill_(value)
    _eval(checker)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return checker, processor
