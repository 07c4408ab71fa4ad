"""The feature-extractor contract shared by the image metrics, and the checks on their inputs.

Every image metric in this package works on feature rows: a float ``np.ndarray`` of shape ``[n, d]``,
one row per image. A :class:`FeatureExtractor` is any callable that turns a list of PIL images into
such rows, so a metric can run on a real checkpoint (DINOv2, CLIP, SigLIP) or on a tiny random model
built in a test, and a caller can plug in any other model.

Input rules, applied by :func:`rgb_images` before any model runs:

- an empty list, a bare image instead of a list, or an item that is not a PIL image is a clear error;
- images may differ in mode: each is converted to RGB (images with transparency are composited on
  white first, as transformers' own ``convert_rgb`` does);
- images may differ in size: each is resized by the model's own image processor to the size that
  model expects (e.g. DINOv2: shorter side 256, centre crop 224; CLIP: shorter side 224, centre crop
  224; SigLIP: squashed to 384 x 384), so no metric ever compares images of different sizes.

Feature rows are checked by :func:`check_features`: NaN or inf, the wrong number of dimensions, or
too few rows (a covariance needs two) raise ``ValueError`` naming the problem and the fix.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL import Image

INSTALL_HINT = 'pip install "tipo-prompt[image]" (it brings torch, transformers and pillow)'

T = TypeVar("T")


class FeatureExtractor(Protocol):
    """Maps a list of PIL images to feature rows, a float array of shape ``[len(images), d]``."""

    def __call__(self, images: Sequence[Image.Image], /) -> np.ndarray: ...


def import_optional(module: str, purpose: str) -> Any:
    """Import an optional dependency, or raise an ImportError that names the install command.

    Args:
        module: dotted module name, e.g. ``"transformers"``.
        purpose: what needs it, for the message, e.g. ``"DINOv2 features"``.

    Example:
        >>> import_optional("numpy", "the metrics").__name__
        'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{purpose} needs `{module}`, which is not installed: {INSTALL_HINT}") from error


def load_pretrained(loader: Callable[..., T], name: str) -> T:
    """Call a transformers ``from_pretrained`` and turn an offline or missing checkpoint into a clear error.

    Args:
        loader: a bound ``from_pretrained``, e.g. ``transformers.AutoModel.from_pretrained``.
        name: a Hugging Face repo id or a local folder.

    Example:
        >>> load_pretrained(AutoModel.from_pretrained, "facebook/dinov2-base")  # doctest: +SKIP
    """
    try:
        return loader(name)
    except OSError as error:
        raise OSError(
            f"could not load {name!r}: {error}\n"
            f"If this machine is offline, download it once where there is network "
            f"(`hf download {name}`), then run with HF_HUB_OFFLINE=1 or pass the local folder instead."
        ) from error


def rgb_images(images: Sequence[Image.Image]) -> list[Image.Image]:
    """Check a list of PIL images and return it with every image in RGB mode.

    Sizes are left alone: the model's image processor resizes each image (see the module docstring).

    Args:
        images: a non-empty list of PIL images of any mode and size.

    Example:
        >>> from PIL import Image
        >>> [im.mode for im in rgb_images([Image.new("L", (8, 8)), Image.new("RGBA", (4, 6))])]
        ['RGB', 'RGB']
    """
    pil = import_optional("PIL.Image", "image metrics")
    if isinstance(images, pil.Image):
        raise TypeError("expected a list of images, got a single PIL image: wrap it as [image]")
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise TypeError(f"expected a list of PIL images, got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError("got an empty list of images: pass at least one PIL image")
    converted = []
    for index, image in enumerate(images):
        if not isinstance(image, pil.Image):
            raise TypeError(
                f"image {index} is a {type(image).__name__}, not a PIL image: "
                "open files with PIL.Image.open(path) and arrays with PIL.Image.fromarray(array)"
            )
        if image.width < 1 or image.height < 1:
            raise ValueError(f"image {index} has size {image.size}: every image needs at least one pixel")
        converted.append(_to_rgb(image, pil))
    return converted


def _to_rgb(image: Image.Image, pil: Any) -> Image.Image:
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if not has_alpha:
        return image.convert("RGB")
    # A plain convert("RGB") keeps whatever colour hides under transparent pixels (often black).
    rgba = image.convert("RGBA")
    background = pil.new("RGBA", rgba.size, (255, 255, 255, 255))
    return pil.alpha_composite(background, rgba).convert("RGB")


def check_features(features: Any, *, what: str = "features", min_rows: int = 1, why: str = "") -> np.ndarray:
    """Validate feature rows and return them as a float64 array of shape ``[n, d]``.

    Args:
        features: array-like of shape ``[n, d]``.
        what: how to name the array in error messages, e.g. ``"generated features"``.
        min_rows: the fewest rows the caller can work with (2 for a covariance).
        why: what the rows are needed for, completing the error message for too few rows.

    Example:
        >>> check_features([[1, 2], [3, 4]], min_rows=2).dtype
        dtype('float64')
    """
    try:
        array = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be a numeric array of shape [n, d]: {error}") from error
    if array.ndim != 2:
        hint = " (one value per item? reshape it with .reshape(-1, 1))" if array.ndim == 1 else ""
        raise ValueError(f"{what} must have shape [n, d], got shape {array.shape}{hint}")
    n, d = array.shape
    if d == 0:
        raise ValueError(f"{what}: zero columns (shape {array.shape}); the extractor returned no features")
    if n < min_rows:
        purpose = f" {why}" if why else ""
        raise ValueError(
            f"{what}: got {n} row{'s' if n != 1 else ''}, but at least {min_rows} are needed{purpose}: "
            "pass more images or texts"
        )
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{what}: NaN or inf in {bad.size} of {n} rows (first: row {bad[0]}). "
            "If a model produced them: run it in float32 (float16 overflows), check its weights, "
            "and check that the input images are not corrupt"
        )
    return array


def l2_normalize(features: np.ndarray, *, what: str = "features") -> np.ndarray:
    """Scale each row to unit Euclidean length, refusing rows of zero length.

    Args:
        features: float array of shape ``[n, d]`` (validated by :func:`check_features`).
        what: how to name the array in error messages.

    Example:
        >>> l2_normalize(np.array([[3.0, 4.0]]))
        array([[0.6, 0.8]])
    """
    array = check_features(features, what=what)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise ValueError(
            f"{what}: row {zero[0]} is all zeros ({zero.size} such rows), so its direction "
            "(and any cosine similarity with it) is undefined: drop those items"
        )
    return array / norms


@dataclass(frozen=True, eq=False)
class ProcessorImageFeatures:
    """Base of the transformers-backed extractors: images -> image processor -> model -> one row each.

    Subclasses say how to pool the model output in :meth:`_embed`. The model and processor belong to
    the caller; the model must be in eval mode (dropout would make features random).

    Args:
        model: a transformers vision model (or one holding a vision tower), in eval mode.
        processor: the model's image processor (or a processor that accepts ``images=``).
        batch_size: images per forward pass.
        normalize: scale each feature row to unit length.
    """

    model: Any
    processor: Any
    batch_size: int = 16
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return float64 feature rows ``[len(images), d]`` for a list of PIL images."""
        torch = import_optional("torch", f"{type(self).__name__}")
        rgb = rgb_images(images)
        parameter = self._eval_parameter()
        rows = []
        with torch.inference_mode():
            for start in range(0, len(rgb), self.batch_size):
                batch = self.processor(images=rgb[start : start + self.batch_size], return_tensors="pt")
                pixel_values = batch["pixel_values"].to(device=parameter.device, dtype=parameter.dtype)
                rows.append(self._embed(pixel_values).double().cpu().numpy())
        return self._finish(rows, f"{type(self).__name__} output")

    @classmethod
    def _load(
        cls,
        model_class: str,
        processor_class: str,
        name: str,
        device: str,
        dtype: Any,
        options: dict[str, Any],
    ) -> Any:
        """Shared body of the subclasses' ``from_pretrained``: load both by transformers class name."""
        transformers = import_optional("transformers", cls.__name__)
        model = load_pretrained(getattr(transformers, model_class).from_pretrained, name)
        processor = load_pretrained(getattr(transformers, processor_class).from_pretrained, name)
        return cls(model=model.to(device=device, dtype=dtype).eval(), processor=processor, **options)

    def _eval_parameter(self) -> torch.Tensor:
        """A parameter of the model (for its device and dtype), once the model is known to be in eval mode."""
        if self.model.training:
            raise ValueError(f"{type(self).__name__}: the model is in training mode; call model.eval() first")
        return next(self.model.parameters())

    def _finish(self, rows: list[np.ndarray], what: str) -> np.ndarray:
        """Join per-batch rows, refuse NaN/inf, and normalise when asked."""
        features = np.concatenate(rows)
        return l2_normalize(features, what=what) if self.normalize else check_features(features, what=what)


def pooled(output: Any) -> torch.Tensor:
    """The pooled tensor of a transformers output: a tensor as is, else its ``pooler_output``.

    ``CLIPModel.get_image_features`` returns a tensor in transformers 4 and a ``ModelOutput`` whose
    ``pooler_output`` holds the projected embedding in transformers 5.

    Example:
        >>> pooled(model.get_image_features(pixel_values=pixels)).shape  # doctest: +SKIP
        torch.Size([2, 768])
    """
    return output if hasattr(output, "ndim") else output.pooler_output
