"""The ban box (tipo.bans): plain whole-word tags, wildcards, regular expressions, aliases,
the reference's legacy strings, and captions. No model."""

import itertools
import re

import pytest

from tipo.bans import BanList, TermMatcher, split_ban_box, words
from tipo.errors import RequestError


@pytest.mark.parametrize(("box", "tag", "banned"), [
    # plain tags: equal, or contained as whole words, after normalisation
    ("tennis", "tennis", True),
    ("tennis", "tennis racket", True),
    ("tennis", "tennis_court", True),
    ("tennis", "Tennis Ball", True),
    ("tennis", "tennisxyz", False),
    ("tennis", "table tennis", True),
    ("hat", "chat", False),
    ("hat", "hat", True),
    ("hat", "witch hat", True),
    ("hat", "hatsune miku", False),
    ("long_hair", "very long hair", True),
    ("long hair", "long", False),
    ("racket", "tennis rackets", True),  # plural endings
    ("star (sky)", "star (sky)", True),  # a known tag with parentheses is a plain tag
    ("star (sky)", "star", False),
    # aliases, both ways
    ("longhair", "long hair", True),
    ("long hair", "longhair", True),
    # wildcards: * is any text, the whole tag must match
    ("official*", "official art", True),
    ("official*", "unofficial art", False),
    ("*text", "english text", True),
    ("*text", "text focus", False),
    ("*girl*", "magical girl costume", True),
    # regular expressions: matched at the start of the tag (re.match), as the reference did
    ("official.*", "official alternate costume", True),
    ("official.*", "unofficial", False),
    (".*text", "english text", True),
    (".*text", "text focus", True),
    ("^red (eyes|hair)$", "red hair", True),
    ("^red (eyes|hair)$", "red hair ornament", False),
    ("c.c.", "c.c.", True),  # a known tag with dots is a plain tag
])
def test_ban_box_entries(box, tag, banned):
    assert BanList.parse(box).matches(tag) is banned


def test_the_reference_ban_string_keeps_its_meaning():
    bans = BanList.parse("umbrella, official.*, .*text")
    assert [e.kind for e in bans.entries] == ["tag", "regex", "regex"]
    for tag in ("umbrella", "holding umbrella", "official art", "official alternate costume", "english text",
                "text focus", "speech bubble text"):
        assert bans.matches(tag), tag
    for tag in ("1girl", "forest", "umbrellax", "unofficial"):
        assert not bans.matches(tag), tag


def test_split_keeps_regex_commas():
    assert split_ban_box("hat, a{1,3}, (x|y),, red eyes\nsmile") == ["hat", "a{1,3}", "(x|y)", "red eyes", "smile"]


def test_bad_regex_is_a_clear_error():
    with pytest.raises(RequestError, match=r"not a valid regular expression.*plain tag"):
        BanList.parse("red[")


def test_words_and_caption_matching():
    assert words("See-through, long_hair!") == ("see", "through", "long", "hair")
    m = BanList.parse("tennis racket, hat, official*").matcher
    assert m.caption_reasons("A man holds a tennis racket and a hat; officials watch.") == [
        ("racket", "banned by 'tennis racket'"), ("hat", "banned by 'hat'"), ("officials", "banned by 'official*'")]
    assert m.caption_reasons("a racket, that chat") == []


def test_union_and_allowed_phrases():
    a = TermMatcher({("breast",): "a"}, allowed=frozenset({("breast", "pocket")}))
    b = TermMatcher({("hat",): "b"})
    m = a | b
    assert m.tag_reason("large breasts") == "a" and m.tag_reason("breast pocket") is None
    assert m.tag_reason("witch hat") == "b"
    assert m.word_reason(["chicken"], "breast") == "a"
    assert not TermMatcher()


def test_context_of_keeps_every_previous_word_a_caption_answer_depends_on():
    """word_reason answers the same after the words context_of keeps as after all of them:
    phrases of up to three words, plural forms, allowed phrases that reach back, regexes."""
    m = TermMatcher({("pubic", "hair"): "a", ("see", "through", "clothes"): "b", ("hat",): "c"},
                    patterns=((re.compile("nud"), "d"),),
                    caption_phrases={("wet", "shirt"): "e"},
                    allowed=frozenset({("big", "hat"), ("red", "wet", "shirt")}))
    assert m.word_context == 2
    vocab = ["pubic", "see", "through", "throughs", "wet", "red", "big", "girl", "hairs", "the"]
    lasts = ["hair", "hairs", "clothes", "shirt", "hat", "hats", "nude", "tree"]
    tried = 0
    for n in range(4):
        for previous in itertools.product(vocab, repeat=n):
            kept = m.context_of(previous)
            assert len(kept) <= 2 and tuple(previous[len(previous) - len(kept):]) == kept
            for word in lasts:
                assert m.word_reason(kept, word) == m.word_reason(previous, word), (previous, word)
                tried += 1
    assert m.context_of(("the", "girl")) == () and m.context_of(("girl", "see", "through")) == ("see", "through")
    assert tried == 8 * (1 + 10 + 100 + 1000)
