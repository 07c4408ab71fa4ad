"""The relevance evaluation of the training recipe: items, baselines and scores (no model needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn", reason="the relevance evaluation needs scikit-learn: pip install 'tipo-prompt[train]'")

from models.train.corpus import Record  # noqa: E402
from models.train.relevance import Baselines, build_relevance_items, content_words, score_relevance  # noqa: E402

TRAIN = [
    Record("a", "coco", ["cat", "window", "curtain", "plant"], captions=["A cat sits by a window.", "A cat and a plant."]),
    Record("b", "coco", ["cat", "window", "sofa", "pillow"], captions=["A cat on a sofa by the window."] * 2),
    Record("c", "coco", ["dog", "grass", "ball", "tree"], captions=["A dog chases a ball on the grass."] * 2),
    Record("d", "coco", ["dog", "grass", "frisbee", "tree"], captions=["A dog with a frisbee near a tree."] * 2),
]
HELD = [Record("h", "coco", ["cat", "window", "curtain", "sofa", "plant"],
               captions=["A cat looks out of the window.", "A cat near a curtain and a plant."])]


def test_cooccurrence_baseline_follows_the_given_tags():
    base = Baselines.fit(TRAIN)
    assert base.tags(["cat"], 2, "cooccurrence") == ["window", "curtain"]
    assert set(base.tags(["dog"], 2, "cooccurrence")) == {"grass", "tree"}
    assert base.tags(["dog"], 3, "unigram")[:2] == ["cat", "grass"]  # the most frequent, ties by name
    assert base.words(["dog"], ["dog"], 2, "cooccurrence")[0] in {"ball", "grass", "frisbee", "tree", "chases"}


def test_scores_reward_the_true_tags_and_words_at_an_equal_budget():
    base = Baselines.fit(TRAIN)
    items = build_relevance_items(HELD * 4, 4, seed=0)
    assert {i.kind for i in items} == {"tags", "caption"}
    perfect = [{"new_tags": list(i.truth_tags), "caption": " ".join(i.truth_words)} for i in items]
    junk = [{"new_tags": ["dog", "frisbee"], "caption": "A dog with a frisbee."} for _ in items]
    good, bad = score_relevance(items, perfect, base), score_relevance(items, junk, base)
    assert good["all"]["model"]["tags"]["precision"] == 1.0 and good["all"]["model"]["tags"]["recall"] == 1.0
    assert bad["all"]["model"]["tags"]["precision"] == 0.0
    # the baselines write as many tags as the model did
    for report, outputs in ((good, perfect), (bad, junk)):
        written = sum(len(set(o["new_tags"]) - set(i.given_tags)) for i, o in zip(items, outputs, strict=True))
        assert report["all"]["cooccurrence"]["tags"]["written"] == written
    assert good["caption_word_validity"] > 0.5 and bad["caption_word_validity"] > 0.5
    assert content_words("The the cat, a CAT!") == ["cat"]


def test_neighbours_weigh_pictures_that_carry_all_the_given_tags_most():
    base = Baselines.fit([*TRAIN, Record("e", "coco", ["cat", "dog", "bird"], captions=["A cat, a dog, a bird."] * 2)])
    # only picture e carries both cat and dog: its bird outranks what pictures with one of them carry
    assert base.tags(["cat", "dog"], 1, "neighbours") == ["bird"]
    assert base.tags(["cat", "dog"], 1, "cooccurrence") != ["bird"]
    assert "cat" not in base.tags(["cat"], 10, "neighbours")


def test_first_k_precision_counts_the_first_tags_written():
    from models.train.relevance import first_k_precision, relevance_markdown

    base = Baselines.fit(TRAIN)
    items = [i for i in build_relevance_items(HELD * 4, 4, seed=0) if i.kind == "tags"]
    first = items[0].truth_tags[0]
    outputs = [{"new_tags": [first, "dog", "frisbee"], "caption": ""} for _ in items]
    got = first_k_precision(items, outputs, base)
    assert got["model"]["1"] == 1.0 and got["model"]["3"] == pytest.approx(1 / 3, abs=1e-4)
    assert got["model"]["8"] == got["model"]["3"]  # of the three written
    report = score_relevance(items, outputs, base)
    assert report["first_k"] == got and "| neighbours |" in relevance_markdown(report)


def test_direct_ranker_learns_the_task_and_leaves_the_global_random_state_alone():
    torch = pytest.importorskip("torch")
    from models.train.relevance import direct_ranker_precision

    train = TRAIN * 10
    base = Baselines.fit(train)
    items = build_relevance_items(HELD * 4, 4, seed=0)
    before = torch.random.get_rng_state().clone()
    got = direct_ranker_precision(items, train, base, epochs=100, draws=4, hidden=32)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert got["items"] == len(items) and got["pairs"] == 4 * len(train)
    # every held-out tag co-occurs with the given cat tags in training: both rank them first
    assert got["precision_at_k"]["direct"]["1"] == 1.0 == got["precision_at_k"]["cooccurrence"]["1"]
    assert got == direct_ranker_precision(items, train, base, epochs=100, draws=4, hidden=32)  # seeded
