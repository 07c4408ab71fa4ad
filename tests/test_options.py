"""The settings schema: declarations, validation from it, and lossless value <-> object round trips."""

import argparse
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipo.errors import RequestError
from tipo.flags import add_option_flags, values_from_args
from tipo.options import NO_UNSET, OPTIONS, Dest, Kind, Option, default
from tipo.request import Request, Sampling
from tipo.settings import Settings, from_values, to_values


def test_every_option_is_complete_and_its_default_valid():
    for o in OPTIONS:
        assert o.help and isinstance(o.dest, Dest) and o.name.isidentifier()
        assert o.coerce(o.default) is not None  # the default is a valid value
        if o.kind is Kind.CHOICE:
            assert o.default in o.choices
        if o.kind in (Kind.INT, Kind.FLOAT):
            assert o.min is not None and o.max is not None and o.min <= o.max
            assert o.unset is not NO_UNSET or o.min <= o.default <= o.max
    assert len({o.name for o in OPTIONS}) == len(OPTIONS)


def test_request_and_sampling_take_defaults_and_bounds_from_the_schema():
    samp, req = Sampling(), Request()
    for o in OPTIONS:
        if o.dest is Dest.SAMPLING:
            assert getattr(samp, o.name) == default(o.name)
        if o.dest is Dest.REQUEST:
            assert getattr(req, o.name) == default(o.name) or getattr(req, o.name).value == o.default
    for o in OPTIONS:
        if o.dest is not Dest.SAMPLING or o.kind not in (Kind.INT, Kind.FLOAT):
            continue
        Sampling(**{o.name: o.max}), Sampling(**{o.name: o.min})  # the bounds themselves are valid
        step = 1 if o.kind is Kind.INT else 1e-6
        for bad in (o.max + step, o.min - step):
            with pytest.raises(RequestError, match=f"{o.name}="):
                Sampling(**{o.name: bad})
    with pytest.raises(RequestError, match=r"seed=4294967296"):
        Sampling(seed=2**32)  # one seed range everywhere: [0, 2**32 - 1]
    with pytest.raises(RequestError, match=r"width=0"):
        Request(width=0, height=8)
    with pytest.raises(RequestError, match=r"aspect_ratio=101"):
        Request(aspect_ratio=101)
    with pytest.raises(RequestError, match=r"width='10000000\.\.\. \(401 digits\)'"):
        Request(width=10**400, height=8)  # huge numbers: a clear error, shown short


def test_host_conventions():
    s = from_values({"width": 0, "height": 0, "seed": -1, "caption_kind": "auto", "task": "auto", "template": ""})
    assert s.request.width is None and s.request.ratio is None and s.sampling.seed is None
    assert s.request.caption_kind is None and s.task is None and s.template is None
    assert from_values({"seed": 0}).sampling.seed == 0
    assert from_values({"seed": 7.0}).sampling.seed == 7  # gradio's Number hands over floats
    assert from_values({"known_tags": "on"}).loading["known_tags_only"] is True
    assert from_values({"threads": 0}).loading["n_threads"] is None
    assert from_values({"ban": "hat, red eyes,,"}).request.ban == ("hat", "red eyes")
    assert from_values({"ban_regex": "a.*\nb,c\n"}).request.ban_regex == ("a.*", "b,c")


def test_nothing_is_dropped():
    """task, template, model and backend survive (every front end used to keep a skip list)."""
    values = {"task": "tag_to_long", "template": "<|general|>", "model": "m.gguf", "backend": "llama",
              "device": "gpu", "threads": 2, "ban_regex": ["a", "b"]}
    back = to_values(from_values(values))
    assert {k: back[k] for k in values} == values


def test_unknown_and_bad_values_are_one_line_errors():
    with pytest.raises(RequestError, match=r"unknown option.*'lenght'"):
        from_values({"lenght": "short"})
    with pytest.raises(RequestError, match=r"temperature=7\.0 is not valid; give a number in \[0\.0, 5\.0\]"):
        from_values({"temperature": 7.0})
    with pytest.raises(RequestError, match=r"length='huge' is not valid; choose one of"):
        from_values({"length": "huge"})
    with pytest.raises(RequestError, match=r"gen_meta='yes' is not valid"):
        from_values({"gen_meta": "yes"})
    with pytest.raises(RequestError, match=r"unknown loading setting"):
        Settings(loading={"n_ctx_typo": 1})


def test_aliases_read_older_names():
    assert from_values({"tag_length": "short", "ban_tags": "hat"}).request.ban == ("hat",)


# -- property tests: every option, every value -----------------------------------------------------
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_entry = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=",\n\r"), min_size=1, max_size=8)


def _value(o: Option) -> st.SearchStrategy:
    if o.repeated:
        if o.separator == ",":
            item = _entry.map(str.strip).filter(bool)
        else:  # regular expressions that compile, with blanks kept
            item = st.text(st.sampled_from("ab.* \t\u00e9,"), min_size=1, max_size=6).filter(str.strip)
        return st.lists(item, max_size=3)
    if o.kind in (Kind.TEXT, Kind.MULTILINE):
        return _text
    if o.kind is Kind.CHOICE:
        return st.sampled_from(o.choices)
    if o.kind is Kind.BOOL:
        return st.booleans()
    if o.kind is Kind.INT:
        real = st.integers(int(o.min), int(o.max))
    else:
        real = st.floats(o.min, o.max, allow_nan=False)
    return real | st.just(o.unset) if o.unset is not NO_UNSET else real


def _valid(values: dict) -> bool:
    try:
        from_values(values)
    except RequestError:
        return False
    return True


def _sizes(values: dict) -> dict:
    """Valid size combinations (both or neither of width/height; no aspect ratio with them)."""
    if (values["width"] == 0) != (values["height"] == 0):
        values = {**values, "height": values["width"] and values["height"] or values["width"] or 0}
    if values["width"]:
        values = {**values, "aspect_ratio": 0.0}
    return values


_values = st.fixed_dictionaries({o.name: _value(o) for o in OPTIONS}).map(_sizes).filter(_valid)


@settings(max_examples=200, deadline=None, database=None)
@given(_values)
def test_values_objects_values_is_lossless_for_every_option(values):
    s = from_values(values)
    back = to_values(s)
    assert back == {o.name: o.coerce(values[o.name]) for o in OPTIONS}
    assert from_values(back) == s
    assert from_values(json.loads(json.dumps(back))) == s  # through JSON too
    assert Settings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert Request.from_dict(json.loads(json.dumps(s.request.to_dict()))) == s.request
    assert Sampling.from_dict(json.loads(json.dumps(s.sampling.to_dict()))) == s.sampling


@settings(max_examples=100, deadline=None, database=None)
@given(_values)
def test_command_line_flags_round_trip(values):
    parser = argparse.ArgumentParser()
    add_option_flags(parser, list(Dest))
    argv = []
    for o in OPTIONS:
        value = o.coerce(values[o.name])
        if o.unset is not NO_UNSET and value == o.unset:
            continue  # a host's "unset": on the command line, the flag is left out
        if o.name == "tags":
            if value.startswith("-"):
                continue
            argv += [value]
        elif o.repeated:
            for item in value:
                argv += [f"{o.flag}={item}"]
        elif o.kind is Kind.BOOL:
            argv += [o.flag] if value else []
        else:
            argv += [f"{o.flag}={value!r}" if o.kind is Kind.FLOAT else f"{o.flag}={value}"]
    got = from_values(values_from_args(parser.parse_args(argv)))
    want = from_values({k: v for k, v in values.items() if k != "tags" or not str(v).startswith("-")})
    assert got == want


def test_flags_check_bounds_as_they_parse(capsys):
    parser = argparse.ArgumentParser()
    add_option_flags(parser, ("sampling",))
    with pytest.raises(SystemExit):
        parser.parse_args(["--temperature", "9"])
    assert "temperature=9.0 is not valid; give a number in [0.0, 5.0]" in capsys.readouterr().err
    for o in OPTIONS:
        if o.dest is Dest.SAMPLING and o.kind in (Kind.INT, Kind.FLOAT):
            action = next(a for a in parser._actions if a.dest == o.name)
            assert f"[{o.min}..{o.max}]" in action.help  # the schema's bounds, exactly
