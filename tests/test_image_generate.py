"""tipo.image.generate on tiny random pipelines: seeds, records, PNG parameters, regenerate, memory, safety."""

import numpy as np
import pytest

from tipo.infotext import from_infotext

torch = pytest.importorskip("torch", reason="the image stage needs torch: pip install 'tipo-prompt[image]'")
pytest.importorskip("diffusers", reason="the image stage needs diffusers: pip install 'tipo-prompt[image]'")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from tipo import Request, Sampling, finish, parse_text, plan  # noqa: E402
from tipo.errors import ModelError, RequestError  # noqa: E402
from tipo.image import generate, load_pipeline, read_parameters, regenerate  # noqa: E402
from tipo.image.testing import (  # noqa: E402
    save_tiny_sd,
    tiny_if_pipelines,
    tiny_safety_checker,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return save_tiny_sd(tmp_path_factory.mktemp("pipes") / "tiny-sd", seed=0)


def pixels(image):
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def fake_expansion(tags="1girl, forest"):
    """An Expansion made without a model: the plan plus a fixed completion."""
    planned = plan(Request(tags))
    completion = ", long hair, blue eyes, smile, tree, sunlight\nlong: A girl stands in the forest. She smiles."
    return finish(planned, parse_text(planned.prompt + completion), completion=completion)


def test_same_seed_same_pixels_different_seed_different(sd):
    a = generate("1girl, forest", sd, steps=2, seed=7, n=2)
    b = generate("1girl, forest", sd, steps=2, seed=7, n=2)
    c = generate("1girl, forest", sd, steps=2, seed=8)
    assert a.seeds == [7, 8] and c.seeds == [8]
    assert all(np.array_equal(pixels(x), pixels(y)) for x, y in zip(a.images, b.images, strict=True))
    assert not np.array_equal(pixels(a.images[0]), pixels(a.images[1]))
    assert np.array_equal(pixels(a.images[1]), pixels(c.images[0]))  # image k uses seed + k
    assert a.images[0].size == (32, 32)


def test_records_describe_each_image(sd):
    result = generate(["1girl, (forest:1.2)", "smile BREAK sky <lora:x:1>"], sd, steps=2, seed=3, n=2,
                      negative="lowres")
    assert [r.prompt_index for r in result.records] == [0, 0, 1, 1]
    assert [r.index for r in result.records] == [0, 1, 2, 3]
    r0, r3 = result.records[0], result.records[3]
    assert r0.kind == "sd" and r0.sampler == "DDIM" and r0.steps == 2 and r0.guidance == 7.5
    assert r0.encoding[0].weighted and r3.encoding[0].chunks == 2 and r3.ignored == ("<lora:x:1>",)
    assert r0.parameters.startswith("1girl, (forest:1.2)\nNegative prompt: lowres\nSteps: 2, Sampler: DDIM, ")
    assert result.timings["overlap"] == 0.0 and result.timings["wall"] > 0


def test_saved_pngs_carry_parameters_and_regenerate_identical_pixels(sd, tmp_path):
    expansion = fake_expansion()
    result = generate([expansion, "plain, text"], sd, steps=2, seed=11, out_dir=tmp_path, negative="bad, hands")
    assert [p.name for p in result.paths] == ["00000-11.png", "00001-12.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000-11.png", "00001-12.png"]  # no temp files left
    params = read_parameters(result.paths[0])
    assert params["Prompt"] == expansion.prompt and params["Negative prompt"] == "bad, hands"
    assert params["Seed"] == "11" and params["Steps"] == "2" and params["Size"] == "32x32"
    assert params["Sampler"] == "DDIM" and params["CFG scale"] == "7.5"
    assert params["TIPO prompt"] == "1girl, forest" and "TIPO nl prompt" not in params  # empty: not written
    tipo_settings = from_infotext(params)
    assert tipo_settings["tags"] == "1girl, forest" and tipo_settings["length"] == "long"
    assert {"model", "seed", "temperature", "output", "task"} <= set(params["TIPO Parameters"])
    assert "TIPO prompt" not in read_parameters(result.paths[1])
    for path, image in zip(result.paths, result.images, strict=True):
        assert np.array_equal(pixels(regenerate(path, sd)), pixels(image))
    again = generate("x", sd, steps=2, seed=1, out_dir=tmp_path)
    assert again.paths[0].name == "00002-1.png"  # numbering continues


def test_regenerate_uses_the_recorded_sampler(tmp_path):
    euler = tiny_sd_pipeline(seed=0, scheduler="euler")
    path = generate("1girl", euler, steps=2, seed=5, out_dir=tmp_path).paths[0]
    ddim = tiny_sd_pipeline(seed=0)
    assert np.array_equal(pixels(regenerate(path, ddim)), pixels(generate("1girl", euler, steps=2, seed=5).images[0]))
    assert type(ddim.scheduler).__name__ == "DDIMScheduler"  # restored


def test_sdxl_determinism_pooled_choice_and_regenerate(sdxl, tmp_path):
    expansion = fake_expansion()
    user = generate(expansion, sdxl, steps=2, seed=4, out_dir=tmp_path)
    same = generate(expansion, sdxl, steps=2, seed=4)
    expanded = generate(expansion, sdxl, steps=2, seed=4, pooled="expanded")
    assert np.array_equal(pixels(user.images[0]), pixels(same.images[0]))
    assert not np.array_equal(pixels(user.images[0]), pixels(expanded.images[0]))
    assert user.records[0].pooled == "user" and [r.encoder for r in user.records[0].encoding] == ["clip-l", "clip-g"]
    assert "Pooled: user" in user.records[0].parameters
    assert np.array_equal(pixels(regenerate(user.paths[0], sdxl)), pixels(user.images[0]))


def test_if_cascade_determinism_and_sizes(tmp_path):
    cascade = tiny_if_pipelines(seed=0)
    a = generate("1girl, forest", cascade, steps=2, seed=2, out_dir=tmp_path)
    b = generate("1girl, forest", cascade, steps=2, seed=2)
    c = generate("1girl, forest", cascade, steps=2, seed=3)
    assert a.images[0].size == (128, 128) and a.records[0].width == 16
    assert np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    assert not np.array_equal(pixels(a.images[0]), pixels(c.images[0]))
    assert [r.encoder for r in a.records[0].encoding] == ["t5", "upscaler-clip"]
    assert np.array_equal(pixels(regenerate(a.paths[0], cascade)), pixels(a.images[0]))
    stage1_only = generate("1girl, forest", cascade[0], steps=2, seed=2)
    assert stage1_only.images[0].size == (16, 16)


def test_if_cascade_loads_from_folders(tmp_path):
    stage1, stage2, stage3 = tiny_if_pipelines(seed=0)
    for name, pipe in (("s1", stage1), ("s2", stage2), ("s3", stage3)):
        pipe.save_pretrained(tmp_path / name)
    cascade = load_pipeline(tmp_path / "s1", stage2=tmp_path / "s2", stage3=tmp_path / "s3")
    loaded = generate("1girl", cascade, steps=2, seed=1).images[0]
    assert np.array_equal(pixels(loaded), pixels(generate("1girl", (stage1, stage2, stage3), steps=2, seed=1).images[0]))
    with pytest.raises(RequestError, match="needs a IFSuperResolutionPipeline"):
        load_pipeline(tmp_path / "s1", stage2=tmp_path / "s3")
    with pytest.raises(RequestError, match="stage II of the DeepFloyd IF cascade"):
        load_pipeline(tmp_path / "s2")


def test_loaded_folder_matches_the_pipeline_it_was_saved_from(sd, sd_folder):
    notes = []
    loaded = load_pipeline(sd_folder, "sd", offload="model", notes=notes)
    assert any("no-op" in n for n in notes) or torch.cuda.is_available()
    a = generate("1girl, forest", loaded, steps=2, seed=9).images[0]
    b = generate("1girl, forest", sd, steps=2, seed=9).images[0]
    assert np.array_equal(pixels(a), pixels(b))
    by_name = generate("1girl, forest", str(sd_folder), steps=2, seed=9)
    assert np.array_equal(pixels(by_name.images[0]), pixels(a)) and by_name.records[0].model == "tiny-sd"


@pytest.mark.parametrize("kwargs,needle", [
    ({"steps": 0}, "steps=0"),
    ({"steps": -3}, "steps=-3"),
    ({"n": 0}, "n=0"),
    ({"width": 0, "height": 32}, "width=0"),
    ({"width": 32, "height": -8}, "height=-8"),
    ({"width": 30, "height": 32}, "multiple of 8"),
    ({"width": 32}, "both width and height"),
    ({"guidance": -1.0}, "guidance"),
    ({"kind": "sdxl"}, "does not match"),
    ({"kind": "sd3"}, "choose one of"),
    ({"pooled": "other"}, "pooled"),
    ({"seed": -1}, "seed=-1"),
    ({"sld": "extreme"}, "sld="),
    ({"lm_memory": "unload", "overlap": True}, "one or the other"),
    ({"safety_checker": True}, "no safety checker"),
])
def test_errors_name_the_bad_value(sd, kwargs, needle):
    with pytest.raises(RequestError, match=needle):
        generate("1girl", sd, **{"steps": 2, **kwargs})


def test_pipeline_errors(sd, sd_folder, tmp_path):
    with pytest.raises(RequestError, match="needs an expander"):
        generate(Request("1girl"), sd, steps=2)
    with pytest.raises(RequestError, match="kind 'sdxl' does not match"):
        load_pipeline(sd_folder, kind="sdxl")
    with pytest.raises(RequestError, match="only for Stable Diffusion 1.x/2.x"):
        generate("1girl", tiny_sdxl_pipeline(), steps=2, sld=True)
    with pytest.raises(ModelError, match="hf download nobody/nothing"):
        load_pipeline("nobody/nothing", local_files_only=True)
    with pytest.raises(ModelError, match="no model_index.json"):
        load_pipeline(tmp_path)
    with pytest.raises(ModelError, match="not a Hugging Face repo id"):
        load_pipeline(str(tmp_path / "missing"))


def test_safety_checker_wiring(sd):
    flagged = tiny_sd_pipeline(seed=0)
    flagged.safety_checker, flagged.feature_extractor = tiny_safety_checker(flag=True)
    on = generate("1girl", flagged, steps=2, seed=1, safety_checker=True)
    assert on.records[0].nsfw is True and pixels(on.images[0]).max() == 0  # blacked out
    assert "Safety checker: on" in on.records[0].parameters
    off = generate("1girl", flagged, steps=2, seed=1, safety_checker=False)
    assert off.records[0].nsfw is None and flagged.safety_checker is not None  # detached for the run only
    assert np.array_equal(pixels(off.images[0]), pixels(generate("1girl", sd, steps=2, seed=1).images[0]))
    passing = tiny_sd_pipeline(seed=0)
    passing.safety_checker, passing.feature_extractor = tiny_safety_checker(flag=False)
    kept = generate("1girl", passing, steps=2, seed=1, safety_checker=True)
    assert kept.records[0].nsfw is False and pixels(kept.images[0]).max() > 0


def test_sld_uses_our_embeddings_and_steers(sd, tmp_path):
    plain = generate("1girl, " + ", ".join(["forest"] * 60), sd, steps=3, seed=5)
    idle = generate("1girl, " + ", ".join(["forest"] * 60), sd, steps=3, seed=5,
                    sld={"sld_warmup_steps": 10, "sld_guidance_scale": 20})
    # SLD still in warm-up: the same pixels, so the Safe pipeline got the same chunked embeddings.
    assert idle.records[0].encoding[0].chunks == 2
    assert np.array_equal(pixels(plain.images[0]), pixels(idle.images[0]))
    steered = generate("1girl", sd, steps=3, seed=5, sld="max", out_dir=tmp_path)
    assert not np.array_equal(pixels(steered.images[0]), pixels(generate("1girl", sd, steps=3, seed=5).images[0]))
    assert read_parameters(steered.paths[0])["SLD"]["sld_guidance_scale"] == 5000
    assert np.array_equal(pixels(regenerate(steered.paths[0], sd)), pixels(steered.images[0]))
    with pytest.raises(RequestError, match="guidance > 1"):
        generate("1girl", sd, steps=2, sld=True, guidance=1.0)


# -- with the tiny TIPO model --------------------------------------------------------------------
@pytest.fixture
def expander(tiny_model):
    from tipo import Expander

    with Expander(tiny_model.gguf_f32, n_threads=1) as ex:
        yield ex


SHORT = Sampling(max_new_tokens=48)


def _watch_unet(pipe, expander):
    seen = []
    handle = pipe.unet.register_forward_pre_hook(lambda *_: seen.append(expander.loaded))
    return seen, handle


def test_unload_frees_the_language_model_before_denoising(expander):
    pipe = tiny_sd_pipeline(seed=0)
    seen, handle = _watch_unet(pipe, expander)
    try:
        result = generate(["1girl, forest", "1boy"], pipe, expander=expander, sampling=SHORT, steps=2, seed=1,
                          lm_memory="unload")
    finally:
        handle.remove()
    assert seen and not any(seen) and not expander.loaded
    assert any("closed the language model" in n for n in result.notes)
    assert [r.expansion is not None for r in result.records] == [True, True]
    assert result.records[0].prompt.startswith("1girl, forest")


def test_keep_leaves_the_language_model_loaded(expander):
    pipe = tiny_sd_pipeline(seed=0)
    seen, handle = _watch_unet(pipe, expander)
    try:
        generate("1girl", pipe, expander=expander, sampling=SHORT, steps=2, seed=1, lm_memory="cpu")
    finally:
        handle.remove()
    assert seen and all(seen) and expander.loaded


def test_overlap_gives_the_same_images_and_expansion_seeds_derive_from_the_base(expander, sd):
    prompts = ["1girl, forest", "1boy, sky", "scenery"]
    seq = generate(prompts, sd, expander=expander, sampling=SHORT, steps=2, seed=21, overlap=False)
    par = generate(prompts, sd, expander=expander, sampling=SHORT, steps=2, seed=21, overlap=True)
    assert par.timings["overlap"] == 1.0 and seq.timings["overlap"] == 0.0
    assert [r.prompt for r in seq.records] == [r.prompt for r in par.records]
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(seq.images, par.images, strict=True))
    # tipo.seeds rule 5: each prompt is expanded with the seed of its first image (n=1: 21, 22, 23)
    assert [r.expansion.seed for r in seq.records] == [r.seed for r in seq.records] == [21, 22, 23]


def test_the_one_private_diffusers_method_tipo_replaces_is_pinned():
    """Safe Latent Diffusion: tipo replaces StableDiffusionPipelineSafe._encode_prompt (the pipeline takes no
    prompt_embeds) with one that returns tipo's chunked embeddings. Pin its signature and its one call site,
    so a diffusers release that changes either fails here instead of generating from the wrong embeddings."""
    import inspect

    import diffusers
    from diffusers import StableDiffusionPipelineSafe

    params = list(inspect.signature(StableDiffusionPipelineSafe._encode_prompt).parameters)
    assert params == ["self", "prompt", "device", "num_images_per_prompt", "do_classifier_free_guidance",
                      "negative_prompt", "enable_safety_guidance"], diffusers.__version__
    source = inspect.getsource(StableDiffusionPipelineSafe.__call__)
    assert source.count("self._encode_prompt(") == 1 and "prompt_embeds" not in inspect.signature(
        StableDiffusionPipelineSafe.__call__).parameters
