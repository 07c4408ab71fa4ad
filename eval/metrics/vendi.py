"""Vendi score: the effective number of distinct items in a set (Friedman & Dieng, 2023).

For ``n`` items with a similarity kernel ``K`` (``K[i, i] = 1``), the Vendi score is the exponential
of the Shannon entropy of the eigenvalues of ``K / n``. It is 1 when all items are identical and
``n`` when they are mutually orthogonal.

Here the kernel is cosine similarity between feature rows: ``K = X X^T`` after scaling each row of
``X`` to unit length. The non-zero eigenvalues of ``X X^T / n`` equal those of ``X^T X / n``, so
:func:`vendi_score` decomposes whichever of the two matrices is smaller. The features can be image
embeddings (DINOv2, CLIP) or text embeddings; ``text.text_vendi_score`` builds them from character
n-grams when no embedding model is at hand.

Example::

    >>> round(vendi_score(np.eye(3)), 6)
    3.0
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .features import check_features, l2_normalize


def vendi_score(features: Any) -> float:
    """Vendi score of feature rows ``[n, d]`` under the cosine-similarity kernel.

    Args:
        features: float array ``[n, d]``, finite, no all-zero row.

    Returns:
        A float in ``[1, min(n, d)]``.

    Example:
        >>> vendi_score(np.array([[1.0, 0.0], [2.0, 0.0]]))
        1.0
    """
    rows = l2_normalize(features, what="Vendi features")
    n, d = rows.shape
    gram = rows @ rows.T if n <= d else rows.T @ rows
    return _exp_entropy(np.linalg.eigvalsh(gram / n))


def vendi_score_kernel(kernel: Any) -> float:
    """Vendi score of a precomputed similarity matrix ``[n, n]`` (symmetric, ones on the diagonal).

    Args:
        kernel: positive semi-definite similarity matrix with ``kernel[i, i] == 1``.

    Example:
        >>> round(vendi_score_kernel(np.array([[1.0, 0.5], [0.5, 1.0]])), 4)
        1.7548
    """
    matrix = check_features(kernel, what="Vendi kernel")
    n = matrix.shape[0]
    if matrix.shape != (n, n):
        raise ValueError(f"the Vendi kernel must be square, got shape {matrix.shape}")
    if not np.allclose(matrix, matrix.T, rtol=1e-9, atol=1e-9):
        raise ValueError("the Vendi kernel must be symmetric: a similarity k(x, y) equals k(y, x)")
    if not np.allclose(np.diag(matrix), 1.0, rtol=1e-9, atol=1e-9):
        raise ValueError(
            "the Vendi kernel needs ones on its diagonal (k(x, x) = 1): "
            "divide K[i, j] by sqrt(K[i, i] * K[j, j]) first"
        )
    eigenvalues = np.linalg.eigvalsh((matrix + matrix.T) / (2 * n))
    if eigenvalues[0] < -1e-9:
        raise ValueError(
            f"the Vendi kernel is not positive semi-definite (eigenvalue {eigenvalues[0] * n:.3g}): "
            "use a similarity such as cosine of embeddings, which always is"
        )
    return _exp_entropy(eigenvalues)


def _exp_entropy(eigenvalues: np.ndarray) -> float:
    # Eigenvalues of a PSD matrix with trace 1; rounding leaves tiny negatives, which carry no mass.
    p = eigenvalues[eigenvalues > 0]
    return float(np.exp(-(p * np.log(p)).sum()))
