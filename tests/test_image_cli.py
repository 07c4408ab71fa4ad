"""``tipo generate`` end to end: tiny TIPO model + a saved tiny SD folder; one-line errors."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the image stage needs torch: pip install 'tipo-prompt[image]'")
pytest.importorskip("diffusers", reason="the image stage needs diffusers: pip install 'tipo-prompt[image]'")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from PIL import Image  # noqa: E402

from tipo.cli import main  # noqa: E402
from tipo.image import load_pipeline, read_parameters, regenerate  # noqa: E402
from tipo.image.testing import save_tiny_sd  # noqa: E402


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return save_tiny_sd(tmp_path_factory.mktemp("cli") / "tiny-sd", seed=0)


def run(args, capsys):
    code = main(["generate", *(str(a) for a in args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_writes_pngs_whose_parameters_regenerate_the_pixels(tiny_model, sd_folder, tmp_path, capsys):
    from PIL import Image

    out_dir = tmp_path / "out"
    code, out, err = run(["1girl, forest", "--pipeline", sd_folder, "--out", out_dir, "--seed", 1,
                          "--model", tiny_model.gguf_f32, "--steps", 2, "--n", 2, "--threads", 1,
                          "--max-new-tokens", 48], capsys)
    assert code == 0, err
    paths = out.split()
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["00000-1.png", "00001-2.png"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["00000-1.png", "00001-2.png"]
    pipe = load_pipeline(sd_folder)
    for path in paths:
        params = read_parameters(path)
        assert params["Prompt"].startswith("1girl, forest") and params["TIPO prompt"] == "1girl, forest"
        assert params["TIPO Parameters"]["model"].endswith(".gguf") and params["Model"] == "tiny-sd"
        with Image.open(path) as im:
            saved = np.asarray(im.convert("RGB"))
        assert np.array_equal(np.asarray(regenerate(path, pipe).convert("RGB")), saved)


def test_generate_seed_s_expands_as_expand_seed_s(tiny_model, sd_folder, tmp_path, capsys):
    """tipo.seeds rule 5: ``tipo generate --seed S`` expands its prompt exactly as ``tipo expand --seed S``."""
    common = ["--model", tiny_model.gguf_f32, "--threads", 1, "--max-new-tokens", 24, "--length", "very_short"]
    code, out, err = run(["1girl, forest", "--pipeline", sd_folder, "--out", tmp_path, "--seed", 5, "--steps", 1,
                          "--json", *common], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert main(["expand", "1girl, forest", "--seed", "5", "--json", *(str(a) for a in common)]) == 0
    expanded = json.loads(capsys.readouterr().out)
    assert record["seed"] == 5 and record["expansion"]["provenance"]["seed"] == 5
    assert record["expansion"]["completion"] == expanded["completion"] and record["prompt"] == expanded["prompt"]
    code, out, err = run(["1girl, forest", "--pipeline", sd_folder, "--out", tmp_path / "e", "--seed", 5,
                          "--expand-seed", 9, "--steps", 1, "--json", *common], capsys)
    assert code == 0, err
    assert json.loads(out)["expansion"]["provenance"]["seed"] == 9 and json.loads(out)["seed"] == 5


def test_no_expand_json_records(sd_folder, tmp_path, capsys):
    code, out, err = run(["(1girl:1.2), forest", "--pipeline", sd_folder, "--out", tmp_path, "--seed", 5,
                          "--steps", 2, "--no-expand", "--json", "--negative", "lowres"], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert record["prompt"] == "(1girl:1.2), forest" and record["seed"] == 5 and record["expansion"] is None
    assert record["encoding"][0]["weighted"] and record["path"].endswith("00000-5.png")


@pytest.mark.parametrize("extra,needle", [
    (["--kind", "sdxl"], "kind 'sdxl' does not match"),
    (["--steps", "0"], "steps=0"),
    (["--n", "-1"], "n=-1"),
    (["--width", "0", "--height", "32"], "width=0"),
    (["--width", "-64", "--height", "64"], "width=-64"),
    (["--width", "36", "--height", "32"], "multiple of 8"),
    (["--stage2", "x"], "--stage2 and --stage3"),
])
def test_errors_are_one_line(sd_folder, tmp_path, capsys, extra, needle):
    code, out, err = run(["1girl", "--pipeline", sd_folder, "--out", tmp_path, "--no-expand", *extra], capsys)
    assert code != 0 and needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_unreachable_pipeline_id_says_what_to_download(tmp_path, capsys):
    code, _, err = run(["1girl", "--pipeline", "nobody/no-such-pipeline", "--out", tmp_path, "--offline",
                        "--no-expand"], capsys)
    assert code == 1 and "hf download nobody/no-such-pipeline --local-dir" in err and err.count("\n") == 1


def test_missing_diffusers_names_the_extra(sd_folder, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    code, _, err = run(["1girl", "--pipeline", sd_folder, "--out", tmp_path, "--no-expand"], capsys)
    assert code == 1 and "pip install '" in err and "[image]'" in err and "diffusers" in err


def test_safety_checker_from_a_folder_blacks_out_flagged_images(sd_folder, tmp_path, capsys):
    from PIL import Image

    from tipo.image.testing import tiny_safety_checker

    checker, processor = tiny_safety_checker(flag=True)
    checker_dir = tmp_path / "checker"
    checker.save_pretrained(checker_dir)
    processor.save_pretrained(checker_dir)
    out_dir = tmp_path / "out"
    code, out, err = run(["1girl", "--pipeline", sd_folder, "--out", out_dir, "--seed", 3, "--steps", 2,
                          "--no-expand", "--safety-checker", checker_dir, "--json"], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert record["nsfw"] is True and "Safety checker: on" in record["parameters"]
    with Image.open(record["path"]) as im:
        assert np.asarray(im).max() == 0


def test_safety_checker_flag_without_a_checker_is_an_error(sd_folder, tmp_path, capsys):
    code, _, err = run(["1girl", "--pipeline", sd_folder, "--out", tmp_path, "--no-expand", "--safety-checker"],
                       capsys)
    assert code == 2 and "has no safety checker of its own" in err and err.count("\n") == 1


def test_wires_into_the_main_tipo_parser(sd_folder, tmp_path, capsys):
    import tipo.cli as cli

    code = cli.main(["generate", "1girl", "--pipeline", str(sd_folder), "--out", str(tmp_path), "--no-expand",
                     "--steps", "2", "--seed", "4"])
    out = capsys.readouterr().out
    assert code == 0 and out.strip().endswith("00000-4.png")
    assert cli.main(["generate", "1girl", "--pipeline", str(sd_folder), "--out", str(tmp_path), "--n", "0"]) == 2


def test_single_file_checkpoint_sampler_and_extra_networks_from_the_cli(sd_folder, tmp_path, capsys):
    from tipo.image.testing import save_single_file, save_tiny_embedding, save_tiny_lora, tiny_sd_pipeline

    checkpoint = save_single_file(tiny_sd_pipeline(0), tmp_path / "anime.safetensors")
    (tmp_path / "loras").mkdir()
    (tmp_path / "embs").mkdir()
    save_tiny_lora(tmp_path / "loras" / "grain.safetensors", text_encoder=False)
    save_tiny_embedding(tmp_path / "embs" / "mystyle.pt")
    out_dir = tmp_path / "out"
    code, out, err = run(["1girl, mystyle <lora:grain:0.7>", "--pipeline", checkpoint, "--config", sd_folder,
                          "--offline", "--no-expand", "--out", out_dir, "--seed", 2, "--steps", 2,
                          "--sampler", "euler a", "--clip-skip", 2, "--lora-dir", tmp_path / "loras",
                          "--embedding-dir", tmp_path / "embs"], capsys)
    assert code == 0, err
    params = read_parameters(out.split()[0])
    assert (params["Sampler"], params["Clip skip"], params["Model"]) == ("Euler a", "2", "anime")
    assert params["Lora hashes"].startswith("grain: ") and params["TI hashes"].startswith("mystyle: ")
    pipe = load_pipeline(checkpoint, config=str(sd_folder), local_files_only=True)
    with Image.open(out.split()[0]) as im:
        saved = np.asarray(im.convert("RGB"))
    again = regenerate(out.split()[0], pipe, lora_dir=tmp_path / "loras", embedding_dir=tmp_path / "embs")
    assert np.array_equal(np.asarray(again.convert("RGB")), saved)
    code, _, err = run(["1girl", "--pipeline", checkpoint, "--offline", "--no-expand", "--out", out_dir], capsys)
    assert code != 0 and "--config DIR" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["1girl", "--pipeline", sd_folder, "--no-expand", "--out", out_dir, "--sampler", "DPM fast"],
                       capsys)
    assert code != 0 and "unknown sampler 'DPM fast'" in err

