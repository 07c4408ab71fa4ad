"""Fréchet distance against independent implementations, and FDD on a tiny random DINOv2."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from eval.metrics.features import check_features, rgb_images
from eval.metrics.frechet import GaussianStats, frechet_distance, frechet_image_distance

RTOL = 1e-6


def random_features(seed: int, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    """Correlated Gaussian rows with a seed-specific covariance."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + shift + rng.normal(size=d)


def sqrtm_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root (pytorch-fid's way)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(root):
        assert np.abs(root.imag).max() < 1e-8, "sqrtm returned a materially complex root"
        root = root.real
    return float((mu_a - mu_b) @ (mu_a - mu_b) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


@pytest.mark.parametrize(
    ("n_a", "n_b", "d", "shift"), [(64, 48, 8, 0.3), (300, 200, 32, 1.0), (40, 40, 3, 0.0)]
)
def test_frechet_matches_scipy_sqrtm_formula(n_a, n_b, d, shift):
    a = random_features(1, n_a, d)
    b = random_features(2, n_b, d, shift)
    assert frechet_distance(a, b) == pytest.approx(sqrtm_frechet(a, b), rel=RTOL)


@pytest.mark.parametrize(("n", "d"), [(64, 8), (300, 32), (12, 16)])  # the last: rank-deficient covariances
def test_frechet_matches_torchmetrics_fid_internals(n, d):
    fid = pytest.importorskip("torchmetrics.image.fid", reason="torchmetrics is not installed")
    if not hasattr(fid, "_compute_fid"):
        pytest.skip("this torchmetrics version has no _compute_fid")
    torch = pytest.importorskip("torch")
    a, b = random_features(3, n, d), random_features(4, n + 5, d, 0.5)
    stats = [GaussianStats.from_features(x) for x in (a, b)]
    expected = fid._compute_fid(
        *(torch.from_numpy(v) for s in stats for v in (s.mean, s.cov))  # float64 throughout
    ).item()
    assert frechet_distance(*stats) == pytest.approx(expected, rel=RTOL)


def test_frechet_of_1d_gaussians_is_closed_form():
    m1, s1, m2, s2 = 0.7, 2.5, -1.2, 0.4
    a = GaussianStats(mean=np.array([m1]), cov=np.array([[s1]]), count=10)
    b = GaussianStats(mean=np.array([m2]), cov=np.array([[s2]]), count=10)
    expected = (m1 - m2) ** 2 + s1 + s2 - 2 * np.sqrt(s1 * s2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=RTOL)


def test_frechet_of_diagonal_gaussians_sums_the_dimensions():
    mean_a, var_a = np.array([0.0, 1.0, 2.0]), np.array([1.0, 4.0, 0.25])
    mean_b, var_b = np.array([1.0, 1.0, -1.0]), np.array([9.0, 1.0, 0.25])
    a = GaussianStats(mean=mean_a, cov=np.diag(var_a), count=5)
    b = GaussianStats(mean=mean_b, cov=np.diag(var_b), count=5)
    expected = ((mean_a - mean_b) ** 2 + var_a + var_b - 2 * np.sqrt(var_a * var_b)).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=RTOL)


def test_frechet_from_rows_uses_unbiased_covariance():
    assert frechet_distance(np.array([[0.0], [2.0]]), np.array([[1.0], [3.0]])) == 1.0
    assert GaussianStats.from_features(np.array([[0.0], [2.0]])).cov[0, 0] == 2.0


def test_frechet_is_zero_on_identical_sets_and_symmetric():
    a, b = random_features(5, 50, 6), random_features(6, 70, 6, 2.0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=RTOL)


@pytest.mark.parametrize(
    ("a", "message"),
    [
        (np.zeros((1, 4)), "at least 2 are needed to estimate a covariance"),
        (np.zeros((0, 4)), "at least 2"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN or inf in 1 of 2 rows"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), "NaN or inf"),
        (np.zeros(4), "reshape"),
        (np.zeros((3, 5)), "different widths"),
    ],
)
def test_frechet_rejects_bad_features(a, message):
    with pytest.raises(ValueError, match=message):
        frechet_distance(a, random_features(7, 10, 4))


def test_gaussian_stats_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"mean must be \[d\] and cov \[d, d\]"):
        GaussianStats(mean=np.zeros(3), cov=np.eye(2), count=5)
    with pytest.raises(ValueError, match="at least 2"):
        GaussianStats(mean=np.zeros(2), cov=np.eye(2), count=1)


# --- FDD on a tiny random DINOv2 -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dinov2():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.Dinov2Model(config).eval()
    processor = transformers.BitImageProcessor(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, do_center_crop=True
    )
    return model, processor


@pytest.fixture(scope="module")
def dinov2(tiny_dinov2):
    from eval.metrics.frechet import Dinov2Features

    model, processor = tiny_dinov2
    return Dinov2Features(model=model, processor=processor, batch_size=3)


def random_images(seed: int, count: int, size=(40, 36)):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)
    ]


def test_dinov2_features_are_unit_cls_rows_and_deterministic(dinov2):
    import torch

    images = random_images(10, 5)
    features = dinov2(images)
    assert features.shape == (5, 32) and features.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(features, dinov2(images))
    # Hand computation: the layer-normed CLS token of the model's own output, scaled to unit length.
    with torch.no_grad():
        pixels = dinov2.processor(images=images, return_tensors="pt")["pixel_values"]
        cls = dinov2.model(pixel_values=pixels).last_hidden_state[:, 0].double().numpy()
    np.testing.assert_allclose(
        features, cls / np.linalg.norm(cls, axis=1, keepdims=True), rtol=1e-5, atol=1e-6
    )


def test_dinov2_features_do_not_depend_on_batch_size(dinov2):
    from eval.metrics.frechet import Dinov2Features

    images = random_images(11, 4)
    single = Dinov2Features(model=dinov2.model, processor=dinov2.processor, batch_size=1)(images)
    np.testing.assert_allclose(dinov2(images), single, rtol=1e-5, atol=1e-6)


def test_mixed_modes_are_converted_to_rgb_and_sizes_resized(dinov2):
    from PIL import Image

    rgb = random_images(12, 1)[0]
    gray = rgb.convert("L")
    transparent = Image.new("RGBA", (50, 30), (10, 20, 30, 0))  # fully transparent: white after compositing
    features = dinov2([gray, gray.convert("RGB"), transparent, Image.new("RGB", (50, 30), "white"), rgb])
    assert features.shape == (5, 32)
    np.testing.assert_array_equal(features[0], features[1])
    np.testing.assert_array_equal(features[2], features[3])
    assert [im.mode for im in rgb_images([Image.new("P", (3, 3)), Image.new("CMYK", (4, 4))])] == [
        "RGB",
        "RGB",
    ]


def test_frechet_image_distance_runs_end_to_end(dinov2):
    real, fake = random_images(13, 6), random_images(14, 5, size=(64, 48))
    distance = frechet_image_distance(real, fake, dinov2)
    assert np.isfinite(distance) and distance > 0
    assert distance == pytest.approx(frechet_distance(dinov2(real), dinov2(fake)), rel=RTOL)
    assert frechet_image_distance(real, real, dinov2) == pytest.approx(0.0, abs=1e-9)


def test_image_input_errors_name_the_problem(dinov2):
    from PIL import Image

    images = random_images(15, 3)
    with pytest.raises(ValueError, match="empty list of images"):
        dinov2([])
    with pytest.raises(TypeError, match=r"wrap it as \[image\]"):
        dinov2(images[0])
    with pytest.raises(TypeError, match="image 1 is a ndarray.*fromarray"):
        dinov2([images[0], np.zeros((8, 8, 3))])
    with pytest.raises(ValueError, match="at least one pixel"):
        dinov2([Image.new("RGB", (0, 4))])
    with pytest.raises(ValueError, match="the first image set: got 1 row.*estimate a covariance"):
        frechet_image_distance(images[:1], images, dinov2)


def test_nan_features_raise_instead_of_a_nan_distance():
    def broken(images):
        return np.full((len(images), 4), np.nan)

    with pytest.raises(ValueError, match="NaN or inf in 3 of 3 rows.*float32"):
        frechet_image_distance(random_images(16, 3), random_images(17, 3), broken)
    with pytest.raises(ValueError, match="NaN or inf"):
        check_features([[1.0, float("inf")]])


def test_training_mode_model_is_refused(tiny_dinov2):
    from eval.metrics.frechet import Dinov2Features

    model, processor = tiny_dinov2
    model.train()
    try:
        with pytest.raises(ValueError, match=r"call model.eval\(\) first"):
            Dinov2Features(model=model, processor=processor)(random_images(18, 2))
    finally:
        model.eval()


def test_dinov2_from_pretrained_loads_a_saved_checkpoint(tiny_dinov2, dinov2, tmp_path):
    from eval.metrics.frechet import Dinov2Features

    model, processor = tiny_dinov2
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = Dinov2Features.from_pretrained(str(tmp_path), batch_size=3)
    images = random_images(19, 3)
    np.testing.assert_allclose(loaded(images), dinov2(images), rtol=1e-6, atol=1e-7)


def test_missing_checkpoint_error_says_how_to_get_it(tmp_path):
    pytest.importorskip("transformers")
    from eval.metrics.frechet import Dinov2Features

    with pytest.raises(OSError, match="hf download"):
        Dinov2Features.from_pretrained(str(tmp_path / "missing"))
