import pytest

from tipo.errors import RequestError
from tipo.options import OPTIONS, Kind, from_values, to_values
from tipo.request import Request, Sampling


def test_every_option_has_help_and_valid_default():
    for o in OPTIONS:
        assert o.help and o.group in ("request", "sampling", "model")
        if o.kind is Kind.CHOICE:
            assert o.default in o.choices


def test_host_conventions():
    req, samp = from_values({"width": 0, "height": 0, "seed": -1, "caption_kind": "auto"})
    assert req.width is None and req.ratio is None and samp.seed is None and req.caption_kind is None
    req, samp = from_values({"seed": 0})
    assert samp.seed == 0


def test_roundtrip():
    req = Request("1girl, (smile:1.2)", caption="a cat", caption_kind="short", length="short", width=832,
                  height=1216, output="tags", gen_meta=True, ban=("hat", "x"), ban_regex=(".*eyes",))
    samp = Sampling(temperature=0.7, seed=9)
    assert from_values(to_values(req, samp)) == (req, samp)


def test_unknown_option_is_an_error():
    with pytest.raises(RequestError, match="unknown option"):
        from_values({"lenght": "short"})
