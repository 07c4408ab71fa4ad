"""Vendi score against the published vendi-score package and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from eval.metrics.vendi import vendi_score, vendi_score_kernel

RTOL = 1e-6


def random_rows(seed: int, n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + rng.normal(size=d)  # a shared offset makes rows similar


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# vendi-score 0.0.3 touches scipy.sparse.csr, which newer SciPy deprecates; not ours to fix.
@pytest.mark.filterwarnings("ignore:Please import `csr_matrix`:DeprecationWarning")
@pytest.mark.parametrize(("n", "d"), [(10, 50), (60, 8), (25, 25), (3, 1)])
def test_vendi_matches_vendi_score_package(n, d):
    vendi = pytest.importorskip("vendi_score.vendi", reason="the vendi-score package is not installed")
    x = random_rows(n * 100 + d, n, d)
    ours = vendi_score(x)
    assert ours == pytest.approx(vendi.score_dual(x), rel=RTOL)  # eigenvalues of X^T X / n
    unit = unit_rows(x)
    assert ours == pytest.approx(vendi.score_K(unit @ unit.T), rel=RTOL)  # eigenvalues of K / n
    assert vendi_score_kernel(unit @ unit.T) == pytest.approx(vendi.score_K(unit @ unit.T), rel=RTOL)


def test_vendi_of_identical_items_is_one():
    row = np.array([[0.3, -1.2, 2.0]])
    assert vendi_score(np.repeat(row, 7, axis=0)) == pytest.approx(1.0, rel=RTOL)
    assert vendi_score(row * np.arange(1, 6)[:, None]) == pytest.approx(1.0, rel=RTOL)  # cosine ignores scale


@pytest.mark.parametrize("n", [1, 2, 5, 12])
def test_vendi_of_orthogonal_items_is_their_count(n):
    rotation, _ = np.linalg.qr(np.random.default_rng(n).normal(size=(20, 20)))
    assert vendi_score(rotation[:n] * 3.0) == pytest.approx(float(n), rel=RTOL)
    assert vendi_score_kernel(np.eye(n)) == pytest.approx(float(n), rel=RTOL)


def test_vendi_of_two_groups_is_hand_computed():
    # Two identical items and one orthogonal item: eigenvalues of K/3 are 2/3 and 1/3.
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    p = np.array([2 / 3, 1 / 3])
    assert vendi_score(x) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=RTOL)


def test_vendi_kernel_of_two_items_with_similarity_s():
    s = 0.5  # eigenvalues of K/2 are (1 + s)/2 and (1 - s)/2
    p = np.array([(1 + s) / 2, (1 - s) / 2])
    assert vendi_score_kernel([[1.0, s], [s, 1.0]]) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=RTOL)


def test_vendi_does_not_depend_on_row_order_or_scale():
    x = random_rows(9, 15, 6)
    order = np.random.default_rng(9).permutation(15)
    scale = np.linspace(0.5, 4.0, 15)[:, None]
    assert vendi_score(x[order] * scale) == pytest.approx(vendi_score(x), rel=RTOL)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (np.zeros((0, 3)), "at least 1"),
        (np.array([[1.0, np.nan]]), "NaN or inf"),
        (np.array([[1.0, 0.0], [0.0, 0.0]]), "row 1 is all zeros"),
        (np.ones(3), "reshape"),
    ],
)
def test_vendi_rejects_bad_features(features, message):
    with pytest.raises(ValueError, match=message):
        vendi_score(features)


@pytest.mark.parametrize(
    ("kernel", "message"),
    [
        (np.ones((2, 3)), "square"),
        ([[1.0, 0.2], [0.3, 1.0]], "symmetric"),
        ([[2.0, 0.0], [0.0, 2.0]], "ones on its diagonal"),
        ([[1.0, 2.0], [2.0, 1.0]], "not positive semi-definite"),
        ([[1.0, np.nan], [np.nan, 1.0]], "NaN or inf"),
    ],
)
def test_vendi_kernel_rejects_bad_kernels(kernel, message):
    with pytest.raises(ValueError, match=message):
        vendi_score_kernel(kernel)
