from tipo.syntax import ItemKind, format_weight, parse_prompt, render_items
from tipo.tags import is_known


def tags(text, known=is_known):
    return [(i.text, round(i.weight, 6)) for i in parse_prompt(text, known) if i.kind is ItemKind.TAG]


def test_weights():
    assert tags("(a), ((b)), [c], (d:1.3), [[e]]") == [
        ("a", 1.1), ("b", 1.21), ("c", round(1 / 1.1, 6)), ("d", 1.3), ("e", round(1 / 1.21, 6))]


def test_group_weight_applies_to_each_tag():
    assert tags("(red hair, freckles:1.2), smile") == [("red hair", 1.2), ("freckles", 1.2), ("smile", 1.0)]


def test_nested_explicit_weights_multiply():
    assert tags("((x:1.5))") == [("x", 1.65)]


def test_escapes_are_literal():
    assert tags("marker \\(medium\\), \\[x\\]", known=None) == [("marker (medium)", 1.0), ("[x]", 1.0)]


def test_known_tag_with_parentheses_is_literal():
    assert tags("1girl, marker (medium), spark (pokemon)") == [
        ("1girl", 1.0), ("marker (medium)", 1.0), ("spark (pokemon)", 1.0)]
    assert tags("(marker (medium):1.2)") == [("marker (medium)", 1.2)]


def test_unknown_parenthesised_word_is_a_weight():
    assert tags("1girl, foo (bar)") == [("1girl", 1.0), ("foo bar", 1.0)]


def test_break_and_extra_networks():
    items = parse_prompt("1girl, <lora:style_x:0.8>, red dress BREAK garden, <hypernet:h:1>")
    kinds = [(i.kind.value, i.text) for i in items]
    assert kinds == [("tag", "1girl"), ("extra", "<lora:style_x:0.8>"), ("tag", "red dress"),
                     ("break", "BREAK"), ("tag", "garden"), ("extra", "<hypernet:h:1>")]


def test_breakfast_is_not_break():
    assert tags("breakfast, BREAKING") == [("breakfast", 1.0), ("BREAKING", 1.0)]


def test_unbalanced_brackets_are_literal():
    assert tags("(long hair, smile") == [("(long hair", 1.0), ("smile", 1.0)]
    assert tags("a), [b") == [("a)", 1.0), ("[b", 1.0)]
    assert render_items(parse_prompt("(long hair")) == "\\(long hair"


def test_render_keeps_items_as_typed():
    text = "1girl, (long hair:1.2), ((blue eyes)), [smile],  (red:1.1) dress , <lora:x:0.8>, BREAK, marker \\(medium\\)"
    assert render_items(parse_prompt(text)) == (
        "1girl, (long hair:1.2), ((blue eyes)), [smile], (red:1.1) dress, <lora:x:0.8>, BREAK, marker \\(medium\\)")


def test_render_from_weights_when_an_item_cannot_be_given_back_as_typed():
    # a group over several items, and brackets tipo read literally (the host would not)
    assert render_items(parse_prompt("(a, ((b)):1.2)")) == "(a:1.2), (b:1.452)"
    assert render_items(parse_prompt("marker (medium)", is_known=lambda t: t == "marker (medium)")) == (
        "marker \\(medium\\)")


def test_render_roundtrip_is_stable():
    text = "1girl, (long hair:1.2), [smile], (a, b:0.7), red (dress:1.3)"
    once = render_items(parse_prompt(text))
    assert render_items(parse_prompt(once)) == once


def test_format_weight():
    assert format_weight(1.2100000000000002) == "1.21"
    assert format_weight(1.0) == "1"
    assert format_weight(0.5) == "0.5"
    assert format_weight(-0.0) == "0"


def test_huge_nesting_does_not_crash():
    parse_prompt("(" * 5000 + "x" + ")" * 5000)
    parse_prompt("[" * 3000)
