"""``tipo generate``: expand tags with TIPO, then make images with a diffusers pipeline.

The expansion flags are the ones of ``tipo expand``, generated from :data:`tipo.options.OPTIONS`
(``--seed S`` is the base seed of the images, image ``k`` uses ``S + k``, and the prompt is expanded
with ``S`` too, so it reproduces ``tipo expand --seed S``; ``--expand-seed E`` expands with ``E``
instead; see :mod:`tipo.seeds`. ``--width``
and ``--height`` are the image size and the request's aspect ratio). Wire it into the main
parser with :func:`add_generate_command`.

Example (CPU, a tiny pipeline folder)::

    tipo generate "1girl, forest" --pipeline ./tiny-sd --out out --seed 1 --steps 2 --model tiny.gguf
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from ..errors import RequestError, require

__all__ = ["add_generate_command", "run_generate"]


def add_generate_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tipo generate`` on an argparse subparsers object (``func`` is set)."""
    from ..flags import add_option_flags
    from .options import LM_MEMORY, POOLED, SLD_PRESETS, GenerationOptions

    d = GenerationOptions.defaults()  # the defaults are declared once, on the options object
    from .samplers import SAMPLERS

    g = subparsers.add_parser(
        "generate", help="expand a prompt and make images with a diffusers pipeline",
        description="Expand tags with TIPO, then generate images with a Stable Diffusion, SDXL or DeepFloyd IF "
                    "pipeline. Each PNG carries its parameters (A1111 style) and can be regenerated.")
    # --device here is the pipeline's; the language model stays on the CPU or follows --lm-memory.
    add_option_flags(g, ("request", "sampling", "expand", "loading"), exclude=("device",), help_overrides={
        "seed": "base seed of the images (image k: seed + k) and of the expansion (left out: a fresh one)"})
    img = g.add_argument_group("image")
    img.add_argument("--pipeline", required=True, metavar="PATH_OR_ID",
                     help="a diffusers pipeline folder (with model_index.json), a Hugging Face repo id, or a "
                          "single-file SD 1.x/2.x or SDXL checkpoint (.safetensors, .ckpt)")
    img.add_argument("--config", metavar="PATH_OR_ID",
                     help="single-file checkpoints: a diffusers pipeline folder (or repo id) of the same family whose "
                          "configs and tokenizers are used (default: inferred by diffusers, from the Hugging Face "
                          "cache or the Hub)")
    img.add_argument("--original-config", metavar="YAML",
                     help="single-file checkpoints: the model's original LDM .yaml config")
    img.add_argument("--kind", choices=("sd", "sdxl", "if"), help="the pipeline kind (default: read from the folder)")
    img.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs (NNNNN-<seed>.png)")
    img.add_argument("--expand-seed", type=int, metavar="E",
                     help="expand with this seed instead of --seed (prompt i: E + i * n, tipo.seeds rule 5)")
    img.add_argument("--n", type=int, default=d["n"], help=f"images per prompt (default: {d['n']})")
    img.add_argument("--steps", type=int, default=d["steps"], help=f"denoising steps (default: {d['steps']})")
    img.add_argument("--negative", default=d["negative"], help="negative prompt (A1111 syntax)")
    img.add_argument("--guidance", type=float, help="CFG scale (default: the pipeline's)")
    img.add_argument("--sampler", metavar="NAME",
                     help="an A1111 sampler name: " + ", ".join(SAMPLERS) + " (default: the pipeline's scheduler)")
    img.add_argument("--clip-skip", type=int, default=d["clip_skip"], metavar="N",
                     help="A1111's Clip skip: 1 = the text encoder's last layer (default), 2 = the one before, ...")
    img.add_argument("--lora-dir", metavar="DIR", help="folder of LoRA files for <lora:name:weight> tags")
    img.add_argument("--embedding-dir", metavar="DIR",
                     help="folder of textual-inversion embeddings, used where a file's name is a word of the prompt "
                          "(or embedding:name)")
    img.add_argument("--init-image", metavar="IMAGE", help="img2img: start from this image (SD, SDXL)")
    img.add_argument("--strength", type=float, default=d["strength"],
                     help=f"img2img denoising strength in (0, 1] (default: {d['strength']})")
    img.add_argument("--hires-scale", type=float, metavar="FACTOR",
                     help="a hires pass: resize the image by FACTOR (Lanczos) and redraw it (SD, SDXL)")
    img.add_argument("--hires-steps", type=int, metavar="N", help="steps of the hires pass (default: --steps)")
    img.add_argument("--hires-strength", type=float, default=d["hires_strength"],
                     help=f"denoising strength of the hires pass (default: {d['hires_strength']})")
    img.add_argument("--no-expand", action="store_true", help="use the tags (and caption) as they are; load no LM")
    img.add_argument("--pooled", choices=POOLED, default=d["pooled"],
                     help="SDXL: the pooled embedding comes from your tags (user) or the expanded prompt")
    img.add_argument("--stage2", metavar="PATH_OR_ID", help="IF: the super-resolution stage (IFSuperResolutionPipeline)")
    img.add_argument("--stage3", metavar="PATH_OR_ID", help="IF: the x4 upscaler (StableDiffusionUpscalePipeline)")
    img.add_argument("--lm-memory", choices=LM_MEMORY, default=d["lm_memory"],
                     help="unload: expand, free the LM, then load the pipeline; cpu: keep the LM on the CPU")
    img.add_argument("--offload", choices=("model", "sequential"), help="diffusers CPU offload (CUDA only)")
    img.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=None,
                     help="expand the next prompt while the current one denoises (default: on with CUDA)")
    img.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    img.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                     help="pipeline dtype (default: float16 on CUDA, float32 on CPU)")
    img.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub (cache only)")
    img.add_argument("--json", action="store_true", help="print one JSON record per image instead of its path")
    safety = g.add_argument_group("safety")
    safety.add_argument("--safety-checker", nargs="?", const=True, default=False, metavar="PATH_OR_ID",
                        help="run diffusers' image safety checker (the folder's own, or one from PATH_OR_ID); "
                             "flagged images are saved black")
    safety.add_argument("--sld", nargs="?", const="medium", choices=tuple(SLD_PRESETS),
                        help="Safe Latent Diffusion (SD 1.x/2.x), a preset (default: medium)")
    g.set_defaults(func=run_generate)
    return g


def run_generate(args: argparse.Namespace) -> int:
    """The ``tipo generate`` command: validate, expand, generate, save, print the paths."""
    from ..flags import settings_from_args
    from ..options import by_name
    from .generation import generate
    from .loading import detect_kind
    from .options import GenerationOptions

    settings = settings_from_args(args)
    request, sampling = settings.request, settings.sampling
    base_seed = sampling.seed
    # tipo.seeds rule 5: expansions follow the image seeds unless --expand-seed names one
    expand_seed = None if args.expand_seed is None else by_name("seed").check(args.expand_seed)
    sampling = replace(sampling, seed=expand_seed)  # type: ignore[arg-type]
    load_options = {"device": args.device, "dtype": args.dtype, "local_files_only": args.offline,
                    "safety_checker": args.safety_checker, "stage2": args.stage2, "stage3": args.stage3}
    if args.config is not None or args.original_config is not None:
        load_options.update(config=args.config, original_config=args.original_config)
    options = GenerationOptions(  # every value checked here, before any model loads
        kind=args.kind, n=args.n, steps=args.steps, seed=base_seed, negative=args.negative, width=args.width,
        height=args.height, guidance=args.guidance, sampler=args.sampler, clip_skip=args.clip_skip,
        pooled=args.pooled, init_image=args.init_image, strength=args.strength, hires_scale=args.hires_scale,
        hires_steps=args.hires_steps, hires_strength=args.hires_strength, lora_dir=args.lora_dir,
        embedding_dir=args.embedding_dir, lm_memory="keep" if args.no_expand else args.lm_memory,
        offload=args.offload, overlap=args.overlap, safety_checker=True if args.safety_checker else None,
        sld=args.sld, out_dir=args.out, progress=sys.stderr.isatty(), load_options=load_options)
    require("torch", "image", "tipo generate")
    require("diffusers", "image", "tipo generate")
    kind = detect_kind(args.pipeline, args.kind, args.offline, args.config)  # before any model loads
    if (args.stage2 or args.stage3) and kind.value != "if":
        raise RequestError(f"--stage2 and --stage3 are for the DeepFloyd IF cascade; {args.pipeline} is kind "
                           f"{kind.value!r}")
    if not sys.stderr.isatty():  # this process is ours: no loading bars in logs
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    options = options.replace(kind=kind)
    if args.no_expand:
        text = ", ".join(t for t in (request.tags.strip(), request.caption.strip()) if t)
        if not text:
            raise RequestError("give the tags (or --caption) to draw")
        result = generate(text, args.pipeline, options)
    else:
        from ..pool import open_expander

        expander = open_expander(**settings.loading)
        try:
            result = generate(request, args.pipeline, options, expander=expander, sampling=sampling,
                              **settings.expand)
        finally:
            expander.close()
    for note in result.notes:
        print(f"tipo: note: {note}", file=sys.stderr)
    for record in result.records:
        if args.json:
            sys.stdout.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
        else:
            print(record.path)
        if record.cut:
            print(f"tipo: note: image {record.index}: did not fit: {record.cut}", file=sys.stderr)
    return 0
