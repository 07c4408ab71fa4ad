"""The image stage's pure parts: prompt splitting, chunking, fitting, kinds, infotext, seeds."""

import subprocess
import sys

import pytest

from tipo.errors import RequestError
from tipo.image.generation import image_seed
from tipo.image.infotext import format_parameters, parse_parameters, quote, unquote
from tipo.image.kinds import PipelineKind, kind_of_class, parse_kind
from tipo.image.prompts import Token, chunk_tokens, fit_tokens, split_prompt


def test_import_tipo_image_loads_nothing_heavy(tmp_path):
    code = ("import sys, tipo.image, tipo.image.cli, tipo.image.generation, tipo.image.loading, tipo.image.testing; "
            "tipo.image.generate; "
            "print([m for m in ('torch', 'diffusers', 'transformers', 'numpy', 'PIL') if m in sys.modules])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert run.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []


def test_split_prompt_weights_breaks_and_extras():
    p = split_prompt("1girl, (forest:1.2), [smile] BREAK blue sky <lora:style:0.8>\na caption line")
    assert [s.text for s in p.segments] == ["1girl, forest, smile", "blue sky\na caption line"]
    first = p.segments[0]
    assert first.weights[first.text.index("forest")] == pytest.approx(1.2)
    assert first.weights[first.text.index("smile")] == pytest.approx(1 / 1.1)
    assert first.weights[0] == 1.0
    assert p.extras == ("<lora:style:0.8>",) and p.weighted
    assert p.joined().text == "1girl, forest, smile, blue sky\na caption line"


def test_split_prompt_escapes_are_literal_and_plain_text_unweighted():
    p = split_prompt(r"marker \(medium\), cat")
    assert p.segments[0].text == "marker (medium), cat" and not p.weighted
    assert split_prompt("").segments == ()


def test_lower_keeps_weights_aligned():
    seg = split_prompt("(İstanbul:1.5), X").segments[0].lower()
    assert len(seg.text) == len(seg.weights) and seg.text.endswith(", x")
    assert seg.weights[0] == 1.5 and seg.weights[-1] == 1.0


def _toks(n, comma_every=0):
    return [Token(i, 1.0, i, i + 1, comma=bool(comma_every) and i % comma_every == comma_every - 1) for i in range(n)]


def test_chunks_are_full_windows_without_commas():
    chunks = chunk_tokens(_toks(200), window=75)
    assert [len(c) for c in chunks] == [75, 75, 50]


def test_chunks_end_at_a_comma_within_backtrack():
    chunks = chunk_tokens(_toks(160, comma_every=10), window=75, backtrack=20)
    assert [len(c) for c in chunks] == [70, 70, 20]
    assert all(c[-1].comma for c in chunks[:-1])
    assert [t.id for c in chunks for t in c] == list(range(160))


def test_chunks_ignore_a_comma_too_far_back():
    toks = _toks(100)
    toks[10] = Token(10, 1.0, 10, 11, comma=True)
    assert [len(c) for c in chunk_tokens(toks, window=75, backtrack=20)] == [75, 25]


def test_fit_cuts_at_the_last_comma_in_reach():
    kept, cut = fit_tokens(_toks(100, comma_every=10), 75)
    assert len(kept) == 69 and cut == 70  # the comma at index 69 is dropped
    kept, cut = fit_tokens(_toks(100), 75)
    assert len(kept) == 75 and cut == 75
    kept, cut = fit_tokens(_toks(10), 75)
    assert len(kept) == 10 and cut is None


def test_kinds():
    assert kind_of_class("StableDiffusionPipeline") is PipelineKind.SD
    assert kind_of_class("IFPipeline") is PipelineKind.IF
    with pytest.raises(RequestError, match="stage II"):
        kind_of_class("IFSuperResolutionPipeline")
    with pytest.raises(RequestError, match="choose one of"):
        parse_kind("sd3")
    assert parse_kind("SDXL") is PipelineKind.SDXL and parse_kind(None) is None


def test_infotext_round_trip_with_quotes_newlines_and_json():
    prompt = "1girl, forest, (smile:1.2)\n\nA girl stands in the forest. She smiles."
    params = {"Steps": 20, "Sampler": "DDIMScheduler", "CFG scale": 7.0, "Seed": 123, "Size": "512x512",
              "Model": "my, model", "TIPO Parameters": {"model": "TIPO-500M", "seed": 3, "tags": "a, b"},
              "TIPO prompt": "1girl, forest", "TIPO nl prompt": "", "Skip": None}
    text = format_parameters(prompt, "lowres, bad: hands", params)
    lines = text.split("\n")
    assert lines[-2] == 'Negative prompt: lowres, bad: hands'
    assert lines[-1].startswith("Steps: 20, Sampler: DDIMScheduler, CFG scale: 7, Seed: 123, Size: 512x512, "
                                'Model: "my, model", TIPO Parameters: "{')
    assert "Skip" not in text
    back = parse_parameters(text)
    assert back["Prompt"] == prompt and back["Negative prompt"] == "lowres, bad: hands"
    assert back["Model"] == "my, model" and back["TIPO prompt"] == "1girl, forest" and back["TIPO nl prompt"] == ""
    assert back["TIPO Parameters"] == {"model": "TIPO-500M", "seed": 3, "tags": "a, b"}
    assert back["CFG scale"] == "7" and back["Seed"] == "123"


def test_quote_matches_a1111():
    assert quote("plain") == "plain"
    assert quote("a, b") == '"a, b"' and unquote(quote('say "hi", x')) == 'say "hi", x'


def test_parse_parameters_without_settings_line():
    assert parse_parameters("just a prompt") == {"Prompt": "just a prompt", "Negative prompt": ""}


def test_image_seeds_follow_the_base_seed():
    assert [image_seed(10, k) for k in range(3)] == [10, 11, 12]
    assert image_seed(2**32 - 1, 1) == 0
