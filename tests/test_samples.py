"""Sample construction of the training recipe: coherent samples (no model needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("scipy", reason="sample construction needs scipy: pip install 'tipo-prompt[train]'")

from models.train.corpus import Record  # noqa: E402
from models.train.samples import _Pool, make_samples, tag_frequencies  # noqa: E402
from tipo.tags import SPECIAL_TAGS  # noqa: E402

CAPS = ["A picture.", "Another caption."]


def _records() -> list[Record]:
    recs = []
    for i in range(30):  # three themes of ten pictures, ten tags each, two shared by the theme
        theme = ("cat", "sofa") if i < 10 else ("dog", "grass") if i < 20 else ("train", "station")
        recs.append(Record(f"r{i}", "coco", ["1girl", *theme, *(f"thing{i}x{k}" for k in range(8))], captions=CAPS))
    return recs


def test_partners_are_the_most_similar_records_of_the_lead() -> None:
    pool = _Pool(_records())
    near, score = pool.neighbours(0)
    assert set(near) == set(range(1, 10)) and all(s > 0 for s in score)  # only the cat pictures share tags
    assert 0 not in near


def test_lead_tags_come_first_and_a_very_short_sample_keeps_all_of_its_tags() -> None:
    recs = _records()
    by_group = {r.group: r for r in recs}
    samples = make_samples(recs, 60, seed=3, task_weights={"plain": 1.0})
    assert {s.length for s in samples} >= {"very_short", "short"}
    for s in samples:
        lead = by_group[s.groups[0]]
        line = (s.prompt + s.completion).split("tag:", 1)[1].split("\n", 1)[0]
        tags = [t.strip() for t in line.split(",") if t.strip()]
        general = [t for t in tags if t not in SPECIAL_TAGS]
        lead_general = [t for t in lead.tags if t not in SPECIAL_TAGS]
        assert set(general[: len(lead_general)]) == set(lead_general)  # the lead's own tags, then partners'
        if s.length == "very_short":
            assert s.groups == [lead.group] and len(tags) == len(lead.tags)
        else:
            assert all(by_group[g].tags[1] == lead.tags[1] for g in s.groups)  # partners of the same theme


def _tag_line(s) -> list[str]:  # noqa: ANN001
    line = (s.prompt + s.completion).split("tag:", 1)[1].split("\n", 1)[0]
    return [t.strip() for t in line.split(",") if t.strip()]


def test_frequency_order_writes_the_asked_for_tags_most_frequent_first() -> None:
    recs = _records()
    recs += [Record(f"x{i}", "coco", ["cat", "sofa", "dog", f"thing0x{i}"], captions=CAPS) for i in range(5)]
    freq = tag_frequencies(recs)
    assert freq["cat"] == 15 and freq["thing0x1"] == 2 and freq["thing5x1"] == 1
    by_group = {r.group: r for r in recs}
    plain = make_samples(recs, 80, seed=5, task_weights={"plain": 1.0})
    ordered = make_samples(recs, 80, seed=5, task_weights={"plain": 1.0}, tag_order=freq)
    asked = 0
    for a, b in zip(plain, ordered, strict=True):
        assert (a.groups, a.given_tags, a.n_tags) == (b.groups, b.given_tags, b.n_tags)
        ta, tb = _tag_line(a), _tag_line(b)
        g = b.given_tags
        assert ta[:g] == tb[:g] and sorted(ta) == sorted(tb)  # the same tags; the given ones as they were
        rest = tb[g:]
        lead = set(by_group[b.groups[0]].tags)
        kinds = [0 if t in SPECIAL_TAGS else 1 if t in lead else 2 for t in rest]
        assert kinds == sorted(kinds)  # special, then the lead's, then the partners'
        for k in (1, 2):
            part = [freq[t] for t, kind in zip(rest, kinds, strict=True) if kind == k]
            assert part == sorted(part, reverse=True)
        asked += len(rest) > 2 and ta[g:] != rest
    assert asked > 10  # the order did change in many samples


def test_prepare_takes_the_sample_mix_and_names_a_wrong_one() -> None:
    from models.train import prepare

    parser = prepare.build_parser()
    args = parser.parse_args(["--out", "x", "--length-weights", "very_short=0.75,short=0.1", "--task-weights", "plain=0.4"])
    assert args.length_weights["very_short"] == 0.75 and args.length_weights["long"] == 0.15  # others keep defaults
    assert args.task_weights["plain"] == 0.4
    for bad in ("tiny=1", "very_short=x", "very_short=-1", "very_short"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--out", "x", "--length-weights", bad])
