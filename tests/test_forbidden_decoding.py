"""Decode-time masking of banned terms and terms above the content rating, in tag lines and in
captions, on a synthetic vocabulary (no model)."""

import numpy as np
import pytest

from tipo.decoding import DecodeContext, DecodeState, ForbiddenTags, ForbiddenWords, Step
from tipo.planner import plan
from tipo.request import Request
from tipo.vocab import TokenText, piece_bytes

PIECES = ["<unk>", "<s>", "</s>", ",", "\n", " nude", " naked", " hat", " chat", " tennis", " racket", " A", " cat",
          " woman", ".", " ", "s", "e", " nud", " sits", " nude.", " is nude ", " pubic", " hair", " official", " art",
          " sensitive", " general", "long", ":"]
EOS = 2


@pytest.fixture(scope="module")
def vocab():
    return TokenText([piece_bytes(p.replace(" ", "\u2581"), i < 3) for i, p in enumerate(PIECES)], eos_id=EOS)


def mask_of(rule, request, vocab, completion):
    ctx = DecodeContext(plan(request), vocab)
    step = Step(DecodeState.from_text(ctx, completion), None, np.zeros(vocab.size, dtype=bool))
    rule(ctx).apply(step)
    return {vocab.texts[i] or "</s>" for i in np.flatnonzero(step.mask) if i != 0 and i != 1}


def test_a_tag_above_the_default_rating_cannot_be_completed(vocab):
    req = Request("1girl", output="tags", length="very_short")
    assert mask_of(ForbiddenTags, req, vocab, ", nude") == {",", "\n", "</s>"}
    assert mask_of(ForbiddenTags, req, vocab, ", hat") == set()
    # the user's rating choice is respected
    assert mask_of(ForbiddenTags, Request("1girl", output="tags", rating="questionable"), vocab, ", nude") == set()
    assert mask_of(ForbiddenTags, Request("1girl, nsfw", output="tags"), vocab, ", nude") == set()


def test_the_users_own_last_tag_is_left_alone(vocab):
    # The prompt ends in the user's "nude": the first token only ends it, it must stay possible.
    assert mask_of(ForbiddenTags, Request("1girl, nude", output="tags"), vocab, "") == set()


def test_meta_lines_cannot_gain_a_higher_rating_tag(vocab):
    req = Request("1girl", output="tags", gen_meta=True, length="very_short")
    assert mask_of(ForbiddenTags, req, vocab, ", hat\nrating: sensitive") == {",", "\n", "</s>"}
    assert mask_of(ForbiddenTags, req, vocab, ", hat\nrating: general") == set()


def test_ban_box_in_tag_lines(vocab):
    req = Request("1girl", output="tags", ban="tennis, official.*")
    assert mask_of(ForbiddenTags, req, vocab, ", tennis racket") == {",", "\n", "</s>"}
    assert mask_of(ForbiddenTags, req, vocab, ", official art") == {",", "\n", "</s>"}
    assert mask_of(ForbiddenTags, req, vocab, ", chat") == set()


def test_caption_word_above_the_rating_cannot_be_completed(vocab):
    req = Request(caption="a cat", output="caption")
    assert plan(req).prompt.endswith("long:")
    after_nude = mask_of(ForbiddenWords, req, vocab, " A nude")
    # every token that would end the word "nude" (space, punctuation, newline, EOS) is masked,
    # and so is every token holding a forbidden word whole
    assert {" cat", " woman", ".", " ", ",", "\n", "</s>", " is nude "} <= after_nude
    # a token that continues the word is not masked; the plural is forbidden once it ends
    assert "s" not in after_nude and " " in mask_of(ForbiddenWords, req, vocab, " A nudes")
    before = mask_of(ForbiddenWords, req, vocab, " A")
    assert " nude." in before and " is nude " in before and " nude" not in before
    assert "</s>" not in mask_of(ForbiddenWords, req, vocab, " A cat")


def test_caption_phrases_and_bans(vocab):
    req = Request(caption="a cat", output="caption", ban="tennis racket")
    assert " " in mask_of(ForbiddenWords, req, vocab, " A tennis racket")
    assert mask_of(ForbiddenWords, req, vocab, " A racket") - {" is nude ", " nude."} == set()
    assert " " in mask_of(ForbiddenWords, req, vocab, " A woman with pubic hair")
    free = Request(caption="a cat", output="caption", rating="unrestricted")
    assert mask_of(ForbiddenWords, free, vocab, " A nude") == set()


def test_word_rules_leave_tag_lines_to_the_tag_rules(vocab):
    req = Request("1girl", output="both", length="very_short")
    assert mask_of(ForbiddenWords, req, vocab, ", hat, nude") == set()
    assert mask_of(ForbiddenTags, req, vocab, ", hat\nlong: A nude") == set()
