"""Property tests: the text core never raises on arbitrary text and never loses a user tag."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tipo.parse import parse_text
from tipo.planner import plan, read_user_tags
from tipo.request import Request
from tipo.result import finish
from tipo.syntax import parse_prompt, render_items
from tipo.tags import canonical, is_known, normalize

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
host_text = st.text(alphabet=st.sampled_from(list("abc xyz_,()[]:\\<>1.2BREAK\n\t\x00é漢🙂")), max_size=80)
any_text = st.text(max_size=120)


@SETTINGS
@given(any_text)
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


@SETTINGS
@given(host_text | any_text)
def test_syntax_parser_and_renderer_never_raise(text):
    items = parse_prompt(text, is_known)
    render_items(items)


@SETTINGS
@given(host_text | any_text, st.sampled_from(["both", "tags", "caption"]), any_text)
def test_builder_parser_and_finish_never_raise_or_lose_user_tags(tags, output, completion):
    request = Request(tags, output=output)
    p = plan(request)
    result = finish(p, parse_text(p.prompt + completion), completion=completion)
    # The user's tags as screened (tipo.safety: look-alikes folded, invisible characters removed);
    # the screening itself is tested in test_safety.py and reported in result.safety.
    user = read_user_tags(p.request.tags)
    got = {canonical(t) for values in result.tags.values() for t in values}
    for t in user.tags:
        assert t.key in got
    # user tags come first, in their order, in every category
    for name, values in result.user_tags.items():
        assert result.tags[name][: len(values)] == values


@SETTINGS
@given(any_text)
def test_parse_text_never_raises(text):
    parse_text(text).to_json()


@SETTINGS
@given(st.lists(st.text(alphabet=st.sampled_from(list("abcdefg _")), min_size=1, max_size=10), max_size=15))
def test_plain_tag_lists_roundtrip_through_the_prompt(tags):
    p = plan(Request(", ".join(tags), output="tags"))
    parsed = parse_text(p.prompt)
    keys = {canonical(t) for v in parsed.tags.values() for t in v}
    for t in read_user_tags(p.request.tags).tags:
        assert t.key in keys
