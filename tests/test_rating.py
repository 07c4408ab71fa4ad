"""The content-rating vocabulary and which rating is in force (tipo.rating), no model."""

import pytest

from tipo.rating import Rating, RatingVocabulary, default_vocabulary, resolve_rating
from tipo.tags import default_table


@pytest.fixture(scope="module")
def vocab():
    return default_vocabulary()


def test_the_shipped_vocabulary_is_documented_and_complete(vocab):
    from importlib import resources

    text = (resources.files("tipo") / "data" / "rating_terms.tsv").read_text(encoding="utf-8")
    assert "Criteria" in text and "Provenance" in text and "Limits" in text
    levels = {t.level for t in vocab.terms}
    assert levels == {"sensitive", "questionable", "explicit", "always", "allow"}
    assert len(vocab.terms) > 150


@pytest.mark.parametrize(("tag", "lowest"), [
    ("large breasts", Rating.SENSITIVE), ("bikini", Rating.SENSITIVE), ("cleavage", Rating.SENSITIVE),
    ("nude", Rating.QUESTIONABLE), ("covered nipples", Rating.QUESTIONABLE), ("completely nude", Rating.QUESTIONABLE),
    ("sex", Rating.EXPLICIT), ("cum in pussy", Rating.EXPLICIT), ("cat penis", Rating.EXPLICIT),
    ("explicit", Rating.EXPLICIT), ("questionable", Rating.QUESTIONABLE), ("sensitive", Rating.SENSITIVE),
])
def test_each_term_is_allowed_from_its_level_up(vocab, tag, lowest):
    for rating in Rating:
        forbidden = vocab.matcher(rating).tag_reason(tag) is not None
        assert forbidden is (rating.rank < lowest.rank), (tag, rating)


@pytest.mark.parametrize("tag", ["1girl", "forest", "breast pocket", "happiness", "canal", "assistant", "general",
                                 "sky", "class", "cockpit", "hatsune miku", "sextant"])
def test_harmless_tags_are_never_forbidden(vocab, tag):
    assert vocab.matcher(Rating.GENERAL).tag_reason(tag) is None


def test_terms_that_sexualise_minors_are_masked_at_every_rating(vocab):
    for rating in Rating:
        assert vocab.matcher(rating).tag_reason("loli") is not None


def test_caption_words(vocab):
    m = vocab.matcher(Rating.GENERAL)
    assert [w for w, _ in m.caption_reasons("A nude woman in a bikini eats chicken breast")] == ["nude", "bikini"]
    # "ass" is a tag-only term (in a caption it is a donkey)
    assert m.caption_reasons("a man rides an ass") == []
    assert m.caption_reasons("a see-through dress") != []


def test_the_vocabulary_matches_table_tags(vocab):
    """Sanity: the terms cover the explicit tags that are common in the Danbooru table."""
    table = default_table()
    m = vocab.matcher(Rating.GENERAL)
    common = sorted((n for n in table.counts if table.counts[n] > 20000), key=table.counts.get, reverse=True)
    for tag in ("nipples", "pussy", "penis", "sex", "cum", "nude", "panties", "anus", "pubic hair", "fellatio"):
        assert tag in common and m.tag_reason(tag), tag


def test_bad_vocabulary_line_is_an_error():
    with pytest.raises(ValueError, match="line 1"):
        RatingVocabulary.from_lines(["nude\tvery\tboth\tx\n"])


def test_resolve_rating():
    assert resolve_rating(None, []) == (Rating.GENERAL, "default")
    assert resolve_rating(None, ["sensitive"]) == (Rating.SENSITIVE, "your tags")
    assert resolve_rating(None, ["safe", "nsfw"]) == (Rating.EXPLICIT, "your tags")
    assert resolve_rating("questionable", ["general"]) == (Rating.QUESTIONABLE, "option")
    assert resolve_rating(Rating.UNRESTRICTED, []) == (Rating.UNRESTRICTED, "option")
