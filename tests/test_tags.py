import pytest

from tipo.tags import (
    Category,
    TagTable,
    canonical,
    categorize,
    default_table,
    is_known,
    normalize,
    split_tags,
)


@pytest.mark.parametrize("raw,want", [
    ("long_hair", "long hair"), ("  Long   Hair ", "long hair"), ("^_^", "^_^"), ("o_o", "o_o"),
    ("marker \\(medium\\)", "marker (medium)"), ("1GIRL", "1girl"), ("a\tb", "a b"), ("score_9", "score 9"),
])
def test_normalize(raw, want):
    assert normalize(raw) == want


def test_aliases_resolve_to_canonical():
    assert canonical("longhair") == "long hair"
    assert canonical("Long_Hair") == "long hair"
    assert canonical("flowers") == "flower"
    assert canonical("not a tag at all") == "not a tag at all"


def test_categories():
    assert categorize("1girl") is Category.SPECIAL
    assert categorize("male focus") is Category.SPECIAL
    assert categorize("6+others") is Category.SPECIAL
    assert categorize("masterpiece") is Category.QUALITY
    assert categorize("score_8_up") is Category.QUALITY
    assert categorize("nsfw") is Category.RATING
    assert categorize("hatsune_miku") is Category.CHARACTERS
    assert categorize("vocaloid") is Category.COPYRIGHTS
    assert categorize("ciloranko") is Category.ARTIST
    assert categorize("absurdres") is Category.META
    assert categorize("marker (medium)") is Category.META
    assert categorize("made up thing") is Category.GENERAL
    assert categorize("1girls") is Category.SPECIAL  # an alias of 1girl


def test_known():
    assert is_known("long hair") and is_known("longhair") and is_known("masterpiece")
    assert not is_known("qwertyuiop tag")


def test_split_tags():
    assert split_tags(" a, ,bb_cc\nd ") == ["a", "bb cc", "d"]


def test_table_from_rows_prefers_names_over_aliases():
    table = TagTable.from_rows([("cat", 0, 10, ["kitty", "dog"]), ("dog", 0, 5, [])])
    assert table.canonical("kitty") == "cat"
    assert table.canonical("dog") == "dog"


def test_default_table_is_cached_and_clearable():
    a = default_table()
    assert default_table() is a
    default_table.cache_clear()
    assert default_table() is not a
