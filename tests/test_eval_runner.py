"""The evaluation runner (``python -m eval``) end to end on a tiny TIPO model, a shell-free command
method, and (when the image stage is installed) a tiny SD pipeline with tiny random CLIP and DINOv2."""

from __future__ import annotations

import importlib.util
import json
import random
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from eval.cli import main
from eval.errors import EvalError
from eval.methods import CommandMethod, parse_methods, split_prompt
from eval.prompt_sets import SCENERY_POOL, PromptItem, is_tag_line, load_prompt_set, sample_items
from eval.runner import Extractors, ItemLog, score_images

PROMPTS = ["1girl, forest", "A cat sleeps on a sofa.", "scenery", "smile, long_hair, long hair, longhair", "a red car"]
UPPER = f'cmd:{shlex.quote(sys.executable)} -c "import sys; print(sys.stdin.read().upper())"'
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def expand_calls(monkeypatch):
    """Every request tipo's Expander.expand is called with, in order."""
    from tipo.expander import Expander

    calls = []
    original = Expander.expand

    def counting(self, request, *args, **kwargs):
        calls.append(request)
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(Expander, "expand", counting)
    return calls


@pytest.fixture(scope="module")
def clip_tokenizer_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    testing = pytest.importorskip("tipo.image.testing")
    path = tmp_path_factory.mktemp("clip_tokenizer")
    testing.tiny_clip_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "five.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


def run_args(prompt_file, out, model, *extra):
    # tipo last, so the last record of items.jsonl is a tipo one (the resume tests count its expansions)
    return ["run", "--prompts", prompt_file, "--methods", "none", "--methods", UPPER, "--methods", "tipo",
            "--model", model, "--threads", 1, "--max-new-tokens", 16, "--length", "short", "--out", out, "--quiet",
            *extra]


@pytest.fixture(scope="module")
def base_run(tiny_model, prompt_file, clip_tokenizer_dir, tmp_path_factory):
    """One finished text-only run; tests copy its folder before changing anything."""
    pytest.importorskip("llama_cpp", reason="the tipo method on a .gguf needs llama-cpp-python")
    out = tmp_path_factory.mktemp("base") / "run"
    code = main([str(a) for a in run_args(prompt_file, out, tiny_model.gguf_f32, "--clip-tokenizer",
                                          clip_tokenizer_dir)])
    assert code == 0
    return out


def copy_run(base_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(base_run, target)
    return target


# -- the full run ----------------------------------------------------------------------------------


def test_run_writes_results_report_and_plots(base_run):
    results = json.loads((base_run / "results.json").read_text())
    methods = results["methods"]
    assert list(methods) == ["none", UPPER, "tipo"]
    assert all(m["finished"] == 5 and m["failed"] == 0 for m in methods.values())
    assert len(results["items"]) == 15 and {i["method"] for i in results["items"]} == set(methods)
    none = methods["none"]["metrics"]
    # 7 tags as given: 1girl, forest | scenery | smile, long hair, long hair, longhair (an alias of long hair)
    assert none["known_tag_rate"] == {"value": 1.0}
    assert none["duplicate_rate"]["value"] == pytest.approx(1 / 7)
    assert none["alias_duplicate_rate"]["value"] == pytest.approx(2 / 7)
    assert none["user_tag_preservation"] == {"value": 1.0}
    assert none["mean_caption_words"]["value"] == pytest.approx((6 + 3) / 2)
    assert "no request has a ban list" in none["ban_compliance"]["skipped"]
    assert none["clip_tokens_mean"]["value"] > 2 and none["clip_fit_rate"] == {"value": 1.0}
    assert "no T5 tokenizer" in none["t5_tokens_mean"]["skipped"] or "value" in none["t5_tokens_mean"]
    # the command upper-cases; normalisation lower-cases tags again, so the tag metrics agree with none
    upper = methods[UPPER]["metrics"]
    for key in ("known_tag_rate", "duplicate_rate", "alias_duplicate_rate", "mean_tags"):
        assert upper[key] == none[key], key
    first = results["items"][0]
    assert first["values"]["n_tags"] == 2 and first["values"]["known_rate"] == 1.0 and first["tokens"]["clip"] > 2
    tipo_items = [i for i in results["items"] if i["method"] == "tipo"]
    assert all(i["output"]["detail"]["task"] for i in tipo_items)
    # every user tag survives tipo (its contract), and every method saw the same seed for an item
    assert methods["tipo"]["metrics"]["user_tag_preservation"] == {"value": 1.0}
    seeds = {}
    for item in results["items"]:
        seeds.setdefault(item["item"], set()).add(item["seed"])
    assert all(len(s) == 1 for s in seeds.values())
    assert results["config"]["prompt_set"]["items"] == 5

    report = (base_run / "report.md").read_text()
    for heading in ("## Setup", "## Text metrics", "## Image metrics", "## Not computed", "## Distributions",
                    "## Examples", "## Definitions"):
        assert heading in report
    assert "| known-tag rate | 1.000 |" in report
    plots = sorted(p.name for p in base_run.glob("plot_*.png"))
    assert {"plot_known_rate.png", "plot_n_tags.png", "plot_n_content_tags.png", "plot_caption_words.png",
            "plot_clip_tokens.png"} <= set(plots)
    for name in plots:
        data = (base_run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"]({name})" in report


def test_report_command_rebuilds_the_same_results(base_run, tmp_path, capsys):
    run = copy_run(base_run, tmp_path)
    before = json.loads((run / "results.json").read_text())
    (run / "report.md").unlink()
    for png in run.glob("plot_*.png"):
        png.unlink()
    code, out, err = cli(["report", run], capsys)
    assert code == 0, err
    assert "report.md" in out and (run / "report.md").exists() and list(run.glob("plot_*.png"))
    assert json.loads((run / "results.json").read_text()) == before


# -- resume ----------------------------------------------------------------------------------------


def test_resume_recomputes_only_missing_items(base_run, tmp_path, tiny_model, prompt_file, expand_calls, capsys):
    run = copy_run(base_run, tmp_path)
    log = run / "items.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    last = json.loads(lines[-1])
    assert last["method"] == "tipo"

    # 1. the last record deleted: only that item is expanded again, with the same seed and result
    log.write_text("".join(lines[:-1]))
    code, _, err = cli(run_args(prompt_file, run, tiny_model.gguf_f32), capsys)
    assert code == 0, err
    assert len(expand_calls) == 1 and PROMPTS[-1] in (expand_calls[0].tags, expand_calls[0].caption)
    after = log.read_text().splitlines(keepends=True)
    assert after[:-1] == lines[:-1]  # finished records untouched (same timestamps)
    redone = json.loads(after[-1])
    assert (redone["method"], redone["item"], redone["seed"]) == (last["method"], last["item"], last["seed"])
    assert redone["output"]["prompt"] == last["output"]["prompt"]  # same seed, same expansion
    assert "none: 0" in err and "tipo: 1" in err

    # 2. a torn last line (an interrupted write): dropped from the file, that item recomputed
    raw = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(raw[:-1]) + raw[-1][: len(raw[-1]) // 2])
    code, _, err = cli(run_args(prompt_file, run, tiny_model.gguf_f32), capsys)
    assert code == 0, err
    assert len(expand_calls) == 2
    assert len(ItemLog(log).load()) == 15 and log.read_bytes().splitlines(keepends=True)[:-1] == raw[:-1]

    # 3. nothing missing: nothing recomputed
    code, _, err = cli(run_args(prompt_file, run, tiny_model.gguf_f32), capsys)
    assert code == 0 and len(expand_calls) == 2 and "found 15 finished records" in err


def test_a_broken_middle_line_is_an_error_not_silently_dropped(base_run, tmp_path, tiny_model, prompt_file, capsys):
    run = copy_run(base_run, tmp_path)
    lines = (run / "items.jsonl").read_text().splitlines(keepends=True)
    lines[3] = lines[3][:20] + "\n"
    (run / "items.jsonl").write_text("".join(lines))
    code, _, err = cli(run_args(prompt_file, run, tiny_model.gguf_f32), capsys)
    assert code == 1 and "items.jsonl:4 is not a whole record" in err


@pytest.mark.parametrize("change,needle", [
    (["--seed", "1"], "seed: 0 -> 1"),
    (["--temperature", "0.9"], "methods.tipo.sampling.temperature: 0.5 -> 0.9"),
    (["--length", "long", "--max-new-tokens", "16"], "request_defaults.length"),
])
def test_resume_with_other_settings_is_refused(base_run, tmp_path, tiny_model, prompt_file, change, needle, capsys):
    run = copy_run(base_run, tmp_path)
    args = run_args(prompt_file, run, tiny_model.gguf_f32)
    args = [a for a in args if str(a) not in ("--length", "short")] if "--length" in change else args
    code, _, err = cli(args + change, capsys)
    assert code == 1 and "cannot be resumed" in err and needle in err and "new --out folder" in err


# -- bad inputs ------------------------------------------------------------------------------------


def test_empty_prompt_set_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\n")
    code, _, err = cli(["run", "--prompts", empty, "--methods", "none", "--out", tmp_path / "o"], capsys)
    assert code == 1 and "holds no prompts" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,needle", [
    (["--prompts", "partiprompts", "--data-dir", "{tmp}/nowhere"], "point --data-dir at the shared data folder"),
    (["--prompts", "nope"], "unknown prompt set 'nope'"),
    (["--prompts", "{tmp}/missing.txt"], "does not exist"),
    (["--prompts", "scenery", "--methods", "magic"], "unknown method 'magic'"),
    (["--prompts", "scenery", "--methods", "cmd:"], "needs a command"),
    (["--prompts", "scenery", "--methods", "cmd:no-such-program-xyz --flag"], "not found"),
    (["--prompts", "scenery", "--limit", "0"], "limit=0"),
    (["--prompts", "scenery", "--clip", "x"], "need images"),
    (["--prompts", "scenery", "--images"], "--images needs --pipeline"),
    (["--prompts", "scenery", "--metrics", "clip"], "--metrics clip needs --clip"),
    (["--prompts", "scenery", "--siglip", "x"], "both --aesthetic-head"),
])
def test_bad_settings_are_one_clear_error(tmp_path, args, needle, capsys):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    base = ["run", "--out", str(tmp_path / "o"), "--quiet"] + ([] if "--methods" in args else ["--methods", "none"])
    code, _, err = cli(base + args, capsys)
    assert code == 1 and needle in err and "Traceback" not in err


def test_a_failing_command_fails_its_items_only_and_is_retried(prompt_file, tmp_path, capsys):
    failing = f'cmd:{shlex.quote(sys.executable)} -c "import sys; sys.exit(3)"'
    out = tmp_path / "o"
    args = ["run", "--prompts", prompt_file, "--methods", "none", "--methods", failing, "--limit", 2, "--out", out,
            "--quiet"]
    code, _, err = cli(args, capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["methods"]["none"]["finished"] == 2
    entry = results["methods"][failing]
    assert entry["failed"] == 2 and "exited with status 3" in entry["failures"][0]["error"]
    assert entry["metrics"]["known_tag_rate"] == {"skipped": "no finished item (2 failed)"}
    assert "## Failed items" in (out / "report.md").read_text()
    code, _, err = cli(args, capsys)
    assert code == 0 and f"{failing}: 2" in err and "none: 0" in err  # failures are retried, the rest kept


def test_ban_compliance_counts_added_tags_only(prompt_file, tmp_path, capsys):
    adds_hat = f'cmd:{shlex.quote(sys.executable)} -c "import sys; print(sys.stdin.read().strip() + \', hat\')"'
    out = tmp_path / "o"
    code, _, err = cli(["run", "--prompts", prompt_file, "--methods", "none", "--methods", adds_hat, "--ban",
                        "hat, forest", "--limit", 2, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    methods = json.loads((out / "results.json").read_text())["methods"]
    # "forest" is the user's own tag (kept by contract, not a violation); the added "hat" is one
    assert methods["none"]["metrics"]["ban_compliance"] == {"value": 1.0, "n": 2}
    assert methods[adds_hat]["metrics"]["ban_compliance"] == {"value": 0.0, "n": 2}


def test_a_slow_command_times_out_as_a_failure():
    from eval.errors import MethodFailure
    from tipo.request import Request

    method = CommandMethod(f'{shlex.quote(sys.executable)} -c "import time; time.sleep(30)"', timeout=0.3)
    with pytest.raises(MethodFailure, match="timed out after 0.3 s"):
        method.expand(Request("cat"), "cat", seed=1)


def test_commands_run_without_a_shell(tmp_path):
    marker = tmp_path / "pwned"
    method = CommandMethod("cat")
    from tipo.request import Request

    hostile = f"1girl; touch {marker} && echo $(touch {marker}) `touch {marker}`"
    output = method.expand(Request(hostile), hostile, seed=1)
    assert output.prompt == hostile and not marker.exists()


def test_jsonl_prompt_file_fields_seeds_and_errors(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"id": "a", "tags": "1girl", "length": "very_short", "ban": ["hat"], "seed": 7}\n'
                    '{"caption": "A dog runs.", "output": "tags"}\n')
    pset = load_prompt_set(good)
    assert [i.id for i in pset.items] == ["a", "line:2"] and pset.items[0].seed == 7
    assert pset.items[0].kind == "tags" and pset.items[1].kind == "caption"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tags": "1girl"}\n{"tags": "x", "lenght": "short"}\n')
    with pytest.raises(EvalError, match=r"bad.jsonl:2: unknown field\(s\) \['lenght'\]"):
        load_prompt_set(bad)
    bad.write_text('{"tags": "x", "length": "huge"}\n')
    with pytest.raises(EvalError, match="bad.jsonl:1: length='huge' is not valid"):
        load_prompt_set(bad)
    with pytest.raises(EvalError, match="unknown format '.csv'"):
        (tmp_path / "p.csv").write_text("a\n")
        load_prompt_set(tmp_path / "p.csv")


# -- prompt sets and small parts ---------------------------------------------------------------------


def test_line_classification_and_prompt_splitting():
    assert is_tag_line("1girl, forest") and is_tag_line("scenery") and is_tag_line("(masterpiece:1.2), 1girl")
    assert not is_tag_line("A cat. On a mat.") and not is_tag_line("a red car") and not is_tag_line("Wow!")
    tags, caption = split_prompt("1girl, long_hair\n\nA girl stands in a forest.\n\nmasterpiece, newest")
    assert tags == ("1girl", "long hair", "masterpiece", "newest") and caption == "A girl stands in a forest."


def test_method_lists():
    assert [s.name for s in parse_methods(["none, tipo", "kgen,cmd:sed -e s/a,b/c/"])] == [
        "none", "tipo", "kgen", "cmd:sed -e s/a,b/c/"]
    with pytest.raises(EvalError, match="listed twice"):
        parse_methods(["none,none"])
    with pytest.raises(EvalError, match="no method"):
        parse_methods([" , "])


def test_scenery_set_is_fixed_and_made_of_known_landscape_tags():
    from tipo.tags import default_table

    table = default_table()
    assert all(table.is_known(t) and table.category(t).value == "general" for t in SCENERY_POOL)
    first, again = load_prompt_set("scenery"), load_prompt_set("scenery")
    assert len(first) == 100 and first.digest == again.digest
    for item in first.items:
        tags = [t.strip() for t in item.fields["tags"].split(",")]
        assert tags[0] == "scenery" and 2 <= len(tags) - 1 <= 4 and len(set(tags)) == len(tags)
        assert set(tags[1:]) <= set(SCENERY_POOL)


def test_limit_is_a_fixed_nested_sample():
    items = [PromptItem(f"x:{i}", {"tags": "cat"}) for i in range(50)]
    five, ten = sample_items(items, 5), sample_items(items, 10)
    assert len(five) == 5 and {i.id for i in five} <= {i.id for i in ten}
    assert [i.id for i in five] == sorted((i.id for i in five), key=lambda s: int(s[2:]))  # set order kept


@pytest.mark.skipif(not (DATA / "prompts").is_dir(), reason="the shared data folder is not here")
def test_shipped_sets_load_from_the_shared_data():
    parti = load_prompt_set("partiprompts", data_dir=DATA)
    assert len(parti) == 1632 and parti.items[0].fields == {"caption": "bond"}
    assert parti.items[0].meta["category"] == "Abstract"
    coco = load_prompt_set("coco", data_dir=DATA, limit=20)
    assert len(coco) == 20 and all(i.id.startswith("coco:") and i.kind == "caption" for i in coco.items)
    repo = Path(__file__).resolve().parents[1]  # the split the loader prefers: runs/builtin's, else any run's
    splits = sorted(repo.glob("runs/builtin/corpus/heldout.jsonl")) + sorted(repo.glob("runs/*/corpus/heldout.jsonl"))
    if splits:
        split = splits[0]
        held = {json.loads(line)["group"] for line in split.read_text().splitlines() if line.strip()}
        assert all(i.id in held for i in coco.items) and "training split" in coco.notes
    else:
        assert "hash split" in coco.notes


# -- image metrics on bad features -------------------------------------------------------------------


def _png(path, size=(24, 20), mode="RGB", seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).convert(mode).save(path)
    return path


def test_image_metric_failures_become_reasons(tmp_path):
    pytest.importorskip("PIL")
    rows = {"a": [("a\tx1", _png(tmp_path / "1.png"), "cat", "cat")],
            "b": [(f"b\tx{i}", _png(tmp_path / f"b{i}.png", seed=i), "cat", "cat") for i in range(3)]}
    nan = Extractors(dino=lambda images: np.full((len(images), 4), np.nan))
    result = score_images(rows, nan, reference=[_png(tmp_path / "r.png")])
    for method in ("a", "b"):
        assert "NaN or inf" in result["per_method"][method]["dino_vendi"]["skipped"]
        assert "no --clip model given" in result["per_method"][method]["clip_score_input"]["skipped"]
    ones = Extractors(dino=lambda images: np.random.default_rng(len(images)).normal(size=(len(images), 4)))
    result = score_images(rows, ones, reference=[_png(tmp_path / "r.png")])  # one reference image: no covariance
    assert "at least 2" in result["per_method"]["b"]["fdd"]["skipped"]
    refs = [_png(tmp_path / "r1.png", (30, 12), "L"), _png(tmp_path / "r2.png", (16, 16), "RGBA", 1)]  # mixed
    result = score_images(rows, ones, reference=refs)
    assert "at least 2" in result["per_method"]["a"]["fdd"]["skipped"]  # a single generated image
    assert result["per_method"]["b"]["fdd"]["value"] >= 0 and result["per_method"]["b"]["dino_vendi"]["value"] >= 1


# -- images ------------------------------------------------------------------------------------------


def _seeded(build, seed=0):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


@pytest.fixture(scope="module")
def image_models(tmp_path_factory):
    """A saved tiny SD pipeline, tiny random CLIP, DINOv2 and SigLIP + aesthetic head, and mixed reference images."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    testing = pytest.importorskip("tipo.image.testing")
    pytest.importorskip("tipo.image.generation", reason="the image stage (tipo.image.generate) is not here yet")
    from eval.metrics.aesthetic import build_aesthetic_head

    root = tmp_path_factory.mktemp("image_models")
    paths = {"sd": testing.save_tiny_sd(root / "sd", seed=0)}
    tok = testing.tiny_clip_tokenizer()
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    paths["clip"] = root / "clip"
    _seeded(lambda: transformers.CLIPModel(config)).save_pretrained(paths["clip"])
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(paths["clip"])
    paths["dino"] = root / "dino"
    dino = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                                     patch_size=8)
    _seeded(lambda: transformers.Dinov2Model(dino), 1).save_pretrained(paths["dino"])
    transformers.AutoImageProcessor.from_pretrained  # noqa: B018 - the loader the runner uses
    transformers.BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                                   do_center_crop=True).save_pretrained(paths["dino"])
    paths["siglip"] = root / "siglip"
    vision = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                             num_attention_heads=2, image_size=32, patch_size=8)
    _seeded(lambda: transformers.SiglipVisionModel(vision), 2).save_pretrained(paths["siglip"])
    transformers.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(paths["siglip"])
    paths["head"] = root / "head.pth"
    torch.save(_seeded(lambda: build_aesthetic_head(32), 3).state_dict(), paths["head"])
    paths["reference"] = root / "reference"
    paths["reference"].mkdir()
    for index, (size, mode) in enumerate([((40, 30), "RGB"), ((20, 20), "L"), ((32, 48), "RGBA")]):
        _png(paths["reference"] / f"{index}.png", size, mode, seed=index)  # mixed sizes and modes
    return paths


def test_images_and_image_metrics(image_models, tiny_model, prompt_file, tmp_path, expand_calls, capsys):
    pytest.importorskip("llama_cpp")
    from PIL import Image

    out = tmp_path / "img"
    m = image_models
    args = ["run", "--prompts", prompt_file, "--methods", "none,tipo", "--model", tiny_model.gguf_f32, "--threads", 1,
            "--max-new-tokens", 16, "--limit", 3, "--out", out, "--quiet", "--images", "--pipeline", m["sd"],
            "--steps", 2, "--image-width", 32, "--image-height", 32]
    scoring = ["--clip", m["clip"], "--dino", m["dino"], "--siglip", m["siglip"], "--aesthetic-head", m["head"],
               "--reference", m["reference"]]
    code, _, err = cli(args + scoring, capsys)
    assert code == 0, err
    nudenet = importlib.util.find_spec("nudenet") is not None
    results = json.loads((out / "results.json").read_text())
    for method in ("none", "tipo"):
        image = results["methods"][method]["image_metrics"]
        assert image["clip_score_input"]["value"] >= 0 and image["clip_score_prompt"]["value"] >= 0
        assert 1 <= image["dino_vendi"]["value"] <= 3
        assert image["fdd"]["value"] >= 0 and image["fdd"]["reference"] == 3
        assert np.isfinite(image["aesthetic_mean"]["value"])
        assert results["methods"][method]["metrics"]["clip_tokens_mean"]["value"] > 2  # --clip's tokenizer
        if nudenet:  # the image-level safety metric, beside the others, with no model to pass
            rate = image["inappropriate_image_rate"]
            assert 0 <= rate["value"] <= 1 and rate["images"] == 3 and rate["threshold"] == 0.6
            assert rate["detector"].startswith("nudenet")
        else:
            assert "nudenet is not installed" in image["inappropriate_image_rate"]["skipped"]
    items = results["items"]
    assert len(items) == 6
    for item in items:
        nudity = {"nudenet_score", "inappropriate"} if nudenet else set()
        assert set(item["image_scores"]) == {"clip_cos_input", "clip_cos_prompt", "aesthetic"} | nudity
        with Image.open(out / item["image"]) as im:
            assert im.size == (32, 32)
    seeds = {}
    for item in items:
        seeds.setdefault(item["item"], set()).add(item["image_seed"])
    assert all(len(s) == 1 for s in seeds.values())  # one image seed per item, shared by the methods
    report = (out / "report.md").read_text()
    assert "| CLIP score (given prompt) |" in report and "| FDD |" in report
    assert ("| inappropriate images (NudeNet) |" in report) is nudenet
    assert (out / "plot_clip_cos_input.png").exists() and (out / "plot_aesthetic.png").exists()

    # a lost image is drawn again on resume (its item re-expanded); the others are kept. The scoring
    # models are not part of the run's identity, so this resume may leave them out: the image scores
    # are then reported as not computed (never kept stale for a redrawn image).
    calls = len(expand_calls)
    tipo_image = next(out / i["image"] for i in items if i["method"] == "tipo")
    tipo_image.unlink()
    code, _, err = cli(args, capsys)
    assert code == 0 and len(expand_calls) == calls + 1 and tipo_image.exists() and "none: 0" in err
    results = json.loads((out / "results.json").read_text())
    clip = results["methods"]["tipo"]["image_metrics"].get("clip_score_input", {}).get("skipped", "")
    assert ("no --clip model given" if nudenet else "no image extractor given") in clip or not clip
    assert set(results["items"][0].get("image_scores", {})) <= {"nudenet_score", "inappropriate"}



# -- kgen ------------------------------------------------------------------------------------------------


def test_kgen_reference_runs_on_the_tiny_model_without_touching_the_global_rng(tiny_model, prompt_file, tmp_path,
                                                                              capsys):
    pytest.importorskip("kgen.executor.tipo", reason="the reference method needs tipo-kgen: pip install tipo-kgen")
    pytest.importorskip("llama_cpp")
    state = random.getstate()
    out = tmp_path / "k"
    code, _, err = cli(["run", "--prompts", prompt_file, "--methods", "kgen", "--model", tiny_model.gguf_f32,
                        "--threads", 1, "--max-new-tokens", 16, "--kgen-max-retry", 0, "--limit", 2, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    assert random.getstate() == state
    import kgen.executor.tipo as kt
    import kgen.models as km
    import kgen.utils as ku

    assert km.text_model is None and kt.random is random and ku.random is random  # kgen's globals put back
    records = ItemLog(out / "items.jsonl").load()
    assert len(records) == 2 and all(r["output"]["prompt"].strip() for r in records)
    # seeded: the same request and seed give the same prompt again
    from eval.methods import KgenMethod, MethodSettings
    from tipo.request import Request, Sampling

    method = KgenMethod(MethodSettings(model=str(tiny_model.gguf_f32), kgen_max_retry=0,
                                       sampling=Sampling(max_new_tokens=16)))
    try:
        request = Request(**records[0]["request"])
        again = method.expand(request, records[0]["text"], records[0]["seed"]).prompt
    finally:
        method.close()
    assert again == records[0]["output"]["prompt"] and random.getstate() == state
