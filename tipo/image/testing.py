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
import re
import string
from pathlib import Path
from typing import Any

__all__ = [
    "CORPUS",
    "ldm_state_dict",
    "save_single_file",
    "save_tiny_embedding",
    "save_tiny_lora",
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


def tiny_sdxl_pipeline(seed: int = 0, hidden_2: int = 32):  # noqa: ANN201
    """A tiny :class:`~diffusers.StableDiffusionXLPipeline` (two CLIP encoders, pooled embedding).

    ``hidden_2`` is the second encoder's width (32, like the first, by default).
    """
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
            projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=32 + hidden_2, norm_num_groups=4,
        )
        vae = AutoencoderKL(
            block_out_channels=(8, 8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        )
        te1 = CLIPTextModel(_clip_text_config(tok1))
        te2 = CLIPTextModelWithProjection(_clip_text_config(tok2, hidden=hidden_2))
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


# -- single-file checkpoints in the original (LDM) layout ----------------------------------------
def _unet_to_ldm(unet: Any) -> dict[str, Any]:
    """A diffusers UNet's weights under the original Stable Diffusion names (the inverse of diffusers'
    ``convert_ldm_unet_checkpoint``, for any number of blocks and layers)."""
    cfg = unet.config
    per = cfg.layers_per_block + 1  # LDM input_blocks / output_blocks per resolution level
    resnet = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
              ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "class_embedding.linear_1": "label_emb.0.0", "class_embedding.linear_2": "label_emb.0.2"}
    prefixes: list[tuple[str, str, bool]] = []  # (diffusers prefix, ldm prefix, is a resnet)
    for i in range(len(cfg.down_block_types)):
        for j in range(cfg.layers_per_block):
            prefixes.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{1 + i * per + j}.0.", True))
            prefixes.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{1 + i * per + j}.1.", False))
        prefixes.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * per}.0.op.", False))
    for i, block in enumerate(unet.up_blocks):
        has_attn = hasattr(block, "attentions") and block.attentions is not None and len(block.attentions) > 0
        for j in range(per):
            prefixes.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{i * per + j}.0.", True))
            prefixes.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{i * per + j}.1.", False))
        prefixes.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * per + per - 1}.{2 if has_attn else 1}.",
                         False))
    prefixes.append(("mid_block.attentions.0.", "middle_block.1.", False))
    for j in range(2):
        prefixes.append((f"mid_block.resnets.{j}.", f"middle_block.{2 * j}.", True))
    out: dict[str, Any] = {}
    for key, value in unet.state_dict().items():
        new = None
        for old, ldm in fixed.items():
            if key.startswith(old + "."):
                new = ldm + key[len(old):]
        for old, ldm, is_resnet in prefixes:
            if new is None and key.startswith(old):
                rest = key[len(old):]
                if is_resnet:
                    for a, b in resnet:
                        if rest.startswith(a + "."):
                            rest = b + rest[len(a):]
                new = ldm + rest
        if new is None:
            raise ValueError(f"no original-layout name for UNet weight {key}")
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(vae: Any) -> dict[str, Any]:
    """A diffusers AutoencoderKL's weights under the original names (``first_stage_model.*``)."""
    n_up = len(vae.config.up_block_types)
    attn = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))
    out: dict[str, Any] = {}
    for key, value in vae.state_dict().items():
        new = key.replace("conv_norm_out", "norm_out")
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.",
                     lambda m: f"decoder.up.{n_up - 1 - int(m.group(1))}.block.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                     lambda m: f"decoder.up.{n_up - 1 - int(m.group(1))}.upsample.", new)
        new = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", new)
        new = new.replace("conv_shortcut", "nin_shortcut")
        if "mid_block.attentions.0." in new:
            new = new.replace("mid_block.attentions.0.", "mid.attn_1.")
            for a, b in attn:
                new = new.replace(f"attn_1.{a}.", f"attn_1.{b}.")
            if value.ndim == 2:  # diffusers' linear -> the original 1x1 convolution
                value = value[:, :, None, None]
        out["first_stage_model." + new] = value
    return out


def _clip_to_ldm(encoder: Any, prefix: str) -> dict[str, Any]:
    """A transformers CLIP text model in the HF layout under ``prefix`` (SD's cond_stage_model, SDXL's CLIP-L)."""
    out = {}
    for key, value in encoder.state_dict().items():
        if key.startswith("text_projection"):
            continue
        name = key if key.startswith("text_model.") else "text_model." + key
        out[prefix + name] = value
    return out


def _open_clip_to_ldm(encoder: Any, prefix: str) -> dict[str, Any]:
    """A CLIPTextModelWithProjection in OpenCLIP's layout (SDXL's CLIP-G: resblocks, fused in_proj)."""
    import torch

    sd = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in encoder.state_dict().items()}
    out: dict[str, Any] = {
        prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
        prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        prefix + "ln_final.weight": sd["final_layer_norm.weight"],
        prefix + "ln_final.bias": sd["final_layer_norm.bias"],
        prefix + "text_projection": sd["text_projection.weight"].T.contiguous(),
    }
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for w in ("weight", "bias"):
            out[dst + f"attn.in_proj_{w}"] = torch.cat([sd[src + f"self_attn.{p}_proj.{w}"] for p in "qkv"])
            out[dst + f"attn.out_proj.{w}"] = sd[src + f"self_attn.out_proj.{w}"]
            out[dst + f"ln_1.{w}"] = sd[src + f"layer_norm1.{w}"]
            out[dst + f"ln_2.{w}"] = sd[src + f"layer_norm2.{w}"]
            out[dst + f"mlp.c_fc.{w}"] = sd[src + f"mlp.fc1.{w}"]
            out[dst + f"mlp.c_proj.{w}"] = sd[src + f"mlp.fc2.{w}"]
    return out


def ldm_state_dict(pipe: Any) -> dict[str, Any]:
    """An SD 1.x or SDXL diffusers pipeline's weights in the original single-file (LDM) layout."""
    out = _unet_to_ldm(pipe.unet)
    out.update(_vae_to_ldm(pipe.vae))
    if getattr(pipe, "text_encoder_2", None) is not None:
        out.update(_clip_to_ldm(pipe.text_encoder, "conditioner.embedders.0.transformer."))
        out.update(_open_clip_to_ldm(pipe.text_encoder_2, "conditioner.embedders.1.model."))
    else:
        out.update(_clip_to_ldm(pipe.text_encoder, "cond_stage_model.transformer."))
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def save_single_file(pipe: Any, path: str | Path) -> Path:
    """Write ``pipe`` as one ``.safetensors`` (or ``.ckpt``: a torch ``{"state_dict": ...}``) checkpoint in the
    original layout, as A1111 and ComfyUI users have them. Load it back with
    ``load_pipeline(path, config=<a folder saved from a pipeline of the same shape>)``."""
    path = Path(path)
    state = ldm_state_dict(pipe)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        import torch

        torch.save({"state_dict": state}, str(path))
    return path


# -- extra networks: LoRA and textual-inversion files --------------------------------------------
def save_tiny_lora(path: str | Path, kind: str = "sd", seed: int = 1, rank: int = 4, hidden_2: int = 32,
                   scale: float = 1.0, text_encoder: bool = True, layout: str = "diffusers") -> Path:
    """Write a LoRA for the tiny SD (``kind="sd"``) or SDXL pipeline as one diffusers-layout safetensors file.

    It is made with peft on a fresh tiny pipeline (UNet attention and text-encoder attention layers,
    rank ``rank``; ``text_encoder=False``: UNet only); its up-projections are random (peft starts them at
    zero), so it changes the pixels. ``layout="kohya"`` writes the kohya-ss / A1111 names
    (``lora_unet_*``, ``lora_te_text_model_*``, ``lora_down``/``lora_up``/``alpha``) most downloaded
    LoRAs use, with diffusers' ``convert_state_dict_to_kohya``.
    Load it with ``pipe.load_lora_weights(folder, weight_name=name)`` or a ``<lora:stem:1>`` tag.
    """
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    path = Path(path)
    pipe = tiny_sdxl_pipeline(0, hidden_2=hidden_2) if kind == "sdxl" else tiny_sd_pipeline(0)
    pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    encoders = ([pipe.text_encoder] + ([pipe.text_encoder_2] if kind == "sdxl" else [])) if text_encoder else []
    for enc in encoders:  # peft directly (transformers' add_adapter insists on its own minimum peft version)
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                           target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]), enc)
    with _seeded(seed), torch.no_grad():
        for module in [pipe.unet, *encoders]:
            for name, param in module.named_parameters():
                if "lora_B" in name or "lora_A" in name:
                    param.copy_(torch.randn_like(param) * scale)
    if layout == "kohya":
        from diffusers.utils import convert_state_dict_to_kohya
        from safetensors.torch import save_file

        state = {"lora_unet_" + k: v for k, v in convert_state_dict_to_kohya(get_peft_model_state_dict(pipe.unet)).items()}
        names = ("lora_te_", ) if kind != "sdxl" else ("lora_te1_", "lora_te2_")
        for prefix, enc in zip(names, encoders, strict=False):
            for k, v in convert_state_dict_to_kohya(get_peft_model_state_dict(enc)).items():
                key = k if k.startswith("text_model_") else "text_model_" + k  # transformers 5 drops text_model
                state[prefix + key] = v
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return path
    layers = {"unet_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))}
    for name, enc in zip(("text_encoder_lora_layers", "text_encoder_2_lora_layers"), encoders, strict=False):
        layers[name] = convert_state_dict_to_diffusers(get_peft_model_state_dict(enc))
    type(pipe).save_lora_weights(str(path.parent), weight_name=path.name, safe_serialization=True, **layers)
    return path


def save_tiny_embedding(path: str | Path, kind: str = "sd", vectors: int = 2, seed: int = 2,
                        hidden_2: int = 32) -> Path:
    """Write a textual-inversion embedding for the tiny pipelines, in the layout A1111 users have.

    SD: ``.pt`` gives A1111's ``{"string_to_param": {"*": tensor}, "name": ...}``, ``.safetensors`` its
    ``emb_params``; SDXL: safetensors with ``clip_l`` and ``clip_g``. ``vectors`` is the vector count.
    """
    import torch

    path = Path(path)
    with _seeded(seed):
        clip_l = torch.randn(vectors, 32)
        clip_g = torch.randn(vectors, hidden_2)
    if kind == "sdxl":
        from safetensors.torch import save_file

        save_file({"clip_l": clip_l, "clip_g": clip_g}, str(path))
    elif path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"emb_params": clip_l}, str(path))
    else:
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": clip_l}, "name": path.stem, "step": 1,
                    "sd_checkpoint": None, "sd_checkpoint_name": None}, str(path))
    return path
