"""Reading batch request files (shared by tipo expand --batch and the evaluation runner)."""

import pytest

from tipo.batch import derive_seed, read_request_lines
from tipo.errors import RequestError


def test_lines_validate_fields_seed_and_extras():
    text = '{"tags": "1girl", "seed": 3}\n\n{"caption": "a cat", "output": "caption", "id": "x"}\n'
    rows = read_request_lines(text, "f.jsonl", {"length": "short"}, extra=("id", "seed"))
    assert [(n, kw["length"], ex) for n, kw, ex in rows] == [(1, "short", {"seed": 3}), (3, "short", {"id": "x"})]


@pytest.mark.parametrize("line,needle", [
    ("not json", "f.jsonl:1: not valid JSON"),
    ("[1]", "expected a JSON object"),
    ('{"lenght": "short"}', "unknown field(s) ['lenght']"),
    ('{"tags": "a", "seed": -1}', "seed must be a whole number"),
    ('{"tags": "a", "length": "huge"}', "f.jsonl:1: length='huge'"),
])
def test_bad_lines_name_the_line_and_the_fix(line, needle):
    with pytest.raises(RequestError) as err:
        read_request_lines(line, "f.jsonl")
    assert needle in str(err.value)


def test_derived_seeds_are_stable():
    assert derive_seed(7, 3) == derive_seed(7, 3) != derive_seed(7, 4)
    assert 0 <= derive_seed(0, 0) < 2**32
