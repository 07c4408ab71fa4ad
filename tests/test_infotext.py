"""The infotext codec: TIPO's settings in and out, the parameters text, exact texts in PNGs, seeds."""

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipo.errors import RequestError
from tipo.infotext import (
    PARAMETERS_KEY,
    QUOTE_SWAP,
    exact_texts,
    format_parameters,
    from_infotext,
    parse_parameters,
    to_infotext,
)
from tipo.seeds import image_seed, infotext_seed, offset_seed, record_seed
from tipo.settings import from_values, to_values

HOSTILE = [
    "1girl\nNegative prompt: hat",
    "1girl\nSteps: 1, Sampler: Euler, Seed: 3, Size: 8x8",
    "Negative prompt: first line",
    "  leading blanks\ntrailing blanks  ",
    "windows\r\nline ends\r",
    "a, b: \"quoted\"\n\nBREAK\n\nparagraph",
    "",
]


def a1111_parse(text):
    """A1111's parse_generation_parameters (modules/infotext_utils.py), prompt and negative part."""
    prompt, negative, done = "", "", False
    *lines, last = text.strip().split("\n")
    if len(re.findall(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)', last)) < 3:
        lines.append(last)
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done, line = True, line[16:].strip()
        if done:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    return prompt, negative


def clip_words(text):
    """CLIP's pre-tokenization: letters, digits and punctuation runs; blanks only separate."""
    return re.findall(r"[^\W\d_]+|\d|[^\s\w]+", text)


PARAMS = {"Steps": 2, "Sampler": "Euler a", "CFG scale": 7.5, "Seed": 5, "Size": "32x32"}


@pytest.mark.parametrize("prompt", HOSTILE)
@pytest.mark.parametrize("negative", ["", "bad, hands", "lowres\nNegative prompt: again", " x \n y "])
def test_any_prompt_and_negative_read_back_exactly(prompt, negative):
    text = format_parameters(prompt, negative, PARAMS)
    got = parse_parameters(text, exact_texts(prompt, negative, text))
    assert (got["Prompt"], got["Negative prompt"]) == (prompt, negative)
    assert got["Seed"] == "5" and got["Sampler"] == "Euler a" and got["Size"] == "32x32"  # the settings survive
    # A1111 reads the same settings line, and texts that CLIP tokenizes as the originals
    a_prompt, a_negative = a1111_parse(text)
    assert clip_words(a_prompt) == clip_words(prompt) and clip_words(a_negative) == clip_words(negative)


def test_an_exact_chunk_of_another_text_is_ignored():
    text = format_parameters("a\nNegative prompt: b", "", PARAMS)
    stale = exact_texts("something else", "", "another parameters text")
    assert parse_parameters(text, stale)["Prompt"] == "a\nNegative prompt : b"  # the visible text, not the stale one


def test_plain_prompts_are_written_as_before():
    text = format_parameters("1girl, forest\n\nA girl in a forest.", "lowres", PARAMS)
    assert text.split("\n")[:4] == ["1girl, forest", "", "A girl in a forest.", "Negative prompt: lowres"]


def test_pngs_keep_the_exact_texts(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    from tipo.image.infotext import read_parameters, write_png

    for i, prompt in enumerate(HOSTILE):
        negative = "lowres\nSteps: 9, Seed: 1, Size: 1x1"
        text = format_parameters(prompt, negative, PARAMS)
        path = write_png(Image.new("RGB", (8, 8)), tmp_path / f"{i}.png", text, prompt=prompt, negative=negative)
        got = read_parameters(path)
        assert (got["Prompt"], got["Negative prompt"], got["Seed"]) == (prompt, negative, "5")
        with Image.open(path) as im:
            assert im.info["parameters"] == text  # what A1111's PNG Info reads


def test_settings_round_trip_through_infotext_with_and_without_the_quote_swap():
    s = from_values({"tags": "1girl, \"x\"", "caption": "it's: a, caption", "ban": ["o'neil", "hat"],
                     "ban_regex": ["a\"b", "c,d"], "template": "<|general|>\n<|extended|>", "seed": 7,
                     "task": "tag_to_long", "model": "m.gguf", "known_tags": "on"})
    for swap in (True, False):
        entries = to_infotext(to_values(s), quote_swap=swap)
        text = format_parameters("expanded", "", {**PARAMS, **entries})
        assert from_values(from_infotext(parse_parameters(text))) == s
    swapped = to_infotext(to_values(s))[PARAMETERS_KEY]
    assert json.loads(swapped.translate(QUOTE_SWAP))["seed"] == 7  # what the reference extension reads


_tags = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)


@settings(max_examples=60, deadline=None, database=None)
@given(tags=_tags, caption=_tags, seed=st.integers(-1, 2**32 - 1), temperature=st.floats(0, 5),
       ban=st.lists(st.text("abc '\"", min_size=1, max_size=4).map(str.strip).filter(bool), max_size=3))
def test_infotext_round_trip_property(tags, caption, seed, temperature, ban):
    s = from_values({"tags": tags, "caption": caption, "seed": seed, "temperature": temperature, "ban": ban})
    text = format_parameters("p", "", {**PARAMS, **to_infotext(to_values(s))})
    assert from_values(from_infotext(parse_parameters(text))) == s


def test_the_reference_extensions_infotext_reads():
    old = {"seed": 1234, "tag_length": "very long", "ban_tags": "hat", "format_selected": "Both, NL first (recommend)",
           "model": "KBlueLeaf/TIPO-500M-ft | TIPO-500M-ft-F16.gguf", "gguf_cpu": True, "timing": "AFTER"}
    values = from_infotext({PARAMETERS_KEY: json.dumps(old).translate(QUOTE_SWAP), "TIPO prompt": "1girl"})
    s = from_values(values)
    assert s.request.length.value == "very_long" and s.request.ban == ("hat",) and s.template == "caption_first"
    assert s.loading["model"] == "KBlueLeaf/TIPO-500M-ft" and s.loading["device"] == "cpu" and s.request.tags == "1girl"


def test_garbled_settings_are_a_clear_error():
    assert from_infotext({"Steps": "20"}) is None
    with pytest.raises(RequestError, match="'TIPO Parameters' is not a JSON object"):
        from_infotext({PARAMETERS_KEY: "{not json"})


def test_seed_rules():
    assert image_seed(2**32 - 1, 1) == 0 and record_seed(3, 0) == record_seed(3, 0) != record_seed(3, 1)
    for expansion, image in ((5, 5), (9, 5), (1, 2**32 - 1), (None, 4)):
        offset = infotext_seed(expansion, image)
        assert offset_seed(image, offset) == (image if expansion is None else expansion)
    assert infotext_seed(5, 5) == -1


def test_regenerate_draws_the_same_pixels_whatever_the_texts_hold(sd, tmp_path, one_torch_thread):
    """Issue: a newline plus 'Negative prompt:' or 'Steps:' in a prompt corrupted the parameters."""
    pytest.importorskip("diffusers")
    import numpy as np

    from tipo.image import generate, read_parameters, regenerate

    prompt = "1girl, forest\nNegative prompt: hat\nSteps: 99, Sampler: Euler, Seed: 1, Size: 8x8"
    negative = "lowres\nNegative prompt: blurry\n  "
    result = generate(prompt, sd, steps=2, seed=3, negative=negative, out_dir=tmp_path)
    params = read_parameters(result.paths[0])
    assert (params["Prompt"], params["Negative prompt"], params["Seed"], params["Steps"]) == (prompt, negative, "3", "2")
    again = regenerate(result.paths[0], sd)
    assert np.array_equal(np.asarray(again.convert("RGB")), np.asarray(result.images[0].convert("RGB")))
