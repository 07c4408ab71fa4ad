"""Post-processing: user tags first, dedupe with aliases, caps, bans, captions, rendering."""

import pytest

from tipo.bans import BanList
from tipo.errors import RequestError
from tipo.parse import parse_text
from tipo.planner import plan
from tipo.request import Request
from tipo.result import finish
from tipo.template import Preset, render_template


def run(request, completion, template=None):
    p = plan(request)
    return finish(p, parse_text(p.prompt + completion), template=template, completion=completion)


def test_user_tags_first_in_order_and_new_deduped_by_alias():
    r = run(Request("smile, 1girl, long_hair", output="tags"), ", longhair, blue eyes, smile, flower")
    assert r.user_tags["special"] == ("1girl",)
    assert r.user_tags["general"] == ("smile", "long hair")
    assert r.new_tags["general"] == ("blue eyes", "flower")
    assert r.tags_text == "1girl, smile, long_hair, blue eyes, flower"


def test_rendered_prompt_keeps_weights_lora_and_break():
    r = run(Request("1girl, <lora:x:0.8>, (red dress:1.2), BREAK, garden", output="tags"), ", smile")
    assert r.prompt == "1girl, <lora:x:0.8>, (red dress:1.2), BREAK, garden, smile"


def test_new_tags_with_parentheses_are_escaped_in_the_prompt():
    r = run(Request("1girl", output="tags"), ", marker (medium)")
    assert "marker \\(medium\\)" in r.prompt


def test_ban_is_whole_words_in_every_category():
    req = Request("1girl", output="tags", ban=("hat", "hatsune miku", "absurdres"))
    r = run(req, ", hat, chat, hatsune miku, witch hat, absurdres")
    assert r.new_tags["general"] == ("chat",)
    assert not r.new_tags["characters"] and not r.new_tags["meta"]
    assert set(r.dropped) == {"hat", "witch hat", "hatsune miku", "absurdres"}
    assert {b.text for b in r.safety.blocked} == {"hat", "witch hat", "hatsune miku", "absurdres"}


def test_ban_matches_aliases_and_spelling():
    bans = BanList(["long_hair"], [])
    assert bans.matches("long hair") and bans.matches("longhair") and bans.matches("LONG HAIR")
    assert bans.matches("very long hair") and not bans.matches("long")


def test_ban_regex_and_invalid_regex_error():
    r = run(Request("1girl", output="tags", ban_regex=(r".*\beyes",)), ", blue eyes, eyeshadow, smile")
    assert r.new_tags["general"] == ("eyeshadow", "smile")
    with pytest.raises(RequestError, match="not a valid regular expression"):
        Request("1girl", ban_regex=("(",))


def test_user_tags_survive_even_when_banned():
    r = run(Request("1girl, hat", output="tags", ban=("hat",)), ", smile")
    assert "hat" in r.user_tags["general"]


def test_length_cap_counts_tags_not_sentences():
    completion = "".join(f", tag{i}" for i in range(100))
    r = run(Request("1girl, smile", length="very_short", output="tags"), completion)
    assert len(r.user_tags["special"]) + len(r.user_tags["general"]) + len(r.new_tags["general"]) == 18
    assert len(r.dropped) == 100 - 16


def test_caption_fields_and_placeholders():
    r = run(Request("1girl"), ", smile\nlong: A girl smiles.\nShe is happy.")
    assert r.long == "A girl smiles.\nShe is happy."
    # tag-only input: <|extended|> and <|generated|> both hold the model's caption
    assert r.generated == r.long and r.extended == r.long
    assert r.caption_text == r.long
    assert r.prompt == "1girl, smile\n\nA girl smiles.\nShe is happy."
    r2 = run(Request(caption="a cat", caption_kind="short", output="caption"), " A cat sleeps.")
    assert r2.short == "a cat" and r2.long == "A cat sleeps." and r2.generated == "A cat sleeps."
    assert r2.extended == "a cat\nA cat sleeps." and r2.prompt == "a cat\nA cat sleeps."


def test_extended_holds_the_generated_caption_for_tag_only_input():
    r = run(Request("forest"), ", tree, river\nlong: A path through a forest.", template="<|extended|>. <|general|>")
    assert r.prompt == "A path through a forest.. forest, tree, river"


USER_CAPTIONS = [
    "a cat on a windowsill",
    "An old man reads a newspaper. He wears glasses!",
    "  Two dogs (a corgi and a pug) play in the snow?  \nThe sky is grey.",
    "A red BREAK sign, <lora:x:1> written on it.",
]


@pytest.mark.parametrize("caption", USER_CAPTIONS)
@pytest.mark.parametrize("output", ["both", "caption", "tags"])
@pytest.mark.parametrize("preset", [None, "both", "caption", "caption_first"])
def test_every_user_sentence_appears_verbatim_in_the_prompt(caption, output, preset):
    # short_to_tag_to_long / short_to_long / short_to_tag: the user's caption stays, first
    completion = {"both": ", cat, window\nlong: A fluffy cat naps. The sun shines.", "caption": " A fluffy cat naps.",
                  "tags": ", cat, window"}[output]
    r = run(Request(caption=caption, caption_kind="short", output=output), completion, template=preset)
    lines = [line.strip() for line in caption.strip().splitlines() if line.strip()]
    text = "\n".join(lines)
    assert text in r.prompt and r.extended.startswith(text)
    if output != "tags":
        assert r.prompt.index(text) < r.prompt.index("A fluffy cat naps.")


def test_user_tags_come_back_as_typed():
    r = run(Request("[smile], ((blue eyes)), 1girl, (red:1.1) dress, long_hair, \\(x\\)", output="tags"), ", hat")
    assert r.prompt == "1girl, [smile], ((blue eyes)), (red:1.1) dress, long_hair, \\(x\\), hat"


def test_no_tag_moves_across_a_break():
    r = run(Request("(masterpiece:1.2), 1girl, BREAK, (forest:1.3) BREAK 1boy, smile, <lora:x:1>", output="tags"),
            ", hat")
    assert r.prompt == "(masterpiece:1.2), 1girl, BREAK, (forest:1.3), BREAK, 1boy, smile, <lora:x:1>, hat"
    assert r.user_tags["quality"] == ("masterpiece",)  # still read as a quality tag for the model
    # caption-only templates show no tags, not even those before a BREAK
    r2 = run(Request("1girl, BREAK, smile", output="caption"), " A girl.", template="caption")
    assert r2.prompt == "A girl."


def test_default_template_shows_what_the_user_gave_and_asked_for():
    r = run(Request("1girl, smile", output="caption"), " A girl.")
    assert r.prompt == "1girl, smile\n\nA girl."  # the user's tags stay although only a caption was asked
    r = run(Request(caption="A girl.", caption_kind="short", output="tags"), ", 1girl, smile")
    assert r.prompt == "1girl, smile\n\nA girl."
    r = run(Request(output="caption"), " 1girl\nlong: A girl.")
    assert r.prompt == "A girl."  # nothing given: only what was asked


def test_quality_tags_go_to_their_slot_without_break():
    r = run(Request("masterpiece, 1girl, forest", output="tags"), ", tree")
    assert r.prompt == "1girl, forest, tree, masterpiece"


def test_long_caption_is_kept():
    cap = "A quiet harbor.\nBoats rest."
    r = run(Request("boat", caption=cap, caption_kind="long"), ", harbor, water")
    assert r.long == cap and r.plan.task_name == "long_to_tag"


def test_template_presets_and_cleanup():
    values = {"special": "1girl", "general": "smile", "quality": "", "extended": "A girl.", "generated": "A girl."}
    assert render_template(Preset.TAGS.text, values) == "1girl, smile"
    assert render_template(Preset.CAPTION_FIRST.text, values) == "A girl.\n\n1girl, smile"
    assert render_template("<|quality|>, <|special|>,  , <|general|>", values) == "1girl, smile"
    assert render_template("<|meta|>\n\n\n\n<|special|>", values) == "1girl"


def test_unknown_placeholder_is_an_error():
    with pytest.raises(RequestError, match="<\\|tagz\\|> is unknown"):
        render_template("<|tagz|>", {})


def test_trailing_s_is_never_stripped():
    r = run(Request("1boy", output="tags"), ", glasses, headphones, shorts")
    assert r.new_tags["general"] == ("glasses", "headphones", "shorts")
