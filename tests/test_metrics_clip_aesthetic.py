"""CLIP score and the aesthetic head on tiny random CLIP and SigLIP models built in code."""

from __future__ import annotations

import copy
import string

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")

from eval.metrics.aesthetic import (  # noqa: E402
    AESTHETIC_V2_5_URL,
    AestheticScorer,
    SiglipFeatures,
    build_aesthetic_head,
    load_aesthetic_head,
)
from eval.metrics.clip_score import ClipFeatures, ClipScoreResult, clip_score  # noqa: E402

RTOL = 1e-6
LONG_TEXT = "the cat, " * 40  # well over CLIP's 77-token window


def random_images(seed: int, count: int, size=(32, 32)):
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)
    ]


def seeded(build, seed: int = 0):
    """Build a randomly initialised module without touching the global RNG state."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build().eval()


# --- tiny CLIP ----------------------------------------------------------------------------------------


def tiny_clip_tokenizer():
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + ",.!?'0123456789":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    vocab["th"], vocab["the</w>"] = len(vocab), len(vocab) + 1
    return transformers.CLIPTokenizer(vocab=vocab, merges=[("t", "h"), ("th", "e</w>")])


#: The vision tower shape of every tiny CLIP / SigLIP model here.
TINY_VISION = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)

@pytest.fixture(scope="module")
def clip():
    tokenizer = tiny_clip_tokenizer()
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(TINY_VISION),
        projection_dim=16,
    )
    model = seeded(lambda: transformers.CLIPModel(config))
    image_processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return ClipFeatures(model=model, processor=processor, batch_size=2)


TEXTS = ["the cat sat", "a red dog, smiling", "the sea at night", "1girl, solo"]


def test_clip_features_shapes_norms_and_determinism(clip):
    images = random_images(1, 4)
    image_rows, text_rows = clip(images), clip.text_features(TEXTS)
    assert image_rows.shape == (4, 16) and text_rows.shape == (4, 16)
    assert image_rows.dtype == np.float64 and text_rows.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(image_rows, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(text_rows, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(image_rows, clip(images))
    np.testing.assert_array_equal(text_rows, clip.text_features(TEXTS))


def test_clip_cosine_matches_the_models_own_embeddings(clip):
    images = random_images(2, 4)
    result = clip_score(images, TEXTS, clip)
    with torch.no_grad():
        inputs = clip.processor(images=images, text=TEXTS, return_tensors="pt", padding=True)
        image = clip.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        text = clip.model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).pooler_output
    image, text = image.double().numpy(), text.double().numpy()
    expected = (image * text).sum(1) / np.linalg.norm(image, axis=1) / np.linalg.norm(text, axis=1)
    assert result.cosine.shape == (4,)
    np.testing.assert_allclose(result.cosine, expected, rtol=1e-5, atol=1e-6)
    assert result.score == pytest.approx(max(100 * expected.mean(), 0.0), rel=1e-5)
    assert result.truncated == 0


def test_clip_score_matches_torchmetrics_per_pair(clip):
    tm = pytest.importorskip(
        "torchmetrics.functional.multimodal.clip_score", reason="torchmetrics is not installed"
    )

    class TensorOutputs(torch.nn.Module):
        """torchmetrics 1.9 expects get_*_features to return tensors; transformers 5 returns outputs."""

        def __init__(self, model):
            super().__init__()
            self.model, self.config = model, model.config

        def get_image_features(self, pixel_values):
            return self.model.get_image_features(pixel_values=pixel_values.double()).pooler_output

        def get_text_features(self, input_ids, attention_mask):
            return self.model.get_text_features(
                input_ids=input_ids, attention_mask=attention_mask
            ).pooler_output

    # float64 weights on both sides, so that float32 rounding (about 2e-6 here) does not mask the formula.
    clip64 = ClipFeatures(model=copy.deepcopy(clip.model).double(), processor=clip.processor)
    images = random_images(3, 4)  # already 32 x 32, so both pipelines feed the model the same pixels
    tensors = [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images]
    with torch.no_grad():
        expected, _ = tm._clip_score_update(tensors, TEXTS, TensorOutputs(clip64.model), clip.processor)
    result = clip_score(images, TEXTS, clip64)
    np.testing.assert_allclose(100 * result.cosine, expected.numpy(), rtol=RTOL)
    assert result.score == pytest.approx(max(expected.mean().item(), 0.0), rel=RTOL)


def test_clip_score_clamps_the_mean_at_zero():
    assert ClipScoreResult(cosine=np.array([-0.3, 0.1]), truncated=0).score == 0.0
    assert ClipScoreResult(cosine=np.array([-0.1, 0.3]), truncated=0).score == pytest.approx(10.0)


def test_long_texts_are_truncated_and_counted(clip):
    counts = clip.token_counts([LONG_TEXT, "the cat"])
    assert counts[0] > clip.text_window == 77 and counts[1] < 77
    result = clip_score(random_images(4, 2), [LONG_TEXT, "the cat"], clip)
    assert result.truncated == 1 and np.isfinite(result.cosine).all()


def test_clip_mixed_modes_and_sizes(clip):
    rgb = random_images(5, 1, size=(48, 40))[0]
    rows = clip([rgb.convert("L"), rgb.convert("L").convert("RGB"), random_images(6, 1, size=(20, 70))[0]])
    assert rows.shape == (3, 16)
    np.testing.assert_array_equal(rows[0], rows[1])


def test_clip_input_errors(clip):
    images = random_images(7, 2)
    with pytest.raises(ValueError, match="got 2 images but 1 texts"):
        clip_score(images, ["the cat"], clip)
    with pytest.raises(ValueError, match="empty list of texts"):
        clip_score(images, [], clip)
    with pytest.raises(TypeError, match=r"wrap it as \[text\]"):
        clip_score(images[:1], "the cat", clip)
    with pytest.raises(ValueError, match="empty list of images"):
        clip([])


def test_nan_weights_raise_instead_of_a_nan_score(clip):
    broken = copy.deepcopy(clip.model)
    with torch.no_grad():
        broken.visual_projection.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or inf in 2 of 2 rows"):
        clip_score(
            random_images(8, 2), ["the cat", "a dog"], ClipFeatures(model=broken, processor=clip.processor)
        )


def test_clip_from_pretrained_loads_a_saved_checkpoint(clip, tmp_path):
    clip.model.save_pretrained(tmp_path)
    clip.processor.save_pretrained(tmp_path)
    loaded = ClipFeatures.from_pretrained(str(tmp_path))
    images = random_images(9, 2)
    np.testing.assert_allclose(
        clip_score(images, TEXTS[:2], loaded).cosine, clip_score(images, TEXTS[:2], clip).cosine, rtol=RTOL
    )


# --- aesthetic head on a tiny SigLIP ------------------------------------------------------------------



@pytest.fixture(scope="module")
def siglip():
    model = seeded(lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**TINY_VISION)))
    processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    return SiglipFeatures(model=model, processor=processor, batch_size=2)


@pytest.fixture(scope="module")
def scorer(siglip):
    return AestheticScorer(features=siglip, head=seeded(lambda: build_aesthetic_head(32), seed=1))


def numpy_head(head, rows: np.ndarray) -> np.ndarray:
    """The V2.5 head by hand: five affine maps, no activations (dropout is off in eval)."""
    state = {key: value.double().numpy() for key, value in head.state_dict().items()}
    for index in (0, 2, 4, 6, 8):
        rows = rows @ state[f"{index}.weight"].T + state[f"{index}.bias"]
    return rows[:, 0]


def test_aesthetic_scores_match_a_hand_computation(scorer, siglip):
    images = random_images(10, 3)
    scores = scorer(images)
    assert scores.shape == (3,) and scores.dtype == np.float64
    np.testing.assert_array_equal(scores, scorer(images))
    with torch.no_grad():
        pixels = siglip.processor(images=images, return_tensors="pt")["pixel_values"]
        pooled = siglip.model(pixel_values=pixels).pooler_output.double().numpy()
    expected = numpy_head(scorer.head, pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_aesthetic_head_has_the_v2_5_layout():
    head = build_aesthetic_head(1152)
    shapes = {key: tuple(value.shape) for key, value in head.state_dict().items() if key.endswith("weight")}
    assert shapes == {
        "0.weight": (1024, 1152),
        "2.weight": (128, 1024),
        "4.weight": (64, 128),
        "6.weight": (16, 64),
        "8.weight": (1, 16),
    }
    assert [m.p for m in head if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5, 0.5, 0.2]


@pytest.mark.parametrize("prefix", ["scoring_head.", ""])
def test_aesthetic_head_round_trips_through_a_file(scorer, tmp_path, prefix):
    path = tmp_path / "aesthetic_predictor_v2_5.pth"
    torch.save({prefix + key: value for key, value in scorer.head.state_dict().items()}, path)
    loaded = AestheticScorer(features=scorer.features, head=load_aesthetic_head(path))
    images = random_images(11, 2)
    np.testing.assert_array_equal(loaded(images), scorer(images))


def test_aesthetic_head_loads_safetensors(scorer, tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    path = tmp_path / "head.safetensors"
    safetensors.save_file(
        {"scoring_head." + k: v.contiguous() for k, v in scorer.head.state_dict().items()}, path
    )
    rows = np.random.default_rng(12).normal(size=(2, 32))
    loaded = AestheticScorer(features=scorer.features, head=load_aesthetic_head(path))
    np.testing.assert_array_equal(loaded.score_features(rows), scorer.score_features(rows))


def test_aesthetic_head_file_errors(tmp_path):
    wrong_keys = tmp_path / "wrong.pth"
    torch.save({"layers.0.weight": torch.zeros(1024, 32)}, wrong_keys)
    with pytest.raises(ValueError, match=r"expected the keys scoring_head\.0\.weight"):
        load_aesthetic_head(wrong_keys)
    wrong_sizes = tmp_path / "sizes.pth"
    state = build_aesthetic_head(32).state_dict()
    state["2.weight"] = torch.zeros(128, 999)
    torch.save(state, wrong_sizes)
    with pytest.raises(ValueError, match="not its layer sizes"):
        load_aesthetic_head(wrong_sizes)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match="not a state dict"):
        load_aesthetic_head(not_a_dict)
    with pytest.raises(FileNotFoundError, match=AESTHETIC_V2_5_URL):
        load_aesthetic_head(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="hf://owner/repo/path"):
        load_aesthetic_head("hf://only-owner")


def test_aesthetic_scorer_input_errors(scorer, siglip):
    with pytest.raises(ValueError, match="32 wide but the head reads 1152"):
        AestheticScorer(features=siglip, head=build_aesthetic_head(1152))(random_images(13, 1))
    with pytest.raises(ValueError, match="empty list of images"):
        scorer([])
    with pytest.raises(ValueError, match="NaN or inf"):
        scorer.score_features(np.full((2, 32), np.nan))
    with pytest.raises(ValueError, match="row 0 is all zeros"):
        scorer.score_features(np.zeros((1, 32)))
    training = AestheticScorer(features=siglip, head=build_aesthetic_head(32).train())
    with pytest.raises(ValueError, match=r"call head.eval\(\) first"):
        training.score_features(np.ones((1, 32)))


def test_aesthetic_from_pretrained_reads_a_full_siglip_checkpoint(scorer, tmp_path):
    # The real encoder repo holds a whole SiglipModel; only its vision tower is loaded.
    text = dict(
        vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2
    )
    config = transformers.SiglipConfig(text_config=text, vision_config=TINY_VISION)
    full = seeded(lambda: transformers.SiglipModel(config), seed=2)
    full.save_pretrained(tmp_path / "siglip")
    scorer.features.processor.save_pretrained(tmp_path / "siglip")
    torch.save({"scoring_head." + k: v for k, v in scorer.head.state_dict().items()}, tmp_path / "head.pth")
    loaded = AestheticScorer.from_pretrained(tmp_path / "head.pth", str(tmp_path / "siglip"))
    images = random_images(14, 2)
    reference = AestheticScorer(
        features=SiglipFeatures(model=full.vision_model, processor=scorer.features.processor),
        head=scorer.head,
    )
    np.testing.assert_allclose(loaded(images), reference(images), rtol=RTOL)
