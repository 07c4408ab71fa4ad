"""Fréchet distance between two feature sets, and FDD: the Fréchet distance on DINOv2 features.

The Fréchet distance between Gaussians fitted to two feature sets (the formula behind FID) is

    d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr sqrt(S_1 S_2)

Means and covariances are float64; covariances use the unbiased ``n - 1`` denominator, as FID
implementations (pytorch-fid, torchmetrics) do. ``tr sqrt(S_1 S_2)`` is computed without a
general matrix square root: with ``R = sqrt(S_1)`` (from the eigen-decomposition of the symmetric
``S_1``), ``S_1 S_2`` is similar to the symmetric positive semi-definite ``R S_2 R``, so the trace is
the sum of the square roots of that matrix's eigenvalues. Rounding can leave tiny negative
eigenvalues; they are clipped to zero, and so is a distance that rounds below zero.

FDD (Fréchet DINOv2 distance) is this distance on L2-normalised DINOv2 CLS features of 224-pixel
images, the image-set metric TIPO reports. The same function gives FID-style numbers with any other
:class:`~eval.metrics.features.FeatureExtractor`. Like FID, the estimate is biased by the sample
size: compare numbers computed from equally many images, hundreds at least.

Example (CPU-sized, with a tiny random model in place of DINOv2: see tests/test_metrics_frechet.py)::

    extractor = Dinov2Features.from_pretrained()            # facebook/dinov2-base, 224 px
    fdd = frechet_image_distance(reference_images, generated_images, extractor)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .features import (
    FeatureExtractor,
    ProcessorImageFeatures,
    check_features,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

DINOV2_BASE = "facebook/dinov2-base"


@dataclass(frozen=True, eq=False)
class GaussianStats:
    """Mean and covariance of a feature set: all a Fréchet distance needs from it.

    Args:
        mean: float array ``[d]``.
        cov: symmetric positive semi-definite float array ``[d, d]``.
        count: how many feature rows the statistics came from.

    Example:
        >>> stats = GaussianStats.from_features(np.array([[0.0, 1.0], [2.0, 3.0]]))
        >>> stats.mean, stats.count
        (array([1., 2.]), 2)
    """

    mean: np.ndarray
    cov: np.ndarray
    count: int

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        cov = np.asarray(self.cov, dtype=np.float64)
        if mean.ndim != 1 or cov.shape != (mean.size, mean.size):
            raise ValueError(f"mean must be [d] and cov [d, d]; got {mean.shape} and {cov.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            raise ValueError("mean or cov contain NaN or inf: recompute them from finite features")
        if self.count < 2:
            raise ValueError(f"statistics need at least 2 feature rows, got count={self.count}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)

    @classmethod
    def from_features(cls, features: Any, *, what: str = "features") -> GaussianStats:
        """Fit mean and unbiased covariance to feature rows ``[n, d]`` with ``n >= 2``.

        Example:
            >>> GaussianStats.from_features(np.eye(3)).cov.shape
            (3, 3)
        """
        rows = check_features(features, what=what, min_rows=2, why="to estimate a covariance")
        cov = np.atleast_2d(np.cov(rows, rowvar=False, ddof=1))
        return cls(mean=rows.mean(axis=0), cov=cov, count=rows.shape[0])


def frechet_distance(a: GaussianStats | Any, b: GaussianStats | Any) -> float:
    """Fréchet distance (squared, as FID reports it) between two feature sets or their statistics.

    Args:
        a: feature rows ``[n_a, d]`` (``n_a >= 2``) or their :class:`GaussianStats`.
        b: feature rows ``[n_b, d]`` (``n_b >= 2``) or their :class:`GaussianStats`.

    Returns:
        The distance, a float ``>= 0``; 0 for identical sets.

    Example:
        >>> frechet_distance(np.array([[0.0], [2.0]]), np.array([[1.0], [3.0]]))
        1.0
    """
    stats_a = a if isinstance(a, GaussianStats) else GaussianStats.from_features(a, what="first feature set")
    stats_b = b if isinstance(b, GaussianStats) else GaussianStats.from_features(b, what="second feature set")
    if stats_a.mean.size != stats_b.mean.size:
        raise ValueError(
            f"the feature sets have different widths ({stats_a.mean.size} vs {stats_b.mean.size}): "
            "extract both with the same model"
        )
    difference = stats_a.mean - stats_b.mean
    root_a = _psd_sqrt(stats_a.cov)
    middle = root_a @ stats_b.cov @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    distance = difference @ difference + np.trace(stats_a.cov) + np.trace(stats_b.cov) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix via its eigen-decomposition."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_image_distance(
    images_a: Sequence[Image.Image], images_b: Sequence[Image.Image], extractor: FeatureExtractor
) -> float:
    """Fréchet distance between two image sets in an extractor's feature space (FDD with DINOv2).

    Args:
        images_a: reference images (at least 2; any sizes and modes, see ``features.py``).
        images_b: generated images (at least 2).
        extractor: e.g. ``Dinov2Features.from_pretrained()`` for FDD.

    Example:
        >>> frechet_image_distance(real, fake, Dinov2Features.from_pretrained())  # doctest: +SKIP
        412.7
    """
    return frechet_distance(
        GaussianStats.from_features(extractor(images_a), what="features of the first image set"),
        GaussianStats.from_features(extractor(images_b), what="features of the second image set"),
    )


@dataclass(frozen=True, eq=False)
class Dinov2Features(ProcessorImageFeatures):
    """DINOv2 CLS features (the pooled, layer-normed CLS token), L2-normalised by default.

    Any transformers model whose output has ``pooler_output`` works the same way.

    Args:
        model: a ``transformers.Dinov2Model`` in eval mode.
        processor: its image processor (``BitImageProcessor``); it sets the input size.
        batch_size: images per forward pass.
        normalize: scale each row to unit length (TIPO's FDD does).

    Example:
        >>> Dinov2Features.from_pretrained()(images).shape  # doctest: +SKIP
        (8, 768)
    """

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).pooler_output

    @classmethod
    def from_pretrained(
        cls, name: str = DINOV2_BASE, *, device: str = "cpu", dtype: torch.dtype | None = None, **options: Any
    ) -> Dinov2Features:
        """Load a DINOv2 checkpoint and its image processor (shorter side 256, centre crop 224).

        Args:
            name: Hugging Face repo id or local folder, ``facebook/dinov2-base`` by default.
            device: where the model runs.
            dtype: model dtype, float32 when None.
            options: ``batch_size`` and ``normalize``.

        Example:
            >>> extractor = Dinov2Features.from_pretrained("facebook/dinov2-base")  # doctest: +SKIP
        """
        return cls._load("AutoModel", "AutoImageProcessor", name, device, dtype, options)
