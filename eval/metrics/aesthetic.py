"""Aesthetic score: a small MLP head on L2-normalised SigLIP image embeddings (Aesthetic Predictor V2.5).

TIPO reports the Aesthetic Predictor V2.5 score (github.com/discus0434/aesthetic-predictor-v2-5), which
reads the pooled output of SigLIP so400m (``google/siglip-so400m-patch14-384``, 1152 wide; its image
processor squashes every image to 384 x 384), scales it to unit length, and passes it through

    Linear(1152, 1024) Dropout(0.5) Linear(1024, 128) Dropout(0.5) Linear(128, 64) Dropout(0.5)
    Linear(64, 16) Dropout(0.2) Linear(16, 1)

with no activations between the layers, exactly as upstream. Scores of the trained head fall roughly
on a 1-10 scale; its authors call 5.5 and above great.

Checkpoint layout (what :func:`load_aesthetic_head` reads): the published file
``models/aesthetic_predictor_v2_5.pth`` is a ``torch.save``'d state dict of the head
alone, keys ``scoring_head.{0,2,4,6,8}.{weight,bias}`` with weights ``[1024, 1152]``,
``[128, 1024]``, ``[64, 128]``, ``[16, 64]``, ``[1, 16]``; the upstream code loads it with
``model.layers.load_state_dict`` onto a stock SigLIP vision tower, so the SigLIP weights come from the
SigLIP checkpoint unchanged. Keys without the ``scoring_head.`` prefix (a saved
:func:`build_aesthetic_head`) and ``.safetensors`` files with the same keys load too. This layout is
read off the upstream loading code; the weights themselves were not available to check here.

The head runs on any :class:`~eval.metrics.features.FeatureExtractor`, but the V2.5 weights only mean
something on SigLIP so400m embeddings.

Example::

    scorer = AestheticScorer.from_pretrained()   # SigLIP so400m + the V2.5 head from its GitHub URL
    scores = scorer(images)                      # float64 [n]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .features import (
    FeatureExtractor,
    ProcessorImageFeatures,
    check_features,
    import_optional,
    l2_normalize,
    load_pretrained,
)

if TYPE_CHECKING:
    import os

    import torch
    from PIL import Image

SIGLIP_SO400M = "google/siglip-so400m-patch14-384"
AESTHETIC_V2_5_URL = (
    "https://github.com/discus0434/aesthetic-predictor-v2-5/raw/main/models/aesthetic_predictor_v2_5.pth"
)
_PREFIX = "scoring_head."


def build_aesthetic_head(width: int = 1152) -> torch.nn.Sequential:
    """The Aesthetic Predictor V2.5 MLP, randomly initialised, in eval mode.

    Args:
        width: width of the image embeddings it reads (1152 for SigLIP so400m).

    Example:
        >>> build_aesthetic_head(32)(torch.zeros(2, 32)).shape  # doctest: +SKIP
        torch.Size([2, 1])
    """
    nn = import_optional("torch", "the aesthetic head").nn
    return nn.Sequential(
        nn.Linear(width, 1024),
        nn.Dropout(0.5),
        nn.Linear(1024, 128),
        nn.Dropout(0.5),
        nn.Linear(128, 64),
        nn.Dropout(0.5),
        nn.Linear(64, 16),
        nn.Dropout(0.2),
        nn.Linear(16, 1),
    ).eval()


def load_aesthetic_head(source: str | os.PathLike[str] = AESTHETIC_V2_5_URL) -> torch.nn.Sequential:
    """Build the V2.5 head and load its weights; the width is read from the first layer.

    Args:
        source: a local ``.pth``/``.pt``/``.bin``/``.safetensors`` file; an ``https://`` URL (cached by
            ``torch.hub``); or ``hf://owner/repo/path/in/repo`` for a file in a Hugging Face model repo.

    Example:
        >>> head = load_aesthetic_head("weights/aesthetic_predictor_v2_5.pth")  # doctest: +SKIP
    """
    state = _read_state_dict(source)
    if state and all(key.startswith(_PREFIX) for key in state):
        state = {key[len(_PREFIX) :]: value for key, value in state.items()}
    expected = [f"{index}.{kind}" for index in (0, 2, 4, 6, 8) for kind in ("weight", "bias")]
    if sorted(state) != sorted(expected):
        raise ValueError(
            f"{source} is not an Aesthetic Predictor V2.5 head: expected the keys "
            f"{', '.join(_PREFIX + key for key in expected)} (prefix optional), got {', '.join(sorted(state)) or 'none'}"
        )
    head = build_aesthetic_head(int(state["0.weight"].shape[1]))
    try:
        head.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{source} has the head's keys but not its layer sizes: {error}") from error
    return head


def _read_state_dict(source: str | os.PathLike[str]) -> Mapping[str, Any]:
    torch = import_optional("torch", "the aesthetic head")
    text = str(source)
    if text.startswith(("https://", "http://")):
        try:
            state = torch.hub.load_state_dict_from_url(text, map_location="cpu", weights_only=True)
        except OSError as error:  # URLError is an OSError
            raise OSError(
                f"could not download {text}: {error}\n"
                "If this machine is offline, fetch the file where there is network and pass its path"
            ) from error
    else:
        if text.startswith("hf://"):
            owner, repo, filename = (text[len("hf://") :].split("/", 2) + ["", ""])[:3]
            if not (owner and repo and filename):
                raise ValueError(f"{text}: write a Hugging Face file as hf://owner/repo/path/in/repo")
            hub = import_optional("huggingface_hub", "loading the aesthetic head from the Hub")
            path = Path(load_pretrained(lambda name: hub.hf_hub_download(name, filename), f"{owner}/{repo}"))
        else:
            path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(
                f"no aesthetic head at {path}: download {AESTHETIC_V2_5_URL} and pass the file's path"
            )
        if path.suffix == ".safetensors":
            state = import_optional("safetensors.torch", "reading .safetensors").load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{source} holds a {type(state).__name__}, not a state dict of the head's tensors")
    return state


@dataclass(frozen=True, eq=False)
class SiglipFeatures(ProcessorImageFeatures):
    """SigLIP pooled image embeddings (the attention-pooling head's output), L2-normalised by default.

    Args:
        model: a ``transformers.SiglipVisionModel`` in eval mode.
        processor: its image processor (``SiglipImageProcessor``: squash to the model's size).
        batch_size: images per forward pass.
        normalize: scale each row to unit length.

    Example:
        >>> SiglipFeatures.from_pretrained()(images).shape  # doctest: +SKIP
        (4, 1152)
    """

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).pooler_output

    @classmethod
    def from_pretrained(
        cls,
        name: str = SIGLIP_SO400M,
        *,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        **options: Any,
    ) -> SiglipFeatures:
        """Load the vision tower of a SigLIP checkpoint and its image processor.

        Args:
            name: Hugging Face repo id or local folder, ``google/siglip-so400m-patch14-384`` by default.
            device: where the model runs.
            dtype: model dtype, float32 when None.
            options: ``batch_size`` and ``normalize``.

        Example:
            >>> features = SiglipFeatures.from_pretrained()  # doctest: +SKIP
        """
        return cls._load("SiglipVisionModel", "AutoImageProcessor", name, device, dtype, options)


@dataclass(frozen=True, eq=False)
class AestheticScorer:
    """Image -> embedding -> unit length -> MLP head -> one aesthetic score per image.

    Args:
        features: the image embedder, e.g. :class:`SiglipFeatures` (its rows are L2-normalised again
            here, as the head expects).
        head: a module mapping ``[n, width]`` to ``[n, 1]``, in eval mode, e.g. :func:`load_aesthetic_head`.

    Example:
        >>> AestheticScorer.from_pretrained()(images)  # doctest: +SKIP
        array([5.91, 4.87])
    """

    features: FeatureExtractor
    head: Any

    def score_features(self, features: Any) -> np.ndarray:
        """Scores (float64 ``[n]``) of precomputed embeddings ``[n, width]``.

        Example:
            >>> scorer.score_features(np.ones((2, 1152))).shape  # doctest: +SKIP
            (2,)
        """
        torch = import_optional("torch", "the aesthetic head")
        rows = l2_normalize(features, what="aesthetic features")
        if self.head.training:
            raise ValueError("AestheticScorer: the head is in training mode; call head.eval() first")
        weight = next(self.head.parameters())
        if weight.ndim == 2 and rows.shape[1] != weight.shape[1]:
            raise ValueError(
                f"the features are {rows.shape[1]} wide but the head reads {weight.shape[1]}: "
                "use the image model the head was trained on"
            )
        with torch.inference_mode():
            output = self.head(torch.from_numpy(rows).to(device=weight.device, dtype=weight.dtype))
        if tuple(output.shape) != (rows.shape[0], 1):
            raise ValueError(f"the head must return [n, 1], got {tuple(output.shape)}")
        return check_features(output.double().cpu().numpy(), what="aesthetic scores")[:, 0]

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Scores (float64 ``[len(images)]``) of a list of PIL images."""
        return self.score_features(self.features(images))

    @classmethod
    def from_pretrained(
        cls,
        head: str | os.PathLike[str] = AESTHETIC_V2_5_URL,
        encoder: str = SIGLIP_SO400M,
        *,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        batch_size: int = 16,
    ) -> AestheticScorer:
        """Load SigLIP so400m and the V2.5 head (see the module docstring for the head file's layout).

        Args:
            head: where the head's weights are (see :func:`load_aesthetic_head`).
            encoder: SigLIP checkpoint, repo id or local folder.
            device: where both run.
            dtype: their dtype, float32 when None.
            batch_size: images per forward pass.

        Example:
            >>> scorer = AestheticScorer.from_pretrained("weights/aesthetic_predictor_v2_5.pth")  # doctest: +SKIP
        """
        features = SiglipFeatures.from_pretrained(encoder, device=device, dtype=dtype, batch_size=batch_size)
        return cls(features=features, head=load_aesthetic_head(head).to(device=device, dtype=dtype))
