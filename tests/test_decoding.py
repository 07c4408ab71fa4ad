"""Decode-time rules, each alone, the incremental state, one sequence and the sampler, on synthetic
vocabularies and scores (no model)."""

import codecs
import random

import numpy as np
import pytest

from tipo.decoding import (
    AlreadyWritten,
    ClassCap,
    ClassMinimum,
    ControlBytes,
    DecodeContext,
    DecodeRules,
    DecodeState,
    FieldKey,
    FirstTokenEndsUserTag,
    ForbiddenTags,
    KnownTagsOnly,
    NoEosWhileCaptionOwed,
    Rule,
    Sequence,
    Step,
    StopCondition,
    ValueStartsWithSpace,
)
from tipo.errors import RequestError
from tipo.planner import plan
from tipo.request import Request, Sampling
from tipo.sampling import MinP, Sampler, TopK, TopP
from tipo.vocab import TokenText, piece_bytes

PIECES = ["<unk>", "<s>", "</s>", ",", "\n", " hat", " chat", " smile", "long", ":", " A", " cat", "<0x01>", "x",
          " ", "<|long|>"]
CONTROL = {0, 1, 2, 15}
EOS = 2


@pytest.fixture()
def vocab():
    return TokenText([piece_bytes(p.replace(" ", "\u2581"), i in CONTROL) for i, p in enumerate(PIECES)], eos_id=EOS)


def ids(vocab, *texts):
    return [vocab.texts.index(t) for t in texts]


def only(rule, request, vocab, completion, logits=None):
    """The mask one rule alone leaves after ``completion`` (True = forbidden)."""
    ctx = DecodeContext(plan(request), vocab)
    step = Step(DecodeState.from_text(ctx, completion), logits, np.zeros(vocab.size, dtype=bool))
    rule(ctx).apply(step)
    if step.open_ids is not None:  # a rule that names the open ids names exactly those of its mask
        assert step.open_ids.tolist() == np.flatnonzero(~step.mask).tolist()
    return step.mask


def allowed(vocab, mask):
    return {vocab.texts[i] if vocab.texts[i] or i != EOS else "</s>" for i in np.flatnonzero(~mask)}


def test_piece_bytes():
    assert piece_bytes("\u2581smile", False) == b" smile"
    assert piece_bytes("<0x0A>", False) == b"\n"
    assert piece_bytes("<|long|>", True) == b""


# -- each rule alone --------------------------------------------------------------------------
def test_control_bytes(vocab):
    mask = only(ControlBytes, Request("", output="caption"), vocab, " A cat")
    assert list(np.flatnonzero(mask)) == ids(vocab, "\x01")


def test_field_key_forces_the_next_key_token_by_token(vocab):
    req = Request("1girl", output="both", length="very_short")
    assert set(np.flatnonzero(~only(FieldKey, req, vocab, ", smile\n"))) == set(ids(vocab, "long"))
    assert set(np.flatnonzero(~only(FieldKey, req, vocab, ", smile\nlong"))) == set(ids(vocab, ":"))
    assert not only(FieldKey, req, vocab, ", smile").any()  # nothing pending
    tags_only = Request("1girl", output="tags", length="very_short")
    assert not only(FieldKey, tags_only, vocab, ", smile\n").any()  # no field after the tags


def test_field_key_decides_the_step_alone(vocab):
    rules = DecodeRules(plan(Request("1girl", output="both", length="very_short")), vocab)
    assert set(np.flatnonzero(~rules.mask(", smile\n"))) == set(ids(vocab, "long"))


def test_value_starts_with_space_after_an_empty_key(vocab):
    req = Request(caption="a cat", caption_kind="short", output="caption")
    assert plan(req).prompt.endswith("long:")
    mask = only(ValueStartsWithSpace, req, vocab, "")
    assert allowed(vocab, mask) == {" hat", " chat", " smile", " A", " cat", "</s>"}
    assert not only(ValueStartsWithSpace, req, vocab, " A").any()


def test_first_token_after_user_tags_cannot_extend_their_last_tag(vocab):
    mask = only(FirstTokenEndsUserTag, Request("1girl, hat", output="tags", length="very_short"), vocab, "")
    assert allowed(vocab, mask) == {",", "\n", "</s>"}
    assert not only(FirstTokenEndsUserTag, Request("1girl, hat", output="tags"), vocab, ",").any()


def test_below_class_minimum_the_tag_line_cannot_end(vocab):
    mask = only(ClassMinimum, Request("1girl", output="tags", length="short"), vocab, ", smile, hat")  # min 18
    assert set(np.flatnonzero(mask)) == set(ids(vocab, "\n")) | {EOS}
    assert not only(ClassMinimum, Request("1girl", output="tags", length="very_short"), vocab, ", smile").any()


def test_at_class_cap_no_new_tag_can_start(vocab):
    tags = ", ".join(f"t{i}" for i in range(17))
    req = Request("1girl", output="tags", length="very_short")  # cap 18
    mask = only(ClassCap, req, vocab, ", " + tags + ",")  # 18 complete tags, nothing being written
    assert allowed(vocab, mask) == {"\n", "</s>"}
    mask = only(ClassCap, req, vocab, ", " + tags + ", sm")  # a tag being written may finish
    assert mask[ids(vocab, ",")[0]] and not mask[ids(vocab, "x")[0]]
    assert not only(ClassCap, req, vocab, ", smile").any()


def test_the_text_cannot_end_on_the_tag_line_while_a_caption_is_still_owed(vocab):
    owed = only(NoEosWhileCaptionOwed, Request("1girl", output="both", length="very_short"), vocab, ", smile")
    assert list(np.flatnonzero(owed)) == [EOS]
    assert not only(NoEosWhileCaptionOwed, Request("1girl", output="tags", length="very_short"), vocab, ", smile").any()


def test_a_tag_already_written_cannot_be_completed_again(vocab):
    req = Request("1girl, smile", output="tags", length="very_short")
    comma = ids(vocab, ",")[0]
    assert not only(AlreadyWritten, req, vocab, "")[comma]  # ending the user's own last tag is fine
    assert only(AlreadyWritten, req, vocab, ", hat, chat, smile")[comma]  # the user's tag again
    mask = only(AlreadyWritten, req, vocab, ", hat, chat, hat")  # the model's own tag again
    assert mask[comma] and mask[EOS] and mask[ids(vocab, "\n")[0]]
    assert not only(AlreadyWritten, req, vocab, ", hat, chat, cat").any()


def test_ban_masks_the_token_that_would_complete_a_banned_tag(vocab):
    req = Request("1girl", output="tags", length="very_short", ban=("hat",))
    assert set(np.flatnonzero(only(ForbiddenTags, req, vocab, ", hat"))) == set(ids(vocab, ",", "\n")) | {EOS}
    assert not only(ForbiddenTags, req, vocab, ", chat").any()
    assert not only(ForbiddenTags, Request("1girl", output="tags"), vocab, ", hat").any()  # no bans


def test_tag_line_rules_leave_captions_alone(vocab):
    req = Request("1girl, hat", output="both", length="short", ban=("cat",))
    for rule in (FirstTokenEndsUserTag, ClassMinimum, ClassCap, NoEosWhileCaptionOwed, AlreadyWritten, ForbiddenTags):
        assert not only(rule, req, vocab, ", smile\nlong: A cat").any(), rule


def test_known_tags_only_keeps_the_tag_on_the_way_to_a_table_tag():
    pieces = ["<unk>", "<s>", "</s>", ",", "\n", " long", " ha", "ir", "xq", " smile", "ile"]
    vocab = TokenText([piece_bytes(p.replace(" ", "\u2581"), i < 3) for i, p in enumerate(pieces)], eos_id=2)
    req = Request("", output="tags", length="very_short")
    logits = np.zeros(len(pieces), dtype=np.float32)

    def ok(completion):
        return allowed(vocab, only(KnownTagsOnly, req, vocab, completion, logits))

    assert "ir" in ok(" long ha") and "xq" not in ok(" long ha")
    assert "," not in ok(" long ha")  # "long ha" is no tag
    assert "," in ok(" long hair") and "</s>" not in ok(" long ha")
    assert ok(" xq") <= {",", "\n", "</s>"}  # off the table already: only tokens that end the tag
    free = DecodeRules(plan(req), vocab)
    assert not free.mask(" long ha").any()


def test_known_tags_only_looks_only_at_the_likeliest_allowed_tokens():
    pieces = ["<unk>", "<s>", "</s>", ",", "\n"] + [f" w{i}" for i in range(300)] + [" smile"]
    vocab = TokenText([piece_bytes(p.replace(" ", "\u2581"), i < 3) for i, p in enumerate(pieces)], eos_id=2)
    logits = np.zeros(len(pieces), dtype=np.float32)
    logits[5:305] = 5.0  # 300 likelier tokens, none on the way to a tag
    mask = only(KnownTagsOnly, Request("", output="tags", length="very_short"), vocab, ", x, ", logits)
    assert allowed(vocab, mask) <= {",", "\n", "</s>"}  # " smile" is outside the top 256
    logits[305] = 6.0
    mask = only(KnownTagsOnly, Request("", output="tags", length="very_short"), vocab, ", x, ", logits)
    assert " smile" in allowed(vocab, mask)


def test_stop_after_requested_tags_and_on_repeated_keys(vocab):
    rules = DecodeRules(plan(Request("1girl", output="tags", length="very_short")), vocab)
    assert rules.stop(", smile\n") == (len(", smile"), "requested fields written")
    rules2 = DecodeRules(plan(Request("1girl", output="both", length="very_short")), vocab)
    assert rules2.stop(", smile\n") is None
    cut = rules2.stop(", smile\nlong: A cat.\nlong: again")
    assert cut is not None and ", smile\nlong: A cat.\nlong: again"[: cut[0]] == ", smile\nlong: A cat."
    assert isinstance(rules2.stop_condition, StopCondition)


def test_an_added_rule_composes_with_the_defaults(vocab):
    class NoCats(Rule):
        def apply(self, step):
            step.mask[self.vocab.texts.index(" cat")] = True
            return False

    rules = DecodeRules(plan(Request("", output="caption")), vocab, extra=[NoCats])
    mask = rules.mask(" A")
    assert mask[ids(vocab, " cat")[0]] and mask[ids(vocab, "\x01")[0]]


# -- the incremental state --------------------------------------------------------------------
def test_state_fed_token_by_token_equals_the_state_of_the_whole_text(vocab):
    """Feeding bytes one piece at a time (multi-byte characters split across tokens included)
    gives the same views as reading the whole text at once."""
    ctx = DecodeContext(plan(Request("1girl, hat", output="both", length="very_short")), vocab)
    pieces = [b",", b" smile", b",", b" caf", b"\xc3", b"\xa9", b",", b" \xe6\x97", b"\xa5", b"\n", b"long", b":",
              b" A", b" cat", b"\n", b"long", b": again"]
    st = DecodeState(ctx)
    done = b""
    for piece in pieces:
        st.feed(piece)
        done += piece
        text = done.decode("utf-8", "replace")
        fresh = DecodeState.from_text(ctx, text)
        assert st.completion == text
        for view in ("line", "line_is_tags", "partial", "pending_key", "field", "stop_at", "empty", "separated",
                     "ends_line"):
            assert getattr(st, view) == getattr(fresh, view), (text, view)
        assert st.seen() == fresh.seen() and st.tag_count() == fresh.tag_count()
    assert st.stop_at == len(", smile, café, 日\nlong: A cat")


def test_incremental_utf8_matches_decoding_everything_at_once():
    rng = random.Random(0)
    alphabet = [b"a", b",", b"\n", b"\xe6", b"\x97", b"\xa5", b"\xf0", b"\x9f", b"\x8e", b"\xc3", b"\xa9", b"\xff"]
    for _ in range(500):
        dec, text, data = codecs.getincrementaldecoder("utf-8")("replace"), "", b""
        for _ in range(rng.randint(1, 8)):
            piece = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3)))
            data += piece
            text += dec.decode(piece)
            assert text + ("\ufffd" if dec.getstate()[0] else "") == data.decode("utf-8", "replace")


# -- one sequence on synthetic scores ---------------------------------------------------------
def _scores(vocab, prefer):
    logits = np.full(vocab.size, -5.0, dtype=np.float32)
    logits[vocab.texts.index(prefer) if prefer != "</s>" else EOS] = 5.0
    return logits


def test_sequence_steps_on_given_scores_and_stops_at_the_end_of_the_tags(vocab):
    rules = DecodeRules(plan(Request("1girl", output="tags", length="very_short")), vocab)
    seq = Sequence(rules, Sampler(Sampling(temperature=0, seed=0, repetition_penalty=1.0)), [1], budget=10)
    for want in (",", " smile", "\n"):
        assert seq.step(_scores(vocab, want)) == vocab.texts.index(want)
    assert seq.step(_scores(vocab, " hat")) is None
    assert seq.result().completion == ", smile" and seq.result().reason == "requested fields written"


def test_sequence_budget_and_cancel_drop_an_interrupted_tag(vocab):
    rules = DecodeRules(plan(Request("1girl", output="tags", length="very_short")), vocab)
    greedy = Sampling(temperature=0, seed=0, repetition_penalty=1.0)
    seq = Sequence(rules, Sampler(greedy), [1], budget=3)
    seq.step(_scores(vocab, ","))
    seq.step(_scores(vocab, " smile"))
    assert seq.step(_scores(vocab, ",")) is None and seq.done
    seq2 = Sequence(rules, Sampler(greedy), [1], budget=10)
    for want in (",", " smile", ",", " hat"):
        seq2.step(_scores(vocab, want))
    seq2.cancel()
    assert seq2.result() == type(seq2.result())(", smile", 4, "cancelled")
    assert Sequence(rules, Sampler(greedy), [1], budget=0).result().reason == "context full"


# -- the sampler ------------------------------------------------------------------------------
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


def test_top_k_fast_paths_give_the_general_answer():
    """The shortcuts (block maxima, one partition, only the ids left by the mask) answer exactly
    as the general path (all finite logits, partitioned, sorted by logit then id), ties and
    -inf included."""
    from tipo.sampling import _top_k_small, _top_k_unique

    def general(logits: np.ndarray, k: int) -> list[int]:
        finite = np.flatnonzero(np.isfinite(logits))
        if k < finite.size:
            finite = finite[np.argpartition(logits[finite], -k)[-k:]]
        return finite[np.lexsort((finite, -logits[finite]))].tolist()

    rng = np.random.default_rng(0)
    tried = 0
    for size in (40, 300, 4013, 20000):
        for case in range(12):
            logits = (rng.normal(size=size) * 3).astype(np.float32)
            if case % 3 == 1:
                logits = np.round(logits)  # ties
            banned = np.zeros(size, dtype=bool)
            banned[rng.integers(0, size, size * (case % 4) // 4)] = True
            logits[banned] = -np.inf
            for k in (1, 5, 80, size // 2):
                want = general(logits, k)
                for fast in (_top_k_small(logits, k), _top_k_unique(logits, k)):
                    assert fast is None or fast.tolist() == want
                assert TopK(k).candidates(logits, banned).tolist() == want
                tried += 1
    assert tried == 4 * 12 * 4


def test_sampler_on_the_open_ids_draws_what_the_whole_vocabulary_draws():
    """Given the ids a rule leaves open, the sampler looks only at them and draws the same tokens as
    from the whole masked vocabulary: penalties, ties (top-k by argpartition), greedy, NaN and
    overflowing logits included."""
    rng = np.random.default_rng(3)
    settings = [Sampling(seed=1), Sampling(seed=2, temperature=0), Sampling(seed=3, top_k=0, top_p=1.0, min_p=0.0),
                Sampling(seed=4, top_k=5, repetition_penalty=0.8), Sampling(seed=5, top_k=200, temperature=1.5)]
    tried = 0
    for size in (40, 300, 4013):
        for case in range(10):
            logits = (rng.normal(size=size) * 3).astype(np.float32)
            if case % 3 == 1:
                logits = np.round(logits)  # ties
            if case % 5 == 2:
                logits[rng.integers(0, size, 3)] = np.nan
                logits[rng.integers(0, size, 3)] = np.float32(3e38)
            banned = rng.random(size) < rng.choice([0.5, 0.9, 0.99])
            open_ids = np.flatnonzero(~banned)
            context = rng.integers(0, size, 30).tolist()
            for sampling in settings:
                whole, among = Sampler(sampling), Sampler(sampling)
                with np.errstate(over="ignore", invalid="ignore"):
                    for _ in range(3):
                        assert _pick_or_error(whole, logits, context, banned) == _pick_or_error(
                            among, logits, context, banned, open_ids)
                tried += 1
    assert tried == 3 * 10 * len(settings)


def _pick_or_error(sampler: Sampler, *args: object) -> object:
    try:
        return sampler.pick(*args)  # type: ignore[arg-type]
    except RequestError as exc:
        return str(exc)


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


def test_known_only_results_drop_tags_off_the_table():
    from tipo.parse import parse_text
    from tipo.result import finish

    p = plan(Request("1girl", output="tags"))
    r = finish(p, parse_text(p.prompt + ", smile, grassy que"), known_only=True)
    assert r.new_tags["general"] == ("smile",) and r.dropped == ("grassy que",)


def test_known_tags_fast_paths_agree_with_checking_every_token():
    """KnownTagsOnly reads the qualifying tokens off the few table tags that start with the partial
    tag, or remembers per-partial answers; both must equal checking each token on its own."""
    from tipo.tags import default_table

    rng = random.Random(0)
    names = [n for n in default_table()._sorted_content if n.isascii()]
    words = sorted({w for n in rng.sample(names, 150) for w in n.split(" ")})
    pieces = ["<unk>", "<s>", "</s>", ",", "\n", ", ", " ", "_", "é", " a_b", "x\\"]
    for w in words:
        cut = rng.randint(1, max(1, len(w)))
        pieces += [" " + w[:cut], w[cut:] or w, w, " " + w.upper()]
    pieces = list(dict.fromkeys(pieces))
    vocab = TokenText([piece_bytes(p.replace(" ", "\u2581"), i < 3) for i, p in enumerate(pieces)], eos_id=EOS)
    ctx = DecodeContext(plan(Request("1girl", output="tags", length="long")), vocab)
    rule = KnownTagsOnly(ctx)
    ids_ = np.arange(vocab.size)
    partials = ["", " ", " long", " long ", " long h", " sm", " Blue", " blue e", " a_", " x", " zz"]
    partials += [" " + n[: rng.randint(1, len(n))] for n in rng.sample(names, 20)]
    table = default_table()
    for partial in partials:
        for seen in (frozenset(), frozenset({"long hair", "smile", "blue eyes", "1girl"})):
            norm = ctx.normalize(partial)
            if norm and not table.is_prefix(norm, True, seen):
                continue
            fast = rule._admit(ids_, partial, norm, True, seen)
            slow = [rule._accept(int(i), partial, True, seen) for i in ids_]
            assert list(fast[ids_ != EOS]) == [s for i, s in enumerate(slow) if i != EOS], (partial, seen)
