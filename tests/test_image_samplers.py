"""A1111 sampler names <-> diffusers schedulers, clip skip, img2img, the hires pass and per-step progress."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the image stage needs torch: pip install 'tipo-prompt[image]'")
pytest.importorskip("diffusers", reason="the image stage needs diffusers: pip install 'tipo-prompt[image]'")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from tipo.errors import RequestError  # noqa: E402
from tipo.image import GenerationOptions, encode_prompt, generate, read_parameters, regenerate  # noqa: E402
from tipo.image.infotext import write_png  # noqa: E402
from tipo.image.samplers import SAMPLERS, canonical_name, sampler_name, scheduler_for  # noqa: E402


def pixels(image):
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def same(a, b):
    return np.array_equal(pixels(a), pixels(b))


def test_every_sampler_maps_to_a_scheduler_and_back(sd):
    import importlib.util

    for name, sampler in SAMPLERS.items():
        if sampler.needs and importlib.util.find_spec(sampler.needs) is None:
            with pytest.raises(RequestError, match=f"pip install {sampler.needs}"):
                scheduler_for(name, sd.scheduler)
            continue
        scheduler = scheduler_for(name, sd.scheduler)
        assert type(scheduler).__name__ == sampler.cls and sampler_name(scheduler) == name, name
        assert scheduler.config.beta_schedule == "scaled_linear"  # built from the pipeline's own config
    assert scheduler_for("DDIM", sd.scheduler) is sd.scheduler
    karras = scheduler_for("DPM++ 2M Karras", sd.scheduler)
    assert sampler_name(scheduler_for("DPM++ 2M", karras)) == "DPM++ 2M"  # the flag is switched off again


@pytest.mark.parametrize("given,schedule,expected", [
    ("euler a", None, "Euler a"), ("DPM++ 2M", "Karras", "DPM++ 2M Karras"), ("DPM++ 2M", "Automatic", "DPM++ 2M"),
    ("DDIMScheduler", None, "DDIM"), ("EulerAncestralDiscreteScheduler", None, "Euler a"), ("PNDM", None, "PLMS"),
    ("k_dpmpp_2m", None, None), ("UniPC", None, "UniPC"), ("dpmpp_2m", None, "DPM++ 2M"),
])
def test_canonical_names(given, schedule, expected):
    if expected is None:
        with pytest.raises(RequestError, match="unknown sampler"):
            canonical_name(given, schedule)
    else:
        assert canonical_name(given, schedule) == expected


def test_sampler_option_is_written_in_a1111_spelling_and_restored(sd, tmp_path):
    ddim = generate("1girl, forest", sd, steps=3, seed=2).images[0]
    euler_a = generate("1girl, forest", sd, steps=3, seed=2, sampler="euler a", out_dir=tmp_path)
    assert type(sd.scheduler).__name__ == "DDIMScheduler"  # the pipeline's own scheduler is back
    assert not same(ddim, euler_a.images[0])
    assert euler_a.records[0].sampler == "Euler a" and read_parameters(euler_a.paths[0])["Sampler"] == "Euler a"
    assert same(regenerate(euler_a.paths[0], sd), euler_a.images[0])
    with pytest.raises(RequestError, match="unknown sampler 'DPM fast'"):
        generate("1girl", sd, steps=2, sampler="DPM fast")


@pytest.mark.parametrize("sampler,schedule", [("Euler a", None), ("DPM++ 2M", "Karras"), ("DDIM", None),
                                              ("UniPC", None), ("Heun", None)])
def test_regenerate_reads_a1111_parameters(sd, tmp_path, sampler, schedule):
    """A PNG as A1111 writes it (no tipo fields) makes the image tipo makes with the same settings."""
    from PIL import Image

    line = (f"Steps: 4, Sampler: {sampler}, " + (f"Schedule type: {schedule}, " if schedule else "")
            + "CFG scale: 6.5, Seed: 1234, Size: 32x32, Model hash: 6ce0161689, Model: anything-v3, "
              "Clip skip: 2, Version: v1.10.1")
    text = "1girl, (forest:1.2), smile\nNegative prompt: lowres, bad anatomy\n" + line
    path = write_png(Image.new("RGB", (32, 32)), tmp_path / "a1111.png", text)
    expected = generate("1girl, (forest:1.2), smile", sd, steps=4, seed=1234, guidance=6.5, clip_skip=2,
                        negative="lowres, bad anatomy", sampler=canonical_name(sampler, schedule)).images[0]
    assert same(regenerate(path, sd), expected)


def test_clip_skip_is_the_shortened_encoder_matches_diffusers_sdxl_and_is_recorded(sd, sdxl, tmp_path):
    from transformers import CLIPTextModel

    device = torch.device("cpu")
    layers = sd.text_encoder.config.num_hidden_layers
    for n in (1, 2, 3):  # the tiny encoder has two layers: 3 is the embeddings' output
        # Clip skip N is the output of the same encoder with its last N - 1 layers taken away.
        config = sd.text_encoder.config.__class__(**{**sd.text_encoder.config.to_dict(),
                                                     "num_hidden_layers": layers - (n - 1)})
        short = CLIPTextModel(config).eval()
        short.load_state_dict(sd.text_encoder.state_dict(), strict=False)
        ours = encode_prompt(sd, "1girl, forest", clip_skip=n).prompt_embeds
        ids = sd.tokenizer("1girl, forest", padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            theirs = short(ids)[0]
        assert torch.allclose(ours, theirs, atol=1e-5), n
    ours = encode_prompt(sdxl, "1girl, forest", clip_skip=2)
    theirs = sdxl.encode_prompt("1girl, forest", device=device, do_classifier_free_guidance=False, clip_skip=1)
    assert torch.allclose(ours.prompt_embeds, theirs[0], atol=1e-6)
    r = generate("1girl", sd, steps=2, seed=1, clip_skip=2, out_dir=tmp_path)
    assert read_parameters(r.paths[0])["Clip skip"] == "2" and r.records[0].clip_skip == 2
    assert not same(r.images[0], generate("1girl", sd, steps=2, seed=1).images[0])
    with pytest.raises(RequestError, match="clip_skip=5 is more than the clip text encoder's 2 layers"):
        generate("1girl", sd, steps=2, clip_skip=5)
    with pytest.raises(RequestError, match="clip_skip=0"):
        GenerationOptions(clip_skip=0)


def test_img2img_starts_from_the_image_and_regenerates(sd, tmp_path):
    init = generate("1girl, forest", sd, steps=2, seed=7).images[0].resize((48, 40))
    init_path = tmp_path / "init.png"
    init.save(init_path)
    low = generate("1girl, sky", sd, steps=4, seed=3, init_image=init_path, strength=0.25, out_dir=tmp_path / "a")
    high = generate("1girl, sky", sd, steps=4, seed=3, init_image=init, strength=1.0).images[0]
    txt = generate("1girl, sky", sd, steps=4, seed=3, width=48, height=40).images[0]
    assert low.images[0].size == (48, 40)  # the init image's size
    other_init = generate("1girl, sky", sd, steps=4, seed=3, init_image=txt, strength=0.25).images[0]
    assert not same(low.images[0], high) and not same(high, txt)  # the strength counts
    assert not same(low.images[0], other_init)  # and so does the image
    params = read_parameters(low.paths[0])
    assert params["Denoising strength"] == "0.25" and params["Size"] == "48x40" and params["Init image hash"]
    assert same(regenerate(low.paths[0], sd, init_image=init_path), low.images[0])
    with pytest.raises(RequestError, match="pass init_image"):
        regenerate(low.paths[0], sd)
    with pytest.raises(RequestError, match="not the picture"):
        regenerate(low.paths[0], sd, init_image=txt)
    with pytest.raises(RequestError, match="strength=0"):
        generate("1girl", sd, steps=2, init_image=init, strength=0)


def test_hires_pass_for_sd_and_sdxl(sd, sdxl, tmp_path):
    base = generate("1girl, forest", sd, steps=2, seed=5).images[0]
    hires = generate("1girl, forest", sd, steps=2, seed=5, hires_scale=2, hires_steps=3, hires_strength=0.6,
                     out_dir=tmp_path)
    assert base.size == (32, 32) and hires.images[0].size == (64, 64)
    params = read_parameters(hires.paths[0])
    assert (params["Size"], params["Hires upscale"], params["Hires steps"], params["Denoising strength"],
            params["Hires upscaler"]) == ("32x32", "2", "3", "0.6", "Lanczos")
    assert same(regenerate(hires.paths[0], sd), hires.images[0])
    xl = generate("1girl", sdxl, steps=2, seed=5, hires_scale=1.5, out_dir=tmp_path / "xl")
    assert xl.images[0].size == (48, 48)
    assert same(regenerate(xl.paths[0], sdxl), xl.images[0])
    with pytest.raises(RequestError, match="hires_scale=1 is not valid"):
        generate("1girl", sd, steps=2, hires_scale=1)


def test_per_step_progress_goes_to_stderr_only_when_asked(sd, capsys):
    generate("1girl", sd, steps=3, seed=1, n=2, progress=True)
    err = capsys.readouterr().err
    assert "tipo generate" in err and "step 3/3" in err and "2/2" in err
    generate("1girl", sd, steps=3, seed=1)  # progress=None: stderr is not a terminal under pytest
    assert capsys.readouterr().err == ""
    from tipo.image.testing import tiny_if_pipelines

    generate("1girl", tiny_if_pipelines(), steps=2, seed=1, progress=True)  # old-style callbacks of the IF stages
    assert "step 6/6" in capsys.readouterr().err


def test_options_object_validates_up_front():
    o = GenerationOptions(steps=20, sampler="dpm++ 2m karras", clip_skip=2, sld="weak")
    assert o.sampler == "DPM++ 2M Karras" and o.sld["sld_warmup_steps"] == 15
    assert o.replace(n=3).n == 3 and o.replace(n=3).sampler == "DPM++ 2M Karras"
    with pytest.raises(RequestError, match="unknown option"):
        GenerationOptions.build(stepz=3)
    with pytest.raises(RequestError, match="lora_dir='/nonexistent' is not a folder"):
        GenerationOptions(lora_dir="/nonexistent")
    with pytest.raises(RequestError, match="do not go together"):
        GenerationOptions(hires_scale=2, init_image=__file__)
