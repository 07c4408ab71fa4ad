"""Look-alike and invisible characters in the user's text (tipo.safety), no model."""

import pytest

from tipo.errors import RequestError
from tipo.safety import Homoglyphs, count_lookalikes, screen_text

# A paragraph typed with Cyrillic, Greek, fullwidth and mathematical look-alikes in place of Latin
# letters (some words entirely so), with invisible characters sprinkled in.
PARAGRAPH = (
    "Тhе οld lіghthоusе stаnds оn а rосkу сlіff аbоvе thе sеа. Ιn thе еvеnіng thе skу turns "
    "оrаngе аnd pіnk, whіlе gulls сіrсlе \u200bоvеr thе wаvеs. Α fіshіng bоаt rеturns tо thе "
    "hаrbоr\u200d; іts rеd sаіls саtсh thе lаst lіght. ｍｏｏｎｌｉｇｈｔ, 𝐬𝐭𝐚𝐫𝐬 аnd а ѕmаll hоusе."
)
PARAGRAPH_LATIN = (
    "The old lighthouse stands on a rocky cliff above the sea. In the evening the sky turns "
    "orange and pink, while gulls circle over the waves. A fishing boat returns to the "
    "harbor; its red sails catch the last light. moonlight, stars and a small house."
)


def test_a_paragraph_written_in_look_alikes_folds_to_its_latin_spelling():
    folded, changes = screen_text(PARAGRAPH, "caption")
    assert folded == PARAGRAPH_LATIN
    assert folded.isascii()
    assert all(c.action in ("folded", "removed") for c in changes)
    assert any("Cyrillic" in c.why for c in changes) and any("Greek" in c.why for c in changes)
    assert any("fullwidth" in c.why for c in changes) and any("mathematical" in c.why for c in changes)
    assert any("zero width space" in c.why for c in changes)


@pytest.mark.parametrize(("typed", "latin"), [
    ("f\u043erest", "forest"),  # Cyrillic o
    ("1gir\u04cf", "1girl"),  # Cyrillic palochka
    ("f\u03bfrest", "forest"),  # Greek omicron
    ("\uff46\uff4f\uff52\uff45\uff53\uff54", "forest"),  # fullwidth
    ("\U0001d41f\U0001d428\U0001d42b\U0001d41e\U0001d42c\U0001d42d", "forest"),  # mathematical bold
    ("\u0455\u0435\u0430", "sea"),  # a whole word of Cyrillic look-alikes, in a Latin tag field
    ("\u0406NDOORS", "INDOORS"),  # a capital I look-alike becomes I, not l
    ("long\u200b_hair", "long_hair"),
    ("sm\u00adile", "smile"),
    ("\u202eforest\u202c", "forest"),
])
def test_tags_with_look_alikes_fold_to_latin(typed, latin):
    folded, changes = screen_text(f"1girl, {typed}, smile", "tags")
    assert folded == f"1girl, {latin}, smile"
    # One change per word (a run between spaces and ASCII punctuation), naming what was found.
    assert len(changes) == 1 and changes[0].original in typed and changes[0].changed in latin and changes[0].why


@pytest.mark.parametrize("text", [
    "Мама мыла раму. Привет, мир! Кошка сидит на окне.",  # Russian
    "Καλημέρα κόσμε· η θάλασσα είναι ήσυχη.",  # Greek
    "東京タワーの夜景、〇〇駅の前で猫が寝ている。",  # Japanese (with the ideographic zero)
    "café, naïve, Straße, kırmızı elma, Ærø",  # Latin letters with diacritics, Turkish dotless i
    "family 👨\u200d👩\u200d👧 and a heart ❤\ufe0f",  # emoji joiners and presentation selectors
    "\u06a9\u062a\u0627\u0628\u200c\u0647\u0627",  # Persian with a zero-width non-joiner
    "a photo of a cat, 4k, 1920x1080",
])
def test_genuine_text_is_untouched(text):
    assert screen_text(text, "caption") == (text, [])


def test_genuine_non_latin_tags_are_untouched():
    text = "1girl, кошка, 猫, γάτα"
    assert screen_text(text, "tags") == (text, [])


def test_a_look_alike_word_inside_russian_text_stays_russian():
    # "Мама" is made of letters that look Latin, but the text around it is Russian.
    text = "Мама мыла раму"
    assert screen_text(text, "caption") == (text, [])


def test_keep_reports_without_changing():
    text, changes = screen_text("1girl, f\u043erest", "tags", "keep")
    assert text == "1girl, f\u043erest"
    assert changes[0].action == "kept" and changes[0].changed == "f\u043erest"


def test_refuse_names_the_characters_and_the_fix():
    with pytest.raises(RequestError, match=r"U\+043E.*homoglyphs 'fold'"):
        screen_text("1girl, f\u043erest", "tags", Homoglyphs.REFUSE)
    assert screen_text("1girl, forest", "tags", "refuse") == ("1girl, forest", [])


def test_count_lookalikes():
    assert count_lookalikes("plain text") == 0
    assert count_lookalikes(PARAGRAPH) > 80
    assert count_lookalikes(PARAGRAPH_LATIN) == 0


def test_latin_look_alikes_fold_in_tags_but_not_in_captions():
    assert screen_text("1\u0261irl", "tags")[0] == "1girl"  # Latin script g
    assert screen_text("k\u0131rm\u0131z\u0131", "caption")[0] == "k\u0131rm\u0131z\u0131"
