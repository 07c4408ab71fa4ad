"""CLIP score: how well each image matches its prompt, as the cosine of their CLIP embeddings.

For image ``i`` and text ``t`` with L2-normalised CLIP embeddings ``E_i`` and ``E_t``, the per-pair
value is ``cos(E_i, E_t) = E_i . E_t`` in ``[-1, 1]``; :class:`ClipScoreResult` keeps these raw cosines.
The headline number, :attr:`ClipScoreResult.score`, follows torchmetrics'
``torchmetrics.functional.multimodal.clip_score`` exactly: ``max(100 * mean(cos), 0)``, i.e. the
mean over pairs is taken before the clamp at 0 (Hessel et al.'s CLIPScore instead clamps each pair and
scales by 2.5; compute it from ``cosine`` if needed).

CLIP's text encoder sees at most 77 tokens (``text_config.max_position_embeddings``). Longer texts
are truncated to that window, as torchmetrics and diffusers' pipelines do; TIPO's long prompts often
are, so :attr:`ClipScoreResult.truncated` counts them (``text.token_budget`` reports per prompt).

Example::

    clip = ClipFeatures.from_pretrained()                    # openai/clip-vit-large-patch14
    result = clip_score(images, prompts, clip)
    result.score, result.cosine, result.truncated
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .features import ProcessorImageFeatures, import_optional, l2_normalize, pooled
from .text import check_texts

if TYPE_CHECKING:
    import torch
    from PIL import Image

CLIP_VIT_L_14 = "openai/clip-vit-large-patch14"


@dataclass(frozen=True, eq=False)
class ClipFeatures(ProcessorImageFeatures):
    """CLIP image embeddings (calling it, as a FeatureExtractor) and text embeddings, L2-normalised.

    Args:
        model: a ``transformers.CLIPModel`` in eval mode.
        processor: its ``CLIPProcessor`` (image processor and tokenizer).
        batch_size: images or texts per forward pass.
        normalize: scale each embedding to unit length (:func:`clip_score` normalises regardless).

    Example:
        >>> clip = ClipFeatures.from_pretrained()  # doctest: +SKIP
        >>> clip(images).shape, clip.text_features(["1girl, solo"]).shape  # doctest: +SKIP
        ((4, 768), (1, 768))
    """

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pooled(self.model.get_image_features(pixel_values=pixel_values))

    @property
    def text_window(self) -> int:
        """The most tokens (start and end tokens included) the text encoder reads."""
        return int(self.model.config.text_config.max_position_embeddings)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token count of each text, start and end tokens included.

        Example:
            >>> clip.token_counts(["a cat"])  # doctest: +SKIP
            [4]
        """
        return [len(ids) for ids in self.processor.tokenizer(list(check_texts(texts)))["input_ids"]]

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        """Float64 text embeddings ``[len(texts), d]``; texts beyond :attr:`text_window` tokens are cut.

        Example:
            >>> clip.text_features(["1girl, solo, smile"]).shape  # doctest: +SKIP
            (1, 768)
        """
        torch = import_optional("torch", "CLIP text features")
        texts = check_texts(texts)
        device = self._eval_parameter().device
        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.processor.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self.text_window,
                    return_tensors="pt",
                )
                output = self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(device),
                    attention_mask=tokens["attention_mask"].to(device),
                )
                rows.append(pooled(output).double().cpu().numpy())
        return self._finish(rows, "CLIP text features")

    @classmethod
    def from_pretrained(
        cls,
        name: str = CLIP_VIT_L_14,
        *,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        **options: Any,
    ) -> ClipFeatures:
        """Load a CLIP checkpoint and its processor.

        Args:
            name: Hugging Face repo id or local folder, ``openai/clip-vit-large-patch14`` by default.
            device: where the model runs.
            dtype: model dtype, float32 when None.
            options: ``batch_size`` and ``normalize``.

        Example:
            >>> clip = ClipFeatures.from_pretrained("openai/clip-vit-base-patch32")  # doctest: +SKIP
        """
        return cls._load("CLIPModel", "CLIPProcessor", name, device, dtype, options)


@dataclass(frozen=True, eq=False)
class ClipScoreResult:
    """Per-pair CLIP cosines and the torchmetrics-style summary.

    Attributes:
        cosine: float64 ``[n]``, cosine between image ``i`` and text ``i``, in ``[-1, 1]``.
        truncated: how many texts exceeded the text window and were cut.
    """

    cosine: np.ndarray
    truncated: int

    @property
    def score(self) -> float:
        """``max(100 * mean(cosine), 0)``: torchmetrics' CLIP score, in ``[0, 100]``."""
        return max(100.0 * float(self.cosine.mean()), 0.0)


def clip_score(images: Sequence[Image.Image], texts: Sequence[str], clip: ClipFeatures) -> ClipScoreResult:
    """CLIP score of image ``i`` against text ``i`` for each pair.

    Args:
        images: PIL images (any sizes and modes, see ``features.py``).
        texts: one prompt per image.
        clip: the CLIP model wrapper, e.g. ``ClipFeatures.from_pretrained()``.

    Example:
        >>> clip_score([image], ["1girl, solo"], ClipFeatures.from_pretrained()).score  # doctest: +SKIP
        27.1
    """
    texts = check_texts(texts)
    if isinstance(images, Sequence) and len(images) != len(texts):
        raise ValueError(f"got {len(images)} images but {len(texts)} texts: pass one text per image")
    image_rows = l2_normalize(clip(images), what="CLIP image features")
    text_rows = l2_normalize(clip.text_features(texts), what="CLIP text features")
    window = clip.text_window
    truncated = sum(count > window for count in clip.token_counts(texts))
    return ClipScoreResult(cosine=(image_rows * text_rows).sum(axis=1), truncated=truncated)
