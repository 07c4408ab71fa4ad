"""Decode-time rules and the sampler on synthetic vocabularies and scores (no model)."""

import numpy as np
import pytest

from tipo.decoding import DecodeRules, TokenText, piece_bytes
from tipo.planner import plan
from tipo.request import Request, Sampling
from tipo.sampling import MinP, Sampler, TopK, TopP

PIECES = ["<unk>", "<s>", "</s>", ",", "\n", " hat", " chat", " smile", "long", ":", " A", " cat", "<0x01>", "x",
          " ", "<|long|>"]
CONTROL = {0, 1, 2, 15}


@pytest.fixture()
def vocab():
    return TokenText([piece_bytes(p.replace(" ", "\u2581"), i in CONTROL) for i, p in enumerate(PIECES)], eos_id=2)


def ids(vocab, *texts):
    return [vocab.texts.index(t) for t in texts]


def test_piece_bytes():
    assert piece_bytes("\u2581smile", False) == b" smile"
    assert piece_bytes("<0x0A>", False) == b"\n"
    assert piece_bytes("<|long|>", True) == b""


def test_first_token_after_user_tags_cannot_extend_their_last_tag(vocab):
    rules = DecodeRules(plan(Request("1girl, hat", output="tags", length="very_short")), vocab)
    banned = rules.mask("")
    allowed = {vocab.texts[i] for i in np.flatnonzero(~banned)}
    assert allowed <= {",", "\n", ""}
    assert not banned[2]  # EOS may end the line


def test_below_class_minimum_the_tag_line_cannot_end(vocab):
    rules = DecodeRules(plan(Request("1girl", output="tags", length="short")), vocab)  # min 18
    banned = rules.mask(", smile, hat")
    assert banned[ids(vocab, "\n")[0]] and banned[2]
    assert not banned[ids(vocab, ",")[0]]


def test_at_class_cap_no_new_tag_can_start(vocab):
    tags = ", ".join(f"t{i}" for i in range(17))
    rules = DecodeRules(plan(Request("1girl", output="tags", length="very_short")), vocab)  # cap 18
    banned = rules.mask(", " + tags + ",")  # 18 complete tags
    assert banned[ids(vocab, ",")[0]]
    assert not banned[ids(vocab, "\n")[0]] and not banned[2]
    assert banned[ids(vocab, " smile")[0]]


def test_ban_masks_the_token_that_would_complete_a_banned_tag(vocab):
    rules = DecodeRules(plan(Request("1girl", output="tags", length="very_short", ban=("hat",))), vocab)
    assert rules.mask(", hat")[ids(vocab, ",")[0]]
    assert rules.mask(", hat")[2]
    assert not rules.mask(", chat")[ids(vocab, ",")[0]]


def test_junk_control_bytes_are_never_generated(vocab):
    rules = DecodeRules(plan(Request("", output="caption")), vocab)
    assert rules.mask(" A cat")[ids(vocab, "\x01")[0]]


def test_next_field_key_is_forced_after_the_tag_line(vocab):
    rules = DecodeRules(plan(Request("1girl", output="both", length="very_short")), vocab)
    banned = rules.mask(", smile\n")
    assert set(np.flatnonzero(~banned)) == set(ids(vocab, "long"))
    banned = rules.mask(", smile\nlong")
    assert set(np.flatnonzero(~banned)) == set(ids(vocab, ":"))


def test_stop_after_requested_tags_and_on_repeated_keys(vocab):
    rules = DecodeRules(plan(Request("1girl", output="tags", length="very_short")), vocab)
    assert rules.stop(", smile\n") == (len(", smile"), "requested fields written")
    rules2 = DecodeRules(plan(Request("1girl", output="both", length="very_short")), vocab)
    assert rules2.stop(", smile\n") is None
    cut = rules2.stop(", smile\nlong: A cat.\nlong: again")
    assert cut is not None and ", smile\nlong: A cat.\nlong: again"[: cut[0]] == ", smile\nlong: A cat."


def test_sampler_greedy_and_filters():
    s = Sampler(Sampling(temperature=0, seed=0, repetition_penalty=1.0))
    assert s.pick(np.array([0.0, 3.0, 1.0], dtype=np.float32), []) == 1
    banned = np.array([False, True, False])
    assert s.pick(np.array([0.0, 3.0, 1.0], dtype=np.float32), [], banned) == 2
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert list(TopK(2).candidates(logits.copy())) == [0, 1]
    assert TopP(0.75).keep(logits) == 2
    assert TopP(0.85).keep(logits) == 3
    assert MinP(0.2).keep(logits) == 3


def test_sampler_is_seeded_locally_and_reproducible():
    logits = np.random.default_rng(1).normal(size=100).astype(np.float32)
    a = [Sampler(Sampling(seed=7)).pick(logits, []) for _ in range(3)]
    b = Sampler(Sampling(seed=7))
    c = Sampler(Sampling(seed=7))
    assert [b.pick(logits, []) for _ in range(20)] == [c.pick(logits, []) for _ in range(20)]
    assert len(set(a)) == 1


def test_repetition_penalty_lowers_seen_tokens():
    s = Sampler(Sampling(temperature=0, seed=0, repetition_penalty=2.0))
    assert s.pick(np.array([2.0, 1.5], dtype=np.float32), [0]) == 1


def test_a_tag_already_written_cannot_be_completed_again(vocab):
    rules = DecodeRules(plan(Request("1girl, smile", output="tags", length="very_short")), vocab)
    comma = ids(vocab, ",")[0]
    assert not rules.mask("")[comma]  # ending the user's own last tag is fine
    assert rules.mask(", hat, chat, smile")[comma]  # the user's tag again
    assert rules.mask(", hat, chat, hat")[comma]  # the model's own tag again
    assert rules.mask(", hat, chat, hat")[2]
    assert not rules.mask(", hat, chat, cat")[comma]


def test_known_tags_only_keeps_the_tag_on_the_way_to_a_table_tag():
    pieces = ["<unk>", "<s>", "</s>", ",", "\n", " long", " ha", "ir", "xq", " smile", "ile"]
    vocab = TokenText([piece_bytes(p.replace(" ", "\u2581"), i < 3) for i, p in enumerate(pieces)], eos_id=2)
    rules = DecodeRules(plan(Request("", output="tags", length="very_short")), vocab, known_tags_only=True)
    logits = np.zeros(len(pieces), dtype=np.float32)
    none = np.zeros(len(pieces), dtype=bool)
    allowed = lambda completion: {pieces[i] for i in np.flatnonzero(~rules.restrict_to_known(completion, logits, none))}  # noqa: E731
    assert "ir" in allowed(" long ha") and "xq" not in allowed(" long ha")
    assert "," not in allowed(" long ha")  # "long ha" is no tag
    assert "," in allowed(" long hair") and "</s>" not in allowed(" long ha")
    # off the table already: only tokens that end the tag remain
    assert allowed(" xq") <= {",", "\n", "</s>"}
    free = DecodeRules(plan(Request("", output="tags", length="very_short")), vocab)
    assert not free.restrict_to_known(" long ha", logits, none).any()


def test_known_only_results_drop_tags_off_the_table():
    from tipo.parse import parse_text
    from tipo.result import finish

    p = plan(Request("1girl", output="tags"))
    r = finish(p, parse_text(p.prompt + ", smile, grassy que"), known_only=True)
    assert r.new_tags["general"] == ("smile",) and r.dropped == ("grassy que",)


def test_the_text_cannot_end_on_the_tag_line_while_a_caption_is_still_owed(vocab):
    owed = DecodeRules(plan(Request("1girl", output="both", length="very_short")), vocab)
    assert owed.mask(", smile")[2]
    done = DecodeRules(plan(Request("1girl", output="tags", length="very_short")), vocab)
    assert not done.mask(", smile")[2]
