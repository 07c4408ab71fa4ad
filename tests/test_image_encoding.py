"""Encoder-aware prompts on tiny random SD, SDXL and IF pipelines (real diffusers classes)."""

import pytest

torch = pytest.importorskip("torch", reason="the image stage needs torch: pip install 'tipo-prompt[image]'")
pytest.importorskip("diffusers", reason="the image stage needs diffusers: pip install 'tipo-prompt[image]'")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from tipo.image.encoding import encode_prompt, encode_upscaler_prompt, tokenize  # noqa: E402
from tipo.image.prompts import chunk_tokens, split_prompt  # noqa: E402

# About 200 tokens with the tiny tokenizer: three CLIP chunks.
LONG = ", ".join(["long hair", "blue eyes", "forest", "sunlight"] * 20)


def test_short_prompt_equals_diffusers_own_encoding(sd):
    ours = encode_prompt(sd, "1girl, forest, long hair", "lowres")
    pe, ne = sd.encode_prompt("1girl, forest, long hair", "cpu", 1, True, "lowres")
    assert torch.equal(ours.prompt_embeds, pe) and torch.equal(ours.negative_prompt_embeds, ne)
    assert ours.reports[0].chunks == 1 and ours.reports[0].cut == ""


def test_200_token_prompt_gives_three_chunks_not_a_truncation(sd):
    ours = encode_prompt(sd, LONG)
    report = ours.reports[0]
    assert report.chunks == 3 and 150 < report.tokens <= 225
    assert ours.prompt_embeds.shape == (1, 3 * 77, 32)
    assert ours.negative_prompt_embeds.shape == ours.prompt_embeds.shape  # negative padded to 3 chunks
    truncated, _ = sd.encode_prompt(LONG, "cpu", 1, True, "")
    assert truncated.shape == (1, 77, 32)  # diffusers keeps 75 tokens and drops the rest
    tokens = tokenize(sd.tokenizer, split_prompt(LONG).segments[0])
    assert report.tokens == len(tokens)  # nothing dropped
    chunks = chunk_tokens(tokens, 75)
    for chunk, after in zip(chunks, chunks[1:], strict=False):  # every chunk ends at a tag boundary
        assert chunk[-1].comma or after[0].comma
    assert not torch.allclose(ours.prompt_embeds[:, 77:154], ours.prompt_embeds[:, :77])
    empty = encode_prompt(sd, "").prompt_embeds
    assert not torch.allclose(ours.prompt_embeds[:, 154:], empty)  # the third chunk carries the tail


def test_chunks_break_at_break(sd):
    assert encode_prompt(sd, "1girl BREAK forest").reports[0].chunks == 2


def test_long_negative_pads_the_prompt(sd):
    ours = encode_prompt(sd, "1girl", LONG)
    assert ours.prompt_embeds.shape == ours.negative_prompt_embeds.shape == (1, 3 * 77, 32)


def test_weights_are_honoured_and_the_mean_restored(sd):
    plain = encode_prompt(sd, "1girl, forest").prompt_embeds
    weighted = encode_prompt(sd, "1girl, (forest:1.5)")
    assert weighted.reports[0].weighted
    assert not torch.allclose(plain, weighted.prompt_embeds)
    assert torch.allclose(plain.mean(), weighted.prompt_embeds.mean(), atol=1e-5)
    assert not torch.allclose(encode_prompt(sd, "(1girl:0.5), forest").prompt_embeds, weighted.prompt_embeds)


def test_extra_network_tags_are_left_out_and_reported(sd):
    with_lora = encode_prompt(sd, "1girl, forest <lora:style:0.8>")
    assert with_lora.ignored == ("<lora:style:0.8>",)
    assert torch.equal(with_lora.prompt_embeds, encode_prompt(sd, "1girl, forest").prompt_embeds)


def test_sdxl_short_prompt_equals_diffusers(sdxl):
    ours = encode_prompt(sdxl, "1girl, forest, long hair")
    theirs = sdxl.encode_prompt("1girl, forest, long hair", device="cpu", num_images_per_prompt=1,
                                do_classifier_free_guidance=True)
    mine = (ours.prompt_embeds, ours.negative_prompt_embeds, ours.pooled_prompt_embeds,
            ours.negative_pooled_prompt_embeds)
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))


def test_sdxl_chunks_both_encoders_and_pooled_comes_from_the_user(sdxl):
    user = "1girl, forest"
    expanded = user + ", " + LONG
    as_user = encode_prompt(sdxl, expanded, pooled_text=user)
    as_expanded = encode_prompt(sdxl, expanded)
    assert [r.encoder for r in as_user.reports] == ["clip-l", "clip-g"]
    assert all(r.chunks == 3 for r in as_user.reports)
    assert as_user.prompt_embeds.shape == (1, 3 * 77, 64)
    alone = encode_prompt(sdxl, user).pooled_prompt_embeds
    assert torch.equal(as_user.pooled_prompt_embeds, alone)
    assert not torch.allclose(as_expanded.pooled_prompt_embeds, alone)
    assert torch.equal(as_user.prompt_embeds, as_expanded.prompt_embeds)  # only the pooled part differs


def test_if_t5_equals_diffusers_and_fits_long_prompts(cascade):
    stage1 = cascade[0]
    ours = encode_prompt(stage1, "1girl, Forest, long hair")
    theirs = stage1.encode_prompt("1girl, Forest, long hair")
    assert torch.equal(ours.prompt_embeds, theirs[0]) and torch.equal(ours.negative_prompt_embeds, theirs[1])
    fitted = encode_prompt(stage1, LONG)
    report = fitted.reports[0]
    assert report.encoder == "t5" and report.chunks == 1 and report.tokens <= 76
    assert report.cut and LONG.endswith(report.cut) and not report.cut.startswith(",")
    assert fitted.prompt_embeds.shape == (1, 77, 32)


def test_upscaler_prompt_is_fitted_to_one_clip_window(cascade):
    upscaler = cascade[2]
    short = encode_upscaler_prompt(upscaler, "1girl, forest")
    theirs = upscaler.encode_prompt("1girl, forest", "cpu", 1, True, "")
    assert torch.equal(short.prompt_embeds, theirs[0]) and torch.equal(short.negative_prompt_embeds, theirs[1])
    long = encode_upscaler_prompt(upscaler, LONG)
    assert long.reports[0].encoder == "upscaler-clip" and long.reports[0].tokens <= 75 and long.reports[0].cut
