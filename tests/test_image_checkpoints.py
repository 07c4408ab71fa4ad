"""Single-file checkpoints, LoRA tags and textual-inversion embeddings on tiny files the tests write.

The checkpoints are tiny diffusers pipelines written in the original (LDM) single-file layout
(``tipo.image.testing.save_single_file``) and loaded back with diffusers' ``from_single_file``
through a local config folder (no network). LoRAs are made with peft, embeddings in A1111's layouts.
"""

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the image stage needs torch: pip install 'tipo-prompt[image]'")
pytest.importorskip("diffusers", reason="the image stage needs diffusers: pip install 'tipo-prompt[image]'")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from tipo.errors import ModelError, RequestError  # noqa: E402
from tipo.image import generate, load_pipeline, read_parameters, regenerate  # noqa: E402
from tipo.image.testing import (  # noqa: E402
    save_single_file,
    save_tiny_embedding,
    save_tiny_lora,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
)


def pixels(image):
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def same(a, b):
    return np.array_equal(pixels(a), pixels(b))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    sd, sdxl, sdxl32 = tiny_sd_pipeline(0), tiny_sdxl_pipeline(0, hidden_2=48), tiny_sdxl_pipeline(0)
    sd.save_pretrained(root / "sd-config")
    sdxl.save_pretrained(root / "sdxl-config")
    sdxl32.save_pretrained(root / "sdxl32-config")
    out = {"root": root, "sd": sd, "sdxl": sdxl, "sd-config": root / "sd-config", "sdxl-config": root / "sdxl-config",
           "sdxl32": sdxl32, "sdxl32-config": root / "sdxl32-config",
           "sdxl32.safetensors": save_single_file(sdxl32, root / "xl-same-widths.safetensors"),
           "sd.safetensors": save_single_file(sd, root / "anime-v1.safetensors"),
           "sd.ckpt": save_single_file(sd, root / "anime-v1.ckpt"),
           "sdxl.safetensors": save_single_file(sdxl, root / "xl-model.safetensors")}
    loras, embs = root / "loras", root / "embeddings"
    (loras / "styles").mkdir(parents=True)
    embs.mkdir()
    out["grain"] = save_tiny_lora(loras / "grain.safetensors", text_encoder=False)
    out["te"] = save_tiny_lora(loras / "styles" / "Detail.safetensors", seed=3)  # found in a subfolder, any case
    out["xlgrain"] = save_tiny_lora(loras / "xlgrain.safetensors", kind="sdxl", hidden_2=48)
    out["kohya"] = save_tiny_lora(loras / "kohya.safetensors", seed=4, layout="kohya")
    out["xlkohya"] = save_tiny_lora(loras / "xlkohya.safetensors", kind="sdxl", hidden_2=48, seed=4, layout="kohya")
    out["mystyle"] = save_tiny_embedding(embs / "mystyle.pt", vectors=2)
    out["onevec"] = save_tiny_embedding(embs / "onevec.safetensors", vectors=1, seed=5)
    out["xlstyle"] = save_tiny_embedding(embs / "xlstyle.safetensors", kind="sdxl", hidden_2=48)
    out["loras"], out["embs"] = loras, embs
    return out


# -- single-file checkpoints -------------------------------------------------------------------
@pytest.mark.parametrize("name,config,kind", [("sd.safetensors", "sd-config", "sd"), ("sd.ckpt", "sd-config", "sd"),
                                              ("sdxl.safetensors", "sdxl-config", "sdxl"),
                                              ("sdxl32.safetensors", "sdxl32-config", "sdxl32")])  # equal CLIP widths
def test_single_file_loads_offline_with_the_same_weights_and_pixels(files, name, config, kind):
    loaded = load_pipeline(files[name], config=str(files[config]), local_files_only=True)
    original = files[kind]
    assert type(loaded).__name__ == type(original).__name__
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a = getattr(original, component, None)
        if a is None:
            continue
        sa, sb = a.state_dict(), getattr(loaded, component).state_dict()
        assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa), component
    assert same(generate("1girl, forest", loaded, steps=2, seed=3).images[0],
                generate("1girl, forest", original, steps=2, seed=3).images[0])


def test_single_file_by_path_records_name_and_hash_and_regenerates(files, tmp_path):
    path, config = files["sd.safetensors"], str(files["sd-config"])
    options = {"config": config, "local_files_only": True}
    result = generate("1girl, forest", path, steps=2, seed=4, out_dir=tmp_path, load_options=options)
    params = read_parameters(result.paths[0])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    assert params["Model"] == "anime-v1" and params["Model hash"] == digest and params["Model kind"] == "sd"
    assert same(regenerate(result.paths[0], path, load_options=options), result.images[0])
    other = save_single_file(tiny_sd_pipeline(1), tmp_path / "other.safetensors")
    with pytest.raises(RequestError, match=f"hash {digest}"):
        regenerate(result.paths[0], other, load_options=options)


def test_single_file_errors_name_the_problem(files, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(ModelError, match="looks like a LoRA"):
        load_pipeline(files["grain"], config=str(files["sd-config"]), local_files_only=True)
    with pytest.raises(ModelError, match="textual-inversion embedding"):
        load_pipeline(files["onevec"], local_files_only=True)
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "random.safetensors"))
    with pytest.raises(ModelError, match="not a Stable Diffusion checkpoint in the original layout"):
        load_pipeline(tmp_path / "random.safetensors", local_files_only=True)
    (tmp_path / "torn.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelError, match="not a readable safetensors"):
        load_pipeline(tmp_path / "torn.safetensors")
    with pytest.raises(RequestError, match="same family"):
        load_pipeline(files["sd.safetensors"], config=str(files["sdxl-config"]), local_files_only=True)
    with pytest.raises(RequestError, match="kind 'sdxl' does not match anime-v1.safetensors"):
        load_pipeline(files["sd.safetensors"], kind="sdxl", config=str(files["sd-config"]))
    # No config and no network: the inferred repo's configs are not here; the error says what to pass.
    with pytest.raises(ModelError, match=r"--config DIR.*hf download stable-diffusion-v1-5/stable-diffusion-v1-5"):
        load_pipeline(files["sd.safetensors"], local_files_only=True)
    with pytest.raises(RequestError, match="for single-file checkpoints"):
        load_pipeline(files["sd-config"], config=str(files["sd-config"]))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelError, match="not a checkpoint"):
        load_pipeline(tmp_path / "notes.txt")


# -- LoRA --------------------------------------------------------------------------------------
def test_lora_tags_load_apply_their_weight_and_are_recorded(files, tmp_path):
    sd = files["sd"]
    base = generate("1girl, forest", sd, steps=2, seed=1).images[0]
    rng = torch.random.get_rng_state()
    full = generate("1girl, forest <lora:grain:1>", sd, steps=2, seed=1, lora_dir=files["loras"], out_dir=tmp_path)
    assert torch.equal(rng, torch.random.get_rng_state())  # loading drew nothing from the caller's generator
    half = generate("1girl, forest <lora:grain:0.5>", sd, steps=2, seed=1, lora_dir=files["loras"]).images[0]
    zero = generate("1girl, forest <lora:grain:0>", sd, steps=2, seed=1, lora_dir=files["loras"]).images[0]
    assert not same(full.images[0], base) and not same(half, base) and not same(half, full.images[0])
    assert same(zero, base)  # the tag's weight is the adapter weight
    record = full.records[0]
    assert record.loras == ("grain",) and record.ignored == ()
    raw = files["grain"].read_bytes()
    addnet = hashlib.sha256(raw[8 + int.from_bytes(raw[:8], "little"):]).hexdigest()[:12]  # A1111's LoRA hash
    params = read_parameters(full.paths[0])
    assert params["Prompt"] == "1girl, forest <lora:grain:1>" and params["Lora hashes"] == f"grain: {addnet}"
    assert same(regenerate(full.paths[0], sd, lora_dir=files["loras"]), full.images[0])
    with pytest.raises(RequestError, match="pass lora_dir"):
        regenerate(full.paths[0], sd)
    assert same(generate("1girl, forest", sd, steps=2, seed=1).images[0], base)  # the pipeline is left as it was
    assert not any("lora" in name for name, _ in sd.unet.named_modules())


def test_lora_with_text_encoder_weights_mixed_runs_and_errors(files, tmp_path):
    sd = files["sd"]
    base = generate("1girl", sd, steps=2, seed=2).images[0]
    run = generate(["1girl <lora:detail:0.7>", "1girl", "1girl <lora:grain> <lora:detail:0.3>"], sd, steps=2, seed=2,
                   lora_dir=files["loras"])
    assert [r.loras for r in run.records] == [("detail",), (), ("grain", "detail")]
    assert not same(run.images[0], base) and not same(run.images[2], run.images[0])
    assert same(generate("1girl", sd, steps=2, seed=3).images[0], run.images[1])  # prompt 2 ran without LoRAs
    assert not any("lora" in name for name, _ in sd.text_encoder.named_modules())
    with pytest.raises(RequestError, match="no LoRA file missing"):
        generate("1girl <lora:missing:1>", sd, steps=2, lora_dir=files["loras"])
    with pytest.raises(RequestError, match="separate text-encoder and UNet weights"):
        generate("1girl <lora:grain:1:0.5>", sd, steps=2, lora_dir=files["loras"])
    no_dir = generate("1girl <lora:grain:1>", sd, steps=2, seed=2)
    assert no_dir.records[0].ignored == ("<lora:grain:1>",) and "no LoRA folder" in no_dir.notes[0]
    negative = generate("1girl", sd, steps=2, seed=2, negative="lowres <lora:grain:1>", lora_dir=files["loras"])
    assert negative.records[0].ignored == ("<lora:grain:1>",) and negative.records[0].loras == ()
    assert same(negative.images[0], generate("1girl", sd, steps=2, seed=2, negative="lowres").images[0])
    assert same(no_dir.images[0], base)
    saved = generate("1girl <lora:grain:1>", sd, steps=2, seed=2, lora_dir=files["loras"], out_dir=tmp_path).paths[0]
    changed = tmp_path / "changed"
    changed.mkdir()
    save_tiny_lora(changed / "grain.safetensors", text_encoder=False, seed=9)
    with pytest.raises(RequestError, match="not the ones it was made with"):
        regenerate(saved, sd, lora_dir=changed)


@pytest.mark.parametrize("kind,name", [("sd", "kohya"), ("sdxl", "xlkohya")])
def test_kohya_layout_loras_load(files, kind, name):
    """The names most downloaded LoRAs carry (kohya-ss / A1111: lora_unet_*, lora_te_*), UNet and text encoders."""
    from safetensors import safe_open

    with safe_open(str(files[name]), framework="pt") as fh:
        keys = list(fh.keys())
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in keys)
    assert any(k.startswith(("lora_te_text_model_", "lora_te1_text_model_")) for k in keys)
    pipe = files[kind]
    base = generate("1girl", pipe, steps=2, seed=1).images[0]
    one = generate(f"1girl <lora:{name}:1>", pipe, steps=2, seed=1, lora_dir=files["loras"]).images[0]
    zero = generate(f"1girl <lora:{name}:0>", pipe, steps=2, seed=1, lora_dir=files["loras"]).images[0]
    assert not same(one, base) and same(zero, base)


def test_sdxl_lora_and_embedding(files, tmp_path):
    xl = files["sdxl"]
    base = generate("1girl, forest", xl, steps=2, seed=1).images[0]
    both = generate("1girl, xlstyle, forest <lora:xlgrain:0.8>", xl, steps=2, seed=1, lora_dir=files["loras"],
                    embedding_dir=files["embs"], out_dir=tmp_path)
    assert not same(both.images[0], base)
    assert both.records[0].loras == ("xlgrain",) and both.records[0].embeddings == ("xlstyle",)
    again = regenerate(both.paths[0], xl, lora_dir=files["loras"], embedding_dir=files["embs"])
    assert same(again, both.images[0])
    with pytest.raises(RequestError, match="SD 1.x/2.x embedding"):
        generate("mystyle", xl, steps=2, embedding_dir=files["embs"])


# -- textual inversion -------------------------------------------------------------------------
def test_embeddings_a1111_and_comfyui_spellings(files, tmp_path):
    sd = files["sd"]
    vocab = len(sd.tokenizer)
    rng = torch.random.get_rng_state()
    base = generate("1girl, forest", sd, steps=2, seed=1).images[0]
    a1111 = generate("1girl, mystyle, forest", sd, steps=2, seed=1, embedding_dir=files["embs"], out_dir=tmp_path)
    comfy = generate("1girl, embedding:mystyle, forest", sd, steps=2, seed=1, embedding_dir=files["embs"]).images[0]
    plain_word = generate("1girl, mystyle, forest", sd, steps=2, seed=1).images[0]  # no folder: just a word
    assert not same(a1111.images[0], base) and not same(a1111.images[0], plain_word)
    assert same(a1111.images[0], comfy)
    assert a1111.records[0].embeddings == ("mystyle",)
    assert a1111.records[0].encoding[0].tokens == comfy_tokens(sd, "1girl, , forest") + 2  # two vectors
    params = read_parameters(a1111.paths[0])
    sha = hashlib.sha256(files["mystyle"].read_bytes()).hexdigest()[:12]
    assert params["TI hashes"] == f"mystyle: {sha}" and params["Prompt"] == "1girl, mystyle, forest"
    assert same(regenerate(a1111.paths[0], sd, embedding_dir=files["embs"]), a1111.images[0])
    assert len(sd.tokenizer) == vocab  # tokens removed after the run
    assert torch.equal(rng, torch.random.get_rng_state())  # resizing the embeddings drew nothing from it
    neg = generate("1girl", sd, steps=2, seed=1, negative="onevec", embedding_dir=files["embs"])
    assert neg.records[0].embeddings == ("onevec",)
    assert not same(neg.images[0], generate("1girl", sd, steps=2, seed=1, negative="onevec").images[0])


def comfy_tokens(pipe, text):
    return len(pipe.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_embedding_words_never_reach_the_language_model(files, tiny_model):
    from tipo import Expander, Sampling

    sd = files["sd"]
    with Expander(tiny_model.gguf_f32, n_threads=1) as ex:
        result = generate("1girl, (mystyle:1.2), embedding:onevec, forest", sd, expander=ex, steps=2, seed=1,
                          sampling=Sampling(max_new_tokens=24), embedding_dir=files["embs"])
    record = result.records[0]
    lm_input = record.expansion.plan.prompt
    assert "mystyle" not in lm_input and "onevec" not in lm_input and "forest" in lm_input
    assert record.prompt.startswith("(mystyle:1.2), embedding:onevec, ")
    assert record.embeddings == ("mystyle", "onevec") and record.user_prompt.startswith("1girl, (mystyle:1.2)")
    assert "mystyle" in read_parameters_text(record.parameters)["TIPO prompt"]


def read_parameters_text(text):
    from tipo.image import parse_parameters

    return parse_parameters(text)


def test_eval_runner_draws_with_a_single_file_checkpoint(files, tmp_path, capsys):
    import json

    from eval.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("1girl, forest\nscenery, sky\n")
    out = tmp_path / "run"
    args = ["run", "--prompts", prompts, "--methods", "none", "--out", out, "--quiet", "--images", "--pipeline",
            files["sd.safetensors"], "--pipeline-config", files["sd-config"], "--steps", 2, "--metrics", "tokens"]
    code = main([str(a) for a in args])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["images"]["config"] == str(files["sd-config"].resolve())
    results = json.loads((out / "results.json").read_text())
    assert len(results["items"]) == 2 and all((out / i["image"]).is_file() for i in results["items"])
    assert results["scoring"]["tokens"]["clip"]["source"].startswith(str(files["sd-config"]))  # its tokenizer
