"""Text metrics: hand-computed cases, and text Vendi against the vendi-score package."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from eval.metrics.text import (
    CLIP_WINDOW,
    LENGTH_BOUNDS,
    T5_WINDOW,
    TokenBudget,
    ban_compliance,
    duplicate_rate,
    known_tag_rate,
    length_class_hit_rate,
    text_vendi_score,
    token_budget,
    user_tag_preservation,
    word_counts,
)
from eval.metrics.vendi import vendi_score

RTOL = 1e-6
ALIASES = {"kitty": "cat", "puppy": "dog"}


def canonical(tag: str) -> str:
    return ALIASES.get(tag, tag)


def test_duplicate_rate_counts_repeats_within_each_result():
    results = [["cat", "dog", "cat", "cat"], ["sky", " sky "], ["tree"]]
    assert duplicate_rate(results) == pytest.approx(3 / 7)
    assert duplicate_rate([["cat"], ["cat"]]) == 0.0  # across results is not a duplicate


def test_alias_duplicates_need_the_canonical_callable():
    results = [["cat", "kitty", "dog"], ["puppy", "dog", "dog"]]
    assert duplicate_rate(results) == pytest.approx(1 / 6)
    assert duplicate_rate(results, canonical=canonical) == pytest.approx(3 / 6)


def test_known_tag_rate():
    known = {"cat", "dog", "sky"}.__contains__
    assert known_tag_rate([["cat", "catt"], ["dog", " sky", "skyy"]], known) == pytest.approx(3 / 5)


def test_user_tag_preservation_averages_requests_with_user_tags():
    users = [["cat", "sky"], [], ["dog", "dog", "tree"], ["kitty"]]
    results = [["cat", "night"], ["dog"], ["tree", "dog", "grass"], ["cat"]]
    # 1/2, skipped, 2/2 (the user's repeat counts once), 0/1
    assert user_tag_preservation(users, results) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert user_tag_preservation(users, results, canonical=canonical) == pytest.approx((0.5 + 1.0 + 1.0) / 3)


def test_ban_compliance():
    results = [["cat", "dog"], ["cat"], ["puppy"], ["sky"]]
    assert ban_compliance(results, {"dog"}) == pytest.approx(3 / 4)
    assert ban_compliance(results, {"dog"}, canonical=canonical) == pytest.approx(2 / 4)
    assert ban_compliance(results, []) == 1.0


def test_length_class_hits_include_both_bounds():
    assert dict(LENGTH_BOUNDS) == {
        "very_short": (0, 18),
        "short": (18, 36),
        "long": (36, 48),
        "very_long": (48, 72),
    }
    results = [[f"t{i}" for i in range(count)] for count in (0, 18, 19, 36, 37, 48, 72, 73)]
    assert length_class_hit_rate(results, "very_short") == pytest.approx(2 / 8)
    assert length_class_hit_rate(results, "short") == pytest.approx(3 / 8)
    assert length_class_hit_rate(results, "long") == pytest.approx(3 / 8)
    assert length_class_hit_rate(results, "very_long") == pytest.approx(2 / 8)
    targets = ["very_short", "very_short", "short", "short", "long", "long", "very_long", "very_long"]
    assert length_class_hit_rate(results, targets) == pytest.approx(7 / 8)
    assert length_class_hit_rate([["a", "b"]], "tiny", bounds={"tiny": (1, 2)}) == 1.0


def test_word_counts():
    assert word_counts(["A cat sits on a mat.", "  two\twords\n", ""]) == [6, 2, 0]


def test_token_budget_reports_counts_and_fit():
    def tokenize(text: str) -> list[str]:
        return ["<start>", *text.split(), "<end>"]

    budget = token_budget(["a b c", "a", "a b c d e"], tokenize, 5)
    assert budget == TokenBudget(counts=(5, 3, 7), window=5)
    assert budget.fits == (True, True, False)
    assert budget.fit_rate == pytest.approx(2 / 3)
    assert (CLIP_WINDOW, T5_WINDOW) == (77, 512)


def dense_char_ngrams(texts: list[str], n: int) -> np.ndarray:
    """Independent dense count matrix, for comparison with the sparse path."""
    counters = [Counter(text[i : i + n] for i in range(len(text) - n + 1)) for text in texts]
    vocabulary = sorted(set().union(*counters))
    return np.array([[counter[gram] for gram in vocabulary] for counter in counters], dtype=float)


CAPTIONS = [
    "1girl, solo, long hair, smile",
    "1girl, solo, short hair, looking at viewer",
    "landscape, mountain, sunset, no humans",
    "a cat sleeping on a windowsill in the afternoon sun",
    "1girl, solo, long hair, smile",
    "city street at night, neon lights, rain",
]


@pytest.mark.filterwarnings("ignore:Please import `csr_matrix`:DeprecationWarning")
@pytest.mark.parametrize("n", [1, 3, 5])
def test_text_vendi_matches_vendi_score_package(n):
    vendi = pytest.importorskip("vendi_score.vendi", reason="the vendi-score package is not installed")
    counts = dense_char_ngrams(CAPTIONS, n)
    assert text_vendi_score(CAPTIONS, ngram=n) == pytest.approx(vendi.score_X(counts), rel=RTOL)
    assert text_vendi_score(CAPTIONS, ngram=n) == pytest.approx(vendi.score_dual(counts), rel=RTOL)


def test_text_vendi_matches_sklearn_char_ngrams():
    feature_extraction = pytest.importorskip("sklearn.feature_extraction.text")
    vectorizer = feature_extraction.CountVectorizer(analyzer="char", ngram_range=(3, 3), lowercase=False)
    counts = vectorizer.fit_transform(CAPTIONS).toarray().astype(float)
    assert text_vendi_score(CAPTIONS) == pytest.approx(vendi_score(counts), rel=RTOL)


def test_text_vendi_hand_cases():
    assert text_vendi_score(["same text"] * 4) == pytest.approx(1.0, rel=RTOL)
    assert text_vendi_score(["aaaa", "bbbb", "cccc"]) == pytest.approx(3.0, rel=RTOL)  # no shared n-gram
    assert text_vendi_score(["ab", "ab", "xy"], ngram=5) == pytest.approx(  # short texts: one n-gram each
        np.exp(-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))), rel=RTOL
    )


def test_text_vendi_on_given_embeddings():
    embeddings = np.random.default_rng(0).normal(size=(4, 8))
    assert text_vendi_score(["a", "b", "c", "d"], embed=lambda texts: embeddings) == pytest.approx(
        vendi_score(embeddings), rel=RTOL
    )
    with pytest.raises(ValueError, match="embed returned 4 rows for 3 texts"):
        text_vendi_score(["a", "b", "c"], embed=lambda texts: embeddings)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: duplicate_rate([]), ValueError, "empty list"),
        (lambda: duplicate_rate([[], []]), ValueError, "no result has any tag"),
        (lambda: duplicate_rate(["cat, dog"]), TypeError, "split it first"),
        (lambda: duplicate_rate("cat"), TypeError, "list of tag lists"),
        (lambda: duplicate_rate([["cat", " "]]), ValueError, r"results\[0\]\[1\] is an empty tag"),
        (lambda: duplicate_rate([["cat", 3]]), TypeError, "is a int, not a str"),
        (lambda: known_tag_rate([[]], bool), ValueError, "no result has any tag"),
        (lambda: user_tag_preservation([[], []], [["a"], ["b"]]), ValueError, "no request has any user tag"),
        (
            lambda: user_tag_preservation([["a"]], [["a"], ["b"]]),
            ValueError,
            "got 1 user tag lists but 2 results",
        ),
        (lambda: ban_compliance([["a"]], "a"), TypeError, r"wrap it as \[tag\]"),
        (lambda: length_class_hit_rate([["a"]], "medium"), ValueError, "unknown length class 'medium'"),
        (
            lambda: length_class_hit_rate([["a"]], ["short", "long"]),
            ValueError,
            "got 2 targets but 1 results",
        ),
        (lambda: word_counts("a caption"), TypeError, r"wrap it as \[text\]"),
        (lambda: text_vendi_score([]), ValueError, "empty list of texts"),
        (lambda: text_vendi_score(["fine", ""]), ValueError, "text 1 is empty"),
        (lambda: text_vendi_score(["a"], ngram=0), ValueError, "ngram must be at least 1"),
        (lambda: text_vendi_score(["a"], embed=lambda t: [[np.nan]]), ValueError, "NaN or inf"),
        (lambda: token_budget(["a"], str.split, 0), ValueError, "window must be at least 1"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_metric_modules_import_without_torch():
    code = (
        "import sys\n"
        "import eval.metrics, eval.metrics.text, eval.metrics.vendi, eval.metrics.frechet\n"
        "import eval.metrics.clip_score, eval.metrics.aesthetic, eval.metrics.features\n"
        "heavy = [m for m in ('torch', 'transformers', 'PIL', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
